"""SpatialAttentionNet: the article's image classifier with attention blocks, corrected.

Stages of 3x3 conv-BN-ReLU layers, each stage ends in a 2x2 max-pool; a SpatialAttention module follows
the convs of the stages listed in `attention_stages` (default: every stage but the first, which for the
64-128-256 widths used on 32x32 images is the article's placement after the 128- and 256-channel layers)
and takes its channel count from them. Global average pooling feeds a dropout + Linear head that
returns logits.

The same feature extractor serves as a per-frame backbone for BehaviorNet (`.features`, `.feature_dim`);
the helpers here (stem, option checks, init) are shared with behaviornet.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .attention import SpatialAttention, check_attention_kernel, check_attention_kind
from .registry import OptionError, check_bool, check_int, check_int_list, check_prob

STEM_STRIDES = (1, 2, 4)


@dataclass(frozen=True)
class BackboneSpec:
    """Checked per-frame backbone options, shared by SpatialAttentionNet and BehaviorNet's backbones."""

    in_channels: int
    stem_width: int
    stem_stride: int
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    attention_stages: tuple[int, ...]  # empty when attention is off
    attention_kind: str
    attention_kernel: int
    identity_start: bool = False  # SpatialAttention starts as an exact identity (for pretrained backbones)

    @classmethod
    def check(
        cls,
        *,
        in_channels: Any,
        stem_width: Any,
        stem_stride: Any,
        widths: Any,
        blocks_per_stage: Any,
        attention: Any,
        attention_kind: Any,
        attention_kernel: Any,
        attention_stages: Any,
        identity_start: bool = False,
    ) -> BackboneSpec:
        widths = check_int_list("widths", widths, 1)
        if attention_stages is None:
            # After every stage but the first (edges and colour blobs are not worth gating): this is the
            # article's placement after the 128- and 256-channel layers, and it stays valid when `widths`
            # is overridden with fewer stages.
            attention_stages = list(range(1, len(widths)))
        stages = check_int_list("attention_stages", attention_stages, 0, allow_empty=True)
        bad = [s for s in stages if s >= len(widths)]
        if bad or len(set(stages)) != len(stages):
            raise OptionError(
                "attention_stages",
                list(stages),
                f"must be distinct stage indices in 0..{len(widths) - 1}, or null (every stage but the first)",
            )
        if type(stem_stride) is not int or stem_stride not in STEM_STRIDES:
            raise OptionError("stem_stride", stem_stride, "choose one of 1, 2, 4")
        return cls(
            in_channels=check_int("in_channels", in_channels, 1),
            stem_width=check_int("stem_width", stem_width, 1),
            stem_stride=stem_stride,
            widths=widths,
            blocks=check_int_list("blocks_per_stage", blocks_per_stage, 1, length=len(widths)),
            attention_stages=tuple(sorted(stages)) if check_bool("attention", attention) else (),
            attention_kind=check_attention_kind("attention_kind", attention_kind),
            attention_kernel=check_attention_kernel("attention_kernel", attention_kernel),
            identity_start=check_bool("identity_start", identity_start),
        )

    def attention_for(self, stage: int, channels: int) -> nn.Module:
        if stage in self.attention_stages:
            return SpatialAttention(channels, self.attention_kernel, self.attention_kind, self.identity_start)
        return nn.Identity()


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def make_stem(in_channels: int, width: int, stride: int) -> nn.Sequential:
    """3x3 conv-BN-ReLU at stride 1 or 2; stride 4 adds a ResNet-style 3x3/2 max-pool."""
    stem = conv_bn_relu(in_channels, width, stride=min(stride, 2))
    if stride == 4:
        stem.append(nn.MaxPool2d(3, stride=2, padding=1))
    return stem


def init_weights(module: nn.Module) -> None:
    """He init for convs, identity BN, small head; SpatialAttention keeps its own (unit-gain) init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, SpatialAttention):
            m.reset_parameters()


def plain_features(spec: BackboneSpec) -> nn.Sequential:
    """Stem + VGG-style stages: [conv-BN-ReLU] * blocks, optional attention, 2x2 max-pool.

    ceil_mode pooling keeps every map at least 1x1, so any input size works.
    """
    layers: list[nn.Module] = [make_stem(spec.in_channels, spec.stem_width, spec.stem_stride)]
    cin = spec.stem_width
    for i, (width, blocks) in enumerate(zip(spec.widths, spec.blocks, strict=True)):
        stage = nn.Sequential(*(conv_bn_relu(cin if b == 0 else width, width) for b in range(blocks)))
        stage.append(spec.attention_for(i, width))
        stage.append(nn.MaxPool2d(2, ceil_mode=True))
        layers.append(stage)
        cin = width
    return nn.Sequential(*layers)


def article_backbone() -> BackboneSpec:
    """The article's image classifier: 32x32 input, 64-128-256 channels, attention after the 128- and 256-channel
    stages (``BackboneSpec.check(...)`` builds others)."""
    return BackboneSpec.check(in_channels=3, stem_width=32, stem_stride=1, widths=(64, 128, 256), blocks_per_stage=1,
                              attention=True, attention_kind="pool", attention_kernel=7, attention_stages=None)


class SpatialAttentionNet(nn.Module):
    """Image classifier: [B, C, H, W] -> logits [B, num_classes] (sized for 32x32, works at any size).

    `num_classes=None` builds only the feature extractor (forward then returns pooled features
    [B, feature_dim]); BehaviorNet uses `.features` per frame via `backbone: spatial_attention_net`.
    """

    def __init__(self, num_classes: int | None = 10, *, spec: BackboneSpec | None = None, dropout: float = 0.2) -> None:
        super().__init__()
        spec = spec or article_backbone()
        self.spec = spec
        self.features = plain_features(spec)
        self.feature_dim = spec.widths[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(check_prob("dropout", dropout))
        self.fc = None
        if num_classes is not None:
            self.fc = nn.Linear(self.feature_dim, check_int("num_classes", num_classes, 1))
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Feature maps [B, feature_dim, h, w] before pooling."""
        if x.dim() != 4 or x.shape[1] != self.spec.in_channels:
            raise ValueError(
                f"SpatialAttentionNet expects images [B, {self.spec.in_channels}, H, W], got {list(x.shape)}"
            )
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(self.forward_features(x)).flatten(1)
        if self.fc is None:
            return pooled
        return self.fc(self.dropout(pooled))
