"""The bench's tables: one row per model over its finished runs (mean ± std of each metric over seeds, or over
folds x seeds), as results.csv and results.md."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from behavior.atomic import atomic_open
from behavior.cache_speed import cache_speed_markdown

METRICS = ("top1", "mean_class_accuracy", "macro_f1")
COLUMNS = ["model", "seeds", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "parameters",
           "gflops_per_clip", "train_clips_per_s", "inference_clips_per_s", "wall_s"]
# With bench.folds: how many folds, and how many runs (seeds x folds finished) each mean and std cover.
FOLD_COLUMNS = [*COLUMNS[:2], "folds", "runs", *COLUMNS[2:]]


@dataclass
class RunResult:
    model: str
    seed: int
    fold: int | None
    metrics: dict
    parameters: int
    train_clips_per_s: float
    inference_clips_per_s: float
    wall_seconds: float


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def percent_spread(mean: float, std: float, runs: int) -> str:
    """``mean ± std`` in percent; one run has no spread to show, so its figure stands alone."""
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if runs > 1 else "")


def summarize(model: str, runs: Sequence[RunResult], gflops: float) -> dict:
    """One table row: the mean and std of each metric over ``runs`` (seeds, or seeds x folds)."""
    row: dict = {"model": model, "seeds": len(runs)}
    if runs[0].fold is not None:
        row.update(seeds=len({r.seed for r in runs}), folds=len({r.fold for r in runs}), runs=len(runs))
    for key in METRICS:
        row[f"{key}_mean"], row[f"{key}_std"] = mean_std([float(r.metrics[key]) for r in runs])
    row["parameters"] = runs[0].parameters
    row["gflops_per_clip"] = gflops
    row["train_clips_per_s"] = statistics.fmean(r.train_clips_per_s for r in runs)
    row["inference_clips_per_s"] = statistics.fmean(r.inference_clips_per_s for r in runs)
    row["wall_s"] = sum(r.wall_seconds for r in runs)
    return row


def write_results(bench_dir: Path, rows: Sequence[Mapping], speed: Mapping | None = None, note: str = "") -> None:
    """results.csv and results.md; ``note`` (runs still missing) goes under the table. Each file is replaced whole:
    shards writing into one folder at once, and whoever reads it meanwhile, see one table or the other."""
    folds = bool(rows) and "folds" in rows[0]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=FOLD_COLUMNS if folds else COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    counts, align = ("seeds | folds | runs", "---:|---:|---:") if folds else ("seeds", "---:")
    lines = [f"| model | {counts} | top-1 (%) | mean class acc. (%) | macro-F1 (%) | params (M) | GFLOPs/clip "
             "| train clips/s | inference clips/s | wall time (s) |",
             f"|---|{align}|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [percent_spread(r[f"{k}_mean"], r[f"{k}_std"], r["runs"] if folds else r["seeds"]) for k in METRICS]
        count = f"{r['seeds']} | {r['folds']} | {r['runs']}" if folds else f"{r['seeds']}"
        lines.append(f"| {r['model']} | {count} | {' | '.join(cells)} | {r['parameters'] / 1e6:.2f} "
                     f"| {r['gflops_per_clip']:.3f} | {r['train_clips_per_s']:.1f} "
                     f"| {r['inference_clips_per_s']:.1f} | {r['wall_s']:.0f} |")
    if folds:
        lines += ["", "Mean ± std over every run of a model (each seed on each fold's test part); `runs` counts them."]
    if note:
        lines += ["", note]
    text = "\n".join(lines) + "\n"
    if speed is not None:
        text += "\n" + cache_speed_markdown(speed)
    for name, content in (("results.csv", table.getvalue()), ("results.md", text)):
        with atomic_open(bench_dir / name, "w", encoding="utf-8", newline="") as f:
            f.write(content)


def missing_note(missing: Sequence[str], total: int) -> str:
    """The line under the tables while ``missing`` (run names) of ``total`` runs are not finished."""
    if not missing:
        return ""
    names = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
    return (f"{len(missing)} of the {total} runs not finished yet ({names}): run the bench again into this folder "
            "(any bench.shard, or bench.shard=null) to complete the tables.")
