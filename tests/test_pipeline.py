"""End to end through the real entry points: train, evaluate, resume, bad clips, one-line errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from behavior.provenance import file_sha256, git_commit, package_version
from tests.conftest import make_clip_tree
from tests.helpers import TINY, run_module

pytestmark = pytest.mark.slow  # trains or runs the commands in subprocesses


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run on generated clips plus two broken files that the pre-scan must set aside."""
    tmp = tmp_path_factory.mktemp("pipeline")
    root = make_clip_tree(tmp / "clips", per_class=8)
    (root / "left" / "empty.mp4").write_bytes(b"")
    (root / "up" / "notes.mp4").write_text("not a video at all\n")
    run = tmp / "run"
    proc = run_module("behavior.train", f"data.root={root}", f"hydra.run.dir={run}", "trainer.epochs=2", *TINY,
                      f"data.cache={tmp / 'cache'}")
    return root, run, proc


def test_train_fills_the_clip_cache(trained):
    root, run, proc = trained
    cache = root.parent / "cache"
    assert f"clip cache {cache}: 0 of 24 clips cached" in proc.stdout
    # Every readable clip (train, val and the final test report) was stored once, with its sidecar.
    assert len(list(cache.glob("*/*.npy"))) == len(list(cache.glob("*/*.json"))) == 24
    assert not list(cache.glob("*/*.tmp"))


def test_train_writes_every_report_file(trained):
    _, run, proc = trained
    for name in ["best.pt", "last.pt", "metrics.json", "per_class.csv", "confusion_matrix.csv",
                 "confusion_matrix.png", "predictions.csv", "history.csv", "curves.png", "split.csv",
                 "bad_clips.csv", ".hydra/config.yaml"]:
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    test_clips = [r for r in read_csv(run / "split.csv") if r["split"] == "test"]
    assert metrics["split"] == "test" and metrics["num_clips"] == len(test_clips) > 0
    for key in ("top1", "mean_class_accuracy", "macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    matrix = read_csv(run / "confusion_matrix.csv")
    assert sum(int(v) for row in matrix for k, v in row.items() if k != "true\\pred") == len(test_clips)
    assert len(read_csv(run / "predictions.csv")) == len(test_clips)
    assert [int(r["epoch"]) for r in read_csv(run / "history.csv")] == [1, 2]
    assert "precision" in proc.stdout and "wall time" in proc.stdout
    provenance = metrics["provenance"]  # the checkpoint the report was made with, named inside the run folder
    assert provenance["checkpoint"] == "best.pt" and provenance["checkpoint_sha256"] == file_sha256(run / "best.pt")
    assert provenance["version"] == package_version() and provenance["git_commit"] == git_commit()


def test_bad_clips_are_listed_and_skipped(trained):
    _, run, _ = trained
    bad = {Path(r["path"]).name: r["reason"] for r in read_csv(run / "bad_clips.csv")}
    assert set(bad) == {"empty.mp4", "notes.mp4"}
    assert "empty" in bad["empty.mp4"]
    used = {Path(r["path"]).name for r in read_csv(run / "split.csv")}
    assert not used & set(bad) and len(used) == 24


def test_resume_continues_the_epoch_count(trained, tmp_path):
    root, run, _ = trained
    resumed = tmp_path / "resumed"
    proc = run_module("behavior.train", f"data.root={root}", f"hydra.run.dir={resumed}", "trainer.epochs=3",
                      f"trainer.resume={run / 'last.pt'}", *TINY)
    assert "resumed from" in proc.stdout
    assert [int(r["epoch"]) for r in read_csv(resumed / "history.csv")] == [1, 2, 3]


def test_evaluate_reports_every_clip_under_a_folder(trained, tmp_path):
    root, run, _ = trained
    out = tmp_path / "eval"
    run_module("behavior.evaluate", f"checkpoint={run / 'best.pt'}", f"data.root={root}", f"hydra.run.dir={out}",
               "num_workers=0", "progress=false")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_clips"] == 24
    assert metrics["provenance"]["checkpoint"] == str(run / "best.pt")
    assert metrics["provenance"]["checkpoint_sha256"] == file_sha256(run / "best.pt")
    assert len(read_csv(out / "predictions.csv")) == 24
    assert (out / "confusion_matrix.png").is_file() and (out / "bad_clips.csv").is_file()


def test_evaluate_refuses_an_unknown_class(trained, tmp_path):
    _, run, _ = trained
    other = make_clip_tree(tmp_path / "other", classes=("left", "sideways"), per_class=1)
    proc = run_module("behavior.evaluate", f"checkpoint={run / 'best.pt'}", f"data.root={other}",
                      f"hydra.run.dir={tmp_path / 'e'}", check=False)
    assert proc.returncode == 2
    assert "sideways" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("override, key", [("data.split=bogus", "data.split"),
                                           ("data.test_fraction=1.5", "data.test_fraction"),
                                           ("data.split=kfold", "data.test_fraction=0.25: unused with data.split"),
                                           ("data.fold=5", "data.fold=5: must be an integer in [0, 4]"),
                                           ("sampling.mode=bogus", "sampling.mode"),
                                           ("model.attention_kernel=4", "model.attention_kernel"),
                                           ("decode.backend=nope", "decode.backend"),
                                           ("trainer.report_on=middle", "trainer.report_on"),
                                           ("optim.mixup_alpha=-1", "optim.mixup_alpha"),
                                           ("optim.lr=-1", "optim.lr"), ("optim.lr=fast", "optim.lr"),
                                           ("trainer.epochs=0", "trainer.epochs"),
                                           ("data.decode_timeout=-1", "data.decode_timeout"),
                                           ("roi.kind=hand", "roi.kind"),
                                           ("roi=hand", "roi=hand: no such option"),
                                           ("+optim.lrr=1", "optim.lrr"),
                                           # Hydra's own composition errors, made one line by behavior.cli
                                           ("optim.lrr=1", "optim.lrr is not a known key"),
                                           ("optim=adamx", "optim=adamx: no such option"),
                                           ("optim.lr=[", "optim.lr=["),
                                           # keys added with + to groups without a dataclass of their own
                                           ("+data.foo=1", "data.foo is not a known key"),
                                           ("+decode.foo=1", "decode.foo is not a known key"),
                                           ("+foo=1", "foo is not a known key"),
                                           ("data.val_fraction=abc", "data.val_fraction"),
                                           ("seed=abc", "seed"),
                                           ("data.root=/no/such/folder", "data.root=/no/such/folder: folder not")])
def test_config_errors_are_one_line(clip_tree, tmp_path, override, key, monkeypatch, capsys):
    # In this process (a subprocess per case cost ~7 s of imports); the command line itself is covered below.
    from behavior.train import main

    monkeypatch.setattr(sys, "argv", ["behavior.train", f"data.root={clip_tree}", f"hydra.run.dir={tmp_path / 'r'}",
                                      *TINY, override])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert key in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before the run folder, so before any clip was scanned


def test_a_config_error_on_the_command_line_is_one_line_and_exit_2(clip_tree, tmp_path):
    proc = run_module("behavior.train", f"data.root={clip_tree}", f"hydra.run.dir={tmp_path / 'r'}", *TINY,
                      "optim.lr=-1", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: optim.lr=-1: must be a number > 0"


def test_multirun_over_models(clip_tree, tmp_path):
    sweep = tmp_path / "sweep"
    small = [o for o in TINY if not o.startswith("model.")]
    run_module("behavior.train", "-m", "model=behaviornet,r3d_18", f"data.root={clip_tree}",
               f"hydra.sweep.dir={sweep}", "trainer.epochs=1", *small)
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    for r in runs:
        tested = [row for row in read_csv(r / "split.csv") if row["split"] == "test"]
        assert json.loads((r / "metrics.json").read_text())["num_clips"] == len(tested) > 0


def test_no_test_split_reports_on_validation(clip_tree, tmp_path):
    run = tmp_path / "r"
    run_module("behavior.train", f"data.root={clip_tree}", f"hydra.run.dir={run}", "trainer.epochs=1", *TINY,
               "data.test_fraction=0")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "val"
    assert metrics["num_clips"] == sum(r["split"] == "val" for r in read_csv(run / "split.csv")) > 0
    assert not any(r["split"] == "test" for r in read_csv(run / "split.csv"))
