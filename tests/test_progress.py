"""Progress bars only on a terminal; a log gets plain lines."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from behavior import progress
from behavior.engine import evaluation
from behavior.progress import Progress
from tests.conftest import REPO, make_clip_tree
from tests.helpers import TINY


def test_off_a_terminal_a_counted_task_prints_a_line_every_tenth(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    assert list(Progress(range(25), desc="scan clips", unit="clip")) == list(range(25))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scan clips: 3/25 clips (12%)" and lines[-1] == "scan clips: 25/25 clips (100%)"
    assert len(lines) == 9  # every 3rd clip, and the last


def test_off_a_terminal_a_passing_bar_prints_nothing(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    with Progress(total=4, desc="train", unit="batch", leave=False) as bar:
        bar.update(4)
    with Progress(total=3, desc="predict", unit="clip", enabled=False) as bar:
        bar.update(3)
    assert capsys.readouterr().out == ""


def test_postfix_and_updates_in_steps(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    with Progress(total=100, desc="predict", unit="clip") as bar:
        bar.set_postfix(failed=2)
        bar.update(35)
        bar.update(65)
    assert capsys.readouterr().out.splitlines() == ["predict: 35/100 clips (35%); failed 2",
                                                    "predict: 100/100 clips (100%); failed 2"]


def test_on_a_terminal_it_is_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    bar = Progress(range(3), desc="x", unit="clip")
    assert bar.bar is not None and list(bar) == [0, 1, 2]
    bar.close()


class _Stop(Exception):
    pass


@pytest.mark.parametrize("split", ["evaluate", "test"])
def test_the_evaluation_bar_says_what_it_does_not_the_split_name(monkeypatch, split):
    seen = {}

    def fake_predict(model, loader, device, amp, desc, progress):
        seen["desc"] = desc
        raise _Stop

    monkeypatch.setattr(evaluation, "predict", fake_predict)
    pipeline = SimpleNamespace(loader=lambda *args, **kwargs: [], backend="pyav")
    with pytest.raises(_Stop):
        evaluation.evaluate_split(None, [], ["a"], pipeline, torch.device("cpu"), False,
                                  evaluation.EvalLoader(1, 0, True), None, split)
    # behavior.evaluate's split is "evaluate": a bar named after the split read "evaluate:" under that command.
    assert split not in seen["desc"] and seen["desc"] == "classify clips"


@pytest.mark.slow
def test_a_training_log_has_no_carriage_returns(tmp_path):
    root = make_clip_tree(tmp_path / "clips", per_class=4)
    # Into a file, as `python -m behavior.train ... > run.log 2>&1` writes it: its bytes, not a text-mode read,
    # which would turn every carriage return into a newline.
    with open(tmp_path / "run.log", "wb") as log_file:
        proc = subprocess.run([sys.executable, "-m", "behavior.train", f"data.root={root}",
                               f"hydra.run.dir={tmp_path / 'run'}", "trainer.epochs=2", "data.cache=null",
                               *[o for o in TINY if not o.startswith("trainer.progress")]], cwd=REPO,
                              env={**os.environ, "OMP_NUM_THREADS": "2"}, stdout=log_file, stderr=subprocess.STDOUT,
                              timeout=300)
    raw = (tmp_path / "run.log").read_bytes()
    assert proc.returncode == 0, raw[-3000:]
    assert b"\r" not in raw
    log = raw.decode()
    assert "scan clips: 12/12 clips (100%)" in log and log.count("epoch ") >= 2
