"""Spatial attention: a per-pixel sigmoid gate that re-weights a feature map.

The article's sketch hard-coded `in_channels=3` and then placed the module after 128- and 256-channel
layers, and used an undefined `padding`. Here the channel count comes from the layer the module follows,
the padding is derived from the (odd) kernel so the map keeps its size, and the module is an ordinary
sub-module created once in `__init__`, so its weights are trained and saved with the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .registry import OptionError, check_bool, check_choice, check_int

ATTENTION_KINDS = ("pool", "conv")


def check_attention_kernel(key: str, value: Any) -> int:
    """Odd and >= 1: only an odd kernel with padding k // 2 maps an h x w input to an h x w gate."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise OptionError(key, value, "must be an odd integer >= 1 (e.g. 3, 5, 7)")
    return value


def check_attention_kind(key: str, value: Any) -> str:
    return check_choice(key, value, ATTENTION_KINDS)


class SpatialAttention(nn.Module):
    """Gate every position of a [N, C, h, w] map by a learned weight in (0, 1); output = x * gate.

    kind="pool": the CBAM spatial branch (Woo et al., 2018). The channel mean and channel max are
        stacked into 2 maps and a k x k conv (2 -> 1) turns them into the gate logits. Its cost and its
        parameter count (2*k*k + 1) do not depend on C.
    kind="conv": the article's learned projection, a k x k conv straight from the C channels to 1.

    identity_start=True: output = x * 2 * gate, with the conv zero-initialised, so a fresh module is an exact
        identity (gate = 0.5 everywhere, 2 * 0.5 = 1) yet gets gradients from the first step. Inserted into a
        pretrained backbone it then leaves the pretrained features untouched until training moves it. The
        factor ranges over (0, 2): the module can also amplify a region, not only suppress the rest.

    The last gate (in (0, 1) either way; with identity_start 0.5 is "unchanged") is kept, detached, in
    `last_map` ([N, 1, h, w]) for visualization; set `record = False` to skip that (e.g. under torch.compile,
    where the attribute write breaks the graph).
    """

    def __init__(
        self, in_channels: int, kernel_size: int = 7, kind: str = "pool", identity_start: bool = False
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.kernel_size = check_attention_kernel("kernel_size", kernel_size)
        self.kind = check_attention_kind("kind", kind)
        self.identity_start = check_bool("identity_start", identity_start)
        conv_in = 2 if kind == "pool" else in_channels
        self.conv = nn.Conv2d(conv_in, 1, kernel_size, padding=kernel_size // 2)
        self.record = True
        self.last_map: Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.identity_start:
            # Zero logits make the gate exactly 0.5; the gradient to the weights is still non-zero, since it is
            # proportional to the conv's input (the channel statistics), not to the weights.
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)
            return
        # Unit-gain fan-in init keeps the first gate logits O(1): the ReLU-style fan-out init the models
        # use for their convs would give a 256-channel projection logits in the tens, a saturated
        # sigmoid, and no gradient to learn from.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.conv.bias)

    def gate(self, x: Tensor) -> Tensor:
        """The attention map [N, 1, h, w] for x, without applying it (identity_start modules apply twice it)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SpatialAttention({self.in_channels} channels) expects [N, {self.in_channels}, h, w], "
                f"got {list(x.shape)}"
            )
        if self.kind == "pool":
            x = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        gate = self.gate(x)
        if self.record:
            self.last_map = gate.detach()
        return x * (2 * gate if self.identity_start else gate)

    def extra_repr(self) -> str:
        start = ", identity_start=True" if self.identity_start else ""
        return f"in_channels={self.in_channels}, kernel_size={self.kernel_size}, kind={self.kind!r}{start}"


def attention_maps(model: nn.Module) -> list[Tensor]:
    """The last map of every SpatialAttention module in `model`, in module order.

    Each is [N, 1, h, w] with values in (0, 1) (identity_start modules: 0.5 = unchanged); N = B*T for per-frame
    video models. A model without attention gives []. Raises RuntimeError if a module has not produced a map yet.
    """
    maps = []
    for name, module in model.named_modules():
        if isinstance(module, SpatialAttention):
            if module.last_map is None:
                raise RuntimeError(
                    f"attention module {name or '<root>'!r} has no map yet: "
                    "run a forward pass first (with record=True)"
                )
            maps.append(module.last_map)
    return maps
