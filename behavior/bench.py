"""``python -m behavior.bench``: train and evaluate several models over several seeds on one split (or on each of
``bench.folds`` folds), and tabulate.

Each model x seed run lives in ``<bench dir>/runs/<model>_seed<k>/`` (with folds, each model x seed x fold run in
``runs/<model>_seed<k>_fold<f>/``), a full train report. A run whose folder already holds ``metrics.json`` and
``bench_run.json`` is not run again, so an interrupted bench resumes. The tables are made from the runs finished
in the folder, whichever process ran them, so the runs can be shared between processes (``bench.shard=I/N``, or
the ranks of a torchrun job: see :mod:`behavior.bench_share`).
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from behavior import bench_share
from behavior.atomic import atomic_open
from behavior.bench_tables import RunResult, missing_note, summarize, write_results
from behavior.cache_speed import cache_speed, describe_cache_speed, saved_cache_speed
from behavior.cli import entry_point, hydra_run_dir
from behavior.config import Settings, check_bool, check_keys, check_number, fail, plain
from behavior.data.transforms import TransformConfig
from behavior.engine.distributed import World, world
from behavior.engine.loggers import require_packages
from behavior.engine.training import train_run
from behavior.errors import ConfigError
from behavior.models import ModelConfig, build_model
from behavior.paths import conf_dir
from behavior.recipe import Recipe, with_weights_normalization
from behavior.report.bench_report import write_bench_report


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
    shard: str | None  # "I/N": this invocation does share I of N (see bench_share); None: every run

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
        bench_share.parse_shard(self.shard)
        for name, variant in self.variants.items():
            check_keys(variant, f"bench.variants.{name}", ("base", "overrides"))
        for name in self.models:  # a bad entry or option stops the bench before any training
            self.model_config(name)

    @property
    def share(self) -> tuple[int, int] | None:
        """``shard`` as (I, N)."""
        return bench_share.parse_shard(self.shard)

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


@dataclass(frozen=True)
class BenchRun:
    """One model x seed (x fold) run; ``index`` counts from 1 in the order one process runs them."""

    index: int
    model: str
    seed: int
    fold: int | None

    @property
    def name(self) -> str:
        return run_name(self.model, self.seed, self.fold)

    def label(self, total: int) -> str:
        return f"[{self.index}/{total}] {self.model} seed {self.seed}" + \
            (f" fold {self.fold}" if self.fold is not None else "")


class BenchFolder:
    """The bench's runs in its folder: where each lives, whether it is finished, what it is expected to cost (for
    sharing the runs out), and the tables from the finished ones, whichever process ran them."""

    def __init__(self, recipe: Recipe, bench: BenchSettings, bench_dir: Path, runs: Sequence[BenchRun],
                 model_cfgs: Mapping[str, ModelConfig], here: World):
        self.recipe, self.bench, self.bench_dir, self.runs, self.model_cfgs = recipe, bench, bench_dir, runs, model_cfgs
        self.here = here
        self.flops: dict[tuple[str, int], float] = {}  # the tables are rewritten after every run

    def run_dir(self, run: BenchRun) -> Path:
        return self.bench_dir / "runs" / run.name

    def label(self, run: BenchRun) -> str:
        """``[i/n] <model> seed <s>``, under torchrun after the rank that prints it."""
        return (f"rank {self.here.rank}: " if self.here.distributed else "") + run.label(len(self.runs))

    def done(self, run: BenchRun) -> dict | None:
        return load_done(self.run_dir(run))

    def gflops(self, model: str, num_classes: int) -> float:
        key = (model, num_classes)
        if key not in self.flops:
            self.flops[key] = gflops_per_clip(run_recipe(self.recipe, self.model_cfgs[model], self.recipe.seed),
                                              num_classes)
        return self.flops[key]

    def cost(self, run: BenchRun) -> float:
        # Two classes: the count is not known before the data is read, and hardly changes a network's FLOPs.
        return self.gflops(run.model, 2) + bench_share.DATA_GFLOPS

    def write(self) -> tuple[list[dict], list[BenchRun]]:
        """Write results.csv/md from the finished runs (a model with some runs finished gets a row over those);
        return the rows and the runs still missing."""
        rows, missing = [], []
        for model in self.bench.models:
            results, num_classes = [], 2
            for run in (r for r in self.runs if r.model == model):
                record = self.done(run)
                if record is None:
                    missing.append(run)
                    continue
                num_classes = record["num_classes"]
                results.append(RunResult(model, run.seed, run.fold, record["metrics"], record["parameters"],
                                         record["train_clips_per_s"], record["inference_clips_per_s"],
                                         record["wall_seconds"]))
            if results:
                rows.append(summarize(model, results, self.gflops(model, num_classes)))
        speed = saved_cache_speed(self.bench_dir) if self.bench.cache_speed else None  # whoever measured it
        write_results(self.bench_dir, rows, speed, missing_note([r.name for r in missing], len(self.runs)))
        write_bench_report(self.bench_dir)
        return rows, missing


def train_bench_run(recipe: Recipe, model: ModelConfig, seed: int, transform: Mapping | None, split_seed: int,
                    run_dir: Path, group: str | None = None) -> dict:
    """Train one run into ``run_dir`` and keep its bench record there; the record with its metrics. ``group``: the
    name trainer.logger files the bench's runs under (see :func:`log_group`)."""
    result = train_run(run_recipe(recipe, model, seed, transform), run_dir, split_seed=split_seed, group=group)
    if not result["metrics"]:
        raise ConfigError("bench: the runs need a test or validation split "
                          "(data.test_fraction or data.val_fraction > 0)")
    record = bench_record(result)
    # Written last and whole: with both files there the run counts as finished, for every process reading.
    with atomic_open(run_dir / "bench_run.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    return {**record, "metrics": result["metrics"]}


def log_group(bench_dir: Path) -> str:
    """The MLflow experiment of a bench's runs, so they sit together: ``bench:<bench folder name>``."""
    return f"bench:{bench_dir.name}"


def done_line(record: Mapping) -> str:
    return f"done, top-1 {record['metrics']['top1']:.3f} in {record['wall_seconds']:.1f}s"


def own_runs(folder: BenchFolder, here: World) -> tuple[list[BenchRun], list[BenchRun]]:
    """The runs still to do in this process's share (on rank 0: in the whole job's), and the ones this process
    trains: all of them in one process; its part of them under torchrun."""
    bench, runs = folder.bench, folder.runs
    share = runs
    if bench.share is not None:  # fixed by the settings alone, so every shard computes the same division
        index, count = bench.share
        share = [runs[i] for i in bench_share.balanced([folder.cost(r) for r in runs], count)[index]]
        if here.main:
            print(f"bench.shard={bench.shard}: {len(share)} of the {len(runs)} runs here", flush=True)
    todo = []
    for run in share:
        if folder.done(run) is None:
            todo.append(run)
        elif here.main:
            print(f"{folder.label(run)}: skipped, done already ({folder.run_dir(run)})", flush=True)
    if not here.distributed:
        return todo, todo
    # Rank 0's view of what is done decides for every rank.
    names = bench_share.divide_over_ranks(here, folder.bench_dir, [r.name for r in share], [r.name for r in todo],
                                          lambda: [folder.cost(r) for r in todo])
    return todo, [run for run in share if run.name in names]


def run_bench(recipe: Recipe, bench: BenchSettings, bench_dir: Path, transform: Mapping | None = None) -> list[dict]:
    """Train this process's share of the runs (every run in one process), then, on rank 0, write the tables
    from the runs finished in ``bench_dir``; the rows (none on the other ranks)."""
    here = world()
    recipe = bench_share.rank_recipe(recipe, here)
    model_cfgs = {name: bench.model_config(name) for name in bench.models}
    folds = fold_recipes(recipe, bench.folds)  # checked before any clip is read; one split per fold for every run
    runs = [BenchRun(i, *key) for i, key in enumerate(itertools.product(bench.models, bench.seeds, folds), 1)]
    folder = BenchFolder(recipe, bench, bench_dir, runs, model_cfgs, here)
    # One process times the cache (with bench.shard, shard 0): first, as it fills the cache for the runs; but
    # torchrun's rank 0 waits until the runs are over, as ranks on one machine would time each other's load.
    timer = bench.cache_speed and here.main and (bench.share is None or bench.share[0] == 0)

    def time_the_cache() -> None:  # on the split data.split gives, as without folds
        first = bench.models[0]
        speed = cache_speed(run_recipe(recipe, model_cfgs[first], recipe.seed), first, bench.split_seed, bench_dir)
        print(describe_cache_speed(speed) if speed else "cache speed: not measured (data.cache=null)", flush=True)

    if timer and not here.distributed:
        time_the_cache()
    todo, mine = own_runs(folder, here)
    with bench_share.rank_output(here, bench_dir) as quiet:
        for run in mine:
            print(f"{folder.label(run)}: start -> {folder.run_dir(run)}", flush=True)
            with quiet(), bench_share.one_process():
                record = train_bench_run(folds[run.fold], model_cfgs[run.model], run.seed, transform,
                                         bench.split_seed, folder.run_dir(run), log_group(bench_dir))
            print(f"{folder.label(run)}: {done_line(record)}", flush=True)
            if here.main:
                folder.write()  # the tables grow run by run
    if not here.main:
        return []
    if here.distributed:
        others = {run.name: run for run in todo if run not in mine}
        bench_share.wait_for_others(list(others), lambda name: folder.done(others[name]), lambda name, record: print(
            f"{others[name].label(len(runs))}: {done_line(record)} (on another rank)", flush=True))
        if timer:
            time_the_cache()
    rows, missing = folder.write()
    if missing:
        print(missing_note([r.name for r in missing], len(runs)), flush=True)
    return rows


@dataclass(frozen=True)
class BenchPlan:
    recipe: Recipe
    bench: BenchSettings
    transform: Mapping  # as composed: each model's pretrained weights may set the normalisation left null


def prepare(cfg: DictConfig, run_dir: Path, run_dir_given: bool) -> BenchPlan:
    """The settings, checked before the bench folder exists; the runs check their data one by one (a bench
    folder that holds finished runs is continued: they are skipped)."""
    plan = BenchPlan(Recipe.from_config(cfg, extra_keys=("bench",)), BenchSettings.from_mapping(cfg.bench),
                     plain(cfg.transform))
    bench_share.check_run_dir(world(), plan.bench.shard, run_dir_given)
    require_packages(plan.recipe.trainer.logger)  # before the first run, not in it
    return plan


@entry_point("bench", prepare=prepare, log=bench_share.keeps_bench_log(), quiet_ranks=False)
def main(cfg: DictConfig, plan: BenchPlan) -> None:
    bench_dir = hydra_run_dir()
    rows = run_bench(plan.recipe, plan.bench, bench_dir, plan.transform)
    if world().main:
        print((bench_dir / "results.md").read_text(encoding="utf-8"))
        print(f"bench of {len(rows)} model(s): results.csv and results.md in {bench_dir}")


if __name__ == "__main__":
    main()
