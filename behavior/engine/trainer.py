"""The epoch loop: validation each epoch, best/last checkpoints, early stopping, resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from behavior.config import Settings, check_bool, check_choice, check_device, check_number, check_text, fail
from behavior.engine.checkpoint import Checkpoint, CheckpointError, read_checkpoint, write_checkpoint
from behavior.engine.distributed import active, all_sum, gather_predictions, unwrap
from behavior.engine.finetune import set_frozen
from behavior.engine.loggers import LOGGERS
from behavior.engine.loop import evaluation_loss, predict, train_one_epoch
from behavior.models import ModelConfig

if TYPE_CHECKING:
    from behavior.recipe import Recipe


@dataclass
class FitState:
    """What a resumed run needs besides the weights and optimizer."""

    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitConfig:
    epochs: int
    patience: int  # epochs without a better validation score before stopping; 0 = never stop early
    grad_clip: float
    amp: bool
    seed: int
    progress: bool = True
    mixup_alpha: float = 0.0  # > 0: train on mixed clip pairs (needs num_classes)
    num_classes: int | None = None
    initial_weights: dict | None = None  # finetune.initial_weights_record: kept in every checkpoint
    unfreeze_after: int | None = None  # epochs the record's frozen parameters stay frozen; None = throughout


@dataclass(frozen=True)
class TrainerConfig(Settings):
    """The ``trainer`` group, checked as a whole before any work."""

    GROUP = "trainer"
    epochs: int
    batch_size: int
    eval_batch_size: int
    num_workers: int
    patience: int  # epochs without a better validation top-1 before stopping; 0 = never stop early
    device: str
    amp: bool
    report_on: str
    resume: str | None
    progress: bool
    sync_bn: bool
    logger: tuple[str, ...]  # tracking tools the main rank logs to (behavior.engine.loggers); () for none
    mlflow_uri: str | None  # MLflow tracking URI; None: a file store mlruns/ in the folder the commands run in

    def __post_init__(self) -> None:
        for key, low in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("num_workers", 0),
                         ("patience", 0)):
            check_number(f"trainer.{key}", getattr(self, key), low, integer=True)
        check_device("trainer.device", self.device)
        check_bool("trainer.amp", self.amp)
        check_bool("trainer.progress", self.progress)
        check_bool("trainer.sync_bn", self.sync_bn)
        check_choice("trainer.report_on", self.report_on, ("best", "last"))
        check_text("trainer.resume", self.resume, none_ok=True, what="auto or a path to a last.pt")
        object.__setattr__(self, "logger", logger_names(self.logger))
        check_text("trainer.mlflow_uri", self.mlflow_uri, none_ok=True, what="an MLflow tracking URI")


def logger_names(value: object) -> tuple[str, ...]:
    """``trainer.logger`` (one name or a list of them) as a tuple of distinct tool names; none is the empty tuple
    (which a checkpoint's recipe stores as [])."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise fail("trainer.logger", value, f"choose one of {', '.join(LOGGERS)}, or a list of them")
    for name in names:
        check_choice("trainer.logger", name, LOGGERS)
    return tuple(dict.fromkeys(n for n in names if n != "none"))


RESUME_KEYS = ("optimizer_state", "scheduler_state", "scaler_state", "fit_state", "rng_state", "cuda_rng_state")


def checkpoint_mismatch(saved: Checkpoint, model: ModelConfig, class_names: list[str]) -> str:
    """What differs between a checkpoint and the run about to continue it ("" when nothing that matters does)."""
    diffs = []
    if saved.class_names != list(class_names):
        diffs.append(f"classes {saved.class_names} in the checkpoint, {list(class_names)} here")
    old, new = saved.recipe.model.to_dict(), model.to_dict()
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            diffs.append(f"model.{key} {old.get(key)!r} in the checkpoint, {new.get(key)!r} here")
    return "; ".join(diffs)


def resumable_checkpoint(path: str | Path, model_config: ModelConfig, class_names: list[str]) -> Checkpoint:
    """``trainer.resume``'s checkpoint, read and checked: the same model and class list, and a training
    state to continue (a last.pt, not an exported best.pt)."""
    saved = read_checkpoint(path, "trainer.resume")
    differs = checkpoint_mismatch(saved, model_config, class_names)
    if differs:
        raise CheckpointError(f"trainer.resume={path}: the checkpoint is of another model or class list: {differs}")
    missing = [key for key in RESUME_KEYS if key not in saved.state]
    if missing:
        raise CheckpointError(f"trainer.resume={path}: holds no {', '.join(missing)} (not written by a training "
                              "run's epoch); resume from a last.pt")
    return saved


def restore(path: str | Path, model: nn.Module, optimizer, scheduler, scaler, model_config: ModelConfig,
            class_names: list[str]) -> FitState:
    state = resumable_checkpoint(path, model_config, class_names).state
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"trainer.resume={path}: weights do not fit this model "
                              f"({str(err).splitlines()[0]})") from None
    optimizer.load_state_dict(state["optimizer_state"])
    scheduler.load_state_dict(state["scheduler_state"])
    if scaler is not None and state["scaler_state"]:
        scaler.load_state_dict(state["scaler_state"])
    torch.set_rng_state(state["rng_state"])
    if state["cuda_rng_state"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng_state"])
    fit = state["fit_state"]
    return FitState(fit["epoch"], fit["best_score"], fit["best_epoch"], fit["epochs_without_improvement"],
                    list(fit["history"]))


def fit(model: nn.Module, train_loader, val_loader, optimizer, scheduler, loss_fn, device: torch.device,
        cfg: FitConfig, run_dir: Path, recipe: Recipe, class_names: list[str], state: FitState | None = None,
        scaler: torch.amp.GradScaler | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FitState:
    """Train until ``cfg.epochs`` or early stop; ``best.pt`` holds the best validation top-1 (ties: lower loss)."""
    state = state or FitState()
    # Under torchrun each rank validates its shard of the clips; the predictions are gathered, so every rank
    # computes the same score and stops (early) at the same epoch. Only rank 0 writes.
    here = active()
    has_val = val_loader is not None and all_sum([len(val_loader.dataset)])[0] > 0
    network = unwrap(model)  # evaluation and checkpoints: no DDP collectives, no "module." in the names

    def checkpoint(path: Path) -> None:
        if not here.main:
            return
        write_checkpoint(
            path, recipe, class_names, network.state_dict(), state.epoch,
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict(),
            scaler_state=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            fit_state=vars(state),
            # Dropout and mixup draw from the global generator; shuffling and augmentation are (seed, epoch)
            # functions already. With this state a resumed run replays the uninterrupted one exactly.
            rng_state=torch.get_rng_state(),
            cuda_rng_state=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            initial_weights=cfg.initial_weights,
        )

    frozen = cfg.initial_weights["frozen"] if cfg.initial_weights else []

    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        # Shuffling and augmentation depend on (seed, epoch) only, so a resumed run replays the same batches.
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        else:
            train_loader.generator.manual_seed(cfg.seed * 100_003 + epoch)
        train_loader.dataset.set_epoch(epoch)
        thawed = cfg.unfreeze_after is not None and epoch > cfg.unfreeze_after
        set_frozen(model, frozen, not thawed)
        if frozen and thawed and epoch == cfg.unfreeze_after + 1:
            print(f"epoch {epoch}: the {len(frozen)} frozen pretrained tensors train from now on")
        stats = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, device, cfg.amp, scaler,
                                cfg.grad_clip, desc=f"epoch {epoch}/{cfg.epochs}", progress=cfg.progress,
                                mixup_alpha=cfg.mixup_alpha, num_classes=cfg.num_classes)
        loss_sum, correct, seen = all_sum([stats.loss * stats.clips, stats.acc * stats.clips, stats.clips])
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
               "lr": optimizer.param_groups[0]["lr"], "train_clips_per_s": seen / max(stats.seconds, 1e-9)}
        if has_val:
            _, labels, probs = gather_predictions(*predict(network, val_loader, device, cfg.amp, desc="validate",
                                                           progress=cfg.progress))
            row["val_loss"] = evaluation_loss(probs, labels)
            row["val_acc"] = float((probs.argmax(1) == labels).mean())
            score = row["val_acc"] - 1e-6 * row["val_loss"]
        else:
            score = row["train_acc"] - 1e-6 * row["train_loss"]
        state.epoch = epoch
        state.history.append(row)
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.epochs_without_improvement = score, epoch, 0
        else:
            state.epochs_without_improvement += 1
        if improved:
            checkpoint(run_dir / "best.pt")
        checkpoint(run_dir / "last.pt")
        if on_epoch is not None and here.main:
            on_epoch(row)
        if has_val and cfg.patience > 0 and state.epochs_without_improvement >= cfg.patience:
            print(f"early stop: no better validation top-1 for {cfg.patience} epochs (best epoch {state.best_epoch})")
            break
    return state


def describe_epoch(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']:3d}", f"loss {row['train_loss']:.3f}", f"acc {row['train_acc']:.3f}"]
    if "val_acc" in row:
        parts += [f"val_loss {row['val_loss']:.3f}", f"val_acc {row['val_acc']:.3f}"]
    parts.append(f"{row['train_clips_per_s']:.1f} clips/s")
    return " | ".join(parts)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
