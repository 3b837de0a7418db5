"""Temporal pooling of per-frame features, [B, T, D] -> [B, D]: the ``temporal_pool`` option of BehaviorNet.

Order-blind (the same set of frames in any order gives the same output):
- "mean": average over T, the TSN-style consensus; robust and parameter-free.
- "max": the most responsive frame per feature, for short events inside a longer clip.
- "attention": learned per-frame weights, softmax(w . f_t + b) over time; w starts at zero, so it begins as
  the mean and learns which frames matter. The last weights are kept in ``last_weights``.

Order-aware (a clip and the same clip reversed differ: clockwise vs counter-clockwise, sit down vs stand up).
Each adds a learned term to the mean, ``mean_t(f) + head(f)``:
- "tconv": two 1-D convolutions over T (kernel 3, D -> D/4 -> D, ReLU between) as a residual on every frame,
  then the mean over T.
- "gru": a one-layer GRU (hidden D/3) over the frames in order; its last state, projected back to D.
- "transformer": one small encoder layer (width D/3, 4 heads) over the frames plus learned position
  embeddings, averaged over T and projected back to D.
At D = 192 (the default BehaviorNet) each costs about 55-65k parameters, under a tenth of the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .registry import check_choice

TEMPORAL_POOLS = ("mean", "max", "attention", "tconv", "gru", "transformer")
ORDER_AWARE_POOLS = ("tconv", "gru", "transformer")
MAX_POSITIONS = 64  # learned position embeddings; longer clips interpolate them


class TemporalConv(nn.Module):
    """f_t + conv(relu(conv(f)))_t over T, then the mean over T."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = max(dim // 4, 4)
        self.reduce = nn.Conv1d(dim, hidden, 3, padding=1)
        self.expand = nn.Conv1d(hidden, dim, 3, padding=1)

    def forward(self, feats: Tensor) -> Tensor:
        x = feats.transpose(1, 2)  # [B, D, T]
        return self.expand(F.relu(self.reduce(x))).mean(dim=2)


class TemporalGRU(nn.Module):
    """The last state of a GRU run over the frames in order, projected to D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = max(dim // 3, 4)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, dim)

    def forward(self, feats: Tensor) -> Tensor:
        _, last = self.gru(feats)  # [1, B, hidden]
        return self.out(last[0])


class TemporalTransformer(nn.Module):
    """One pre-norm encoder layer over projected frames plus learned position embeddings; mean over T, to D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        width = max(dim // 3 // 4 * 4, 4)  # divisible by the 4 heads
        self.proj = nn.Linear(dim, width)
        self.positions = nn.Parameter(torch.randn(1, MAX_POSITIONS, width) * 0.02)
        self.layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.out = nn.Linear(width, dim)

    def position_embeddings(self, t: int) -> Tensor:
        if t <= MAX_POSITIONS:
            return self.positions[:, :t]
        return F.interpolate(self.positions.transpose(1, 2), size=t, mode="linear",
                             align_corners=True).transpose(1, 2)

    def forward(self, feats: Tensor) -> Tensor:
        x = self.proj(feats) + self.position_embeddings(feats.shape[1])
        return self.out(self.layer(x).mean(dim=1))


ORDER_HEADS = {"tconv": TemporalConv, "gru": TemporalGRU, "transformer": TemporalTransformer}


class TemporalPool(nn.Module):
    """[B, T, D] -> [B, D] by one of :data:`TEMPORAL_POOLS` (see the module docstring); the one place the
    ``temporal_pool`` option is checked."""

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        self.kind = check_choice("temporal_pool", kind, TEMPORAL_POOLS)
        self.score = nn.Linear(dim, 1) if kind == "attention" else None
        self.order = ORDER_HEADS[kind](dim) if kind in ORDER_HEADS else None
        self.last_weights: Tensor | None = None

    @property
    def order_aware(self) -> bool:
        return self.kind in ORDER_AWARE_POOLS

    def reset_parameters(self) -> None:
        """The pool's own start, after the model-wide init: attention at uniform weights; in the order heads the
        convolutions keep the model's He init and the rest goes back to PyTorch's defaults (with the model-wide
        std-0.01 linear layers, or a small start, tconv and the transformer stayed at chance on some seeds of
        ``python -m behavior.order_bench``)."""
        if self.score is not None:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)
        if self.order is not None:
            for module in self.order.modules():
                if module is not self.order and hasattr(module, "reset_parameters"):
                    if not isinstance(module, nn.Conv1d):
                        module.reset_parameters()

    def forward(self, feats: Tensor) -> Tensor:
        if self.kind == "max":
            return feats.amax(dim=1)
        if self.kind == "attention":
            weights = torch.softmax(self.score(feats).squeeze(-1), dim=1)  # [B, T]
            self.last_weights = weights.detach()
            return torch.einsum("bt,btd->bd", weights, feats)
        pooled = feats.mean(dim=1)
        return pooled if self.order is None else pooled + self.order(feats)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
