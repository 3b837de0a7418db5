"""behavior.predict under torchrun: each file once, rows as one process writes them, resumable after any rank's kill."""

from __future__ import annotations

import collections
import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from behavior.predict.batch import run
from behavior.predict.predictions import PredictionsFile, columns_for, csv_line
from behavior.predict.sharded import fold, leftover_parts, part_path
from behavior.video.writer import write_video
from tests.conftest import REPO, make_clip_tree, moving_square_clip
from tests.helpers import tiny_checkpoint, torchrun_command, torchrun_env
from tests.test_predict import predict_cfg

CLASSES = ["left", "right", "up"]
COLUMNS = columns_for(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", CLASSES)


def torchrun(*overrides: str, nproc: int = 2, **popen) -> list[str] | subprocess.Popen:
    """``torchrun --nproc_per_node=N -m behavior.predict`` (the venv's, this checkout's code): the command, or with
    ``popen`` options the started process."""
    command = torchrun_command("behavior.predict", "progress=false", "num_workers=0", *overrides, processes=nproc)
    return subprocess.Popen(command, cwd=REPO, env=torchrun_env(), **popen) if popen else command


def torchrun_done(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun(*overrides), cwd=REPO, env=torchrun_env(), capture_output=True, text=True,
                          timeout=240)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Six good clips and two that are not videos."""
    root = make_clip_tree(tmp_path_factory.mktemp("dist") / "clips", CLASSES, per_class=2)
    (root / "junk.mp4").write_bytes(os.urandom(2000))
    (root / "left" / "empty.mp4").write_bytes(b"")
    return root


def by_path(rows: list[dict]) -> dict[str, dict]:
    counts = collections.Counter(row["path"] for row in rows)
    assert set(counts.values()) == {1}, [p for p, n in counts.items() if n > 1]
    return {row["path"]: row for row in rows}


def same_rows(one: dict[str, dict], many: dict[str, dict]) -> None:
    assert set(one) == set(many)
    for path, row in one.items():
        other = many[path]
        assert (other["status"], other["label"], other["error"]) == (row["status"], row["label"], row["error"])
        if row["status"] == "ok":
            assert abs(float(other["score"]) - float(row["score"])) < 1e-5
        assert list(other) == list(row)  # the same columns in the same order


@pytest.mark.slow
def test_two_processes_write_each_file_once_with_the_rows_of_one(checkpoint, clips, tmp_path, capsys):
    alone, together = tmp_path / "alone.csv", tmp_path / "together.csv"
    run(predict_cfg(checkpoint=str(checkpoint), input=str(clips), output=str(alone)))
    proc = torchrun_done(f"checkpoint={checkpoint}", f"input={clips}", f"output={together}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_rows(by_path(read_rows(alone)), by_path(read_rows(together)))
    assert not leftover_parts(together) and (tmp_path / "together.csv.provenance.json").is_file()
    # Rank 0 alone speaks: one inputs line, one summary, no rank's warnings twice.
    assert proc.stdout.count("8 clips under") == 1 and "8 to classify by 2 processes" in proc.stdout
    assert proc.stdout.count("predict: 6 clip(s) ok (0 partly decoded), 2 failed") == 1

    # A setting that changes the answers: rank 0 refuses, and every rank stops at once, touching nothing.
    before = together.read_bytes()
    refused = torchrun_done(f"checkpoint={checkpoint}", f"input={clips}", f"output={together}", "top_k=2")
    ours = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(ours) == 1 and "was written with top_k=3" in ours[0], refused.stderr
    assert "exitcode  : 2" in refused.stderr  # rank 0's status, as torchrun reports it
    assert together.read_bytes() == before and not leftover_parts(together)


@pytest.mark.slow
def test_two_processes_in_window_mode_write_each_timeline_once(checkpoint, clips, tmp_path):
    out = tmp_path / "windows.jsonl"
    proc = torchrun_done(f"checkpoint={checkpoint}", f"input={clips}", f"output={out}", "predict.window=0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = by_path(read_rows(out))
    assert len(rows) == 8 and sum(row["status"] == "ok" for row in rows.values()) == 6
    timelines = sorted((tmp_path / "windows_timelines").rglob("*.csv"))
    assert sorted(Path(row["timeline"]) for row in rows.values() if row["status"] == "ok") == timelines
    assert all(path.with_suffix(".png").is_file() for path in timelines)
    assert proc.stdout.count("timelines (CSV and PNG per video)") == 1


def ranks_of(proc: subprocess.Popen) -> dict[int, int]:
    """Rank -> pid of torchrun's workers (each in its own session, so killing torchrun's group misses them)."""
    found = {}
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    for pid in map(int, children):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)
        if rank is not None:
            found[rank] = pid
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc")
@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_rank_leaves_a_run_that_one_process_completes_without_duplicates(checkpoint, tmp_path, capsys,
                                                                                  victim):
    clip = write_video(tmp_path / "one.mp4", moving_square_clip(1, seed=3), fps=12).read_bytes()
    folder = tmp_path / "many"
    folder.mkdir()
    n = 100
    for i in range(n):
        (folder / f"clip {i:03d}.mp4").write_bytes(clip)
    out = tmp_path / "preds.csv"
    part = part_path(out, 1)
    proc = torchrun(f"checkpoint={checkpoint}", f"input={folder}", f"output={out}", "batch_size=1",
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # Both ranks well under way: rows in the output (rank 0) and in rank 1's part file (header + rows).
        while not (out.exists() and part.exists() and out.read_bytes().count(b"\n") > 4
                   and part.read_bytes().count(b"\n") > 4):
            assert proc.poll() is None and time.monotonic() < deadline, "predict ended before it could be killed"
            time.sleep(0.01)
        os.kill(ranks_of(proc)[victim], signal.SIGKILL)  # torchrun then stops the other rank itself
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    done = len(read_rows(out)) + len(read_rows(part))
    assert done < n
    with open(part, "ab") as f:  # what a kill in the middle of a write leaves: half a row
        f.write(f"{folder / 'clip 099.mp4'},ok,le".encode())

    counts = run(predict_cfg(checkpoint=str(checkpoint), input=str(folder), output=str(out), batch_size=8))
    said = capsys.readouterr().out
    assert "part file(s) an interrupted run left beside preds.csv merged into it" in said
    assert counts["ok"] == n - done and f"{done} already in preds.csv, {n - done} to classify" in said
    rows = by_path(read_rows(out))
    assert set(rows) == {os.path.abspath(folder / f"clip {i:03d}.mp4") for i in range(n)}
    assert all(row["status"] == "ok" for row in rows.values()) and not leftover_parts(out)


def write_part(path: Path, rows: list[list[str]], tail: str = "") -> Path:
    path.write_bytes((csv_line(COLUMNS) + "".join(csv_line(r) for r in rows) + tail).encode())
    return path


def row(name: str, status: str = "ok") -> list[str]:
    return [name, status, "left", "0.5", "left", "0.5", "12", "", ""] if status == "ok" else [
        name, status, "", "", "", "", "", "", "not a video"]


def test_fold_adds_what_the_output_lacks_in_rank_order_and_deletes_the_parts(tmp_path):
    out_path = tmp_path / "p.csv"
    write_part(out_path, [row("/a.mp4")])
    write_part(part_path(out_path, 10), [row("/d.mp4")])
    write_part(part_path(out_path, 2), [row("/a.mp4"), row("/b\nodd, name.mp4", "error")], tail="/c.mp4,ok,le")
    (tmp_path / "p.csv.rank3.part.bak").write_text("not a part file")
    assert leftover_parts(out_path) == [part_path(out_path, 2), part_path(out_path, 10)]
    out = PredictionsFile(out_path, COLUMNS).open()
    try:
        assert fold(out, leftover_parts(out_path)) == 2
    finally:
        out.close()
    assert [r["path"] for r in read_rows(out_path)] == ["/a.mp4", "/b\nodd, name.mp4", "/d.mp4"]
    assert out_path.read_bytes().endswith(csv_line(row("/d.mp4")).encode())  # rows are copied byte for byte
    assert not leftover_parts(out_path) and (tmp_path / "p.csv.rank3.part.bak").exists()


def test_fold_keeps_jsonl_rows_byte_for_byte(tmp_path):
    out_path = tmp_path / "p.jsonl"
    lines = [json.dumps(dict(zip(COLUMNS, row(name), strict=True)), ensure_ascii=False) + "\n"
             for name in ("/x\u2028y.mp4", "/z\udcff.mp4")]
    part_path(out_path, 1).write_bytes("".join(lines).encode("utf-8", "surrogateescape"))
    out = PredictionsFile(out_path, COLUMNS).open()
    try:
        assert fold(out, leftover_parts(out_path)) == 2
    finally:
        out.close()
    assert out_path.read_bytes() == "".join(lines).encode("utf-8", "surrogateescape")
