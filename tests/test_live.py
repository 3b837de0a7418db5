"""Live mode on a generated file source: every frame written, a label every `stride` frames, clean interruption."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from behavior.data.faces import face_clip
from behavior.data.roi import RoiConfig
from behavior.errors import ConfigError
from behavior.live.session import LiveSettings, run
from behavior.video import open_leading_frames, open_video
from behavior.video.writer import VideoWriter, write_video
from tests.conftest import REPO
from tests.helpers import command_config, tiny_checkpoint, tiny_recipe

CLASSES = ["calm", "nod", "shake"]


def live_config(**values) -> dict:
    """The command's config as Hydra composes it; ``roi`` (absent from conf/live.yaml unless roi=... is given) is
    set beside the composed keys."""
    roi = values.pop("roi", None)
    return {**command_config("live", **values), "roi": roi}


def live_cfg(**values) -> LiveSettings:
    """The command's settings as Hydra builds and checks them, for calling ``run`` in this process."""
    return LiveSettings.from_mapping(live_config(**values))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("live")
    checkpoint = tiny_checkpoint(folder / "tiny.pt", CLASSES, tiny_recipe("roi=face"))
    frames, _ = face_clip(num_frames=45, seed=3)
    source = write_video(folder / "faces.mp4", frames, fps=15)
    long_source = write_video(folder / "long.mp4", np.concatenate([frames] * 8), fps=15)
    return {"checkpoint": checkpoint, "source": source, "long": long_source, "folder": folder}


def labelled(frame: np.ndarray) -> bool:
    # The label is drawn on a black box in the top-left corner; the texture there is never black.
    return bool(frame[4:10, 4:10].max() < 40)


def test_every_frame_is_written_with_a_label_every_stride_frames(files, tmp_path, capsys):
    output = tmp_path / "annotated.mp4"
    threads = torch.get_num_threads()
    stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), output=str(output),
                         stride=5, window=1.0))
    assert torch.get_num_threads() == threads  # the caller's torch threads are given back
    assert stats.frames == 45 and not stats.stopped and stats.dropped == 0
    assert [index for index, _, _ in stats.labels] == list(range(4, 45, 5))
    assert all(label in CLASSES and 0 < score <= 1 for _, label, score in stats.labels)
    with open_video(output) as reader:
        assert len(reader) == 45
        frames = reader.get_frames(list(range(45))).numpy()
    assert [labelled(f) for f in frames] == [i >= 4 for i in range(45)]
    out = capsys.readouterr().out
    assert "45 frame(s)" in out and "real time" in out and "latency frame -> label" in out


def test_a_network_stream_is_read_like_a_file(files, tmp_path):
    # A fragmented MP4 over plain HTTP: FFmpeg reads it front to back, as it would a live HTTP stream.
    frames, _ = face_clip(num_frames=20, seed=4)
    with VideoWriter(tmp_path / "stream.mp4", 320, 240, 15, fragmented=True, keyframe_every=10) as writer:
        for frame in frames:
            writer.write(frame)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stream.mp4"
        stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=url, stride=5, drop=False))
    finally:
        server.shutdown()
    assert stats.frames == 20 and stats.predictions == 4 and not stats.stopped


def test_a_busy_classifier_skips_labels_but_never_frames(files, tmp_path, monkeypatch, capsys):
    from behavior.live.worker import StreamClassifier

    slow = StreamClassifier.classify

    def classify_slowly(self, job):
        time.sleep(0.3)
        return slow(self, job)

    monkeypatch.setattr(StreamClassifier, "classify", classify_slowly)
    output = tmp_path / "dropping.mp4"
    stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), output=str(output),
                         stride=3, drop=True, fps=5))
    assert stats.dropped > 0 and stats.predictions + stats.dropped == 15
    with open_video(output) as reader:
        assert len(reader) == 45 and reader.meta.fps == 5  # fps= overrides the source's 15
    assert "at 5 fps" in capsys.readouterr().out


def test_roi_override_and_no_face_fallback(files, tmp_path, capsys):
    blank = write_video(tmp_path / "blank.mp4", face_clip(num_frames=16, seed=5, face=False)[0], fps=15)
    stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(blank), stride=4, window=1.0,
                         roi=RoiConfig.preset("person").to_dict()))
    assert stats.predictions == 4
    assert "roi=person replaces the checkpoint's roi=face" in capsys.readouterr().err


@pytest.mark.slow
def test_interrupting_leaves_a_playable_file(files, tmp_path):
    output = tmp_path / "interrupted.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "behavior.live", f"checkpoint={files['checkpoint']}",
                             f"source={files['long']}", f"output={output}", "stride=4"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if output.is_file() and output.stat().st_size > 5_000:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted: make the source longer"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped early: interrupted" in out
    written = int(out.split("annotated video: ")[1].split("(")[1].split()[0])
    read = int(out.split("\nlive: ")[1].split()[0])
    assert 0 < written == read < 45 * 8  # every frame read before Ctrl-C is in the file, and only those
    with open_video(output) as reader:
        assert len(reader) == written
        reader.get_frames([0, written - 1])


def test_sigterm_stops_like_ctrl_c_keeping_every_frame_read(files, tmp_path, monkeypatch):
    """What a service manager's `kill` does: in this process, run() turns SIGTERM into the Ctrl-C path."""
    from behavior.live.worker import StreamClassifier

    classify, jobs = StreamClassifier.classify, []

    def classify_then_terminate(self, job):
        jobs.append(job.index)
        if len(jobs) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, mid-stream
        return classify(self, job)

    ignored = []  # where SIGTERM lands if run() installs no handler of its own (instead of killing pytest)

    def ours(*_):
        ignored.append(True)

    monkeypatch.setattr(StreamClassifier, "classify", classify_then_terminate)
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        output = tmp_path / "terminated.mp4"
        stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), output=str(output),
                             stride=5, window=1.0))
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert restored is ours  # the caller's handler is given back
    assert not ignored and stats.stopped == "interrupted"
    with open_video(output) as reader:
        assert 0 < len(reader) == stats.frames < 45  # every frame read before SIGTERM, and only those


@pytest.mark.slow
def test_a_killed_run_still_leaves_a_playable_file(files, tmp_path):
    output = tmp_path / "killed.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "behavior.live", f"checkpoint={files['checkpoint']}",
                             f"source={files['long']}", f"output={output}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if output.is_file() and output.stat().st_size > 100_000:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed: make the source longer"
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not a run that had ended on its own
    # A fragmented MP4 cut mid-fragment: the fragments before the cut play (the strict reader calls it truncated).
    with open_leading_frames(output) as reader:
        assert 30 <= len(reader) < 45 * 8  # what was written before the kill: fewer frames than the source has
        reader.get_frames([len(reader) - 1])


def test_show_without_a_display_warns_and_goes_on(files, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), show=True, max_frames=10,
                         stride=5))
    assert stats.frames == 10
    captured = capsys.readouterr()
    # No output= was given: the warning must not promise a video, and the labels go to stdout instead.
    assert "show=true: no window" in captured.err and "output video" not in captured.err
    assert "labels are printed instead" in captured.err
    assert len([line for line in captured.out.splitlines() if line.strip().endswith(tuple("0123456789"))
                and line.split()[1] in CLASSES]) == stats.predictions == 2
    run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), show=True, max_frames=10,
                 output=str(tmp_path / "shown.mp4")))
    assert "the output video is still written" in capsys.readouterr().err


def test_a_file_without_output_or_window_prints_each_label(files, capsys):
    stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), stride=5))
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(" ")]
    # One line per classification: the time of its newest frame in the source (15 fps), the label and its score.
    assert rows == [[f"{index / 15:.2f}s", label, f"{score:.2f}"] for index, label, score in stats.labels]
    assert len(rows) == 9 and "9 prediction(s)" in out


def test_labels_are_not_printed_when_a_video_is_written(files, tmp_path, capsys):
    run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), stride=5,
                 output=str(tmp_path / "quiet.mp4")))
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith(" ")]


@pytest.mark.parametrize(("values", "key"), [
    ({"stride": 0}, "stride"), ({"window": -1}, "window"), ({"drop": "sometimes"}, "drop"),
    ({"output": "out.gif"}, "output"), ({"checkpoint": None}, "checkpoint"), ({"source": ""}, "source"),
    ({"source": "/no/such/file.mp4"}, "source"), ({"source": 9}, "source"),
    ({"roi": {**RoiConfig.preset("face").to_dict(), "kind": "hand"}}, "roi.kind"),
])
def test_bad_settings_are_one_line_errors(files, values, key):
    with pytest.raises(Exception, match=rf"^{key}[=:. ]") as info:
        run(live_cfg(**{"checkpoint": str(files["checkpoint"]), "source": str(files["source"]), **values}))
    assert "\n" not in str(info.value)


def test_an_existing_output_is_left_untouched(files, tmp_path):
    output = tmp_path / "taken.mp4"
    output.write_bytes(b"finished work")
    with pytest.raises(ConfigError, match="already exists"):
        run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(files["source"]), output=str(output)))
    assert output.read_bytes() == b"finished work"


def test_the_speed_benchmark_runs_and_prints_its_table(capsys):
    from behavior.live.speed import main

    main(["--seconds", "1", "--repeat", "1", "--rois", "none", "--no-output"])
    out = capsys.readouterr().out
    assert "| none | 25 |" in out and "x (" in out and "640x360, 25 fps source" in out
    main(["--seconds", "0.5", "--size", "1280x720", "--fps", "30", "--repeat", "1", "--rois", "none"])
    out = capsys.readouterr().out
    assert "| none | 15 |" in out and "1280x720, 30 fps source" in out and "annotated mp4 written" in out


def hd_clip(path: Path, num_frames: int = 16, width: int = 1920, height: int = 1080) -> Path:
    """A 1080p clip with smooth shading and a moving block: fine detail that a resize path would show, and cheap to
    encode (noise at 1080p is not)."""
    y, x = np.mgrid[0:height, 0:width]
    # Never dark: the label's black box in the top-left corner is what ``labelled`` looks for.
    background = np.stack([60 + x * 190 // width, 60 + y * 190 // height, 60 + (x + y) * 120 // (width + height)], -1)
    frames = np.repeat(background.astype(np.uint8)[None], num_frames, 0)
    for t, frame in enumerate(frames):
        left = 200 + 60 * t
        frame[300:700, left:left + 240] = (230, 200, 40)
        frame[420:440, left:left + 240] = (20, 20, 200)  # a thin stripe: aliasing would show in the model input
    return write_video(path, frames, fps=30)


def test_the_classifier_gets_small_frames_close_to_the_full_size_path(tmp_path):
    """1080p is decoded straight to the classifier's size (twice the transform's resize on the short side): the
    frames batch-classify decodes, and a model input within ~2/255 on average of the full-size frames'."""
    from behavior.data.transforms import build_transform
    from behavior.recipe import compose_recipe
    from behavior.video.stream import open_source

    clip = hd_clip(tmp_path / "hd.mp4")
    transform_cfg = compose_recipe().transform  # the default model's 128 -> 112 crop
    side = 2 * transform_cfg.size
    source = open_source(str(clip), (side, None))
    small, full = (np.stack(frames) for frames in zip(*source, strict=True))
    source.close()
    assert small.shape == (16, side, 455, 3) and full.shape == (16, 1080, 1920, 3)
    with open_video(clip, max_short_side=side) as reader:
        assert np.array_equal(reader.get_frames(list(range(16))).numpy(), small)
    transform = build_transform(transform_cfg, train=False)
    before, after = transform(torch.from_numpy(full[:8])), transform(torch.from_numpy(small[:8]))
    assert before.shape == after.shape == (3, 8, 112, 112)
    # Normalised units (std 0.225, so 0.01 is about 0.6/255): measured mean 0.024, max 0.19 (swscale's bilinear
    # shrink then torchvision's antialiased one, against torchvision's alone); the bounds leave room for FFmpeg builds.
    difference = (before - after).abs()
    assert float(difference.mean()) < 0.05 and float(difference.max()) < 0.35


def window_frame_shapes(monkeypatch) -> set:
    """The shapes of the frames the classifier's worker is handed, collected as live mode runs."""
    from behavior.live.worker import StreamClassifier

    classify, shapes = StreamClassifier.classify, set()

    def record_shapes(self, job):
        shapes.update(frame.shape for frame in job.frames)
        return classify(self, job)

    monkeypatch.setattr(StreamClassifier, "classify", record_shapes)
    return shapes


def test_a_1080p_source_is_classified_small_and_written_at_the_shown_size(files, tmp_path, monkeypatch):
    from behavior.live.session import SHOWN_SHORT_SIDE
    shapes = window_frame_shapes(monkeypatch)
    output = tmp_path / "hd_annotated.mp4"
    stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(hd_clip(tmp_path / "hd.mp4")),
                         output=str(output), stride=4, window=0.5, roi=RoiConfig.preset("none").to_dict()))
    assert stats.frames == 16 and stats.predictions == 4
    assert shapes == {(80, 142, 3)}  # the tiny model's transform: short side 40, decoded at twice that
    with open_video(output) as reader:
        assert (reader.meta.height, reader.meta.width) == (SHOWN_SHORT_SIDE, 960) and len(reader) == 16
        frames = reader.get_frames(list(range(16))).numpy()
    assert [labelled(f) for f in frames] == [i >= 3 for i in range(16)]


def test_a_region_of_interest_still_gets_full_size_frames(files, tmp_path, monkeypatch):
    """The detector and the crop see the frames they saw in training; only what is written is made smaller."""
    shapes = window_frame_shapes(monkeypatch)
    clip = hd_clip(tmp_path / "hd.mp4", num_frames=8, width=1280, height=720)
    stats = run(live_cfg(checkpoint=str(files["checkpoint"]), source=str(clip), output=str(tmp_path / "roi.mp4"),
                         stride=8, window=0.5))  # the checkpoint's own roi=face
    assert stats.predictions == 1 and shapes == {(720, 1280, 3)}
    with open_video(tmp_path / "roi.mp4") as reader:
        assert (reader.meta.height, reader.meta.width) == (540, 960)
