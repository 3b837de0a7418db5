"""Motion statistics: what a clip's optical flow looks like in a few numbers, classified by a tiny MLP.

With ~150 training clips a CNN on flow (or frames) can memorise the source recordings; a histogram of how much
and which way things move cannot. Per flow field (one per sampled frame and stacked pair) :func:`flow_statistics`
measures, with displacements in units of ``flow.bound``:

- how much moves: the share of pixels in each of 8 log-spaced magnitude bins,
- which way: 8 direction bins weighted by magnitude (a distribution over directions),
- in numbers: mean and std of the magnitude, mean |x| and |y|, mean x and y, the share of pixels moving,
- where: the mean magnitude of each cell of a 4x4 grid, sorted (motion in one corner vs all over the frame,
  wherever that is).

The fields of one frame's stack are averaged; over time each statistic is summarised by its mean, std, max and
mean absolute change between frames (steady walking vs a jerky fight). :class:`MotionStats` normalises these
(batch norm) and classifies them with one hidden layer of 32 units: ~6 k parameters, a few kFLOPs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from behavior.data.flow import SCALE
from behavior.data.transforms import FLOW_STD

MAGNITUDE_EDGES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # in units of the bound: 8 bins, finer near rest
DIRECTION_BINS = 8
MOVING = 0.04  # a pixel "moves" above this share of the bound
GRID = 4
PER_FIELD = len(MAGNITUDE_EDGES) + 1 + DIRECTION_BINS + 7 + GRID * GRID
TIME_SUMMARIES = 4  # mean, std, max, mean |change|
FEATURES = PER_FIELD * TIME_SUMMARIES
HIDDEN = 32
# The pipeline normalises a flow code q to (q / 255 - 128 / 255) / FLOW_STD; a displacement of one bound is
# SCALE codes away from ZERO. This turns a normalised value back into displacement / bound.
TO_BOUND_UNITS = FLOW_STD * 255 / SCALE


def flow_statistics(flow: Tensor) -> Tensor:
    """[B, 2L, T, H, W] normalised flow (x, y per stacked field) -> [B, FEATURES] clip statistics."""
    b, c, t, h, w = flow.shape
    fields = (flow * TO_BOUND_UNITS).reshape(b, c // 2, 2, t, h, w).permute(0, 3, 1, 2, 4, 5).contiguous()
    u, v = fields[..., 0, :, :], fields[..., 1, :, :]  # [B, T, L, H, W]
    magnitude = torch.sqrt(u * u + v * v)
    edges = torch.tensor(MAGNITUDE_EDGES, dtype=flow.dtype, device=flow.device)
    magnitude_bin = torch.bucketize(magnitude, edges)
    angle = torch.atan2(v, u)  # (-pi, pi]
    direction_bin = ((angle + math.pi) / (2 * math.pi) * DIRECTION_BINS).long().clamp(0, DIRECTION_BINS - 1)
    pixels = h * w
    how_much = nn.functional.one_hot(magnitude_bin, len(MAGNITUDE_EDGES) + 1).flatten(-3, -2).sum(-2) / pixels
    direction = nn.functional.one_hot(direction_bin, DIRECTION_BINS).to(flow.dtype) * magnitude.unsqueeze(-1)
    which_way = direction.flatten(-3, -2).sum(-2) / (magnitude.flatten(-2).sum(-1, keepdim=True) + 1e-6)
    numbers = torch.stack([
        magnitude.mean((-2, -1)), magnitude.flatten(-2).std(-1, correction=0),
        u.abs().mean((-2, -1)), v.abs().mean((-2, -1)), u.mean((-2, -1)), v.mean((-2, -1)),
        (magnitude > MOVING).to(flow.dtype).mean((-2, -1)),
    ], dim=-1)
    cells = nn.functional.adaptive_avg_pool2d(magnitude.flatten(0, 2).unsqueeze(1), GRID).reshape(b, t, -1, GRID ** 2)
    where = cells.sort(dim=-1, descending=True).values
    per_field = torch.cat([how_much.to(flow.dtype), which_way, numbers, where], dim=-1)
    per_frame = per_field.mean(2)  # [B, T, PER_FIELD]: the stack's fields averaged
    change = (per_frame[:, 1:] - per_frame[:, :-1]).abs().mean(1) if t > 1 else torch.zeros_like(per_frame[:, 0])
    return torch.cat([per_frame.mean(1), per_frame.std(1, correction=0), per_frame.amax(1), change], dim=1)


class MotionStats(nn.Module):
    """Flow clip [B, 2L, T, H, W] (normalised as the pipeline feeds it) -> logits, through :func:`flow_statistics`,
    batch norm and one hidden layer. ``clip_features`` is the hidden layer, for a joint head."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float) -> None:
        super().__init__()
        if in_channels < 2 or in_channels % 2:
            raise ValueError(f"MotionStats takes flow: an even number of channels (x, y per field), got {in_channels}")
        self.in_channels = in_channels
        self.feature_dim = HIDDEN
        self.norm = nn.BatchNorm1d(FEATURES)
        self.hidden = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(HIDDEN, num_classes)

    def clip_features(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"MotionStats expects flow clips [B, {self.in_channels}, T, H, W], got {list(x.shape)}")
        stats = flow_statistics(x)
        if self.training and stats.shape[0] == 1:  # batch norm cannot measure one clip's batch: use running stats
            stats = nn.functional.batch_norm(stats, self.norm.running_mean, self.norm.running_var, self.norm.weight,
                                             self.norm.bias, training=False, eps=self.norm.eps)
        else:
            stats = self.norm(stats)
        return self.hidden(stats)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.clip_features(x)))
