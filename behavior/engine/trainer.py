"""The epoch loop: validation each epoch, best/last checkpoints, early stopping, resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from behavior.config import check_number, dataclass_from_mapping
from behavior.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from behavior.engine.loop import evaluation_loss, predict, train_one_epoch


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


@dataclass(frozen=True)
class TrainerConfig:
    """The ``trainer`` group, checked as a whole before any work."""

    epochs: int = 40
    batch_size: int = 16
    eval_batch_size: int = 16
    num_workers: int = 2
    patience: int = 10
    device: str = "auto"
    amp: bool = True
    report_on: str = "best"
    resume: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_number("trainer.epochs", self.epochs, 1, integer=True)
        check_number("trainer.batch_size", self.batch_size, 1, integer=True)
        check_number("trainer.eval_batch_size", self.eval_batch_size, 1, integer=True)
        check_number("trainer.num_workers", self.num_workers, 0, integer=True)
        check_number("trainer.patience", self.patience, 0, integer=True)
        for key in ("amp", "progress"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"trainer.{key}={getattr(self, key)!r}: must be true or false")
        if self.report_on not in ("best", "last"):
            raise ValueError(f"trainer.report_on={self.report_on!r}: choose best or last")
        if self.resume is not None and not isinstance(self.resume, str):
            raise ValueError(f"trainer.resume={self.resume!r}: use auto, a path to a last.pt, or null")


def trainer_config(cfg) -> TrainerConfig:
    return dataclass_from_mapping(TrainerConfig, cfg, "trainer")


def checkpoint_mismatch(state: dict[str, Any], model_config: dict | None, class_names: list[str] | None) -> str:
    """What differs between a checkpoint and the run about to use it ("" when nothing that matters does)."""
    diffs = []
    saved_classes = state.get("class_names")
    if class_names is not None and saved_classes is not None and list(saved_classes) != list(class_names):
        diffs.append(f"classes {list(saved_classes)} in the checkpoint, {list(class_names)} here")
    saved_config = state.get("model_config")
    if model_config is not None and isinstance(saved_config, dict):
        for key in sorted(set(saved_config) | set(model_config)):
            if saved_config.get(key) != model_config.get(key):
                diffs.append(f"model.{key} {saved_config.get(key)!r} in the checkpoint, {model_config.get(key)!r} here")
    return "; ".join(diffs)


def restore(path: str | Path, model: nn.Module, optimizer, scheduler, scaler, model_config: dict | None = None,
            class_names: list[str] | None = None) -> FitState:
    state = load_checkpoint(path)
    differs = checkpoint_mismatch(state, model_config, class_names)
    if differs:
        raise CheckpointError(f"trainer.resume={path}: the checkpoint is of another model or class list: {differs}")
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"trainer.resume={path}: weights do not fit this model "
                              f"({str(err).splitlines()[0]})") from None
    if "optimizer_state" not in state:
        raise CheckpointError(f"trainer.resume={path}: holds no optimizer state; resume from a last.pt")
    optimizer.load_state_dict(state["optimizer_state"])
    scheduler.load_state_dict(state["scheduler_state"])
    if scaler is not None and state.get("scaler_state"):
        scaler.load_state_dict(state["scaler_state"])
    if state.get("rng_state") is not None:
        torch.set_rng_state(state["rng_state"])
    if state.get("cuda_rng_state") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng_state"])
    fit = state["fit_state"]
    return FitState(fit["epoch"], fit["best_score"], fit["best_epoch"], fit["epochs_without_improvement"],
                    list(fit["history"]))


def fit(model: nn.Module, train_loader, val_loader, optimizer, scheduler, loss_fn, device: torch.device,
        cfg: FitConfig, run_dir: Path, checkpoint_extra: dict[str, Any], state: FitState | None = None,
        scaler: torch.amp.GradScaler | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FitState:
    """Train until ``cfg.epochs`` or early stop; ``best.pt`` holds the best validation top-1 (ties: lower loss)."""
    state = state or FitState()
    has_val = val_loader is not None and len(val_loader.dataset) > 0

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, {
            **checkpoint_extra,
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(),
            "scaler_state": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "epoch": state.epoch,
            "fit_state": vars(state),
            # Dropout and mixup draw from the global generator; shuffling and augmentation are (seed, epoch)
            # functions already. With this state a resumed run replays the uninterrupted one exactly.
            "rng_state": torch.get_rng_state(),
            "cuda_rng_state": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        })

    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        # Shuffling and augmentation depend on (seed, epoch) only, so a resumed run replays the same batches.
        train_loader.generator.manual_seed(cfg.seed * 100_003 + epoch)
        train_loader.dataset.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, device, cfg.amp, scaler,
                                cfg.grad_clip, desc=f"epoch {epoch}/{cfg.epochs}", progress=cfg.progress,
                                mixup_alpha=cfg.mixup_alpha, num_classes=cfg.num_classes)
        row = {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.acc,
               "lr": optimizer.param_groups[0]["lr"], "train_clips_per_s": stats.clips / max(stats.seconds, 1e-9)}
        if has_val:
            _, labels, probs = predict(model, val_loader, device, cfg.amp, desc="validate", progress=cfg.progress)
            row["val_loss"] = evaluation_loss(probs, labels)
            row["val_acc"] = float((probs.argmax(1) == labels).mean())
            score = row["val_acc"] - 1e-6 * row["val_loss"]
        else:
            score = stats.acc - 1e-6 * stats.loss
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
        if on_epoch is not None:
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
