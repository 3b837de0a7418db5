"""Several streams, one clip: an RGB network, an optical-flow network and/or the motion statistics, fused.

The clip tensor holds the RGB channels first (when the model takes RGB) and the flow channels after them
([B, 3 + F, T, H, W], as the clip pipeline builds it); the ``rgb`` stream sees the RGB channels, the ``flow`` and
``stats`` streams the flow channels. Two ways to fuse (``model.fusion``):

- ``late``: the clip's logits are the mean of the streams' logits (Simonyan & Zisserman's late fusion); each stream
  is a whole classifier and can still be read on its own (``streams``).
- ``joint``: the streams' clip features (each before its own head) are concatenated into one linear head, so the
  head can weigh one stream's evidence by another's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FUSIONS = ("late", "joint")
STREAMS = ("rgb", "flow", "stats")  # in the order of model.input's tokens


class Fusion(nn.Module):
    def __init__(self, streams: dict[str, nn.Module], kind: str, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.names = tuple(streams)
        for name, module in streams.items():
            self.add_module(name, module)  # named rgb. / flow. / stats., as the attention overlays list them
        self.kind = kind
        self.first_flow = 3 if "rgb" in streams else 0
        if kind == "joint":
            width = sum(module.feature_dim for module in streams.values())
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(width, num_classes)
            nn.init.normal_(self.head.weight, std=0.01)
            nn.init.zeros_(self.head.bias)

    def _inputs(self, x: Tensor) -> list[Tensor]:
        return [x[:, :3] if name == "rgb" else x[:, self.first_flow:] for name in self.names]

    def streams(self, x: Tensor) -> tuple[Tensor, ...]:
        """The logits of each stream on its own, in ``names`` order (for a joint model: each stream's own head,
        untrained by the joint loss)."""
        return tuple(getattr(self, name)(part) for name, part in zip(self.names, self._inputs(x), strict=True))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "late":
            return torch.stack(self.streams(x)).mean(0)
        features = [getattr(self, name).clip_features(part)
                    for name, part in zip(self.names, self._inputs(x), strict=True)]
        return self.head(self.dropout(torch.cat(features, dim=1)))
