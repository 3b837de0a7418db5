"""One training epoch and one inference pass; no knowledge of configs, files or reports."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from behavior.errors import DivergedError
from behavior.progress import Progress


def amp_enabled(requested: bool, device: torch.device) -> bool:
    """Mixed precision on CUDA only. CPU bf16 autocast trains 3D CNNs twice as fast on CPUs with AVX512-BF16, but
    with torch 2.14.1 its conv3d backward returned inf weight gradients (r2plus1d_18: every step; r3d_18: a
    whole basketball run went NaN), so CPUs stay in float32."""
    return bool(requested) and device.type == "cuda"


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()


@dataclass
class EpochStats:
    loss: float
    acc: float
    clips: int
    seconds: float


def mixup(video: torch.Tensor, target: torch.Tensor, alpha: float, num_classes: int):
    """Blend each clip with another clip of the batch, and their one-hot labels with the same weight.

    One weight per batch drawn from Beta(alpha, alpha); the partner order is a random permutation. Returns the
    mixed clips and the soft targets (rows sum to 1), which CrossEntropyLoss takes as class probabilities.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(video.shape[0], device=video.device)
    one_hot = nn.functional.one_hot(target, num_classes).to(video.dtype)
    return lam * video + (1 - lam) * video[order], lam * one_hot + (1 - lam) * one_hot[order]


def train_one_epoch(model: nn.Module, loader, optimizer, scheduler, loss_fn: nn.Module, device: torch.device,
                    amp: bool = False, scaler: torch.amp.GradScaler | None = None, grad_clip: float = 0.0,
                    desc: str = "train", progress: bool = True, mixup_alpha: float = 0.0,
                    num_classes: int | None = None) -> EpochStats:
    """One pass over ``loader``; ``mixup_alpha > 0`` trains on mixed clips (accuracy still counts the clip's own
    label, so it reads lower than without mixup)."""
    model.train()
    start = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    bar = Progress(loader, desc=desc, unit="batch", leave=False, enabled=progress)
    for batch, (video, target, _) in enumerate(bar, start=1):
        video, target = video.to(device, non_blocking=True), target.to(device, non_blocking=True)
        inputs, wanted = video, target
        if mixup_alpha > 0 and video.shape[0] > 1:
            inputs, wanted = mixup(video, target, mixup_alpha, num_classes)
        with autocast(device, amp):
            logits = model(inputs)
            loss = loss_fn(logits.float(), wanted)
        if not torch.isfinite(loss):  # one bad step poisons every weight after it: stop while last.pt is sound
            raise DivergedError(f"training diverged: loss {loss.item()} at batch {batch} "
                                f"({desc}); lower optim.lr or set trainer.amp=false")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None and scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        n = target.numel()
        total_loss += loss.item() * n
        correct += (logits.argmax(1) == target).sum().item()
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                        lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return EpochStats(total_loss / max(1, seen), correct / max(1, seen), seen, time.perf_counter() - start)


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, amp: bool = False, desc: str = "eval",
            progress: bool = True):
    """Class probabilities per clip, averaged over temporal views: ``(indices, labels, probs [N, C])``."""
    model.eval()
    all_idx, all_labels, all_probs = [], [], []
    for video, target, index in Progress(loader, desc=desc, unit="batch", leave=False, enabled=progress):
        batch, views = video.shape[:2]
        with autocast(device, amp):
            logits = model(video.flatten(0, 1).to(device, non_blocking=True))
        probs = logits.float().softmax(-1).view(batch, views, -1).mean(1)
        all_probs.append(probs.cpu())
        all_labels.append(target)
        all_idx.append(index)
    if not all_probs:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 0), np.float32)
    return (torch.cat(all_idx).numpy(), torch.cat(all_labels).numpy(), torch.cat(all_probs).numpy())


def evaluation_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class, from averaged probabilities."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-8, 1.0)).mean())
