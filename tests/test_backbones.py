"""Tests for the torchvision per-frame backbones of BehaviorNet, identity-start attention, the S3D baseline and the
layer layout contract (frame_backbones.py) the pretrained loader relies on. Tiny inputs; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from behavior.config import load_option
from behavior.models import (
    BehaviorNet,
    ModelConfig,
    OptionError,
    SpatialAttention,
    attention_maps,
    available_models,
    build_model,
    model_options,
)
from behavior.models.frame_backbones import TORCHVISION_BACKBONES, layer_group, layer_groups
from behavior.models.registry import COMMON_KEYS

CLASSIFIERS = ("fc.", "classifier.")  # torchvision's own classifier heads: never loaded into ours


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def net(backbone: str, num_classes: int = 3, **options) -> BehaviorNet:
    """BehaviorNet with conf/model/behaviornet.yaml's options, RGB frames only, and ``options`` (built directly:
    ModelConfig would build each model twice)."""
    preset = {k: v for k, v in load_option("model", "behaviornet").items() if k not in ("name", *COMMON_KEYS)}
    return BehaviorNet(num_classes, **{**preset, "backbone": backbone, "frame_diff": False, **options})


def clip(b: int = 1, t: int = 2, size: int = 64, c: int = 3) -> torch.Tensor:
    return torch.randn(b, c, t, size, size)


def plain_torchvision(name: str) -> tuple[dict, nn.Module]:
    """A plain torchvision model's state dict, and the model as a pooled-feature extractor (classifier removed)."""
    model = get_model(name, weights=None)
    state = model.state_dict()
    setattr(model, "fc" if hasattr(model, "fc") else "classifier", nn.Identity())
    return state, model.eval()


# ---- identity-start SpatialAttention --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pool", "conv"])
def test_identity_start_attention_is_an_exact_identity_that_learns(kind):
    att = SpatialAttention(16, kernel_size=3, kind=kind, identity_start=True)
    x = torch.randn(2, 16, 5, 6, requires_grad=True)
    out = att(x)
    assert torch.equal(out, x)
    assert torch.equal(att.last_map, torch.full((2, 1, 5, 6), 0.5))  # in (0, 1): 0.5 = unchanged
    (out * torch.randn_like(out)).sum().backward()
    assert att.conv.weight.grad.abs().sum() > 0 and att.conv.bias.grad.abs().sum() > 0
    att.conv.weight.data.fill_(0.1)  # once trained it gates: factor 2 * sigmoid in (0, 2)
    moved = att(x)
    torch.testing.assert_close(moved, x * 2 * att.last_map)
    assert torch.all(att.last_map > 0) and torch.all(att.last_map < 1)
    assert "identity_start=True" in repr(att)


# ---- torchvision backbones ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TORCHVISION_BACKBONES)
def test_fresh_attention_network_matches_the_plain_torchvision_backbone(name):
    model = net(name, attention_stages=[0, 1, 2, 3])
    state, plain = plain_torchvision(name)
    # torchvision's own key names under torchvision_prefix, the classifier's keys unused
    ours = model.state_dict()
    unused = [k for k in state if model.torchvision_prefix + k not in ours]
    assert unused and all(k.startswith(CLASSIFIERS) for k in unused)
    assert not any(k.startswith(tuple(model.torchvision_prefix + c for c in CLASSIFIERS)) for k in ours)
    loaded = model.backbone.net.load_state_dict({k: v for k, v in state.items() if k not in unused}, strict=True)
    assert not loaded.missing_keys and not loaded.unexpected_keys
    model.eval()
    x = clip()
    with torch.no_grad():
        ours_features = model.frame_features(x)[0]
        plain_features = plain(x[0].permute(1, 0, 2, 3))
    assert ours_features.shape == plain_features.shape == (2, model.feature_dim)
    assert torch.allclose(ours_features, plain_features)
    # the four stages end at 1/4, 1/8, 1/16 and 1/32 of the 64x64 frames, with the widths the spec says
    assert [tuple(m.shape) for m in attention_maps(model)] == [(2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    channels = [m.in_channels for m in model.modules() if isinstance(m, SpatialAttention)]
    assert tuple(channels) == model.spec.widths and model.feature_dim == channels[-1]
    assert all(m.identity_start for m in model.modules() if isinstance(m, SpatialAttention))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large"])
def test_inserted_attention_gets_gradients_at_the_start(name):
    model = net(name, attention_stages=[0, 1, 2, 3])
    nn.functional.cross_entropy(model(clip(b=2, size=32)), torch.tensor([0, 2])).backward()
    atts = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    assert len(atts) == 4 and all(m.conv.weight.grad.abs().sum() > 0 for m in atts)


def test_default_attention_stages_and_ignored_own_resnet_options():
    # null = every stage but the first; widths and friends shape the project's own resnet only
    model = net("resnet18", attention_stages=None, widths=[8, 16], stem_width=4, blocks_per_stage=3)
    assert [m.in_channels for m in model.modules() if isinstance(m, SpatialAttention)] == [128, 256, 512]
    assert model.spec.widths == (64, 128, 256, 512) and model.spec.blocks == (2, 2, 2, 2)
    assert not any(isinstance(m, SpatialAttention) for m in net("resnet18", attention=False).modules())
    with pytest.raises(ValueError, match=r"^model\.attention_stages=\[4\]: .* in 0\.\.3"):
        ModelConfig.preset("behaviornet", backbone="resnet18", attention_stages=[4])


def test_temporal_shift_on_torchvision_resnet_keeps_keys_and_mixes_frames():
    shifted, still = net("resnet18", temporal_shift=True), net("resnet18")
    assert list(shifted.state_dict()) == list(still.state_dict())
    still.load_state_dict(shifted.state_dict())
    shifted.eval()
    still.eval()
    x = clip(t=3)
    with torch.no_grad():
        together = shifted.frame_features(x)
        alone = torch.cat([shifted.frame_features(x[:, :, i : i + 1]) for i in range(3)], dim=1)
        torch.testing.assert_close(alone, still.frame_features(x))  # one frame: nothing to shift
    assert not torch.allclose(together, alone)
    with pytest.raises(OptionError, match=r"^model\.temporal_shift=true: must be false with backbone "
                                          r"'mobilenet_v3_large' \(true needs a residual one: resnet, resnet18"):
        ModelConfig.preset("behaviornet", backbone="mobilenet_v3_large", temporal_shift=True)


def test_other_input_channels_rebuild_the_first_conv_under_its_name():
    diff = net("resnet18", frame_diff=True)
    assert diff.backbone.net.conv1.in_channels == 6 and "backbone.net.conv1.weight" in diff.state_dict()
    assert diff(clip()).shape == (1, 3)
    two = build_model(ModelConfig.preset("behaviornet", backbone="mobilenet_v3_large", input="rgb+flow",
                                         frame_diff=False), 3,
                      flow_channels=2)
    assert two.flow.state_dict()["backbone.net.features.0.0.weight"].shape == (16, 2, 3, 3)
    assert two.rgb.state_dict()["backbone.net.features.0.0.weight"].shape == (16, 3, 3, 3)
    assert two(torch.randn(1, 5, 2, 64, 64)).shape == (1, 3)


# ---- layout contract ------------------------------------------------------------------------------------


def contract_models() -> list[tuple[str, dict]]:
    return [(name, {}) for name in available_models()] + [("behaviornet", {"backbone": b, "frame_diff": False})
                                                          for b in TORCHVISION_BACKBONES]


@pytest.mark.parametrize(("name", "options"), contract_models(), ids=lambda v: v if isinstance(v, str) else
                         v.get("backbone", ""))
def test_every_model_exposes_the_layout_contract(name, options):
    model = build_model(ModelConfig.preset(name, **options), 3)
    params = [k for k, _ in model.named_parameters()]
    for attr in ("stem_prefixes", "head_prefixes"):
        prefixes = getattr(model, attr)
        assert isinstance(prefixes, tuple) and prefixes and all(isinstance(p, str) and p.endswith(".")
                                                                for p in prefixes)
        assert all(any(k.startswith(p) for k in params) for p in prefixes), (attr, prefixes)
    groups = layer_groups(model)
    assert all(groups.values()) and sum(map(len, groups.values())) == len(params)
    last = params[-1]  # the classifier's bias, the last layer registered in every model here
    assert layer_group(model, last) == "head" and layer_group(model, params[0]) == "stem"
    if not hasattr(model, "torchvision_name"):
        assert not hasattr(model, "torchvision_prefix")
        return
    assert get_model_weights(model.torchvision_name)  # the loader's check; an enum, nothing downloaded
    tv = get_model(model.torchvision_name, weights=None).state_dict()
    ours = model.state_dict()
    for key, value in tv.items():
        mine = ours.get(model.torchvision_prefix + key)
        if key.startswith(CLASSIFIERS):
            assert mine is None or layer_group(model, model.torchvision_prefix + key) == "head"
        else:
            assert mine is not None and mine.shape == value.shape, key


def test_s3d_takes_short_small_clips():
    model = build_model(ModelConfig.preset("s3d"), 4).eval()
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm3d)} == {0.1}
    with torch.no_grad():
        assert model(torch.randn(1, 3, 5, 32, 32)).shape == (1, 4)
        assert model(torch.randn(1, 3, 8, 48, 40)).shape == (1, 4)


@pytest.mark.parametrize("preset", ["behaviornet_resnet18", "behaviornet_mobilenet", "s3d"])
def test_new_config_files_build(preset):
    values = load_option("model", preset)
    options = {k: v for k, v in values.items() if k not in ("name", *COMMON_KEYS)}
    assert list(options) == list(model_options(values["name"]))
    config = ModelConfig.from_mapping(values)
    assert config.to_dict() == values
    if preset != "s3d":
        assert config.name == "behaviornet" and config.options["backbone"] in TORCHVISION_BACKBONES
        assert config.options["frame_diff"] is False
