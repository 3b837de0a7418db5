"""Tests for behavior.models: attention, BehaviorNet, SpatialAttentionNet, baselines, registry, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from behavior.config import load_option
from behavior.models import (
    BehaviorNet,
    ModelConfig,
    OptionError,
    SpatialAttention,
    SpatialAttentionNet,
    attention_maps,
    available_models,
    build_model,
    model_options,
    register_model,
)
from behavior.models import registry as registry_module
from behavior.models.behaviornet import frame_differences, temporal_shift
from behavior.models.image import BackboneSpec
from behavior.models.registry import COMMON_KEYS
from tests.helpers import model_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
VIDEO_MODELS = ["behaviornet", "spatial_attention_net", "r3d_18", "mc3_18", "r2plus1d_18", "s3d"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def behaviornet(num_classes: int, **options) -> BehaviorNet:
    """BehaviorNet with conf/model/behaviornet.yaml's options (the former keyword defaults) and ``options``."""
    return build_model(ModelConfig.preset("behaviornet", **options), num_classes)


def clip(b: int = 2, t: int = 8, h: int = 64, w: int = 64) -> torch.Tensor:
    return torch.randn(b, 3, t, h, w)


# ---- SpatialAttention -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pool", "conv"])
@pytest.mark.parametrize("kernel", [3, 7])
@pytest.mark.parametrize("channels", [1, 3, 64, 256])
def test_spatial_attention_keeps_shape_and_gates(channels, kernel, kind):
    att = SpatialAttention(channels, kernel_size=kernel, kind=kind)
    x = torch.randn(2, channels, 9, 7)
    out = att(x)
    assert out.shape == x.shape
    gate = att.last_map
    assert gate is not None and gate.shape == (2, 1, 9, 7)
    assert not gate.requires_grad
    assert torch.all(gate > 0) and torch.all(gate < 1)
    torch.testing.assert_close(out, x * gate)


@pytest.mark.parametrize("kernel", [0, -3, 2, 4, 6, 3.0, True])
def test_spatial_attention_refuses_bad_kernels(kernel):
    with pytest.raises(ValueError, match="kernel_size.*odd"):
        SpatialAttention(64, kernel_size=kernel)


def test_spatial_attention_refuses_unknown_kind_and_wrong_channels():
    with pytest.raises(OptionError, match=r"^kind=channel: choose one of pool, conv$"):
        SpatialAttention(64, kind="channel")
    with pytest.raises(OptionError, match=r"^in_channels=0: must be an integer >= 1$"):
        SpatialAttention(0)
    with pytest.raises(ValueError, match=r"expects \[N, 128, h, w\]"):
        SpatialAttention(128)(torch.randn(1, 256, 4, 4))


def test_pool_attention_cost_does_not_depend_on_channels():
    small, large = SpatialAttention(3), SpatialAttention(256)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in large.parameters()) == 99
    assert sum(p.numel() for p in SpatialAttention(256, 3, "conv").parameters()) == 256 * 9 + 1


# ---- BehaviorNet ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_net():
    torch.manual_seed(0)
    return build_model(ModelConfig.from_mapping(OmegaConf.load(CONF_DIR / "behaviornet.yaml")), num_classes=5).eval()


def test_behaviornet_returns_logits_not_probabilities(default_net):
    with torch.no_grad():
        out = default_net(clip())
    assert out.shape == (2, 5)
    assert not torch.allclose(out.sum(dim=1), torch.ones(2), atol=1e-3)
    assert not any(isinstance(m, nn.Softmax | nn.LogSoftmax) for m in default_net.modules())


@pytest.mark.parametrize("t", [1, 8])
@pytest.mark.parametrize("size", [(64, 64), (112, 112), (100, 75)])
def test_behaviornet_any_length_and_size(default_net, t, size):
    with torch.no_grad():
        out = default_net(clip(b=2, t=t, h=size[0], w=size[1]))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    for m in attention_maps(default_net):
        assert m.shape[0] == 2 * t and m.shape[1] == 1


def test_behaviornet_attention_maps(default_net):
    with torch.no_grad():
        default_net(clip(b=2, t=8, h=112, w=112))
    maps = attention_maps(default_net)
    assert [tuple(m.shape) for m in maps] == [(16, 1, 14, 14), (16, 1, 7, 7), (16, 1, 4, 4)]
    assert all(torch.all(m > 0) and torch.all(m < 1) for m in maps)


def test_attention_maps_needs_a_forward_pass():
    with pytest.raises(RuntimeError, match="forward pass"):
        attention_maps(behaviornet(3))


def test_ablation_without_attention_has_no_attention_modules():
    with_att = behaviornet(4)
    without = build_model(ModelConfig.preset("behaviornet", attention=False), 4)
    assert not any(isinstance(m, SpatialAttention) for m in without.modules())
    assert [m.in_channels for m in with_att.modules() if isinstance(m, SpatialAttention)] == [48, 96, 192]
    n_with = sum(p.numel() for p in with_att.parameters())
    assert sum(p.numel() for p in without.parameters()) < n_with
    assert without(clip(t=2)).shape == (2, 4)
    assert attention_maps(without) == []


def test_attention_stages_default_follows_widths():
    # Overriding only the widths (as quick runs do) must still build: null = every stage but the first.
    small = build_model(ModelConfig.preset("behaviornet", widths=[8, 16]), 3)
    assert [m.in_channels for m in small.modules() if isinstance(m, SpatialAttention)] == [16]
    assert small(clip(t=2, h=32, w=32)).shape == (2, 3)
    none = behaviornet(3, attention_stages=[])
    assert not any(isinstance(m, SpatialAttention) for m in none.modules())


@pytest.mark.parametrize("kind", ["pool", "conv"])
def test_gradients_reach_attention_convs(kind):
    model = behaviornet(3, attention_kind=kind, attention_stages=[0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(clip(t=3)), torch.tensor([0, 2]))
    loss.backward()
    atts = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    assert len(atts) == 4
    for att in atts:
        assert att.conv.weight.grad is not None and att.conv.weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
def test_temporal_pools_and_shift(pool):
    model = behaviornet(3, temporal_pool=pool, temporal_shift=True).eval()
    with torch.no_grad():
        out = model(clip(t=4))
    assert out.shape == (2, 3)
    if pool == "attention":
        weights = model.temporal_pool.last_weights
        assert weights.shape == (2, 4)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))


def test_temporal_shift_moves_channels_between_frames():
    x = torch.arange(2 * 3 * 8, dtype=torch.float).reshape(2 * 3, 8, 1, 1)  # B=2, T=3, C=8
    out = temporal_shift(x, n_frames=3).reshape(2, 3, 8)
    frames = x.reshape(2, 3, 8)
    assert torch.equal(out[:, 1:, 0], frames[:, :-1, 0]) and torch.all(out[:, 0, 0] == 0)
    assert torch.equal(out[:, :-1, 1], frames[:, 1:, 1]) and torch.all(out[:, -1, 1] == 0)
    assert torch.equal(out[:, :, 2:], frames[:, :, 2:])
    assert torch.equal(temporal_shift(x, n_frames=1), x)


def test_default_behaviornet_fits_cpu_budget():
    model = behaviornet(10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(clip(b=1, t=8, h=112, w=112))
    assert counter.get_total_flops() <= 0.6e9


def test_frames_are_processed_independently_without_shift():
    # Shared per-frame weights: a clip's frame features must not depend on the other frames
    # (frame_diff deliberately mixes neighbouring frames, so it is off here).
    model = behaviornet(3, frame_diff=False).eval()
    x = clip(b=1, t=3)
    with torch.no_grad():
        together = model.frame_features(x)
        alone = torch.cat([model.frame_features(x[:, :, i : i + 1]) for i in range(3)], dim=1)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_frame_differences_cancel_static_content():
    still = clip(b=2, t=1).repeat(1, 1, 4, 1, 1)
    assert torch.equal(frame_differences(still), torch.zeros_like(still))
    x = clip(b=1, t=3)
    d = frame_differences(x)
    torch.testing.assert_close(d[:, :, 2], x[:, :, 2] - x[:, :, 1])
    torch.testing.assert_close(d[:, :, 0], d[:, :, 1])
    assert torch.equal(frame_differences(x[:, :, :1]), torch.zeros_like(x[:, :, :1]))


def test_frame_diff_option_keeps_rgb_input_and_doubles_stem_channels():
    model = build_model(ModelConfig.preset("behaviornet", frame_diff=True, widths=[8, 16]), 4)
    assert model.backbone.stem[0].in_channels == 6
    assert model(clip(b=2, t=4, h=48, w=48)).shape == (2, 4)


def test_behaviornet_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        behaviornet(3)(torch.randn(2, 3, 64, 64))


# ---- SpatialAttentionNet --------------------------------------------------------------------------------


def test_spatial_attention_net_classifies_32x32_images():
    net = SpatialAttentionNet(num_classes=10)
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    att = [m for m in net.modules() if isinstance(m, SpatialAttention)]
    assert [m.in_channels for m in att] == [128, 256]
    assert [tuple(m.shape) for m in attention_maps(net)] == [(4, 1, 16, 16), (4, 1, 8, 8)]
    out.sum().backward()
    assert all(m.conv.weight.grad.abs().sum() > 0 for m in att)


def test_spatial_attention_net_takes_a_checked_backbone_spec():
    spec = BackboneSpec.check(in_channels=1, stem_width=8, stem_stride=1, widths=[8, 16], blocks_per_stage=1,
                              attention=True, attention_kind="conv", attention_kernel=3, attention_stages=None)
    net = SpatialAttentionNet(num_classes=3, spec=spec)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    assert [m.in_channels for m in net.modules() if isinstance(m, SpatialAttention)] == [16]
    with pytest.raises(OptionError, match=r"^widths=\[\]: must be a list of integers >= 1$"):
        BackboneSpec.check(in_channels=1, stem_width=8, stem_stride=1, widths=[], blocks_per_stage=1,
                           attention=True, attention_kind="conv", attention_kernel=3, attention_stages=None)


def test_spatial_attention_net_as_feature_extractor():
    net = SpatialAttentionNet(num_classes=None).eval()
    assert net.fc is None and net.feature_dim == 256
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 256)
    assert net.features(x).shape == (2, 256, 4, 4)


def test_spatial_attention_net_video_composition():
    model = build_model(ModelConfig.preset("spatial_attention_net"), 6)
    assert isinstance(model, BehaviorNet) and model.backbone_name == "spatial_attention_net"
    assert model(clip(t=2)).shape == (2, 6)
    same = behaviornet(6, backbone="spatial_attention_net", widths=[16, 32], attention_stages=[1])
    assert same(clip(t=2, h=40, w=30)).shape == (2, 6)


# ---- baselines ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_baselines_forward_tiny_clip(name):
    model = build_model(ModelConfig.preset(name), 7).eval()
    assert model.fc.out_features == 7
    with torch.no_grad():
        assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 7)


# ---- registry and configs -------------------------------------------------------------------------------


def test_available_models_sorted():
    names = available_models()
    assert names == sorted(names) and set(VIDEO_MODELS) <= set(names)


@pytest.mark.parametrize(
    ("cfg", "pattern"),
    [
        ({"name": "nope"}, "model=nope: unknown model; available models: behaviornet, "),
        ({"widths": [8]}, "model=.*: must be a mapping with a 'name' key; available models: behaviornet, "),
        ({"name": "behaviornet", "depth": 3}, "model.depth is not an option of model 'behaviornet'; allowed options: "),
        ({"name": "r3d_18", "dropout": 0.5}, "model.dropout is not an option of model 'r3d_18'; allowed options: "),
        ({"name": "behaviornet", "attention_kernel": 4}, "model.attention_kernel=4: must be an odd integer >= 1"),
        ({"name": "behaviornet", "attention_kind": "soft"}, "model.attention_kind=soft: choose one of pool, conv$"),
        (
            {"name": "behaviornet", "temporal_pool": "median"},
            "model.temporal_pool=median: choose one of mean, max, attention, tconv, gru, transformer$",
        ),
        (
            {"name": "behaviornet", "backbone": "vgg"},
            "model.backbone=vgg: choose one of resnet, spatial_attention_net, resnet18, resnet34, resnet50, "
            "mobilenet_v3_large, mobilenet_v3_small, efficientnet_b0$",
        ),
        ({"name": "behaviornet", "widths": [16, 0]}, r"model.widths=\[16, 0\]: must be a list of integers >= 1$"),
        ({"name": "behaviornet", "widths": []}, r"model.widths=\[\]: must be a list of integers >= 1$"),
        (
            {"name": "behaviornet", "blocks_per_stage": [1, 2]},
            r"model.blocks_per_stage=\[1, 2\]: must be a list of integers >= 1 with 4 entries",
        ),
        ({"name": "behaviornet", "attention_stages": [4]}, r"model.attention_stages=\[4\]: .* in 0\.\.3"),
        ({"name": "behaviornet", "stem_stride": 3}, "model.stem_stride=3: choose one of 1, 2, 4$"),
        ({"name": "behaviornet", "dropout": 1.0}, r"model.dropout=1.0: must be a number in \[0, 1\)$"),
        ({"name": "behaviornet", "attention": "yes"}, "model.attention=yes: must be true or false$"),
        (
            {"name": "behaviornet", "backbone": "spatial_attention_net", "temporal_shift": True},
            "model.temporal_shift=true: must be false with backbone 'spatial_attention_net'",
        ),
        ({"name": "mc3_18", "zero_init_residual": 1}, "model.zero_init_residual=1: must be true or false$"),
    ],
)
def test_model_config_errors_are_one_line_and_name_the_key(cfg, pattern):
    # The options a test does not name come from conf/model/<name>.yaml, as on the command line.
    known = cfg.get("name") in available_models()
    values = {**load_option("model", cfg["name"]), **cfg} if known else cfg
    with pytest.raises(ValueError, match="^" + pattern) as info:
        ModelConfig.from_mapping(values)
    assert "\n" not in str(info.value)


def test_options_have_no_code_defaults():
    with pytest.raises(TypeError, match="backbone"):
        BehaviorNet(3)
    with pytest.raises(ValueError, match=r"^model\.backbone is missing: model 'behaviornet' needs every option"):
        model_config("behaviornet")
    with pytest.raises(ValueError, match=r"^model\.widths is missing"):
        ModelConfig.from_mapping({k: v for k, v in load_option("model", "behaviornet").items() if k != "widths"})


def test_build_model_checks_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        build_model(ModelConfig.preset("behaviornet"), 0)


def test_register_model(monkeypatch):
    monkeypatch.setattr(registry_module, "_MODELS", dict(registry_module._MODELS))

    @register_model
    def tiny(num_classes: int, *, hidden: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.Linear(hidden, num_classes))

    assert "tiny" in available_models() and model_options("tiny") == ("hidden",)
    assert build_model(model_config("tiny", hidden=2), 3)(torch.randn(1, 3, 1, 2, 2)).shape == (1, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny")(lambda num_classes: nn.Identity())
    with pytest.raises(TypeError, match="num_classes"):
        register_model("bad")(lambda classes: nn.Identity())


def test_every_registered_model_has_a_config():
    # Besides one file per model, presets such as behaviornet_resnet18 build on one (defaults: [behaviornet, _self_]).
    stems = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
    assert set(available_models()) <= set(stems)
    assert {load_option("model", stem)["name"] for stem in stems} == set(available_models())


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_config_files_build_and_spell_out_every_option(name):
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert cfg.name == name
    options = {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("name", *COMMON_KEYS)}
    assert list(options) == list(model_options(name))
    config = ModelConfig.from_mapping(cfg)
    assert config == ModelConfig.preset(name) and config.to_dict() == OmegaConf.to_container(cfg)
    model = build_model(config, 4)
    if name in ("behaviornet", "spatial_attention_net"):
        assert model(clip(t=2)).shape == (2, 4)
