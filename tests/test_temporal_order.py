"""Temporal order: the order-aware temporal pools (tconv, gru, transformer) against the order-blind ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from behavior.errors import ConfigError
from behavior.models import ModelConfig, TemporalPool, build_model
from behavior.models.temporal import MAX_POSITIONS, ORDER_AWARE_POOLS, TEMPORAL_POOLS

ORDER_BLIND = [pool for pool in TEMPORAL_POOLS if pool not in ORDER_AWARE_POOLS]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _changed(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("kind", TEMPORAL_POOLS)
def test_pool_shapes_and_order(kind):
    pool = TemporalPool(kind, 16).eval()
    for p in pool.parameters():  # any trained weights, not only the start (attention's scores start at zero)
        nn.init.normal_(p, std=0.3)
    feats = torch.randn(3, 6, 16)
    with torch.no_grad():
        out, reversed_out = pool(feats), pool(feats.flip(1))
        shuffled = pool(feats[:, torch.randperm(6)])
        assert pool(feats[:, :1]).shape == (3, 16)  # a single frame
        assert pool(torch.randn(2, MAX_POSITIONS + 7, 16)).shape == (2, 16)  # longer than the position table
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    assert pool.order_aware == (kind in ORDER_AWARE_POOLS)
    if kind in ORDER_BLIND:
        torch.testing.assert_close(reversed_out, out)
        torch.testing.assert_close(shuffled, out)
    else:
        assert _changed(out, reversed_out) > 0.01


@pytest.mark.parametrize("kind", ORDER_AWARE_POOLS)
def test_order_heads_start_near_the_mean_and_learn(kind):
    model = build_model(ModelConfig.preset("behaviornet", widths=[8, 16], temporal_pool=kind, frame_diff=False), 3)
    feats = torch.rand(2, 5, 16)
    out = model.temporal_pool(feats)
    # A small learned term on top of the mean: training starts from mean pooling.
    assert _changed(feats.mean(1), out) < 0.5
    nn.functional.cross_entropy(model(torch.randn(2, 3, 5, 32, 32)), torch.tensor([0, 2])).backward()
    for name, p in model.temporal_pool.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ORDER_AWARE_POOLS)
def test_order_heads_are_small(kind):
    default = build_model(ModelConfig.preset("behaviornet"), 6)
    with_head = build_model(ModelConfig.preset("behaviornet", temporal_pool=kind), 6)
    head = sum(p.numel() for p in with_head.temporal_pool.parameters())
    total = sum(p.numel() for p in with_head.parameters())
    assert total - sum(p.numel() for p in default.parameters()) == head
    assert 10_000 < head < 0.1 * total


@pytest.mark.parametrize("model_name", ["behaviornet", "spatial_attention_net"])
@pytest.mark.parametrize("kind", TEMPORAL_POOLS)
def test_every_backbone_takes_every_pool(model_name, kind):
    # Without frame differences (which pair each frame with the one before) frame features are order-blind,
    # so the whole model is exactly as order-sensitive as its temporal pool.
    options = {"frame_diff": False} if model_name == "behaviornet" else {}
    model = build_model(ModelConfig.preset(model_name, widths=[8, 16], temporal_pool=kind, **options), 4).eval()
    for p in model.temporal_pool.parameters():
        nn.init.normal_(p, std=0.3)
    clip = torch.randn(2, 3, 6, 32, 32)
    with torch.no_grad():
        out, reversed_out = model(clip), model(clip.flip(2))
    assert out.shape == (2, 4)
    if kind in ORDER_BLIND:
        torch.testing.assert_close(reversed_out, out)
    else:
        assert _changed(out, reversed_out) > 1e-3


@pytest.mark.parametrize("model_name", ["behaviornet", "spatial_attention_net"])
def test_pool_choice_is_one_line_naming_the_key(model_name):
    with pytest.raises(ConfigError) as err:
        ModelConfig.preset(model_name, temporal_pool="lstm")
    assert str(err.value) == "model.temporal_pool=lstm: choose one of mean, max, attention, tconv, gru, transformer"
