"""``python -m behavior.bench``: train and evaluate several models over several seeds on one split (or on each of
``bench.folds`` folds), and tabulate.

Each model x seed run lives in ``<bench dir>/runs/<model>_seed<k>/`` (with folds, each model x seed x fold run in
``runs/<model>_seed<k>_fold<f>/``), a full train report. A run whose folder already holds ``metrics.json`` and
``bench_run.json`` is not run again, so an interrupted bench resumes.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from behavior.cache_speed import cache_speed, cache_speed_markdown, describe_cache_speed
from behavior.cli import entry_point, hydra_run_dir
from behavior.config import Settings, check_bool, check_keys, check_number, fail, plain
from behavior.data.transforms import TransformConfig
from behavior.engine.training import train_run
from behavior.errors import ConfigError
from behavior.models import ModelConfig, build_model
from behavior.paths import conf_dir
from behavior.recipe import Recipe, with_weights_normalization

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


@dataclass(frozen=True)
class BenchSettings(Settings):
    """The ``bench`` group: which models (conf/model options or variants of them), which seeds, one split or
    ``folds`` folds."""

    GROUP = "bench"
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    split_seed: int
    folds: int | None  # None: one split (data.split as given); K: every model x seed on each of K kfold folds
    cache_speed: bool
    variants: dict  # name: {base: conf/model option, overrides: {option: value}}

    def __post_init__(self) -> None:
        for key in ("models", "seeds"):
            value = getattr(self, key)
            if not isinstance(value, list | tuple) or not value:
                raise fail(f"bench.{key}", value, "must list at least one entry")
            object.__setattr__(self, key, tuple(value))
        for seed in self.seeds:
            check_number("bench.seeds", seed, integer=True)
        check_number("bench.split_seed", self.split_seed, integer=True)
        check_number("bench.folds", self.folds, 2, integer=True, none_ok=True)
        check_bool("bench.cache_speed", self.cache_speed)
        for name, variant in self.variants.items():
            check_keys(variant, f"bench.variants.{name}", ("base", "overrides"))
        for name in self.models:  # a bad entry or option stops the bench before any training
            self.model_config(name)

    def model_config(self, name: str) -> ModelConfig:
        """The model of a bench entry: a conf/model option, or a bench.variants entry over one."""
        variant = self.variants.get(name, {"base": name, "overrides": {}})
        options = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))
        if variant["base"] not in options:
            raise fail("bench.models", name, f"neither a model option {options} nor a bench.variants entry with a "
                                             "valid base")
        return ModelConfig.preset(variant["base"], **(variant["overrides"] or {}))


def gflops_per_clip(recipe: Recipe, num_classes: int) -> float:
    """Forward FLOPs of one clip [1, C, T, crop, crop] of ``recipe``, counted by torch's FlopCounterMode (the
    optical flow itself is computed outside the network and not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(recipe.model, num_classes, recipe.flow_channels).eval()
    channels = (3 if "rgb" in recipe.model.streams else 0) + (recipe.flow_channels or 0)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, channels, recipe.sampling.num_frames, recipe.transform.crop_size,
                          recipe.transform.crop_size))
    return counter.get_total_flops() / 1e9


def fold_recipes(recipe: Recipe, folds: int | None) -> dict[int | None, Recipe]:
    """The recipe of each fold: ``{None: recipe}`` without folds, else fold f's test part as ``data.split=kfold
    data.fold=f`` (``data.test_fraction`` unused, validation ``data.val_fraction`` of the other folds)."""
    if folds is None:
        return {None: recipe}
    data = recipe.data
    if data.split == "predefined":
        raise fail("bench.folds", folds, "needs data.split=stratified, group or kfold (data.split=predefined fixes "
                                         "the test clips); or bench.folds=null")
    if data.split == "kfold" and data.folds != folds:
        raise fail("bench.folds", folds, f"disagrees with data.folds={data.folds}; give one of them")
    return {f: replace(recipe, data=replace(data, split="kfold", folds=folds, fold=f, test_fraction=0.0))
            for f in range(folds)}


def run_name(model: str, seed: int, fold: int | None) -> str:
    """The run's folder under ``runs/``: ``<model>_seed<s>``, with folds ``<model>_seed<s>_fold<f>``."""
    return f"{model}_seed{seed}" + (f"_fold{fold}" if fold is not None else "")


def run_recipe(recipe: Recipe, model: ModelConfig, seed: int, transform: Mapping | None = None) -> Recipe:
    """One bench run's recipe. ``transform``: the transform group as composed, so a model with pretrained
    weights gets their input normalisation where transform.mean/std were left null."""
    if transform is not None:
        recipe = replace(recipe, transform=TransformConfig.from_mapping(
            with_weights_normalization(transform, model.to_dict())))
    # An interrupted bench run continues from its last.pt.
    return replace(recipe, model=model, seed=seed, trainer=replace(recipe.trainer, resume="auto"))


def load_done(run_dir: Path) -> dict | None:
    """The saved bench record of a finished run, or None when the run has to be (re)done."""
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "bench_run.json").is_file():
        return None
    record = json.loads((run_dir / "bench_run.json").read_text())
    record["metrics"] = json.loads((run_dir / "metrics.json").read_text())
    return record


def bench_record(result: Mapping) -> dict:
    speeds = [row["train_clips_per_s"] for row in result["history"] if "train_clips_per_s" in row]
    return {"parameters": result["parameters"], "num_classes": len(result["class_names"]),
            "train_clips_per_s": statistics.fmean(speeds) if speeds else float("nan"),
            "inference_clips_per_s": result["eval_clips"] / max(result["eval_seconds"], 1e-9),
            "eval_clips": result["eval_clips"], "eval_seconds": result["eval_seconds"],
            "wall_seconds": result["wall_seconds"]}


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


def write_results(bench_dir: Path, rows: Sequence[Mapping], speed: Mapping | None = None) -> None:
    folds = bool(rows) and "folds" in rows[0]
    with open(bench_dir / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FOLD_COLUMNS if folds else COLUMNS)
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
    text = "\n".join(lines) + "\n"
    if speed is not None:
        text += "\n" + cache_speed_markdown(speed)
    (bench_dir / "results.md").write_text(text, encoding="utf-8")


def run_bench(recipe: Recipe, bench: BenchSettings, bench_dir: Path, transform: Mapping | None = None) -> list[dict]:
    models, seeds = bench.models, bench.seeds
    model_cfgs = {name: bench.model_config(name) for name in models}
    folds = fold_recipes(recipe, bench.folds)  # checked before any clip is read; one split per fold for every run
    speed = None
    if bench.cache_speed:  # on the split data.split gives, as without folds
        speed = cache_speed(run_recipe(recipe, model_cfgs[models[0]], recipe.seed), models[0],
                            bench.split_seed, bench_dir)
        print(describe_cache_speed(speed) if speed else "cache speed: not measured (data.cache=null)", flush=True)
    total, rows, index = len(models) * len(seeds) * len(folds), [], 0
    for name in models:
        runs, num_classes = [], 2
        for seed in seeds:
            for fold, fold_recipe in folds.items():
                index += 1
                run_dir = bench_dir / "runs" / run_name(name, seed, fold)
                label = f"[{index}/{total}] {name} seed {seed}" + (f" fold {fold}" if fold is not None else "")
                record = load_done(run_dir)
                if record is not None:
                    print(f"{label}: skipped, done already ({run_dir})", flush=True)
                else:
                    print(f"{label}: start -> {run_dir}", flush=True)
                    result = train_run(run_recipe(fold_recipe, model_cfgs[name], seed, transform), run_dir,
                                       split_seed=bench.split_seed)
                    if not result["metrics"]:
                        raise ConfigError("bench: the runs need a test or validation split "
                                          "(data.test_fraction or data.val_fraction > 0)")
                    record = bench_record(result)
                    (run_dir / "bench_run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
                    record["metrics"] = result["metrics"]
                    print(f"{label}: done, top-1 {record['metrics']['top1']:.3f} "
                          f"in {record['wall_seconds']:.1f}s", flush=True)
                num_classes = record["num_classes"]
                runs.append(RunResult(name, seed, fold, record["metrics"], record["parameters"],
                                      record["train_clips_per_s"], record["inference_clips_per_s"],
                                      record["wall_seconds"]))
        gflops = gflops_per_clip(run_recipe(recipe, model_cfgs[name], recipe.seed), num_classes)
        rows.append(summarize(name, runs, gflops))
        write_results(bench_dir, rows, speed)  # the tables grow model by model
    return rows


@dataclass(frozen=True)
class BenchPlan:
    recipe: Recipe
    bench: BenchSettings
    transform: Mapping  # as composed: each model's pretrained weights may set the normalisation left null


def prepare(cfg: DictConfig, run_dir: Path, run_dir_given: bool) -> BenchPlan:
    """The settings, checked before the bench folder exists; the runs check their data one by one (a bench
    folder that holds finished runs is continued: they are skipped)."""
    return BenchPlan(Recipe.from_config(cfg, extra_keys=("bench",)), BenchSettings.from_mapping(cfg.bench),
                     plain(cfg.transform))


@entry_point("bench", prepare=prepare, log=True)
def main(cfg: DictConfig, plan: BenchPlan) -> None:
    bench_dir = hydra_run_dir()
    rows = run_bench(plan.recipe, plan.bench, bench_dir, plan.transform)
    print((bench_dir / "results.md").read_text(encoding="utf-8"))
    print(f"bench of {len(rows)} model(s): results.csv and results.md in {bench_dir}")


if __name__ == "__main__":
    main()
