"""Window mode of behavior.predict: a timeline per long video, merged segments, CSV and PNG, error rows, resume;
long videos decoded in a worker, killed and resumed, a decoder hanging part-way, mkv = mp4."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from behavior.data.roi import WHOLE_FRAME
from behavior.errors import ConfigError
from behavior.models import register_model, registry
from behavior.predict.batch import PredictSettings, run
from behavior.predict.partial_timeline import PartialTimeline
from behavior.predict.timeline import Segment, merge_windows, window_config
from behavior.predict.window_stream import WindowConfig, window_spans
from behavior.video.writer import VideoWriter, remux, write_video
from tests.crash import in_child
from tests.helpers import command_config, model_config, tiny_checkpoint, tiny_recipe

CLASSES = ["red", "blue"]
FPS, SWITCH, DURATION = 10, 12, 20


class ColourNet(nn.Module):
    """Logits = mean of one colour channel per class (red: R, blue: B), so a red clip is "red" without training."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.channels = [0, 2, 1][:num_classes]
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so state_dict and optimizers have something

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, T, H, W]
        return self.scale * x[:, self.channels].mean(dim=(2, 3, 4))


def colour_net(num_classes: int) -> nn.Module:
    return ColourNet(num_classes)


@pytest.fixture(scope="module", autouse=True)
def colour_model():
    """Registered for this module only: other tests check that every registered model has a config file."""
    saved = dict(registry._MODELS)
    register_model("test_colour")(colour_net)
    yield
    registry._MODELS.clear()
    registry._MODELS.update(saved)


def colour_clip(seconds: float, switch: float | None, seed: int = 0, size: int = 64) -> np.ndarray:
    """Noisy red frames, turning blue at ``switch`` seconds (never when None)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    frames = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    cut = n if switch is None else int(switch * FPS)
    frames[:cut, ..., 0] += 180
    frames[cut:, ..., 2] += 180
    return frames


def predict_cfg(**values) -> PredictSettings:
    """The command's settings as Hydra builds and checks them (placeholder paths unless given)."""
    values = {"checkpoint": "c.pt", "input": "in", "output": "p.csv", "progress": False, "num_workers": 0,
              "batch_size": 4, **values}
    return PredictSettings.from_mapping(command_config("predict", **values))


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    recipe = dataclasses.replace(tiny_recipe("transform.size=32"), model=model_config("test_colour"))
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "colour.pt", CLASSES, recipe,
                           model=colour_net(len(CLASSES)))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "long.mp4", colour_clip(DURATION, SWITCH), fps=FPS)
    write_video(root / "sub" / "short.mp4", colour_clip(2, None, seed=1), fps=FPS)
    (root / "broken.mp4").write_text("not a video at all\n")
    return root


def read_timeline(path: Path) -> list[dict]:
    return [{**r, "start": float(r["start"]), "end": float(r["end"]), "score": float(r["score"])}
            for r in read_rows(path)]


def test_window_mode_finds_the_switch_and_writes_timelines(checkpoint, videos, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    cfg = predict_cfg(checkpoint=str(checkpoint), input=str(videos), output=str(out),
                      predict={"window": 4, "stride": 2})
    counts = run(cfg)
    assert counts == {"ok": 2, "error": 1, "partial": 0}
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert list(read_rows(out)[0])[-2:] == ["segments", "timeline"]

    long = rows["long.mp4"]
    assert long["status"] == "ok" and long["label"] == "red" and long["segments"] == "2"
    folder = tmp_path / "preds_timelines"
    assert Path(long["timeline"]) == folder / "long.mp4.csv"
    segments = read_timeline(folder / "long.mp4.csv")
    assert [s["label"] for s in segments] == ["red", "blue"]
    assert abs(segments[0]["end"] - SWITCH) <= 2 and segments[0]["end"] == segments[1]["start"]
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(DURATION)
    assert all(0.5 < s["score"] <= 1 for s in segments)
    assert (folder / "long.mp4.png").stat().st_size > 1000

    short = rows["short.mp4"]  # 2 s under a 4 s window: one window covering the whole clip
    assert short["label"] == "red" and short["segments"] == "1"
    only = read_timeline(folder / "sub" / "short.mp4.csv")
    assert len(only) == 1 and only[0]["start"] == 0 and only[0]["end"] == pytest.approx(2)

    broken = rows["broken.mp4"]
    assert broken["status"] == "error" and broken["error"].startswith("not a video") and not broken["timeline"]
    assert not (folder / "broken.mp4.csv").exists()
    assert "timelines" in capsys.readouterr().out

    before = out.read_bytes()  # a re-run skips every video that has a row, and so a timeline
    assert run(cfg) == {"ok": 0, "error": 0, "partial": 0} and out.read_bytes() == before


def test_merge_gives_each_window_the_time_nearest_its_centre():
    windows = [Segment(0, 4, "a", 0.9), Segment(2, 6, "a", 0.5), Segment(4, 8, "b", 0.8),
               Segment(6, 10, "b", 0.6), Segment(8, 10, "a", 1.0)]
    merged = merge_windows(windows)
    assert [(s.start, s.end, s.label) for s in merged] == [(0, 5, "a"), (5, 8.5, "b"), (8.5, 10, "a")]
    # window 1 owns [0, 3] and window 2 [3, 5]: the score is weighted by that time
    assert merged[0].score == pytest.approx((0.9 * 3 + 0.5 * 2) / 5)
    assert merged[1].score == pytest.approx((0.8 * 2 + 0.6 * 1.5) / 3.5)
    assert merge_windows([]) == []


def test_window_spans_cover_every_frame():
    config = WindowConfig(4, 2)
    assert window_spans(200, 10, config) == [(s, 40) for s in range(0, 161, 20)]
    assert window_spans(205, 10, config)[-1] == (165, 40)  # the last window ends with the video
    assert window_spans(15, 10, config) == [(0, 15)]


@pytest.mark.parametrize(("values", "message"), [
    ({"window": 0}, r"^predict.window=0: must be a number > 0$"),
    ({"window": 2, "stride": 3}, r"^predict.stride=3: use at most predict.window \(2\) so no time is unseen$"),
    ({"stride": 1}, r"^predict.stride=1: only used with predict.window=SECONDS$")])
def test_bad_window_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        predict_cfg(predict=values)
    with pytest.raises(ConfigError, match=message):
        window_config(values.get("window"), values.get("stride"))


def test_window_defaults():
    assert predict_cfg().predict is None
    assert predict_cfg(predict={"window": 3}).predict == WindowConfig(3.0, 1.5)
    assert window_config(None, None) is None


def test_a_cut_video_gets_the_timeline_of_what_decodes(checkpoint, tmp_path):
    from tests.test_predict import faststart_copy

    whole = write_video(tmp_path / "whole.mp4", colour_clip(DURATION, SWITCH, seed=2), fps=FPS)
    head_first = faststart_copy(whole, tmp_path / "head_first.mp4").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.mp4").write_bytes(head_first[: len(head_first) // 2])
    out = tmp_path / "p.csv"
    assert run(predict_cfg(checkpoint=str(checkpoint), input=str(tmp_path / "in" / "cut.mp4"), output=str(out),
                           predict={"window": 4}))["partial"] == 1
    row = read_rows(out)[0]
    n = int(row["num_frames"])
    assert row["status"] == "ok" and 0 < n < DURATION * FPS and row["warning"].startswith("partly decoded")
    segments = read_timeline(Path(row["timeline"]))
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(n / FPS)


def test_window_mode_reads_a_video_without_an_index_front_to_back_once(tmp_path, monkeypatch):
    """An mkv has no seek index: each batch of windows used to decode it again from frame 0."""
    import behavior.video.pyav_reader as pyav_reader
    from behavior.data.pipeline import ClipPipeline
    from behavior.data.sampling import SamplingConfig
    from behavior.data.transforms import TransformConfig, build_transform
    from behavior.predict.window_stream import WindowFrames
    from behavior.video import open_video
    from tests.conftest import moving_square_clip

    video = write_video(tmp_path / "long.mkv", moving_square_clip(0, seed=2, num_frames=240), fps=24)
    transform = TransformConfig.preset("default", size=32, crop_size=32)
    pipeline = ClipPipeline(SamplingConfig.preset("tsn", num_frames=4), transform, "pyav")
    evaluate = build_transform(transform, False)
    spans = window_spans(240, 24.0, WindowConfig(1.0, 0.25))
    with open_video(str(video), "pyav") as reader:  # the views read the old way, window by window
        assert not reader.scan.indexed
        expected = torch.stack([torch.stack([evaluate(reader.get_frames(view)) for view in views])
                                for views in WindowFrames(reader, spans, pipeline, evaluate).views])
    opened, decoded = [], []
    open_container, frames_of = pyav_reader.open_container, pyav_reader.PyAVReader._frames
    monkeypatch.setattr(pyav_reader, "open_container", lambda path: opened.append(path) or open_container(path))

    def counted(self, container, skip=False):
        for frame in frames_of(self, container, skip):
            decoded.append(1)
            yield frame

    monkeypatch.setattr(pyav_reader.PyAVReader, "_frames", counted)
    with open_video(str(video), "pyav") as reader:
        opened.clear()
        frames, got, held = WindowFrames(reader, spans, pipeline, evaluate), [], []
        for at in range(0, len(spans), 4):
            got.append(frames.batch(range(at, min(at + 4, len(spans)))))
            held.append(len(frames.held))
    assert len(opened) == 1 and len(decoded) <= 240  # one pass, never from the first frame again
    assert max(held) <= 2 * 4  # about one window's sampled frames held, whatever the video's length
    assert torch.equal(torch.cat(got), expected)


def test_the_window_speed_benchmark_runs_and_prints_its_table(capsys):
    from behavior.predict.window_speed import main

    main(["--seconds", "3", "--containers", "mkv"])
    out = capsys.readouterr().out
    assert "| 3 | mkv |" in out and "x |" in out


HUNG = 3600  # the fake decoder sleeps this long; the bounded wait ends in seconds
SECONDS, LONG_SWITCH = 30, 17
WINDOWS = SECONDS - 1  # window 2 s, stride 1 s


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    with VideoWriter(path, 64, 64, FPS, keyframe_every=2 * FPS) as writer:  # keyframes a worker can start from
        for frame in colour_clip(SECONDS, LONG_SWITCH, seed=3):
            writer.write(frame)
    return path


def window_cfg(checkpoint: Path, video: Path, out: Path, **values):
    """Window mode as the command runs it: two workers, each decoding its half of a video's windows."""
    values = {"num_workers": 2, "batch_size": 2, **values}
    return predict_cfg(checkpoint=str(checkpoint), input=str(video), output=str(out),
                       predict={"window": 2, "stride": 1}, **values)


def uninterrupted(checkpoint: Path, video: Path, folder: Path) -> tuple[bytes, dict]:
    out = folder / "whole.csv"
    assert run(window_cfg(checkpoint, video, out))["ok"] == 1
    row = read_rows(out)[0]
    return Path(row["timeline"]).read_bytes(), row


def counting_windows(monkeypatch) -> list[int]:
    import behavior.engine.inference as inference

    seen, probabilities = [], inference.Classifier.probabilities

    def counted(self, videos):
        seen.append(len(videos))
        return probabilities(self, videos)

    monkeypatch.setattr(inference.Classifier, "probabilities", counted)
    return seen


@pytest.mark.parametrize("how", ["after the third batch", "mid-row"])
def test_a_killed_window_run_goes_on_from_its_last_window_to_the_same_timeline(checkpoint, long_video, tmp_path,
                                                                               monkeypatch, capsys, how):
    whole, whole_row = uninterrupted(checkpoint, long_video, tmp_path)
    out = tmp_path / "killed.csv"
    real_add = PartialTimeline.add

    def arm() -> None:
        added = [0]

        def add(self, spans, probs):
            added[0] += 1
            if how == "mid-row" and added[0] == 2:  # killed while writing the second batch, in its last number
                self._file.write(self._lines(spans, probs)[:-3])
                self._file.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            real_add(self, spans, probs)
            if added[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9 once the third batch is on disk: no finally runs

        PartialTimeline.add = add

    assert in_child(lambda: run(window_cfg(checkpoint, long_video, out)), arm) == "signal 9"
    part = tmp_path / "killed_timelines" / "long.mp4.csv.part"
    lines = part.read_text().split("\n")
    kept = 3 * 2 if how == "after the third batch" else 2 + 1  # the second batch's first row is whole
    assert len(lines) - 2 == kept and (how == "mid-row") == (lines[-1] != "")  # header, rows, then a torn row or ""
    assert not out.exists() or len(read_rows(out)) == 0

    capsys.readouterr()
    seen = counting_windows(monkeypatch)
    assert run(window_cfg(checkpoint, long_video, out))["ok"] == 1
    said = capsys.readouterr().out
    assert f"{kept} of {WINDOWS} windows were finished by an interrupted run" in said
    assert sum(seen) == WINDOWS - kept  # the finished windows were not classified again
    row = read_rows(out)[0]
    assert Path(row["timeline"]).read_bytes() == whole
    assert {k: v for k, v in row.items() if k not in ("timeline",)} == \
        {k: v for k, v in whole_row.items() if k not in ("timeline",)}
    assert not part.exists()


def test_a_partial_timeline_of_another_checkpoint_or_video_is_started_again(checkpoint, long_video, tmp_path):
    part = PartialTimeline(tmp_path / "v.csv.part", str(long_video), "checkpoint A", CLASSES)
    part.begin(WHOLE_FRAME, [])
    part.add([(0, 20), (10, 20)], np.array([[0.25, 0.75], [0.5, 0.5]], np.float32))
    part.close()
    again = PartialTimeline(part.path, str(long_video), "checkpoint A", CLASSES).load()
    assert again.spans == [(0, 20), (10, 20)] and np.array_equal(np.stack(again.probs), [[0.25, 0.75], [0.5, 0.5]])
    assert again.region == WHOLE_FRAME
    assert PartialTimeline(part.path, str(long_video), "checkpoint B", CLASSES).load().spans == []
    os.utime(long_video, ns=(time.time_ns(), time.time_ns()))  # the video changed since
    assert PartialTimeline(part.path, str(long_video), "checkpoint A", CLASSES).load().spans == []


def test_a_decoder_hanging_part_way_costs_an_error_row_and_keeps_the_windows_before(checkpoint, long_video,
                                                                                     tmp_path, monkeypatch):
    import behavior.video.pyav_reader as pyav_reader

    parent, real_read = os.getpid(), pyav_reader.PyAVReader._read

    def read_or_hang(self, indices):
        if max(indices) >= LONG_SWITCH * FPS and os.getpid() != parent:  # the worker hangs past 17 s
            time.sleep(HUNG)
        return real_read(self, indices)

    monkeypatch.setattr(pyav_reader.PyAVReader, "_read", read_or_hang)
    out = tmp_path / "hung.csv"
    start = time.monotonic()
    counts = run(window_cfg(checkpoint, long_video, out, decode={"timeout": 1.5}, num_workers=1))
    assert time.monotonic() - start < HUNG / 30  # the bound fired: far from the hour-long hang, on any load
    assert counts["error"] == 1
    row = read_rows(out)[0]
    assert row["status"] == "error" and row["error"].startswith("decoding timed out after 1.5s (abandoned) after ")
    assert "the timeline covers the" in row["error"]
    segments = read_rows(Path(row["timeline"]))
    end = float(segments[-1]["end"])
    assert 8 <= end <= LONG_SWITCH and segments[0]["label"] == "red"  # the windows decoded before the hang
    assert not Path(row["timeline"] + ".part").exists()


@pytest.mark.parametrize("container, workers", [("mkv", 0), ("mkv", 1), ("mkv", 2), ("ts", 2)])
def test_a_matroska_or_ts_copy_gives_the_timeline_of_the_mp4(checkpoint, long_video, tmp_path, container, workers):
    """Whether the video is decoded here, by one worker, or by two from two places, the timeline is the same. An mkv
    has no full index: the second worker seeks through its cues; a .ts has none at all: it decodes from the start."""
    whole, _ = uninterrupted(checkpoint, long_video, tmp_path)
    copy = remux(long_video, tmp_path / f"long.{container}")
    out = tmp_path / "copy.csv"
    assert run(window_cfg(checkpoint, copy, out, num_workers=workers))["ok"] == 1
    assert Path(read_rows(out)[0]["timeline"]).read_bytes() == whole
