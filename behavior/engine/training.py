"""A whole training run: data -> regions -> clip pipeline -> model -> fit -> report on test (or validation).

Shared by ``python -m behavior.train`` (one run) and ``python -m behavior.bench`` (one per model and seed)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from behavior.config import device_of
from behavior.data.pipeline import ClipPipeline, input_channels
from behavior.data.prepare import PreparedData, clip_cache, clip_regions, prepare_data, write_data_records
from behavior.engine.checkpoint import read_checkpoint
from behavior.engine.distributed import SINGLE, World, barrier, collective, rank_device, shard, unwrap, wrap
from behavior.engine.evaluation import EvalLoader, evaluate_split
from behavior.engine.finetune import describe_start, initial_weights_record, weights_provenance
from behavior.engine.loggers import RunLogger, open_loggers, require_packages
from behavior.engine.loop import amp_enabled
from behavior.engine.optim import align_schedule, build_loss, build_optimizer, build_scheduler
from behavior.engine.trainer import (
    FitConfig,
    FitState,
    describe_epoch,
    fit,
    restore,
    resumable_checkpoint,
    seed_everything,
)
from behavior.errors import ConfigError
from behavior.models import build_model
from behavior.models.pretrained import WeightsSource, fetch, load_pretrained, weights_source
from behavior.paths import user_path
from behavior.recipe import Recipe
from behavior.report import write_history

RUN_FILES = ("last.pt", "best.pt", "metrics.json")


@dataclass(frozen=True)
class TrainPlan:
    """A training run checked from end to end before its folder is touched: the recipe, where it goes, the
    checkpoint it continues from, and the clips (pre-scanned and split)."""

    recipe: Recipe
    run_dir: Path
    resume: str | None
    data: PreparedData
    weights: WeightsSource | None  # model.pretrained, fetched and tried on the model (None when resuming)
    ranks: World = SINGLE  # the processes this run is shared over (torchrun); one by default (bench runs)
    group: str | None = None  # the runs trainer.logger files this one with (a bench's); None: a run of its own


def resume_path(resume: str | None, run_dir: Path, run_dir_given: bool = True) -> str | None:
    """The checkpoint to continue from: ``trainer.resume`` as given, or ``auto`` = this run folder's last.pt if any.

    A folder that already holds a run is never trained over from scratch: that would overwrite its checkpoints
    and report."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume == "auto":
        if not run_dir_given:
            raise ConfigError("trainer.resume=auto continues the run in hydra.run.dir: give the run's folder "
                              "(hydra.run.dir=outputs/train/<date_time>)")
        if (run_dir / "last.pt").is_file():
            return str(run_dir / "last.pt")
        if not found:
            print(f"trainer.resume=auto: nothing to continue in {run_dir}: a new run starts there")
            return None
    elif resume:
        path = user_path(resume)
        if path.is_dir():
            hint = f" (its last.pt: trainer.resume={path / 'last.pt'})" if (path / "last.pt").is_file() else ""
            raise ConfigError(f"trainer.resume={resume}: is a folder, not a checkpoint file{hint}")
        if not path.is_file():
            raise ConfigError(f"trainer.resume={resume}: file not found")
        return str(path)
    if found:
        raise ConfigError(f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}): continue it with "
                          "trainer.resume=auto, or choose another hydra.run.dir")
    return None


def plan_training(recipe: Recipe, run_dir: Path, split_seed: int | None = None,
                  run_dir_given: bool = True) -> TrainPlan:
    """Check everything a training run can check without writing: the run folder, the checkpoint to resume and
    whether it fits, the clips. ``split_seed`` (default ``recipe.seed``) draws the train/val/test split."""
    run_dir = Path(run_dir)
    require_packages(recipe.trainer.logger)
    resume = resume_path(recipe.trainer.resume, run_dir, run_dir_given)
    # A resumed run has its weights already; a new one fetches model.pretrained before the long pre-scan.
    weights = None if resume else weights_source(recipe.model.pretrained)
    if weights is not None:
        fetch(weights)
    split_seed = recipe.seed if split_seed is None else split_seed
    data = prepare_data(recipe.data, recipe.decode.backend, split_seed, progress=recipe.trainer.progress)
    if resume:
        resumable_checkpoint(resume, recipe.model, list(data.class_names))
    if weights is not None:  # weights that do not fit stop here, not after the run folder is made
        load_pretrained(build_model(recipe.model, len(data.class_names), recipe.flow_channels), weights,
                        recipe.model.pretrained_strict)
    return TrainPlan(recipe, run_dir, resume, data, weights)


def initial_weights(plan: TrainPlan, model: torch.nn.Module) -> dict | None:
    """Load ``model.pretrained`` into ``model`` and return the record checkpoints keep (a resumed run carries
    its checkpoint's record on); None when training from scratch."""
    if plan.resume:
        return read_checkpoint(plan.resume, "trainer.resume").state.get("initial_weights")
    recipe = plan.recipe
    if plan.weights is None:
        if recipe.optim.backbone_lr_mult != 1.0:  # a bench may set it for every model, pretrained or not
            print(f"optim.backbone_lr_mult={recipe.optim.backbone_lr_mult:g}: no pretrained tensors to slow down "
                  "(model.pretrained is null)")
        return None
    report = load_pretrained(model, plan.weights, recipe.model.pretrained_strict)
    record = initial_weights_record(model, plan.weights, report, recipe.model, recipe.optim.backbone_lr_mult)
    print(describe_start(record, recipe.model.unfreeze_after, recipe.optim.backbone_lr_mult))
    return record


def train_run(recipe: Recipe, run_dir: Path, split_seed: int | None = None, group: str | None = None) -> dict:
    """Train ``recipe.model`` on ``recipe.data`` into ``run_dir`` and report on test (or val): see
    :func:`run_training`. ``group``: :attr:`TrainPlan.group`."""
    return run_training(replace(plan_training(recipe, run_dir, split_seed), group=group))


def run_training(plan: TrainPlan) -> dict:
    """Carry out a checked plan: train into ``plan.run_dir`` and report on test (or val).

    Returns ``{"metrics", "parameters", "class_names", "history", "eval_seconds", "eval_clips", "wall_seconds"}``;
    ``metrics`` is empty when there is no split to report on (and on every rank but 0 of a torchrun job).

    Under torchrun (``plan.ranks``) the model trains as DistributedDataParallel on each rank's share of every epoch;
    validation and the report predict each rank's shard of the clips and gather them; only rank 0 writes (and logs
    to ``trainer.logger``'s tools: leaving the block, by a return, an error or Ctrl-C, ends their runs with its
    status).
    """
    trainer = plan.recipe.trainer
    with collective(plan.ranks), open_loggers(trainer.logger if plan.ranks.main else (), plan.run_dir,
                                              group=plan.group, mlflow_uri=trainer.mlflow_uri) as run_log:
        return _carry_out(plan, plan.ranks, run_log)


def _carry_out(plan: TrainPlan, here: World, run_log: RunLogger) -> dict:
    start = time.perf_counter()
    recipe, run_dir, resume, data = plan.recipe, plan.run_dir, plan.resume, plan.data
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer, backend = recipe.trainer, recipe.decode.backend
    seed_everything(recipe.seed)
    device = rank_device(device_of(trainer.device), here)
    cache = clip_cache(recipe.data, backend, recipe.transform, recipe.flow if recipe.model.uses_flow else None)
    if here.main:
        write_data_records(run_dir, recipe.data, data)
    parts = data.split.parts()
    print(f"{len(data.class_names)} classes {data.class_names}; clips: { {k: len(v) for k, v in parts.items()} }; "
          f"run dir: {run_dir}")
    regions = clip_regions(parts, recipe.roi, backend, data.num_frames, run_dir if here.main else None,
                           trainer.progress, cache)
    if cache is not None:
        print(cache.summary([r.path for recs in parts.values() for r in recs], data.num_frames, regions))
    pipeline = ClipPipeline(recipe.sampling, recipe.transform, backend, recipe.roi, recipe.data.decode_timeout,
                            cache=cache, num_frames=data.num_frames, regions=regions,
                            **input_channels(recipe.model.input, recipe.flow))

    def loader(name: str, train: bool):
        # Training: each rank its share of each epoch's shuffle; validation: each rank a fixed shard, gathered.
        return pipeline.loader(parts[name] if train else shard(parts[name]), data.class_to_idx, train,
                               trainer.batch_size if train else trainer.eval_batch_size, trainer.num_workers,
                               recipe.seed, pin_memory=device.type == "cuda", ranks=(here.rank, here.size))

    train_loader, val_loader = loader("train", True), loader("val", False)
    model = build_model(recipe.model, len(data.class_names), recipe.flow_channels)
    start_weights = initial_weights(plan, model)
    model = model.to(device)
    optimizer = build_optimizer(model, recipe.optim, start_weights["slow"] if start_weights else ())
    scheduler = build_scheduler(optimizer, recipe.optim, len(train_loader), trainer.epochs)
    train_labels = [data.class_to_idx[r.label] for r in data.split.train]
    loss_fn = build_loss(recipe.optim, train_labels, len(data.class_names)).to(device)
    amp = amp_enabled(trainer.amp, device)
    # Loss scaling only for float16 (CUDA without bf16); bf16 autocast, on CUDA or CPU, needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())
    state = None
    if resume:
        state = restore(resume, model, optimizer, scheduler, scaler, recipe.model, list(data.class_names))
    if state is not None:
        print(f"resumed from {resume} after epoch {state.epoch}")
        align_schedule(scheduler, state.epoch * len(train_loader), len(train_loader) * trainer.epochs)
        # The run folder must stay self-contained: bring the best checkpoint so far along with the history.
        previous_best = Path(resume).parent / "best.pt"
        if here.main and previous_best.is_file() and previous_best.resolve() != (run_dir / "best.pt").resolve():
            shutil.copy2(previous_best, run_dir / "best.pt")
    params = sum(p.numel() for p in model.parameters())
    processes = f" x {here.size} processes" if here.distributed else ""
    print(f"model {recipe.model.name}: {params / 1e6:.2f}M parameters; device {device}{' (AMP)' if amp else ''}"
          f"{processes}")
    if here.distributed:  # dropout and mixup draw differently on each rank; the weights start equal (DDP)
        torch.manual_seed(recipe.seed * 1_000_003 + here.rank * 7919 + (state.epoch if state else 0))
    model = wrap(model, device, trainer.sync_bn)

    run_log.start(recipe.to_dict())
    fit_cfg = FitConfig(trainer.epochs, trainer.patience, recipe.optim.grad_clip, amp, recipe.seed, trainer.progress,
                        recipe.optim.mixup_alpha, len(data.class_names), start_weights, recipe.model.unfreeze_after)
    state = state or FitState()

    def on_epoch(row):
        print(describe_epoch(row), flush=True)
        write_history(run_dir, state.history)
        run_log.epoch(row)

    state = fit(model, train_loader, val_loader, optimizer, scheduler, loss_fn, device, fit_cfg, run_dir, recipe,
                list(data.class_names), state, scaler, on_epoch=on_epoch)

    # The final report is on the best (or, trainer.report_on=last, the last) checkpoint, on test (or validation
    # when there is no test split).
    result = {"metrics": {}, "parameters": params, "class_names": list(data.class_names),
              "history": list(state.history), "eval_seconds": 0.0, "eval_clips": 0, "wall_seconds": 0.0}
    split_name = "test" if data.split.test else "val"
    if not parts[split_name]:
        print(f"no validation or test clips (data.val_fraction = data.test_fraction = 0): checkpoints in {run_dir}, "
              "no report")
        run_log.finish({}, None)
        result["wall_seconds"] = time.perf_counter() - start
        return result
    barrier("rank 0 writing the last epoch's checkpoints")
    reported = read_checkpoint(run_dir / f"{trainer.report_on}.pt")
    unwrap(model).load_state_dict(reported.state["model_state"])
    eval_start = time.perf_counter()
    metrics = evaluate_split(model, parts[split_name], data.class_names, pipeline, device, amp,
                             EvalLoader(trainer.eval_batch_size, trainer.num_workers, trainer.progress), run_dir,
                             split_name, extra={"best_epoch": reported.epoch, "epochs_run": state.epoch,
                                                "checkpoint": f"{trainer.report_on}.pt",
                                                "initial_weights": weights_provenance(start_weights)},
                             checkpoint=run_dir / f"{trainer.report_on}.pt")
    result.update(metrics=metrics, eval_seconds=time.perf_counter() - eval_start,
                  eval_clips=len(parts[split_name]), wall_seconds=time.perf_counter() - start)
    run_log.finish(metrics, run_dir / "confusion_matrix.png")
    print(f"wall time {result['wall_seconds']:.1f}s; report in {run_dir}")
    return result
