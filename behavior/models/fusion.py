"""Two streams, one clip: an RGB network and an optical-flow network, fused late.

The clip tensor holds the RGB channels first and the flow channels after them ([B, 3 + F, T, H, W], as the clip
pipeline builds it); each stream sees its own channels and the clip's logits are the mean of the two streams'
logits (Simonyan & Zisserman's late fusion), so each stream can still be read on its own (``streams``).
"""

from __future__ import annotations

from torch import Tensor, nn


class LateFusion(nn.Module):
    def __init__(self, rgb: nn.Module, flow: nn.Module) -> None:
        super().__init__()
        self.rgb, self.flow = rgb, flow

    def streams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The logits of each stream, RGB then flow."""
        return self.rgb(x[:, :3]), self.flow(x[:, 3:])

    def forward(self, x: Tensor) -> Tensor:
        rgb, flow = self.streams(x)
        return (rgb + flow) / 2
