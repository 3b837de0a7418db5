"""Optimizer, learning-rate schedule and loss from the ``optim`` config group."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from behavior.config import Settings, check_bool, check_choice, check_number, check_numbers

SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class OptimConfig(Settings):
    """The ``optim`` group, checked as a whole before any work (types, ranges, choices)."""

    GROUP = "optim"
    name: str
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    schedule: str  # stepped per batch
    warmup_epochs: float  # cosine / constant only
    min_lr_ratio: float  # cosine floor, as a fraction of lr
    pct_start: float  # onecycle only
    label_smoothing: float
    mixup_alpha: float  # > 0: blend clip pairs and labels with a Beta(alpha, alpha) weight; 0 = off
    class_weighted: bool
    grad_clip: float  # max gradient norm; 0 = off
    backbone_lr_mult: float  # the loaded (pretrained) stem and backbone learn at lr x this

    def __post_init__(self) -> None:
        check_choice("optim.name", self.name, ("adamw",))
        check_number("optim.lr", self.lr, 0, above=True)
        check_number("optim.weight_decay", self.weight_decay, 0)
        object.__setattr__(self, "betas", check_numbers("optim.betas", self.betas, 2, 0.0, 0.999999))
        check_choice("optim.schedule", self.schedule, SCHEDULES)
        check_number("optim.warmup_epochs", self.warmup_epochs, 0)
        check_number("optim.min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_number("optim.pct_start", self.pct_start, 0, 1, above=True)
        check_number("optim.label_smoothing", self.label_smoothing, 0, 0.999999)
        check_number("optim.mixup_alpha", self.mixup_alpha, 0)
        check_bool("optim.class_weighted", self.class_weighted)
        check_number("optim.grad_clip", self.grad_clip, 0)
        check_number("optim.backbone_lr_mult", self.backbone_lr_mult, 0, 1)


def build_optimizer(model: nn.Module, cfg: OptimConfig, slow: Sequence[str] = ()) -> torch.optim.Optimizer:
    """AdamW over every parameter; those named in ``slow`` (pretrained ones) at ``lr * backbone_lr_mult``.
    Parameters frozen for a while (``model.freeze``) are in it too: they get no gradient, so no update, until
    they are unfrozen."""
    slow = set(slow)
    groups = {}
    for name, p in model.named_parameters():
        # No weight decay on norms and biases: decaying them only hurts small networks.
        key = (p.ndim > 1, name in slow)
        groups.setdefault(key, []).append(p)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
          "lr": cfg.lr * (cfg.backbone_lr_mult if is_slow else 1.0)}
         for (decay, is_slow), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))],
        lr=cfg.lr, betas=cfg.betas)


def build_scheduler(optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int):
    """Stepped once per batch. Cosine has a linear warm-up; one-cycle brings its own."""
    total = max(1, steps_per_epoch * epochs)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total,
                                                   pct_start=cfg.pct_start)
    warmup = min(total - 1, int(cfg.warmup_epochs * steps_per_epoch))
    min_factor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def align_schedule(scheduler, steps_done: int, total_steps: int) -> None:
    """Put a restored schedule at ``steps_done`` of ``total_steps``: a run resumed with another number of
    processes has another number of steps per epoch, and must go on from where its epochs left it."""
    import warnings

    scheduler.last_epoch = steps_done
    if hasattr(scheduler, "total_steps"):  # one-cycle keeps its length in its state
        scheduler.total_steps = total_steps
    with warnings.catch_warnings():  # get_lr outside step() warns; here it is the point
        warnings.simplefilter("ignore")
        rates = scheduler.get_lr()
    for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    scheduler._last_lr = list(rates)


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over the classes seen in training."""
    counts = Counter(labels)
    weights = torch.tensor([len(labels) / (num_classes * counts[c]) if counts[c] else 0.0
                            for c in range(num_classes)])
    return weights * (num_classes / weights.sum().clamp_min(1e-8))


def build_loss(cfg: OptimConfig, train_labels: Sequence[int], num_classes: int) -> nn.Module:
    weight = class_weights(train_labels, num_classes) if cfg.class_weighted else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
