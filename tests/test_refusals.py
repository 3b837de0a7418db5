"""A refused command touches nothing: every file of an existing folder stays byte-identical (issue 14)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import make_clip_tree
from tests.helpers import TINY, run_main, run_module

pytestmark = pytest.mark.slow  # the commands run in subprocesses, as a user runs them


def folder_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones such as ``.hydra/`` included) with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished training run, its clips, and a second set with other classes."""
    base = tmp_path_factory.mktemp("refusals")
    clips = make_clip_tree(base / "clips", classes=("left", "right", "up"), per_class=4)
    other = make_clip_tree(base / "other", classes=("left", "down"), per_class=4)
    run = base / "run"
    proc = run_module("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", "trainer.epochs=1", *TINY)
    return clips, other, run, proc


def refused(module: str, *overrides: str) -> str:
    """The command's error line; in this process (the commands' own code path, without a subprocess's imports)."""
    code, out, err = run_main(module, *overrides)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def test_the_log_holds_what_was_printed(finished):
    _, _, run, proc = finished
    log = (run / "train.log").read_text(encoding="utf-8")
    for printed in ("scanned 12 clips", "epoch   1", "macro avg", "[test]  top1", "wall time"):
        assert printed in proc.stdout and printed in log


def test_a_refused_train_leaves_a_finished_run_as_it_was(finished, tmp_path):
    clips, other, run, _ = finished
    before = folder_hashes(run)
    # 1. continue the run with another class list: refused once the clips are known, before anything is written
    message = refused("behavior.train", f"data.root={other}", f"hydra.run.dir={run}", "trainer.resume=auto", *TINY)
    assert "another model or class list" in message
    # 2. a new run into the finished folder
    message = refused("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", *TINY)
    assert "already holds a run" in message
    # 3. a setting that fails only once the groups are checked (after composition)
    refused("behavior.train", f"data.root={clips}", f"hydra.run.dir={run}", "trainer.resume=auto",
            "model.fusion=early", *TINY)
    assert folder_hashes(run) == before
    # A refused new run leaves no folder behind (Hydra's .hydra/ and log included).
    fresh = tmp_path / "fresh"
    refused("behavior.train", f"data.root={clips}", f"hydra.run.dir={fresh}", "model.fusion=early", *TINY)
    refused("behavior.train", f"data.root={clips}", f"hydra.run.dir={fresh}", "data.split=group", *TINY)
    assert not fresh.exists()


def test_resume_auto_needs_the_run_folder(finished, tmp_path):
    clips, _, _, _ = finished
    message = refused("behavior.train", f"data.root={clips}", "trainer.resume=auto", *TINY)
    assert message.startswith("error: trainer.resume=auto") and "hydra.run.dir" in message


def test_evaluate_never_writes_into_a_training_run(finished):
    clips, _, run, _ = finished
    before = folder_hashes(run)
    code, _, err = run_main("behavior.evaluate", f"checkpoint={run / 'best.pt'}", f"data.root={clips}",
                            f"hydra.run.dir={run}", "num_workers=0", "progress=false")
    assert code == 0, err
    inside = [p for p in run.iterdir() if p.name.startswith("evaluate_")]
    assert len(inside) == 1 and "holds a training run" in err and str(inside[0]) in err
    assert {k: v for k, v in folder_hashes(run).items() if not k.startswith("evaluate_")} == before
    metrics = json.loads((inside[0] / "metrics.json").read_text())
    assert metrics["num_clips"] == 12
    assert "macro avg" in (inside[0] / "evaluate.log").read_text(encoding="utf-8")


def test_a_refused_evaluate_predict_or_live_touches_nothing(finished, tmp_path):
    clips, other, run, _ = finished
    video = next(clips.rglob("*.mp4"))
    before = folder_hashes(run)
    message = refused("behavior.evaluate", f"checkpoint={video}", f"data.root={clips}",
                      f"hydra.run.dir={tmp_path / 'e'}")
    assert "weights_only" not in message and "not a behavior checkpoint" in message
    refused("behavior.evaluate", f"checkpoint={run / 'best.pt'}", f"data.root={other}",
            f"hydra.run.dir={run}")  # 'down' is not among the model's classes
    assert not (tmp_path / "e").exists()
    # predict: an output file of another model's (here: not a predictions file) is refused and left alone
    output = run / "predictions.csv"
    refused("behavior.predict", f"checkpoint={run / 'best.pt'}", f"input={clips}", f"output={output}",
            "num_workers=0", "progress=false")
    # live: an existing output video is never overwritten
    refused("behavior.live", f"checkpoint={run / 'best.pt'}", f"source={video}", f"output={video}")
    refused("behavior.live", f"checkpoint={run / 'best.pt'}", f"source={video}", f"output={run / 'curves.png'}")
    assert folder_hashes(run) == before
