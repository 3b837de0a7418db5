"""behavior.predict: one row per file whatever the file, crash-safe appends and resume, refusals that touch nothing."""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from behavior.data.scan import VIDEO_EXTENSIONS
from behavior.engine.inference import PredictDataset, load_classifier
from behavior.errors import ConfigError, DataError
from behavior.predict.batch import PredictSettings, run
from behavior.predict.predictions import PredictionsFile, columns_for, csv_line
from behavior.provenance import git_commit, package_version
from behavior.video import open_leading_frames, open_video
from behavior.video.writer import remux, write_video
from tests.conftest import REPO, moving_square_clip
from tests.helpers import command_config, tiny_checkpoint

CLASSES = ["left", "right", "up"]
# The fake decoder sleeps this long; a bounded wait ends in seconds, so a margin of minutes survives a loaded CI
# machine and still tells a fired guard from a hang.
HUNG = 3600


def predict_proc(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "behavior.predict", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def predict_cfg(**values) -> PredictSettings:
    """The command's settings as Hydra builds and checks them, for calling ``run`` in this process."""
    return PredictSettings.from_mapping(command_config("predict", **{"progress": False, "num_workers": 0, **values}))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny model saved the way behavior.train saves one: predict only needs it to run."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", CLASSES)


def faststart_copy(src: Path, dst: Path) -> Path:
    """The same stream with its index written first: cut short, it still opens and its first frames decode."""
    return remux(src, dst, {"movflags": "faststart"})


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder of good, damaged, odd and fake clips; file name -> expected status and start of the message."""
    root = tmp_path_factory.mktemp("mixed")
    clips = root / "clips"
    expected = {}
    for i, name in enumerate(["a.mp4", "b.avi", "sub/deeper/c.mkv", "odd näme ü.mp4"]):
        write_video(clips / name, moving_square_clip(i, seed=i), fps=12)
        expected[name] = "ok:"
    long = write_video(root / "long.mp4", moving_square_clip(0, seed=9, num_frames=48), fps=12)
    data = long.read_bytes()
    (clips / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov is written last: its index is gone
    expected["cut.mp4"] = "error:truncated"
    head_first = faststart_copy(long, root / "head_first.mp4").read_bytes()
    (clips / "partly.mp4").write_bytes(head_first[: len(head_first) // 2])
    expected["partly.mp4"] = "ok:partly decoded: classified from the first"
    garbled = bytearray(data)  # same size, but the data of later frames overwritten with junk
    start, stop = len(data) // 2, len(data) * 4 // 5
    garbled[start:stop] = np.random.default_rng(0).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    (clips / "garbled.mp4").write_bytes(bytes(garbled))
    expected["garbled.mp4"] = "ok:partly decoded: classified from the first"
    (clips / "empty.mp4").write_bytes(b"")
    expected["empty.mp4"] = "error:empty file"
    (clips / "notes.mp4").write_text("not a video at all\n")
    expected["notes.mp4"] = "error:not a video"
    os.symlink("self.mp4", clips / "self.mp4")  # a symlink loop on a file...
    expected["self.mp4"] = "error:broken symlink"
    os.symlink("..", clips / "sub" / "up")  # ...and on a folder: scanned once
    (clips / "readme.txt").write_text("not scanned")
    if os.geteuid() != 0:  # root reads chmod 000 files; test_unreadable_file_is_an_error_row simulates it
        locked = write_video(clips / "locked.mp4", moving_square_clip(0, seed=7), fps=12)
        locked.chmod(0)
        expected["locked.mp4"] = "error:permission denied"
    return clips, expected


@pytest.mark.slow
def test_mixed_folder_one_row_per_file_and_rerun_adds_nothing(checkpoint, mixed, tmp_path):
    clips, expected = mixed
    out = tmp_path / "preds.csv"
    args = [f"checkpoint={checkpoint}", f"input={clips}", f"output={out}", "num_workers=2", "batch_size=4",
            "progress=false"]
    proc = predict_proc(*args)
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    assert collections.Counter(r["path"] for r in rows) == collections.Counter(
        os.path.abspath(clips / name) for name in expected)
    for row in rows:
        status, message = expected[Path(row["path"]).relative_to(clips).as_posix()].split(":", 1)
        assert row["status"] == status, row
        if status == "ok":
            assert row["label"] in CLASSES and row["label"] == row["label_1"] and 0 < float(row["score"]) <= 1
            assert [row[f"label_{i}"] for i in (1, 2, 3)] != [""] * 3 and int(row["num_frames"]) > 0
            assert (row["warning"].startswith(message) if message else row["warning"] == "") and not row["error"]
        else:
            assert row["error"].startswith(message) and not row["label"] and "\n" not in row["error"]
    partly = next(r for r in rows if r["path"].endswith("partly.mp4"))
    assert int(partly["num_frames"]) < 48 and f"first {partly['num_frames']} of 48 frames" in partly["warning"]
    n_failed = sum(v.startswith("error") for v in expected.values())
    assert f"{len(expected) - n_failed} clip(s) ok (2 partly decoded), {n_failed} failed" in proc.stdout
    assert "clips/s" in proc.stdout

    before = out.read_bytes()
    again = predict_proc(*args)
    assert again.returncode == 0 and out.read_bytes() == before
    assert f"{len(expected)} already in preds.csv" in again.stdout


@pytest.mark.slow
def test_killed_run_resumes_with_exactly_one_row_per_clip(checkpoint, tmp_path):
    clip = write_video(tmp_path / "one.mp4", moving_square_clip(1, seed=3), fps=12).read_bytes()
    folder = tmp_path / "many"
    folder.mkdir()
    n = 300
    for i in range(n):
        (folder / f"clip {i:03d}.mp4").write_bytes(clip)
    out = tmp_path / "preds.csv"
    args = [sys.executable, "-m", "behavior.predict", f"checkpoint={checkpoint}", f"input={folder}",
            f"output={out}", "progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "batch_size=1", "num_workers=0"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not out.exists() or out.read_bytes().count(b"\n") < 6:  # header + 5 rows
            assert proc.poll() is None and time.monotonic() < deadline, "predict ended before it could be killed"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    written = len(read_rows(out))
    assert 5 <= written < n - 1
    with open(out, "ab") as f:  # what a crash in the middle of a write leaves: half a row
        f.write(f"{folder / 'clip 299.mp4'},ok,le".encode())

    resumed = subprocess.run([*args, "batch_size=8", "num_workers=1"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{written} already in preds.csv, {n - written} to classify" in resumed.stdout
    counts = collections.Counter(r["path"] for r in read_rows(out))
    assert set(counts) == {os.path.abspath(folder / f"clip {i:03d}.mp4") for i in range(n)}
    assert set(counts.values()) == {1}
    assert all(r["status"] == "ok" for r in read_rows(out))


@pytest.mark.parametrize("override, key", [("decode.timeout=0", "decode.timeout"), ("top_k=0", "top_k"),
                                           ("decode.timeot=5", "decode.timeot is not a known key")])
@pytest.mark.slow
def test_bad_settings_are_one_line_and_exit_2(checkpoint, mixed, tmp_path, override, key):
    out = tmp_path / "preds.csv"
    proc = predict_proc(f"checkpoint={checkpoint}", f"input={mixed[0]}", f"output={out}", override)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["checkpoint", "input"])
def test_missing_checkpoint_or_input_is_one_line_and_exit_2(checkpoint, mixed, tmp_path, missing):
    paths = {"checkpoint": checkpoint, "input": mixed[0], missing: tmp_path / f"no_such_{missing}"}
    out = tmp_path / "preds.csv"
    proc = predict_proc(f"checkpoint={paths['checkpoint']}", f"input={paths['input']}", f"output={out}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and f"no_such_{missing}" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_foreign_output_is_refused_and_left_untouched(checkpoint, mixed, tmp_path):
    foreign = tmp_path / "results.csv"
    foreign.write_bytes(b"name,score\r\nmine,1\r\n")
    proc = predict_proc(f"checkpoint={checkpoint}", f"input={mixed[0]}", f"output={foreign}")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(foreign) in proc.stderr
    assert foreign.read_bytes() == b"name,score\r\nmine,1\r\n"


def test_jsonl_output_caps_top_k_at_the_class_count(checkpoint, mixed, tmp_path, capsys):
    clips, expected = mixed
    out = tmp_path / "preds.jsonl"
    counts = run(predict_cfg(checkpoint=str(checkpoint), input=str(clips), output=str(out), top_k=5))
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(expected) == counts["ok"] + counts["error"]
    assert list(records[0]) == columns_for(len(CLASSES))
    ok = [r for r in records if r["status"] == "ok"]
    assert ok and all(isinstance(r["score"], float) and isinstance(r["num_frames"], int) for r in ok)
    assert all(r["label"] is None and r["error"] for r in records if r["status"] == "error")
    assert any(r["path"].endswith("odd näme ü.mp4") for r in ok)
    assert "predict:" in capsys.readouterr().out


def test_other_columns_and_edited_files_are_refused(checkpoint, mixed, tmp_path):
    clips, _ = mixed
    out = tmp_path / "preds.csv"
    out.write_text(csv_line(columns_for(2)))
    with pytest.raises(DataError, match="other columns"):
        run(predict_cfg(checkpoint=str(checkpoint), input=str(clips), output=str(out)))
    columns = columns_for(3)
    row = [str(clips / "a.mp4"), "ok", *["x"] * (len(columns) - 2)]
    edited = csv_line(columns) + csv_line(row) + "one,more\r\nrow,here\r\n"
    out.write_bytes(edited.encode())
    with pytest.raises(DataError, match="row 3 is not as behavior.predict writes it"):
        PredictionsFile(out, columns).open()
    assert out.read_bytes() == edited.encode()


def test_torn_row_with_an_odd_name_is_cut_and_redone(tmp_path):
    columns = columns_for(1)
    odd = "/clips/new\nline, \"quoted\" \udcff.mp4"  # newline, comma, quotes, a byte that is not UTF-8
    out = PredictionsFile(tmp_path / "p.csv", columns).open()
    out.write(dict.fromkeys(columns, "") | {"path": odd, "status": "error", "error": "x"})
    out.write(dict.fromkeys(columns, "") | {"path": "/clips/b.mp4", "status": "ok"})
    out.close()
    whole = (tmp_path / "p.csv").read_bytes()
    (tmp_path / "p.csv").write_bytes(whole[:-5])  # the last row loses its end
    again = PredictionsFile(tmp_path / "p.csv", columns).open()
    again.close()
    assert again.done == {odd} and again.torn
    assert (tmp_path / "p.csv").read_bytes() == whole[: whole.index(b"/clips/b.mp4")]


@pytest.mark.parametrize("existing", [False, True])
def test_a_folder_without_videos_is_one_line_and_exit_2_touching_nothing(checkpoint, tmp_path, monkeypatch, capsys,
                                                                         existing):
    folder = tmp_path / "no videos"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "notes.txt").write_text("not a clip")
    out = tmp_path / "p.csv"
    if existing:  # a predictions file of an earlier run is left as it was, not even opened for appending
        out.write_text(csv_line(columns_for(len(CLASSES))))
        before = snapshot(out)
    files = sorted(tmp_path.rglob("*"))
    code, stdout, err = predict_main(monkeypatch, capsys, f"checkpoint={checkpoint}", f"input={folder}",
                                     f"output={out}")
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: input={folder}: no video files with the extensions .")
    assert ".mp4" in lines[0]
    assert (snapshot(out) == before) if existing else not out.exists()
    assert sorted(tmp_path.rglob("*")) == files  # no provenance record either


def test_the_inputs_line_says_one_clip_or_counts_them(checkpoint, two_clips, tmp_path, capsys):
    clip = sorted(two_clips.rglob("*.mp4"))[0]
    run(predict_cfg(checkpoint=str(checkpoint), input=str(clip), output=str(tmp_path / "one.csv")))
    assert f"1 clip: {clip}: 0 already in one.csv, 1 to classify" in capsys.readouterr().out
    run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(tmp_path / "two.csv")))
    assert f"2 clips under {two_clips}: 0 already in two.csv, 2 to classify" in capsys.readouterr().out
    folder = tmp_path / "single"
    folder.mkdir()
    (folder / clip.name).write_bytes(clip.read_bytes())
    run(predict_cfg(checkpoint=str(checkpoint), input=str(folder), output=str(tmp_path / "single.csv")))
    assert f"1 clip under {folder}: 0 already" in capsys.readouterr().out


def test_unreadable_file_is_an_error_row(checkpoint, mixed, monkeypatch):
    clips, _ = mixed
    target = str(clips / "a.mp4")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != target and real_access(p, mode, **kw))
    classifier = load_classifier(str(checkpoint), torch.device("cpu"))
    assert PredictDataset([target], classifier.pipeline)[0] == ("error", 0, "permission denied")


def test_downscale_on_decode_and_leading_frames(tmp_path):
    frames = moving_square_clip(0, seed=1, num_frames=24, size=96)
    path = write_video(tmp_path / "c.mp4", frames, fps=12)
    with open_video(path, max_short_side=48) as small, open_video(path) as full:
        assert small.frame_size == (48, 48) and tuple(small.get_frames([0, 23]).shape) == (2, 48, 48, 3)
        shrunk = torch.nn.functional.interpolate(full.get_frames([5]).permute(0, 3, 1, 2).float(), size=(48, 48),
                                                 mode="bilinear", antialias=True)
        assert (small.get_frames([5]).permute(0, 3, 1, 2).float() - shrunk).abs().mean() < 6
    with open_video(path, max_short_side=500) as same:
        assert same.frame_size == (96, 96)
    head_first = faststart_copy(path, tmp_path / "h.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(head_first[: len(head_first) * 2 // 3])
    with open_leading_frames(tmp_path / "cut.mp4") as reader, open_video(path) as full:
        n = len(reader)
        assert 0 < n < 24 and reader.scan.promised == 24
        assert torch.equal(reader.get_frames(range(n)), full.get_frames(range(n)))


def test_config_extensions_match_the_scanner():
    assert tuple(OmegaConf.load(REPO / "conf" / "predict.yaml").extensions) == VIDEO_EXTENSIONS


def test_jsonl_torn_line_is_cut_and_foreign_jsonl_refused(tmp_path):
    columns = columns_for(1)
    out = PredictionsFile(tmp_path / "p.jsonl", columns).open()
    for name in ("a", "b"):
        out.write(dict.fromkeys(columns) | {"path": f"/clips/{name}.mp4", "status": "ok"})
    out.close()
    whole = (tmp_path / "p.jsonl").read_bytes()
    (tmp_path / "p.jsonl").write_bytes(whole[:-7])
    again = PredictionsFile(tmp_path / "p.jsonl", columns).open()
    again.close()
    assert again.done == {"/clips/a.mp4"} and (tmp_path / "p.jsonl").read_bytes() == whole[: whole.index(b"\n") + 1]
    (tmp_path / "other.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="not a predictions file"):
        PredictionsFile(tmp_path / "other.jsonl", columns).open()
    assert (tmp_path / "other.jsonl").read_text() == '{"id": 1}\n'


def test_a_crashing_decoder_costs_one_error_row(checkpoint, mixed, monkeypatch):
    """A worker that dies (decord can crash instead of raising) must not take the other clips with it."""
    import behavior.engine.inference as inference

    clips, _ = mixed
    parent, real_load = os.getpid(), inference.load_clip

    def load_or_die(path, *args):
        if path.endswith("b.avi") and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_load(path, *args)

    monkeypatch.setattr(inference, "load_clip", load_or_die)
    classifier = load_classifier(str(checkpoint), torch.device("cpu"))
    paths = [str(clips / n) for n in ("a.mp4", "b.avi", "odd näme ü.mp4", "sub/deeper/c.mkv")]
    results = [r for batch in inference.classify_paths(classifier, paths, batch_size=2, num_workers=1) for r in batch]
    assert [r.path for r in results] == paths
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].error.startswith("decoder crashed")


@pytest.mark.slow
def test_a_clip_that_hangs_the_decoder_costs_one_error_row(checkpoint, mixed, monkeypatch):
    import behavior.engine.inference as inference

    clips, _ = mixed
    parent, real_load = os.getpid(), inference.load_clip

    def load_or_hang(path, *args):
        if path.endswith("b.avi") and os.getpid() != parent:
            time.sleep(HUNG)
        return real_load(path, *args)

    monkeypatch.setattr(inference, "load_clip", load_or_hang)
    classifier = load_classifier(str(checkpoint), torch.device("cpu"))
    paths = [str(clips / n) for n in ("a.mp4", "b.avi", "odd näme ü.mp4", "sub/deeper/c.mkv")]
    start = time.monotonic()
    results = [r for batch in inference.classify_paths(classifier, paths, batch_size=2, num_workers=1, timeout=1.5)
               for r in batch]
    assert time.monotonic() - start < HUNG / 30  # the guard fired: far from the hour-long hang, on any load
    assert [r.path for r in results] == paths
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].error == "decoding timed out after 1.5s (abandoned)"


# Provenance: <output>.provenance.json names the checkpoint and settings; a resume with others is refused.

@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    """The same model with other weights: another checkpoint with the same columns."""
    return tiny_checkpoint(tmp_path_factory.mktemp("other") / "other.pt", CLASSES, seed=1)


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("two")
    for i in range(2):
        write_video(folder / f"c{i}.mp4", moving_square_clip(i, seed=i), fps=12)
    return folder


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(*paths: Path) -> dict:
    return {p.name: (sha(p), p.stat().st_mtime_ns) for p in paths}


def predict_main(monkeypatch, capsys, *overrides: str) -> tuple[int, str, str]:
    """The command line in this process: exit status, stdout, stderr."""
    from behavior.predict.__main__ import main

    monkeypatch.setattr(sys, "argv", ["behavior.predict", "progress=false", "num_workers=0", *overrides])
    try:
        main()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_provenance_record_is_written_with_the_output(checkpoint, two_clips, tmp_path):
    out = tmp_path / "preds.csv"
    run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    record = json.loads((tmp_path / "preds.csv.provenance.json").read_text())
    assert record["format"] == 1 and record["checkpoint"] == {
        "path": str(checkpoint), "absolute": os.path.abspath(checkpoint), "sha256": sha(checkpoint)}
    assert record["settings"] == {"num_views": 1, "decode.backend": "pyav", "decode.max_short_side": 80,
                                  "roi": "none", "predict.window": None, "predict.stride": None, "top_k": 3}
    assert record["version"] == package_version() and record["git_commit"] == git_commit()
    assert record["created"] and record["unknown_provenance_rows"] == 0
    assert [r["status"] for r in read_rows(out)] == ["ok", "ok"]  # the rows are as they always were


def test_another_checkpoint_is_refused_in_one_line_touching_nothing(checkpoint, other_checkpoint, two_clips,
                                                                   tmp_path, monkeypatch, capsys):
    out, record = tmp_path / "preds.csv", tmp_path / "preds.csv.provenance.json"
    args = [f"input={two_clips}", f"output={out}"]
    assert predict_main(monkeypatch, capsys, f"checkpoint={checkpoint}", *args)[0] == 0
    with open(out, "ab") as f:  # a torn row: a resume would cut it, a refusal must not
        f.write(f"{two_clips / 'c9.mp4'},ok,le".encode())
    before = snapshot(out, record)

    import behavior.predict.batch as predict

    monkeypatch.setattr(predict, "classify_paths", lambda *a, **k: pytest.fail("a clip was decoded"))
    code, stdout, stderr = predict_main(monkeypatch, capsys, f"checkpoint={other_checkpoint}", *args)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: output ")
    for path in (checkpoint, other_checkpoint):
        assert f"{path} (sha256 {sha(path)[:12]})" in stderr
    assert "left untouched" in stderr and "on_mismatch=new" in stderr and "preds-2.csv" in stderr
    assert snapshot(out, record) == before and not (tmp_path / "preds-2.csv").exists()


def test_same_checkpoint_resumes_whatever_its_path_or_the_null_settings(checkpoint, two_clips, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    before = snapshot(out, tmp_path / "preds.csv.provenance.json")
    copy = tmp_path / "copy.pt"
    copy.write_bytes(checkpoint.read_bytes())
    capsys.readouterr()
    counts = run(predict_cfg(checkpoint=str(copy), input=str(two_clips), output=str(out), num_views=1, top_k=7,
                             decode={"backend": "pyav"}))  # what null and a capped top_k resolve to: the same
    assert counts["ok"] == 0 and "2 already in preds.csv, 0 to classify" in capsys.readouterr().out
    assert snapshot(out, tmp_path / "preds.csv.provenance.json") == before


@pytest.mark.parametrize("values, said", [
    ({"num_views": 2}, "was written with num_views=1; this run gives num_views=2"),
    ({"top_k": 2}, "was written with top_k=3; this run gives top_k=2"),
    ({"decode": {"max_short_side": None}}, "decode.max_short_side=80; this run gives decode.max_short_side=null")])
def test_another_setting_is_refused_naming_the_key(checkpoint, two_clips, tmp_path, values, said):
    out = tmp_path / "preds.jsonl"
    run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    before = snapshot(out, tmp_path / "preds.jsonl.provenance.json")
    with pytest.raises(DataError, match="left untouched") as refusal:
        run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out), **values))
    assert said in str(refusal.value) and "\n" not in str(refusal.value)
    assert snapshot(out, tmp_path / "preds.jsonl.provenance.json") == before


def test_on_mismatch_new_writes_the_first_free_numbered_file(checkpoint, other_checkpoint, two_clips, tmp_path,
                                                             capsys):
    out = tmp_path / "preds.csv"
    run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    before = snapshot(out, tmp_path / "preds.csv.provenance.json")
    (tmp_path / "preds-2.csv").write_text("someone else's file\n")  # taken: not ours
    capsys.readouterr()
    counts = run(predict_cfg(checkpoint=str(other_checkpoint), input=str(two_clips), output=str(out),
                             on_mismatch="new"))
    said = capsys.readouterr().out
    assert counts["ok"] == 2 and f"writing to {tmp_path / 'preds-3.csv'} instead (on_mismatch=new)" in said
    assert "0 already in preds-3.csv" in said and f"predictions in {tmp_path / 'preds-3.csv'}" in said
    assert json.loads((tmp_path / "preds-3.csv.provenance.json").read_text())["checkpoint"]["sha256"] == sha(
        other_checkpoint)
    assert len(read_rows(tmp_path / "preds-3.csv")) == 2 and snapshot(out, tmp_path / "preds.csv.provenance.json") \
        == before and (tmp_path / "preds-2.csv").read_text() == "someone else's file\n"
    # The same command again resumes the file it wrote rather than starting a fourth.
    run(predict_cfg(checkpoint=str(other_checkpoint), input=str(two_clips), output=str(out), on_mismatch="new"))
    assert "2 already in preds-3.csv" in capsys.readouterr().out and not (tmp_path / "preds-4.csv").exists()


def test_output_of_an_older_version_resumes_with_a_warning_and_gets_a_record(checkpoint, other_checkpoint,
                                                                           two_clips, tmp_path, capsys):
    out, record = tmp_path / "preds.csv", tmp_path / "preds.csv.provenance.json"
    (two_clips / "c0.mp4").rename(tmp_path / "later.mp4")  # the older run saw one clip
    try:
        run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    finally:
        (tmp_path / "later.mp4").rename(two_clips / "c0.mp4")
    record.unlink()
    rows = out.read_bytes()
    capsys.readouterr()
    counts = run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    stdout, stderr = capsys.readouterr()
    assert counts["ok"] == 1 and "1 already in preds.csv, 1 to classify" in stdout
    warning = [line for line in stderr.splitlines() if "provenance" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: preds.csv has no provenance record")
    assert "1 row(s) is unknown" in warning[0] and sha(checkpoint)[:12] in warning[0]
    assert out.read_bytes().startswith(rows) and len(read_rows(out)) == 2
    saved = json.loads(record.read_text())
    assert saved["checkpoint"]["sha256"] == sha(checkpoint) and saved["unknown_provenance_rows"] == 1
    with pytest.raises(DataError, match="not of checkpoint"):  # from now on the record holds
        run(predict_cfg(checkpoint=str(other_checkpoint), input=str(two_clips), output=str(out)))


def test_an_unreadable_record_is_refused(checkpoint, two_clips, tmp_path):
    out, record = tmp_path / "preds.csv", tmp_path / "preds.csv.provenance.json"
    run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    record.write_text("{not json")
    before = snapshot(out, record)
    with pytest.raises(DataError, match="preds.csv.provenance.json that is not as behavior.predict writes it"):
        run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(out)))
    assert snapshot(out, record) == before


def test_on_mismatch_is_checked(checkpoint, two_clips, tmp_path):
    with pytest.raises(ConfigError, match="on_mismatch=overwrite: choose one of refuse, new"):
        run(predict_cfg(checkpoint=str(checkpoint), input=str(two_clips), output=str(tmp_path / "p.csv"),
                        on_mismatch="overwrite"))
    assert not (tmp_path / "p.csv").exists()
