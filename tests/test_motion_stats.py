"""The motion-statistics stream (flow histograms -> tiny MLP) and the fusion of several streams."""

from __future__ import annotations

import pytest
import torch

from behavior.errors import ConfigError
from behavior.models import ModelConfig, build_model
from behavior.models.fusion import Fusion
from behavior.models.motion_stats import (
    DIRECTION_BINS,
    FEATURES,
    MAGNITUDE_EDGES,
    PER_FIELD,
    TO_BOUND_UNITS,
    MotionStats,
    flow_statistics,
)

MAG_BINS = len(MAGNITUDE_EDGES) + 1


def _uniform_flow(u: float, v: float, t: int = 4, size: int = 16) -> torch.Tensor:
    """A normalised flow clip [1, 2, T, H, W] where every pixel moves (u, v) (in units of the bound)."""
    flow = torch.empty(1, 2, t, size, size)
    flow[:, 0], flow[:, 1] = u / TO_BOUND_UNITS, v / TO_BOUND_UNITS
    return flow


def _per_frame_mean(stats: torch.Tensor) -> torch.Tensor:
    return stats[0, :PER_FIELD]  # the first time summary: the mean over frames


def test_statistics_of_a_rightward_motion():
    stats = _per_frame_mean(flow_statistics(_uniform_flow(0.5, 0.0)))
    how_much, which_way = stats[:MAG_BINS], stats[MAG_BINS:MAG_BINS + DIRECTION_BINS]
    assert how_much[-2] == pytest.approx(1.0)  # 0.5 of the bound: the bin [0.32, 0.64)
    assert which_way.sum() == pytest.approx(1.0)
    assert which_way[DIRECTION_BINS // 2] == pytest.approx(1.0)  # angle 0 (rightward) starts the upper half
    mean_magnitude, _, mean_abs_x, mean_abs_y, mean_x, mean_y, moving = stats[MAG_BINS + DIRECTION_BINS:][:7]
    assert mean_magnitude == pytest.approx(0.5, abs=1e-4) and mean_x == pytest.approx(0.5, abs=1e-4)
    assert mean_abs_y == pytest.approx(0.0, abs=1e-6) and moving == pytest.approx(1.0)
    leftward = _per_frame_mean(flow_statistics(_uniform_flow(-0.5, 0.0)))
    assert leftward[MAG_BINS:MAG_BINS + DIRECTION_BINS].argmax() in (0, DIRECTION_BINS - 1)


def test_no_motion_and_steady_motion_summaries():
    still = flow_statistics(_uniform_flow(0.0, 0.0))
    assert still.shape == (1, FEATURES) and torch.isfinite(still).all()
    assert _per_frame_mean(still)[0] == pytest.approx(1.0)  # every pixel in the first magnitude bin
    assert _per_frame_mean(still)[MAG_BINS:MAG_BINS + DIRECTION_BINS].sum() == pytest.approx(0.0, abs=1e-4)
    steady = flow_statistics(_uniform_flow(0.3, 0.1))
    change = steady[0, 3 * PER_FIELD:]
    assert change.abs().max() < 1e-5  # the same field in every frame: nothing changes over time
    assert flow_statistics(_uniform_flow(0.3, 0.1, t=1)).shape == (1, FEATURES)  # one frame: no change, no crash


def test_motion_stats_learns_and_trains_on_one_clip():
    model = MotionStats(3, 4, dropout=0.0)
    assert sum(p.numel() for p in model.parameters()) < 10_000
    model(torch.randn(1, 4, 3, 20, 20)).sum().backward()  # batch norm with a batch of one: running statistics
    with pytest.raises(ValueError, match="flow clips"):
        model(torch.randn(2, 3, 3, 20, 20))


@pytest.mark.parametrize("fusion", ["late", "joint"])
@pytest.mark.parametrize("model_input", ["rgb+stats", "rgb+flow", "flow+stats", "rgb+flow+stats"])
def test_every_stream_of_a_fused_model_learns(model_input, fusion):
    cfg = ModelConfig.preset("behaviornet", widths=[8, 16], input=model_input, fusion=fusion)
    model = build_model(cfg, 3, flow_channels=2)
    assert isinstance(model, Fusion) and model.names == cfg.streams
    channels = (3 if "rgb" in cfg.streams else 0) + 2
    clip = torch.randn(2, channels, 4, 32, 32)
    if fusion == "late":
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(clip), torch.stack(model.streams(clip)).mean(0))
    logits = model.train()(clip)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for name in model.names:
        grads = [p.grad for n, p in getattr(model, name).named_parameters() if "head" not in n or fusion == "late"]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_stats_alone_and_fusion_choices_are_checked():
    model = build_model(ModelConfig.preset("behaviornet", input="stats"), 2, flow_channels=2)
    assert isinstance(model, MotionStats)
    assert isinstance(build_model(ModelConfig.preset("r3d_18", input="rgb+stats"), 2, flow_channels=2), Fusion)
    with pytest.raises(ConfigError, match=r"^model\.fusion=early: choose one of late, joint$"):
        ModelConfig.preset("behaviornet", input="rgb+flow", fusion="early")
    with pytest.raises(ConfigError, match=r"^model\.fusion=joint: model 'r3d_18' has no clip features to join"):
        ModelConfig.preset("r3d_18", input="rgb+stats", fusion="joint")
    with pytest.raises(ConfigError, match=r"^model\.fusion is missing"):
        ModelConfig.from_mapping({"name": "behaviornet", "input": "rgb"})
