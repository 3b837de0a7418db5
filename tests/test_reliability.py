"""Crash safety of training: kill -9 then trainer.resume=auto equals the uninterrupted run; no run is trained over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, make_clip_tree
from tests.helpers import TINY, run_module
from tests.test_pipeline import read_csv

pytestmark = pytest.mark.slow  # trains or runs the commands in subprocesses

# Dropout (the default 0.3) and mixup both draw from the global RNG: resume must restore it to replay them.
SETTINGS = [*TINY, "trainer.epochs=5", "trainer.patience=0", "optim.mixup_alpha=0.4", "data.cache=null", "seed=3"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_clip_tree(tmp_path_factory.mktemp("reliability") / "clips", per_class=6)


def losses(run) -> list[tuple[str, str, str]]:
    return [(r["train_loss"], r["val_loss"], r["val_acc"]) for r in read_csv(run / "history.csv")]


def metrics_of(run) -> dict:
    """metrics.json without its provenance: checkpoints record their epochs' timings, so their hashes differ."""
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics.pop("provenance")["checkpoint"] == "best.pt"
    return metrics


def test_kill_9_mid_run_then_resume_auto_equals_the_uninterrupted_run(clips, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={whole}", *SETTINGS)

    args = [sys.executable, "-m", "behavior.train", f"data.root={clips}", f"hydra.run.dir={killed}", *SETTINGS]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    history = killed / "history.csv"
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 2:  # epoch 1 done and checkpointed
            time.sleep(0.3)  # into epoch 2
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    done = len(read_csv(history))
    assert 1 <= done < 5

    resumed = run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={killed}", "trainer.resume=auto",
                         *SETTINGS)
    assert f"after epoch {done}" in resumed.stdout
    assert losses(killed) == losses(whole)
    assert metrics_of(killed) == metrics_of(whole)
    assert read_csv(killed / "predictions.csv") == read_csv(whole / "predictions.csv")


def test_a_finished_run_is_never_trained_over(clips, tmp_path):
    run = tmp_path / "run"
    small = [o for o in SETTINGS if not o.startswith("trainer.epochs")] + ["trainer.epochs=1"]
    run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", *small)
    stamps = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    again = run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", *small, check=False)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "trainer.resume=auto" in again.stderr and str(run) in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == stamps


def test_resume_auto_in_a_new_folder_starts_fresh(clips, tmp_path):
    run = tmp_path / "fresh"
    small = [o for o in SETTINGS if not o.startswith("trainer.epochs")] + ["trainer.epochs=1"]
    proc = run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", "trainer.resume=auto", *small)
    assert "resumed from" not in proc.stdout and (run / "metrics.json").is_file()


def test_two_cpu_runs_with_one_seed_are_identical(clips, tmp_path):
    small = [o for o in SETTINGS if not o.startswith("trainer.epochs")] + ["trainer.epochs=2"]
    first, second = tmp_path / "first", tmp_path / "second"
    for run in (first, second):
        run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", *small)
    assert losses(first) == losses(second)
    assert metrics_of(first) == metrics_of(second)
    assert read_csv(first / "predictions.csv") == read_csv(second / "predictions.csv")
