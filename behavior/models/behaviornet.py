"""BehaviorNet: a per-frame 2D CNN with spatial attention, pooled over time into clip logits.

Corrections to the article's sketch:
- frames are folded into the batch once ([B, C, T, H, W] -> [B*T, C, H, W] by one permute + reshape)
  instead of chains of `transpose`, so the 2D weights are shared across frames;
- the SpatialAttention modules are built in `__init__`, after the stages that need them, with the
  channel count of those stages, so they are trained and saved with the model (the sketch created a
  fresh, untrained module inside `forward` and applied it to flattened features);
- the head returns logits: cross-entropy applies log-softmax itself, so a Softmax layer there would be
  a second softmax that flattens the loss and slows training.

Temporal pooling over the per-frame feature vectors ([B, T, D] -> [B, D]) is `TemporalPool`
(behavior/models/temporal.py): order-blind mean (default), max and attention, and the order-aware tconv, gru
and transformer heads.

`frame_diff` (default off) feeds each frame together with its difference from the previous sampled frame
(input channels doubled in the stem only): static background clutter cancels in the difference, so the
network is told where something moves at the cost of one subtraction.

`temporal_shift` (residual backbones only, default off) adds a cheap motion cue: at the start of every
residual branch 1/8 of the channels are taken from the previous frame and 1/8 from the next one (TSM,
Lin et al., 2019), which costs no FLOPs and no parameters.

`backbone` may also name a torchvision image model (resnet18/34/50, mobilenet_v3_large/small, efficientnet_b0:
frame_backbones.py), kept under torchvision's layer names so ImageNet weights load into it; the options that
shape the project's own networks (stem_width, stem_stride, widths, blocks_per_stage) do not apply to those.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .frame_backbones import RESNETS, TORCHVISION_BACKBONES, TorchvisionBackbone, temporal_shift, with_parameters
from .image import BackboneSpec, init_weights, make_stem, plain_features
from .registry import OptionError, check_bool, check_choice, check_int, check_prob, register_model
from .temporal import TemporalPool

BACKBONES = ("resnet", "spatial_attention_net", *TORCHVISION_BACKBONES)
SHIFT_BACKBONES = ("resnet", *RESNETS)  # residual ones: TSM shifts the start of each residual branch


def frame_differences(x: Tensor) -> Tensor:
    """x_t - x_(t-1) along T of [B, C, T, H, W]; the first frame reuses the second's difference.

    Static clutter cancels out and what moves stands out, a motion cue that costs one subtraction.
    """
    if x.shape[2] == 1:
        return torch.zeros_like(x)
    diff = x[:, :, 1:] - x[:, :, :-1]
    return torch.cat([diff[:, :, :1], diff], dim=2)


class ResBlock(nn.Module):
    """ResNet basic block (two 3x3 convs).

    The last BN is not zero-initialised: with one block per stage and a strided projection shortcut, an
    identity start leaves the network a chain of 1x1 convs, and on the synthetic set training then took
    about twice as many epochs to reach the same accuracy.
    """

    def __init__(self, cin: int, cout: int, stride: int, shift: bool) -> None:
        super().__init__()
        self.shift = shift
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor, n_frames: int) -> Tensor:
        branch = temporal_shift(x, n_frames) if self.shift else x
        branch = self.relu(self.bn1(self.conv1(branch)))
        branch = self.bn2(self.conv2(branch))
        return self.relu(branch + self.shortcut(x))


class ResStage(nn.Module):
    def __init__(self, blocks: Sequence[ResBlock], attention: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention

    def forward(self, x: Tensor, n_frames: int) -> Tensor:
        for block in self.blocks:
            x = block(x, n_frames)
        return self.attention(x)


class FrameResNet(nn.Module):
    """Small residual per-frame CNN: stem, then stages that each halve the resolution (first block
    at stride 2), each optionally followed by SpatialAttention. Takes [B*T, C, H, W]."""

    def __init__(self, spec: BackboneSpec, shift: bool) -> None:
        super().__init__()
        self.stem = make_stem(spec.in_channels, spec.stem_width, spec.stem_stride)
        stages, cin = [], spec.stem_width
        for i, (width, blocks) in enumerate(zip(spec.widths, spec.blocks, strict=True)):
            res = [
                ResBlock(cin if b == 0 else width, width, 2 if b == 0 else 1, shift) for b in range(blocks)
            ]
            stages.append(ResStage(res, spec.attention_for(i, width)))
            cin = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor, n_frames: int = 1) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x, n_frames)
        return x


@register_model("behaviornet")
class BehaviorNet(nn.Module):
    """Clip classifier: [B, in_channels, T, H, W] -> logits [B, num_classes]; any T >= 1, any H, W.

    backbone="resnet": FrameResNet (residual stages, stride-2 first block); "spatial_attention_net": the
    VGG-style SpatialAttentionNet features (conv stages + max-pool). `widths` has one entry per stage;
    `attention_stages` are 0-based stage indices that get a SpatialAttention module when `attention`
    is true (None: every stage but the first); `attention: false` builds the same network without
    them, for ablations. A torchvision backbone name (frame_backbones.py) gives its four stages, with
    identity-start attention; stem_width, stem_stride, widths and blocks_per_stage are then ignored.
    Layout attributes (stem_prefixes, head_prefixes; torchvision_name, torchvision_prefix for a torchvision
    backbone) are described in frame_backbones.py.
    Every option is required: their defaults are written once, in conf/model/behaviornet.yaml
    (``build_model(ModelConfig.preset("behaviornet", ...), n)`` builds one from code).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str,
        in_channels: int,
        stem_width: int,
        stem_stride: int,
        widths: Sequence[int],
        blocks_per_stage: int | Sequence[int],
        attention: bool,
        attention_kind: str,
        attention_kernel: int,
        attention_stages: Sequence[int] | None,
        temporal_pool: str,
        temporal_shift: bool,
        frame_diff: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        backbone = check_choice("backbone", backbone, BACKBONES)
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.frame_diff = check_bool("frame_diff", frame_diff)
        channels = in_channels * (2 if frame_diff else 1)
        attention_options = {"attention": attention, "attention_kind": attention_kind,
                             "attention_kernel": attention_kernel, "attention_stages": attention_stages}
        if backbone in TORCHVISION_BACKBONES:
            self._check_shift(backbone, temporal_shift)
            self.backbone: nn.Module = TorchvisionBackbone(backbone, in_channels=channels, shift=temporal_shift,
                                                           **attention_options)
            spec = self.backbone.spec
        else:
            spec = BackboneSpec.check(in_channels=channels, stem_width=stem_width, stem_stride=stem_stride,
                                      widths=widths, blocks_per_stage=blocks_per_stage, **attention_options)
            self._check_shift(backbone, temporal_shift)
            if backbone == "resnet":
                self.backbone = FrameResNet(spec, shift=temporal_shift)
            else:
                self.backbone = plain_features(spec)
        self.spec = spec
        self.backbone_name = backbone
        self.feature_dim = spec.widths[-1]
        self.spatial_pool = nn.AdaptiveAvgPool2d(1)
        self.temporal_pool = TemporalPool(temporal_pool, self.feature_dim)
        self.dropout = nn.Dropout(check_prob("dropout", dropout))
        self.head = nn.Linear(self.feature_dim, check_int("num_classes", num_classes, 1))
        # For the torchvision backbones this redraws what torchvision drew the same way (He fan-out convs,
        # identity norms); their classifiers, the only layers initialised otherwise, are gone.
        init_weights(self)
        self.temporal_pool.reset_parameters()
        self._set_layout()

    @staticmethod
    def _check_shift(backbone: str, shift: bool) -> None:
        if check_bool("temporal_shift", shift) and backbone not in SHIFT_BACKBONES:
            raise OptionError("temporal_shift", True, f"must be false with backbone {backbone!r} (true needs a "
                                                      f"residual one: {', '.join(SHIFT_BACKBONES)})")

    def _set_layout(self) -> None:
        """The layout attributes the pretrained loader reads (contract in frame_backbones.py)."""
        head = ["temporal_pool.", "head."]
        if isinstance(self.backbone, TorchvisionBackbone):
            self.torchvision_name = self.backbone.torchvision_name
            self.torchvision_prefix = "backbone." + self.backbone.torchvision_prefix
            stem = ["backbone." + prefix for prefix in self.backbone.stem_prefixes]
            head.insert(0, "backbone.attention.")  # new layers: no torchvision weights cover them
        else:
            stem = ["backbone.stem." if isinstance(self.backbone, FrameResNet) else "backbone.0."]
        self.stem_prefixes = with_parameters(self, stem)
        self.head_prefixes = with_parameters(self, head)

    def frame_features(self, x: Tensor) -> Tensor:
        """Per-frame feature vectors [B, T, feature_dim] for a clip batch [B, C, T, H, W]."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"BehaviorNet expects clips [B, {self.in_channels}, T, H, W], got {list(x.shape)}")
        if self.frame_diff:
            x = torch.cat([x, frame_differences(x)], dim=1)
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        if isinstance(self.backbone, FrameResNet | TorchvisionBackbone):
            maps = self.backbone(frames, n_frames=t)
        else:
            maps = self.backbone(frames)
        return self.spatial_pool(maps).flatten(1).reshape(b, t, -1)

    def clip_features(self, x: Tensor) -> Tensor:
        """The clip's feature vector [B, feature_dim], before dropout and the head (a joint fusion head's input)."""
        return self.temporal_pool(self.frame_features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.clip_features(x)))


@register_model("spatial_attention_net")
def spatial_attention_net(num_classes: int, **options) -> BehaviorNet:
    """The article's SpatialAttentionNet as a per-frame backbone inside BehaviorNet (video input); its options are
    BehaviorNet's but for those it fixes, with defaults in conf/model/spatial_attention_net.yaml.

    For the image classifier itself use `SpatialAttentionNet(num_classes=10)`.
    """
    return BehaviorNet(num_classes, **FIXED_FOR_SPATIAL_ATTENTION_NET, **options)


FIXED_FOR_SPATIAL_ATTENTION_NET = {"backbone": "spatial_attention_net", "temporal_shift": False, "frame_diff": False}
# The registry reads a builder's options from its signature: BehaviorNet's, less the fixed ones.
spatial_attention_net.__signature__ = inspect.signature(BehaviorNet).replace(parameters=[
    p for p in inspect.signature(BehaviorNet).parameters.values() if p.name not in FIXED_FOR_SPATIAL_ATTENTION_NET])
