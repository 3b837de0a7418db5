"""Optimizer, learning-rate schedule and loss from the ``optim`` config group."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from behavior.errors import ConfigError

SCHEDULES = ("cosine", "onecycle", "constant")


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


def mixup_alpha(cfg: Mapping) -> float:
    alpha = cfg.get("mixup_alpha", 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha < 0:
        raise ConfigError(f"optim.mixup_alpha={alpha!r}: must be a number >= 0 (0 = off)")
    return float(alpha)


def build_loss(cfg: Mapping, train_labels: Sequence[int], num_classes: int) -> nn.Module:
    smoothing = cfg.get("label_smoothing", 0.0)
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"optim.label_smoothing={smoothing}: must be in [0, 1)")
    weight = class_weights(train_labels, num_classes) if cfg.get("class_weighted", False) else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)
