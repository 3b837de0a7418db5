"""3D-CNN baselines from torchvision.models.video, randomly initialised (weights come only from the pretrained
loader, never from a download here).

They take the same [B, 3, T, H, W] clips as BehaviorNet and return logits, so the comparison only
changes the model config. r3d_18, mc3_18 and r2plus1d_18 are a ResNet-18 layout with a different convolution:
r3d_18 full 3x3x3 convs, mc3_18 3D convs in the first stage then 2D (mixed), r2plus1d_18 each 3D conv
factorised into a spatial 1x3x3 and a temporal 3x1x1 conv (Tran et al., 2018). s3d (Xie et al., 2018) stacks
inception blocks of separable (spatial, then temporal) 3D convolutions.

Each is the torchvision model itself, so its layout attributes (contract in frame_backbones.py) say so:
``torchvision_prefix`` "" and ``torchvision_name`` its builder's name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn
from torchvision.models import video

from .registry import check_bool, check_int, check_prob, register_model


def _with_layout(model: nn.Module, name: str, stem: str, head: str) -> nn.Module:
    model.torchvision_name = name
    model.torchvision_prefix = ""
    model.stem_prefixes = (stem,)
    model.head_prefixes = (head,)
    return model


def _build(factory: Callable[..., nn.Module], num_classes: int, zero_init_residual: bool) -> nn.Module:
    # num_classes sizes the final fc directly.
    model = factory(
        weights=None,
        num_classes=check_int("num_classes", num_classes, 1),
        zero_init_residual=check_bool("zero_init_residual", zero_init_residual),
    )
    return _with_layout(model, factory.__name__, "stem.", "fc.")


@register_model("r3d_18")
def r3d_18(num_classes: int, *, zero_init_residual: bool) -> nn.Module:
    return _build(video.r3d_18, num_classes, zero_init_residual)


@register_model("mc3_18")
def mc3_18(num_classes: int, *, zero_init_residual: bool) -> nn.Module:
    return _build(video.mc3_18, num_classes, zero_init_residual)


@register_model("r2plus1d_18")
def r2plus1d_18(num_classes: int, *, zero_init_residual: bool) -> nn.Module:
    return _build(video.r2plus1d_18, num_classes, zero_init_residual)


@register_model("s3d")
def s3d(num_classes: int, *, dropout: float) -> nn.Module:
    """S3D for clips of at least 5 frames of 32x32. torchvision's fixed 2x7x7 average pool needs 14+ frames of
    224x224; a global average pool (no parameters, so the state dict is unchanged) takes any size at or above
    that minimum, and on exactly 2x7x7 final maps it is the same average."""
    # torchvision's BN momentum of 0.001 (its weights come from TensorFlow) leaves the running statistics near
    # their start for about a thousand steps, more than a small training run takes: evaluation would normalise
    # with them. PyTorch's usual 0.1 (same eps, same keys) follows the data within tens of steps.
    norm = partial(nn.BatchNorm3d, eps=0.001, momentum=0.1)
    model = video.s3d(weights=None, num_classes=check_int("num_classes", num_classes, 1),
                      dropout=check_prob("dropout", dropout), norm_layer=norm)
    model.avgpool = nn.AdaptiveAvgPool3d(1)
    return _with_layout(model, "s3d", "features.0.", "classifier.")
