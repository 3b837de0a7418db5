"""Temporal order: the order-aware temporal pools (tconv, gru, transformer) against the order-blind ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from behavior.errors import ConfigError
from behavior.models import ModelConfig, TemporalPool, build_model
from behavior.models.temporal import MAX_POSITIONS, ORDER_AWARE_POOLS, TEMPORAL_POOLS
from behavior.order_bench import TEST_OFFSET, OrderBench, render_pair, train_pool

ORDER_BLIND = [pool for pool in TEMPORAL_POOLS if pool not in ORDER_AWARE_POOLS]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _changed(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("kind", TEMPORAL_POOLS)
def test_pool_shapes_and_order(kind):
    pool = TemporalPool(kind, 48).eval()
    for p in pool.parameters():  # any trained weights, not only the start (attention's scores start at zero)
        nn.init.normal_(p, std=0.3)
    feats = torch.randn(3, 6, 48)
    with torch.no_grad():
        out, reversed_out = pool(feats), pool(feats.flip(1))
        shuffled = pool(feats[:, torch.randperm(6)])
        assert pool(feats[:, :1]).shape == (3, 48)  # a single frame
        assert pool(torch.randn(2, MAX_POSITIONS + 7, 48)).shape == (2, 48)  # longer than the position table
    assert out.shape == (3, 48) and torch.isfinite(out).all()
    assert pool.order_aware == (kind in ORDER_AWARE_POOLS)
    if kind in ORDER_BLIND:
        torch.testing.assert_close(reversed_out, out)
        torch.testing.assert_close(shuffled, out)
    else:
        assert _changed(out, reversed_out) > 1e-3


@pytest.mark.parametrize("kind", ORDER_AWARE_POOLS)
def test_order_heads_learn(kind):
    model = build_model(ModelConfig.preset("behaviornet", widths=[8, 16], temporal_pool=kind, frame_diff=False), 3)
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
        feats, reversed_feats = model.frame_features(clip), model.frame_features(clip.flip(2))
        out, reversed_out = model.temporal_pool(feats), model.temporal_pool(reversed_feats)
        assert model(clip).shape == (2, 4)
    torch.testing.assert_close(reversed_feats, feats.flip(1))
    if kind in ORDER_BLIND:
        torch.testing.assert_close(reversed_out, out)
    else:
        assert (out - reversed_out).abs().max() > 1e-5  # float noise is ~1e-7 (the order-blind pools above)


@pytest.mark.parametrize("model_name", ["behaviornet", "spatial_attention_net"])
def test_pool_choice_is_one_line_naming_the_key(model_name):
    with pytest.raises(ConfigError) as err:
        ModelConfig.preset(model_name, temporal_pool="lstm")
    assert str(err.value) == "model.temporal_pool=lstm: choose one of mean, max, attention, tconv, gru, transformer"


@pytest.mark.slow
def test_only_an_order_aware_pool_tells_squat_down_from_stand_up():
    # The acceptance test, small: squat_down and stand_up share every frame distribution (the one is the
    # other played backwards), so mean pooling of order-blind frame features stays near chance, while the
    # order-aware pools learn the pair. Seeded; about 35 s on 2 CPU cores (python -m behavior.order_bench runs
    # every pool with 5 seeds and 50 test clips per class: tconv 1.000, gru 0.986, mean 0.488 on average).
    bench = OrderBench(pair="squat", train_clips=200, test_clips=20, epochs=15)
    train, test = render_pair(bench, 0, bench.train_clips), render_pair(bench, TEST_OFFSET, bench.test_clips)
    mean = train_pool("mean", bench, train, test, seed=0)
    assert mean["train_acc"] > 0.8 and 0.3 <= mean["test_acc"] <= 0.7, mean  # it learns, just not the order
    for pool in ("tconv", "gru"):
        result = train_pool(pool, bench, train, test, seed=0)
        assert result["test_acc"] >= 0.95, result
