"""Optimizer, learning-rate schedule and loss from the ``optim`` config group."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from behavior.config import check_number, dataclass_from_mapping
from behavior.errors import ConfigError

SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """The ``optim`` group, checked as a whole before any work (types, ranges, choices)."""

    name: str = "adamw"
    lr: float = 4e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup_epochs: float = 1
    min_lr_ratio: float = 0.01
    pct_start: float = 0.25
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0
    class_weighted: bool = False
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.name != "adamw":
            raise ValueError(f"optim.name={self.name!r}: only 'adamw' is available")
        check_number("optim.lr", self.lr, 0, above=True)
        check_number("optim.weight_decay", self.weight_decay, 0)
        if not isinstance(self.betas, Sequence) or len(self.betas) != 2:
            raise ValueError(f"optim.betas={self.betas!r}: must be a list of two numbers in [0, 1)")
        for beta in self.betas:
            check_number("optim.betas", beta, 0, 0.999999)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        check_number("optim.warmup_epochs", self.warmup_epochs, 0)
        check_number("optim.min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_number("optim.pct_start", self.pct_start, 0, 1, above=True)
        check_number("optim.label_smoothing", self.label_smoothing, 0, 0.999999)
        check_number("optim.mixup_alpha", self.mixup_alpha, 0)
        if not isinstance(self.class_weighted, bool):
            raise ValueError(f"optim.class_weighted={self.class_weighted!r}: must be true or false")
        check_number("optim.grad_clip", self.grad_clip, 0)


def optim_config(cfg: Mapping) -> OptimConfig:
    return dataclass_from_mapping(OptimConfig, cfg, "optim")


def build_optimizer(model: nn.Module, cfg: Mapping) -> torch.optim.Optimizer:
    if cfg["name"] != "adamw":
        raise ConfigError(f"optim.name={cfg['name']!r}: only 'adamw' is available")
    if cfg["lr"] <= 0:
        raise ConfigError(f"optim.lr={cfg['lr']}: must be > 0")
    # No weight decay on norms and biases: decaying them only hurts small networks.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))))


def build_scheduler(optimizer, cfg: Mapping, steps_per_epoch: int, epochs: int):
    """Stepped once per batch. Cosine has a linear warm-up; one-cycle brings its own."""
    schedule = cfg["schedule"]
    total = max(1, steps_per_epoch * epochs)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], total_steps=total,
                                                   pct_start=cfg.get("pct_start", 0.25))
    if schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}")
    warmup = min(total - 1, int(cfg.get("warmup_epochs", 0) * steps_per_epoch))
    min_factor = cfg.get("min_lr_ratio", 0.01)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over the classes seen in training."""
    counts = Counter(labels)
    weights = torch.tensor([len(labels) / (num_classes * counts[c]) if counts[c] else 0.0
                            for c in range(num_classes)])
    return weights * (num_classes / weights.sum().clamp_min(1e-8))


def build_loss(cfg: Mapping, train_labels: Sequence[int], num_classes: int) -> nn.Module:
    smoothing = cfg.get("label_smoothing", 0.0)
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"optim.label_smoothing={smoothing}: must be in [0, 1)")
    weight = class_weights(train_labels, num_classes) if cfg.get("class_weighted", False) else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)
