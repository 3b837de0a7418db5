"""3D-CNN baselines from torchvision.models.video, randomly initialised (no pretrained weights).

They take the same [B, 3, T, H, W] clips as BehaviorNet and return logits, so the comparison only
changes the model config. Each is a ResNet-18 layout with a different convolution:
r3d_18 full 3x3x3 convs, mc3_18 3D convs in the first stage then 2D (mixed), r2plus1d_18 each 3D conv
factorised into a spatial 1x3x3 and a temporal 3x1x1 conv (Tran et al., 2018).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import video

from .registry import check_bool, check_int, register_model


def _build(factory: Callable[..., nn.Module], num_classes: int, zero_init_residual: bool) -> nn.Module:
    # weights=None: the project never downloads weights; num_classes sizes the final fc directly.
    return factory(
        weights=None,
        num_classes=check_int("num_classes", num_classes, 1),
        zero_init_residual=check_bool("zero_init_residual", zero_init_residual),
    )


@register_model("r3d_18")
def r3d_18(num_classes: int, *, zero_init_residual: bool) -> nn.Module:
    return _build(video.r3d_18, num_classes, zero_init_residual)


@register_model("mc3_18")
def mc3_18(num_classes: int, *, zero_init_residual: bool) -> nn.Module:
    return _build(video.mc3_18, num_classes, zero_init_residual)


@register_model("r2plus1d_18")
def r2plus1d_18(num_classes: int, *, zero_init_residual: bool) -> nn.Module:
    return _build(video.r2plus1d_18, num_classes, zero_init_residual)
