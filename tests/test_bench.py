"""``python -m behavior.bench`` end to end: two tiny BehaviorNet variants, one seed, and a resumed second call; the
results tables from given rows."""

from __future__ import annotations

import hashlib
import json

import pytest

from behavior.bench import write_results
from behavior.data.scan import read_manifest
from behavior.data.splits import split_records
from tests.conftest import make_clip_tree
from tests.helpers import TINY, run_module
from tests.test_pipeline import read_csv

# Model options come from bench.variants, not the global model group, so no model.* override here.
NOT_MODEL = [o for o in TINY if not o.startswith("model.")]
SETTINGS = NOT_MODEL + [
    "bench.models=[tiny,tiny_noattn]", "bench.seeds=[0]", "trainer.epochs=1",
    "+bench.variants.tiny={base:behaviornet,overrides:{widths:[8,16]}}",
    "+bench.variants.tiny_noattn={base:behaviornet,overrides:{widths:[8,16],attention:false}}"]


@pytest.mark.slow  # trains or runs the command in a subprocess
def test_bench_writes_tables_and_resumes(tmp_path):
    root = make_clip_tree(tmp_path / "clips", per_class=6)
    bench = tmp_path / "bench"
    cache = f"data.cache={tmp_path / 'cache'}"
    proc = run_module("behavior.bench", f"data.root={root}", f"hydra.run.dir={bench}", cache, *SETTINGS)
    assert proc.stdout.count(": start ->") == 2 and proc.stdout.count(": done, top-1") == 2
    rows = read_csv(bench / "results.csv")
    assert [r["model"] for r in rows] == ["tiny", "tiny_noattn"]
    columns = ["model", "seeds", "top1_mean", "top1_std", "mean_class_accuracy_mean", "mean_class_accuracy_std",
               "macro_f1_mean", "macro_f1_std", "parameters", "gflops_per_clip", "train_clips_per_s",
               "inference_clips_per_s", "wall_s"]
    assert list(rows[0]) == columns
    for row in rows:
        assert all(row[c] != "" for c in columns), row
        assert row["seeds"] == "1" and 0.0 <= float(row["top1_mean"]) <= 1.0 and float(row["top1_std"]) == 0.0
        assert int(row["parameters"]) > 0 and float(row["gflops_per_clip"]) > 0
        assert float(row["train_clips_per_s"]) > 0 and float(row["inference_clips_per_s"]) > 0
    # The attention ablation has fewer parameters than the same network with attention.
    assert int(rows[1]["parameters"]) < int(rows[0]["parameters"])
    md = (bench / "results.md").read_text()
    assert "| tiny | 1 |" in md and "| tiny_noattn | 1 |" in md and "±" not in md  # one seed: no spread to show
    # The cache speed-up is measured once, before the runs, both ways: data path alone and a training epoch.
    assert "cache speed over one epoch" in proc.stdout and "data.cache=null" in md and "training epoch (tiny)" in md
    speed = json.loads((bench / "cache_speed.json").read_text())
    assert all(speed[f"{k}_s"] > 0 for k in ("data_null", "data_fill", "data_warm", "train_null", "train_warm"))
    # Both runs used one split.
    splits = [(bench / "runs" / f"{m}_seed0" / "split.csv").read_text() for m in ("tiny", "tiny_noattn")]
    assert splits[0] == splits[1]
    # The bench's page links each run's own page.
    page = (bench / "report.html").read_text(encoding="utf-8")
    assert "tiny_noattn" in page and all(f'href="runs/{m}_seed0/report.html"' in page for m in ("tiny", "tiny_noattn"))

    metrics = [bench / "runs" / f"{m}_seed0" / "metrics.json" for m in ("tiny", "tiny_noattn")]
    assert json.loads(metrics[0].read_text())["checkpoint"] == "last.pt"  # the bench reports the schedule's end
    provenance = json.loads(metrics[0].read_text())["provenance"]
    assert provenance["checkpoint"] == "last.pt" and provenance["checkpoint_sha256"] == hashlib.sha256(
        (metrics[0].parent / "last.pt").read_bytes()).hexdigest()
    stamps = [p.stat().st_mtime_ns for p in metrics]
    again = run_module("behavior.bench", f"data.root={root}", f"hydra.run.dir={bench}", cache, *SETTINGS)
    assert again.stdout.count("skipped, done already") == 2 and ": start ->" not in again.stdout
    assert [p.stat().st_mtime_ns for p in metrics] == stamps
    assert read_csv(bench / "results.csv") == rows and (bench / "results.md").read_text() == md


@pytest.mark.slow  # trains or runs the command in a subprocess
def test_bench_rejects_an_unknown_model(tmp_path):
    proc = run_module("behavior.bench", f"hydra.run.dir={tmp_path / 'bench'}", "bench.models=[nope]", check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr and "bench.variants" in proc.stderr


@pytest.mark.slow  # trains or runs the command in a subprocess
def test_bench_over_folds(tmp_path):
    # Group-aware folds: the manifest gives every clip a group (3 per class), data.split=group becomes kfold.
    root = make_clip_tree(tmp_path / "clips", per_class=6, groups=True)
    bench = tmp_path / "bench"
    settings = [f"data.manifest={root / 'clips.csv'}", "data.split=group", f"hydra.run.dir={bench}",
                f"data.cache={tmp_path / 'cache'}", "bench.folds=2", *SETTINGS, "bench.models=[tiny]"]
    proc = run_module("behavior.bench", *settings)
    assert "[1/2] tiny seed 0 fold 0: start" in proc.stdout and "[2/2] tiny seed 0 fold 1: done" in proc.stdout
    runs = [bench / "runs" / f"tiny_seed0_fold{f}" for f in (0, 1)]
    tested = []
    for f, run in enumerate(runs):
        rows = read_csv(run / "split.csv")
        assert {r["fold"] for r in rows if r["split"] == "test"} == {str(f)}
        sides = {}
        for r in rows:  # no source recording on two sides
            assert sides.setdefault(r["group"], r["split"]) == r["split"]
        tested += [r["path"] for r in rows if r["split"] == "test"]
        assert json.loads((run / "metrics.json").read_text())["num_clips"] == sum(r["split"] == "test" for r in rows)
    assert sorted(tested) == sorted({r["path"] for r in read_csv(runs[0] / "split.csv")})  # each clip tested once
    row = read_csv(bench / "results.csv")[0]
    assert (row["model"], row["seeds"], row["folds"], row["runs"]) == ("tiny", "1", "2", "2")
    md = (bench / "results.md").read_text()
    assert "| model | seeds | folds | runs |" in md and "| tiny | 1 | 2 | 2 |" in md and "training epoch (tiny)" in md
    # The cache speed-up is measured on the one split data.split gives, not on a fold.
    one_split = split_records(read_manifest(root / "clips.csv"), "group", 0.25, 0.25, seed=0)  # bench.split_seed
    assert json.loads((bench / "cache_speed.json").read_text())["clips"] == len(one_split.train)
    again = run_module("behavior.bench", *settings)
    assert again.stdout.count("skipped, done already") == 2 and ": start ->" not in again.stdout
    assert (bench / "results.md").read_text() == md


@pytest.mark.slow  # trains or runs the command in a subprocess
def test_bench_of_a_flow_model_times_the_flow(tmp_path):
    root = make_clip_tree(tmp_path / "clips", per_class=4)
    bench = tmp_path / "bench"
    proc = run_module("behavior.bench", f"data.root={root}", f"hydra.run.dir={bench}", f"data.cache={tmp_path / 'c'}",
                      "bench.models=[tiny_stats]", "bench.seeds=[0]", "trainer.epochs=1", *NOT_MODEL,
                      "+bench.variants.tiny_stats={base:behaviornet,overrides:{widths:[8,16],input:rgb+stats}}")
    assert "optical flow per clip:" in proc.stdout and "cached: none computed" in proc.stdout
    assert "| optical flow per clip |" in (bench / "results.md").read_text()
    assert read_csv(bench / "results.csv")[0]["model"] == "tiny_stats"


def bench_row(model: str, top1: float, std: float, **counts) -> dict:
    row = {"model": model, **counts, "parameters": 1_000_000, "gflops_per_clip": 0.5, "train_clips_per_s": 10.0,
           "inference_clips_per_s": 20.0, "wall_s": 30.0}
    for key in ("top1", "mean_class_accuracy", "macro_f1"):
        row.update({f"{key}_mean": top1, f"{key}_std": std})
    return row


@pytest.mark.parametrize("folds", [False, True])
def test_one_run_prints_its_figure_without_a_spread(tmp_path, folds):
    counts = ({"seeds": 1, "folds": 1, "runs": 1}, {"seeds": 3, "folds": 1, "runs": 3}) if folds else \
        ({"seeds": 1}, {"seeds": 3})
    write_results(tmp_path, [bench_row("single", 0.5, 0.0, **counts[0]), bench_row("seeded", 0.6, 0.05, **counts[1])])
    lines = {line.split(" | ")[0]: line for line in (tmp_path / "results.md").read_text().splitlines()}
    assert "| 50.0 | 50.0 | 50.0 |" in lines["| single"] and "±" not in lines["| single"]
    assert "| 60.0 ± 5.0 | 60.0 ± 5.0 | 60.0 ± 5.0 |" in lines["| seeded"]


def test_order_bench_table_shows_a_spread_only_over_seeds():
    from behavior.order_bench import table

    run = {"train_acc": 1.0, "epoch_095": 3, "seconds": 1.0}
    rows = [{"pool": "mean", "seed": 0, "test_acc": 0.5, **run},
            *({"pool": "gru", "seed": s, "test_acc": a, **run} for s, a in enumerate([0.9, 1.0]))]
    lines = table(rows).splitlines()
    assert "| mean | 1 | 0.500 | 0.500 - 0.500 |" in lines[2]
    assert "| gru | 2 | 0.950 ± 0.050 |" in lines[3]
