"""Optical flow as data: correct direction and size, exact flip negation, edge cases, settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from behavior.data.flow import (
    ZERO,
    FlowComputer,
    FlowConfig,
    decode_flow,
    encode_flow,
    flip_flow_x,
    frames_needed,
    pair_starts,
)
from behavior.errors import ConfigError

SIZE, SQUARE, STEP = 96, 24, 3


def moving_square(num_frames: int = 6, step: int = STEP, seed: int = 0) -> np.ndarray:
    """A textured square moving right by ``step`` pixels a frame over a static textured background."""
    rng = np.random.default_rng(seed)
    background = (rng.random((SIZE, SIZE, 3)) * 80).astype(np.uint8)
    texture = (rng.random((SQUARE, SQUARE, 3)) * 155 + 100).astype(np.uint8)
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        x = 20 + t * step
        frames[t, 36:36 + SQUARE, x:x + SQUARE] = texture
    return frames


def square_flow(frames: np.ndarray, cfg: FlowConfig, index: int = 1) -> np.ndarray:
    positions = {i: i for i in range(len(frames))}
    codes = FlowComputer(cfg).stacks(frames, positions, [index], len(frames))[0]
    x = 20 + index * STEP
    return decode_flow(codes[40:36 + SQUARE - 4, x + 4:x + SQUARE - 4], cfg.bound)  # inside the square


def test_a_square_moving_right_gives_its_displacement():
    flow = square_flow(moving_square(), FlowConfig.preset("dis", quality="medium"))
    assert flow[..., 0].mean() == pytest.approx(STEP, abs=0.5)
    assert abs(flow[..., 1].mean()) < 0.5


def test_a_flipped_clip_gives_the_negated_x_flow():
    cfg = FlowConfig.preset("dis", quality="medium")
    frames = moving_square()
    flipped = frames[:, :, ::-1].copy()
    positions = {i: i for i in range(len(frames))}
    codes = FlowComputer(cfg).stacks(flipped, positions, [1], len(frames))[0]
    x = SIZE - (20 + STEP) - SQUARE
    flow = decode_flow(codes[40:36 + SQUARE - 4, x + 4:x + SQUARE - 4], cfg.bound)
    assert flow[..., 0].mean() == pytest.approx(-STEP, abs=0.5)
    # Flipping the stored codes instead of the frames negates x exactly and leaves y alone.
    original = FlowComputer(cfg).stacks(frames, positions, [1], len(frames))[0]
    mirrored = flip_flow_x(original, [0])
    assert np.array_equal(decode_flow(mirrored[..., 0], cfg.bound), -decode_flow(original[..., 0], cfg.bound))
    assert np.array_equal(mirrored[..., 1], original[..., 1])
    video = torch.from_numpy(original).permute(2, 0, 1)[None]  # [T, C, H, W]
    assert torch.equal(flip_flow_x(video, [0])[0, 0], torch.from_numpy(mirrored[..., 0]))


def test_codes_round_trip_within_one_step_and_clip_at_the_bound():
    bound = 20.0
    flow = np.array([[-25.0, -20.0, -3.3, 0.0, 0.1, 7.77, 20.0, 99.0]]).reshape(1, 4, 2)
    codes = encode_flow(flow, bound)
    assert codes.dtype == np.uint8 and encode_flow(np.zeros(2), bound).tolist() == [ZERO, ZERO]
    back = decode_flow(codes, bound)
    assert np.all(np.abs(back - np.clip(flow, -bound, bound)) <= bound / 127 / 2 + 1e-6)
    assert codes.min() == 1 and codes.max() == 255


def test_stacks_stay_inside_the_clip():
    assert pair_starts([0, 5, 9], 10, 2) == [0, 5, 7]
    assert frames_needed([9], 10, 2) == [7, 8, 9]
    assert pair_starts([3], 1, 1) == [0]
    cfg = FlowConfig.preset("dis", stack=2)
    frames = moving_square(num_frames=4)
    out = FlowComputer(cfg).stacks(frames, {i: i for i in range(4)}, [0, 3], 4)
    assert out.shape == (2, SIZE, SIZE, 4)
    # The last sampled frame reuses the clip's last two pairs: its stack equals that of frame 1.
    again = FlowComputer(cfg).stacks(frames, {i: i for i in range(4)}, [1], 4)
    assert np.array_equal(out[1], again[0])


def test_a_one_frame_clip_has_zero_flow_and_a_warning():
    cfg = FlowConfig.preset("dis")
    with pytest.warns(UserWarning, match="one frame"):
        out = FlowComputer(cfg).stacks(moving_square(num_frames=1), {0: 0}, [0, 0], 1)
    assert out.shape == (2, SIZE, SIZE, 2) and (out == ZERO).all()


def test_a_field_depends_on_its_two_frames_only():
    computer = FlowComputer(FlowConfig.preset("dis"))
    frames = moving_square()
    grey = [f.mean(-1).astype(np.uint8) for f in frames]
    first = computer.field(grey[0], grey[1])
    computer.field(grey[3], grey[2])  # another pair in between must not change the next result
    assert np.array_equal(first, computer.field(grey[0], grey[1]))
    assert (computer.field(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)) == 0).all()  # too small for DIS


@pytest.mark.parametrize(("values", "message"), [
    ({"quality": "slow"}, "flow.quality=slow: choose one of ultrafast, fast, medium"),
    ({"bound": 0}, "flow.bound=0: must be a number > 0"),
    ({"stack": 0}, "flow.stack=0: must be an integer >= 1 and <= 16"),
])
def test_flow_settings_errors_name_the_key(values, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        FlowConfig.preset("dis", **values)


def test_the_transform_moves_flow_with_the_frames_and_negates_x_on_a_flip():
    from torchvision import tv_tensors

    from behavior.data.transforms import FlipWithFlow, TransformConfig, build_transform

    cfg = FlowConfig.preset("dis", quality="medium")
    frames = moving_square()
    flow = FlowComputer(cfg).stacks(frames, {i: i for i in range(len(frames))}, [0, 1, 2, 3], len(frames))
    both = np.concatenate([frames[:4], flow], axis=-1)  # [T, H, W, 3 + 2]
    video = tv_tensors.Video(torch.from_numpy(both).permute(0, 3, 1, 2))
    flipped = FlipWithFlow([3], p=1.0)(video)
    assert torch.equal(flipped[:, :3], video[:, :3].flip(-1))  # frames mirrored
    assert torch.equal(flipped[:, 4], video[:, 4].flip(-1))  # y flow mirrored, same sign
    assert torch.equal(flipped[:, 3].short(), 256 - video[:, 3].flip(-1).short())  # x flow mirrored and negated

    transform = TransformConfig.preset("default", size=SIZE, crop_size=SIZE)
    out = build_transform(transform, train=False, flow_channels=2)(both)
    assert out.shape == (5, 4, SIZE, SIZE)
    still = build_transform(transform, train=False, flow_channels=2, rgb=False)(np.full((2, SIZE, SIZE, 2), ZERO,
                                                                                        np.uint8))
    assert torch.allclose(still, torch.zeros_like(still))  # no motion normalizes to 0
    letterbox = TransformConfig.preset("letterbox", size=SIZE, crop_size=SIZE)
    padded = build_transform(letterbox, train=False, flow_channels=2)(both[:, :, : SIZE // 2])
    assert torch.allclose(padded[3:, :, :, :10], torch.zeros(2, 4, SIZE, 10))  # the padding has no motion
    for train in (False, True):  # flow alone (model.input=flow or stats) letterboxed: portrait clips
        alone = build_transform(letterbox, train=train, flow_channels=2, rgb=False)(flow[:, :, : SIZE // 2])
        assert alone.shape == (2, 4, SIZE, SIZE)


def test_the_clip_pipeline_appends_flow_channels(clip_tree):
    from behavior.data.pipeline import ClipPipeline, input_channels
    from behavior.data.scan import load_records
    from tests.helpers import tiny_recipe

    records = load_records(str(clip_tree), None)[:4]
    classes = {name: i for i, name in enumerate(sorted({r.label for r in records}))}
    for model_input, channels in (("rgb", 3), ("flow", 4), ("rgb+flow", 7), ("stats", 4), ("rgb+stats", 7)):
        recipe = tiny_recipe(f"model.input={model_input}", "flow.stack=2")
        pipeline = ClipPipeline(recipe.sampling, recipe.transform, "pyav", **input_channels(model_input, recipe.flow))
        for train in (True, False):
            video, _, _ = next(iter(pipeline.loader(records, classes, train, 2, 0, seed=0)))
            views = () if train else (1,)
            assert video.shape == (2, *views, channels, 4, 32, 32)


def test_model_input_is_checked_in_one_line():
    from behavior.models import ModelConfig

    allowed = r"rgb, flow, stats, rgb\+flow, rgb\+stats, flow\+stats, rgb\+flow\+stats"
    with pytest.raises(ConfigError, match=rf"^model\.input=optical: choose one of {allowed}$"):
        ModelConfig.preset("behaviornet", input="optical")
    with pytest.raises(ConfigError, match=r"^model\.input=flow: model 'r3d_18' takes RGB clips only"):
        ModelConfig.preset("r3d_18", input="flow")


@pytest.mark.slow
def test_a_two_stream_model_runs_through_every_entry_point(clip_tree, tmp_path, capsys):
    from behavior.engine.checkpoint import load_model
    from behavior.engine.training import train_run
    from behavior.live.session import LiveSettings
    from behavior.live.session import run as live
    from behavior.models.fusion import Fusion
    from behavior.predict.batch import PredictSettings
    from behavior.predict.batch import run as predict
    from behavior.video import open_video
    from tests.helpers import TINY, command_config, tiny_recipe

    recipe = tiny_recipe(*[o for o in TINY if not o.startswith(("model.", "sampling.", "transform."))],
                         f"data.root={clip_tree}", "data.cache=null", "trainer.epochs=1", "model.input=rgb+flow")
    result = train_run(recipe, tmp_path / "run")  # its final report is evaluate's path: the checkpoint on clips
    assert result["metrics"]["num_clips"] > 0
    checkpoint = tmp_path / "run" / "best.pt"
    model, saved = load_model(checkpoint, torch.device("cpu"))
    assert isinstance(model, Fusion) and saved.recipe.model.input == "rgb+flow"

    common = {"checkpoint": str(checkpoint), "input": str(clip_tree), "progress": False, "num_workers": 0}
    counts = predict(PredictSettings.from_mapping(command_config("predict", output=str(tmp_path / "p.csv"),
                                                                 **common)))
    assert counts["ok"] == 18 and counts["error"] == 0
    clip = next(clip_tree.rglob("*.mp4"))
    windows = predict(PredictSettings.from_mapping(command_config(
        "predict", **{**common, "input": str(clip)}, output=str(tmp_path / "w.csv"), predict={"window": 0.5})))
    assert windows["ok"] == 1
    stats = live(LiveSettings.from_mapping(command_config("live", checkpoint=str(checkpoint), source=str(clip),
                                                          output=str(tmp_path / "live.mp4"), stride=4)))
    with open_video(tmp_path / "live.mp4") as reader:
        assert stats.predictions >= 2 and len(reader) == stats.frames

    from behavior.report.overlays import attention_overlays

    (overlay,) = attention_overlays(tmp_path / "run", n=1, stages="all")
    assert any(name.startswith("rgb.") for name in overlay.stage_names)
    assert any(name.startswith("flow.") for name in overlay.stage_names)  # both streams' attention is shown


def test_the_cache_computes_flow_once_and_gives_the_same_channels(clip_tree, tmp_path, monkeypatch):
    from behavior.data import flow as flow_module
    from behavior.data.cache import CacheSettings, ClipCache
    from behavior.data.pipeline import ClipPipeline, input_channels
    from behavior.data.scan import load_records
    from tests.helpers import tiny_recipe

    records = load_records(str(clip_tree), None)[:3]
    classes = {name: i for i, name in enumerate(sorted({r.label for r in records}))}
    recipe = tiny_recipe("model.input=rgb+flow")
    cache = ClipCache(tmp_path / "cache", CacheSettings("pyav", "short_side", 40, 64), recipe.flow)
    pipeline = ClipPipeline(recipe.sampling, recipe.transform, "pyav", **input_channels("rgb+flow", recipe.flow))
    calls = []
    real = flow_module.FlowComputer.field
    monkeypatch.setattr(flow_module.FlowComputer, "field", lambda self, a, b: calls.append(1) or real(self, a, b))

    def epoch(pipe):
        return [video for video, _, _ in pipe.loader(records, classes, False, 3, 0, seed=0)]

    direct = epoch(pipeline)
    computed = len(calls)
    cached = epoch(dataclasses.replace(pipeline, cache=cache))  # fills the cache: the flow of every pool frame
    filled = len(calls)
    assert computed > 0 and filled > computed
    again = epoch(dataclasses.replace(pipeline, cache=cache))  # the second epoch computes no flow
    assert len(calls) == filled
    for a, b, c in zip(direct, cached, again, strict=True):
        assert torch.equal(a, b) and torch.equal(b, c)  # short clips: the pool is every frame, same channels
    flow_only = epoch(dataclasses.replace(pipeline, cache=cache, rgb=False))
    assert len(calls) == filled and torch.equal(flow_only[0], direct[0][:, :, 3:])
