"""Per-frame backbones built from torchvision image models, and the layer layout the pretrained loader reads.

BehaviorNet's ``backbone`` option takes, besides its own ``resnet`` and ``spatial_attention_net``, a torchvision
image model: resnet18, resnet34, resnet50, mobilenet_v3_large, mobilenet_v3_small or efficientnet_b0. The
torchvision network is kept whole under ``net``, with its own layer names but without its pooling and classifier,
so torchvision's (ImageNet) state dict loads into it key for key. It is run as a stem and four stages that end at
1/4, 1/8, 1/16 and 1/32 of the input resolution (ResNet's layer1..layer4; the mobile networks' ``features`` cut
at the same resolutions), and a SpatialAttention module can follow any stage. Those start as an exact identity
(``identity_start``), so the pretrained features reach the temporal pool unchanged until training moves them.

Layout contract
---------------
Every registered video model exposes, as plain attributes:

- ``stem_prefixes: tuple[str, ...]``: state-dict key prefixes (relative to the model) of its stem, the first
  convolution and its norm (what ``model.freeze=stem`` freezes);
- ``head_prefixes: tuple[str, ...]``: prefixes of the layers that always train (never frozen, full learning
  rate): the classifier, the temporal pool, and in BehaviorNet over a torchvision backbone also the SpatialAttention
  modules, which no torchvision weights cover (frozen, they would stay an identity for good);
- every other parameter is the backbone. Each prefix names at least one parameter: prefixes of absent layers
  (``attention: false``, a parameter-free temporal pool) are left out.

Models whose layers are torchvision's (BehaviorNet over a torchvision backbone; the 3D baselines) also expose:

- ``torchvision_name: str``: the torchvision builder the weights must belong to
  (``torchvision.models.get_model_weights(torchvision_name)``), e.g. "resnet18", "r3d_18";
- ``torchvision_prefix: str``: where torchvision's key names start in this model's state dict, i.e.
  ``model.state_dict()[torchvision_prefix + key]`` is the torchvision model's ``key``. The torchvision classifier
  is not there (its keys are unused); a first convolution rebuilt for other ``in_channels`` keeps its name but not
  its shape.

:func:`layer_group` sorts a parameter name into stem / backbone / head by these attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import get_model

from .image import BackboneSpec

RESNETS = ("resnet18", "resnet34", "resnet50")
# The ``features`` index at which each of the four stages ends (exclusive); features[0] is the stem. A stage ends
# before the next stride-2 block, so the stages sit at 1/4, 1/8, 1/16 and 1/32 like ResNet's (test_backbones
# checks the resolutions); a block at 1/2 joins the first stage.
MOBILE_STAGE_ENDS = {
    "mobilenet_v3_large": (4, 7, 13, 17),
    "mobilenet_v3_small": (2, 4, 9, 13),
    "efficientnet_b0": (3, 4, 6, 9),
}
TORCHVISION_BACKBONES = RESNETS + tuple(MOBILE_STAGE_ENDS)
GROUPS = ("stem", "backbone", "head")


def temporal_shift(x: Tensor, n_frames: int, fold_div: int = 8) -> Tensor:
    """Shift 1/fold_div of the channels one frame back and as many one frame forward, zero-filling ends."""
    nt, c, h, w = x.shape
    fold = c // fold_div
    if n_frames == 1 or fold == 0:
        return x
    x = x.reshape(nt // n_frames, n_frames, c, h, w)
    out = torch.zeros_like(x)
    out[:, 1:, :fold] = x[:, :-1, :fold]  # frame t sees frame t-1
    out[:, :-1, fold : 2 * fold] = x[:, 1:, fold : 2 * fold]  # frame t sees frame t+1
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.reshape(nt, c, h, w)


def _layout(name: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """Module paths inside the torchvision model: the stem, the four stages, and the unused tail."""
    if name in RESNETS:
        return ("conv1", "bn1", "relu", "maxpool"), tuple((f"layer{i}",) for i in range(1, 5)), ("avgpool", "fc")
    ends = MOBILE_STAGE_ENDS[name]
    starts = (1, *ends[:-1])
    stages = tuple(tuple(f"features.{i}" for i in range(a, b)) for a, b in zip(starts, ends, strict=True))
    return ("features.0",), stages, ("avgpool", "classifier")


def _out_channels(modules: Iterable[nn.Module]) -> int:
    # The last Conv2d in module order sets the output width in these networks: a block's projection, or its
    # downsampling shortcut, which has the block's output width too.
    convs = [m for module in modules for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
    """Rebuild the first convolution for `in_channels` under the same name (its pretrained weights then do not fit
    by shape, and the loader leaves it at its fresh init)."""
    name, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None)
    parent, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent), leaf, new)


def with_parameters(module: nn.Module, prefixes: Iterable[str]) -> tuple[str, ...]:
    """The prefixes that name at least one parameter of `module` (the contract lists no empty ones)."""
    names = [name for name, _ in module.named_parameters()]
    return tuple(p for p in prefixes if any(name.startswith(p) for name in names))


class TorchvisionBackbone(nn.Module):
    """A torchvision image model run per frame: [N, C, H, W] -> feature maps [N, feature_dim, H/32, W/32].

    ``attention_stages`` (0-based, of the four stages; None: all but the first) get an identity-start
    SpatialAttention when ``attention`` is true. ``shift`` (ResNets only) adds TSM at the start of every residual
    branch: a forward pre-hook on each block's conv1 shifts that conv's input, which leaves the shortcut and every
    state-dict key as torchvision has them.
    """

    def __init__(self, name: str, *, in_channels: int, attention: bool, attention_kind: str, attention_kernel: int,
                 attention_stages: Sequence[int] | None, shift: bool) -> None:
        super().__init__()
        if name not in TORCHVISION_BACKBONES:
            raise ValueError(f"unknown torchvision backbone {name!r}; choose one of {', '.join(TORCHVISION_BACKBONES)}")
        if shift and name not in RESNETS:
            raise ValueError(f"temporal shift needs residual blocks with a conv1; {name!r} has none")
        net = get_model(name, weights=None)  # weights come from the pretrained loader, never from a download here
        stem, stages, unused = _layout(name)
        for path in unused:
            delattr(net, path)
        _replace_first_conv(net, in_channels)
        self.net = net
        self.stem_names, self.stage_names = stem, stages
        modules = [[net.get_submodule(path) for path in stage] for stage in stages]
        self.spec = BackboneSpec.check(
            in_channels=in_channels,
            stem_width=_out_channels(net.get_submodule(path) for path in stem),
            stem_stride=4 if name in RESNETS else 2,
            widths=[_out_channels(stage) for stage in modules],
            blocks_per_stage=[sum(len(m) if name in RESNETS else 1 for m in stage) for stage in modules],
            attention=attention,
            attention_kind=attention_kind,
            attention_kernel=attention_kernel,
            attention_stages=attention_stages,
            identity_start=True,
        )
        self.attention = nn.ModuleList(self.spec.attention_for(i, width) for i, width in enumerate(self.spec.widths))
        self.feature_dim = self.spec.widths[-1]
        self.torchvision_name = name
        self.torchvision_prefix = "net."
        self.stem_prefixes = with_parameters(self, (f"net.{path}." for path in stem))
        self.n_frames = 1  # of the batch in flight, for the shift hooks
        if shift:
            for stage in modules:
                for layer in stage:
                    for block in layer:
                        block.conv1.register_forward_pre_hook(self._shift_branch)

    def _shift_branch(self, conv: nn.Module, args: tuple) -> tuple:
        return (temporal_shift(args[0], self.n_frames), *args[1:])

    def _run(self, paths: Sequence[str], x: Tensor) -> Tensor:
        for path in paths:
            x = self.net.get_submodule(path)(x)
        return x

    def forward(self, x: Tensor, n_frames: int = 1) -> Tensor:
        self.n_frames = n_frames
        x = self._run(self.stem_names, x)
        for paths, attention in zip(self.stage_names, self.attention, strict=True):
            x = attention(self._run(paths, x))
        return x


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """Each parameter's group, "stem", "backbone" or "head", by the layout attributes of the innermost module
    (the model itself, or a stream of a fused model) that claims it; unclaimed parameters are backbone."""
    marked = [(name + "." if name else "", module) for name, module in model.named_modules()
              if hasattr(module, "head_prefixes")]
    roles = {}
    for name, _ in model.named_parameters():
        role = "backbone"
        for prefix, module in marked:  # outer modules first, so an inner one that claims a name has the last word
            if name.startswith(prefix):
                rest = name[len(prefix):]
                if rest.startswith(tuple(module.head_prefixes)):
                    role = "head"
                elif rest.startswith(tuple(getattr(module, "stem_prefixes", ()))):
                    role = "stem"
        roles[name] = role
    return roles


def layer_group(model: nn.Module, name: str) -> str:
    """"stem", "backbone" or "head": where parameter `name` of `model` falls (:func:`parameter_roles`)."""
    return parameter_roles(model)[name]


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names of `model` by group, in module order."""
    groups: dict[str, list[str]] = {group: [] for group in GROUPS}
    for name, role in parameter_roles(model).items():
        groups[role].append(name)
    return groups
