"""torchrun on the CPU (Gloo): one report equal to a single process's, resume with another world size, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import REPO, make_clip_tree
from tests.helpers import TINY, free_port, run_module, torchrun_command, torchrun_env

pytestmark = pytest.mark.slow  # several processes each


ENV = torchrun_env(BEHAVIOR_DIST_TIMEOUT="120")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_clip_tree(tmp_path_factory.mktemp("ddp") / "clips", classes=("left", "right", "up"), per_class=5)


def test_two_processes_write_one_report_equal_to_a_single_process_evaluation(clips, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(torchrun_command("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}",
                                           "trainer.epochs=1", "data.cache=null", *TINY),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("[test]  top1") == 1 and "x 2 processes" in proc.stdout  # rank 0 alone prints
    report = json.loads((run / "metrics.json").read_text())
    assert report["num_clips"] == 3 and (run / "train.log").read_text().count("[test]") == 1
    test_clips = [row for row in csv.DictReader(open(run / "split.csv")) if row["split"] == "test"]
    manifest = tmp_path / "test.csv"
    manifest.write_text("path,label\n" + "".join(f"{r['path']},{r['label']}\n" for r in test_clips))
    single = tmp_path / "single"
    run_module("behavior.evaluate", f"checkpoint={run / 'best.pt'}", f"data.manifest={manifest}",
               f"hydra.run.dir={single}", "num_workers=0", "progress=false")
    alone = json.loads((single / "metrics.json").read_text())
    for key in ("top1", "mean_class_accuracy", "macro_f1", "num_clips"):
        assert report[key] == alone[key]
    rows = {r["path"]: r for r in csv.DictReader(open(run / "predictions.csv"))}
    for row in csv.DictReader(open(single / "predictions.csv")):
        assert rows[row["path"]]["pred"] == row["pred"]
        assert float(rows[row["path"]]["score"]) == pytest.approx(float(row["score"]), abs=2e-4)


def test_a_killed_two_process_run_resumes_in_one_process(clips, tmp_path):
    run = tmp_path / "run"
    settings = [f"data.root={clips}", f"hydra.run.dir={run}", "trainer.epochs=40", "trainer.patience=0",
                "data.cache=null", *TINY]
    job = subprocess.Popen(torchrun_command("behavior.train", *settings), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    history, deadline = run / "history.csv", time.monotonic() + 240
    while time.monotonic() < deadline and job.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # two epochs done
            break
        time.sleep(0.05)
    assert job.poll() is None, "the run ended before it could be killed"
    # torchrun's workers may sit in sessions of their own: kill every process of this run by its folder
    subprocess.run(["pkill", "-KILL", "-f", f"hydra.run.dir={run}"], check=False)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    time.sleep(0.5)
    done = len(history.read_text().splitlines()) - 1
    assert 2 <= done < 40
    proc = run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", "trainer.epochs=4",
                      "trainer.patience=0", "trainer.resume=auto", *TINY)
    assert "resumed from" in proc.stdout
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(history))]
    assert epochs == list(range(1, max(4, done) + 1)) and (run / "metrics.json").is_file()


def test_a_rank_left_alone_stops_with_one_line_naming_what_it_waited_for(monkeypatch):
    # In this process: what the entry points print is this error's text (exit 2), as behavior.train does.
    import datetime

    from behavior.engine import distributed

    port = free_port()
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed, "TIMEOUT", datetime.timedelta(seconds=1))
    import torch

    with pytest.raises(distributed.DistributedError,
                       match=rf"^rank 0 of 2: could not join the others at 127\.0\.0\.1:{port} \(gloo, waited up to "
                             r"1 s\)"):
        distributed.start(torch.device("cpu"))


def test_each_rank_takes_its_own_gpu_unless_one_is_named(monkeypatch):
    import torch

    from behavior.engine.distributed import World, rank_device

    two = World(rank=1, size=2, local_rank=1)
    assert rank_device(torch.device("cpu"), two) == torch.device("cpu")
    assert rank_device(torch.device("cuda"), World(0, 1, 0)) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert rank_device(torch.device("cuda"), two) == torch.device("cuda", 0)  # both ranks share the one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert rank_device(torch.device("cuda"), two) == torch.device("cuda", 1)
    assert rank_device(torch.device("cuda", 3), two) == torch.device("cuda", 3)  # named by the user: kept
