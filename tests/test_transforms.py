import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from behavior.data.transforms import (
    TransformConfig,
    build_transform,
    denormalize,
    letterbox_fill,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "transform"
# Small sizes keep the tests fast; the pipeline is size-agnostic.
SMALL = {"size": 32, "crop_size": 28}


def transform(**overrides) -> TransformConfig:
    """conf/transform/default.yaml (the former dataclass defaults) with ``overrides``."""
    return TransformConfig.preset("default", **overrides)


def clip(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


def horizontal_ramp(t: int, h: int, w: int) -> torch.Tensor:
    """Frames that are not mirror-symmetric: brightness grows left to right."""
    row = torch.linspace(0, 255, w).round().to(torch.uint8)
    return row.view(1, 1, w, 1).expand(t, h, w, 3).contiguous()


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("resize", ["short_side", "letterbox"])
@pytest.mark.parametrize("train_crop", ["random_resized", "random", "center"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("hw", [(48, 80), (80, 48), (7, 5), (1, 1), (32, 32)])
def test_output_shape_and_dtype(resize, train_crop, train, hw):
    cfg = transform(resize=resize, train_crop=train_crop, **SMALL)
    out = build_transform(cfg, train=train)(clip(3, *hw))
    assert out.shape == (3, 3, 28, 28)
    assert out.dtype == torch.float32
    assert type(out) is torch.Tensor
    assert torch.isfinite(out).all()


def test_default_config_tiny_clip_is_upsampled():
    cfg = transform()
    for train in (True, False):
        out = build_transform(cfg, train=train)(clip(2, 20, 12))
        assert out.shape == (3, 2, 112, 112)


def test_numpy_input_is_accepted():
    frames = clip(2, 40, 50)
    tf = build_transform(transform(**SMALL), train=False)
    assert torch.equal(tf(frames.numpy()), tf(frames))


@pytest.mark.parametrize(
    "frames",
    [
        torch.zeros(4, 32, 32, dtype=torch.uint8),  # no channel axis
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8),  # channels-first by mistake
        torch.zeros(0, 32, 32, 3, dtype=torch.uint8),  # no frames
        torch.zeros(4, 32, 32, 3, dtype=torch.float32),  # not uint8
    ],
)
def test_bad_input_raises(frames):
    with pytest.raises(ValueError, match="expected"):
        build_transform(transform(**SMALL), train=False)(frames)


# --- determinism and clip-consistent randomness ----------------------------------------------


def test_eval_is_deterministic():
    tf = build_transform(transform(**SMALL), train=False)
    frames = clip(4, 40, 60)
    torch.manual_seed(0)
    a = tf(frames)
    torch.manual_seed(1)
    assert torch.equal(a, tf(frames))


@pytest.mark.parametrize("train_crop", ["random_resized", "random"])
def test_train_is_random(train_crop):
    tf = build_transform(transform(train_crop=train_crop, **SMALL), train=True)
    frames = clip(2, 40, 60)
    torch.manual_seed(0)
    outs = [tf(frames) for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("resize", ["short_side", "letterbox"])
@pytest.mark.parametrize("train_crop", ["random_resized", "random"])
def test_train_crop_and_flip_are_shared_by_all_frames(resize, train_crop):
    cfg = transform(resize=resize, train_crop=train_crop, hflip=True, **SMALL)
    tf = build_transform(cfg, train=True)
    frames = clip(1, 45, 70).expand(5, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    for _ in range(8):
        out = tf(frames)
        for t in range(1, 5):
            assert torch.equal(out[:, t], out[:, 0])


# --- horizontal flip -------------------------------------------------------------------------


def test_hflip_off_never_mirrors():
    cfg = transform(train_crop="center", hflip=False, **SMALL)
    frames = horizontal_ramp(2, 40, 60)
    expected = build_transform(cfg, train=False)(frames)
    tf = build_transform(cfg, train=True)
    torch.manual_seed(0)
    for _ in range(20):
        assert torch.equal(tf(frames), expected)


def test_hflip_on_mirrors_sometimes():
    cfg = transform(train_crop="center", hflip=True, **SMALL)
    frames = horizontal_ramp(2, 40, 60)
    plain = build_transform(cfg, train=False)(frames)
    mirrored = plain.flip(-1)
    tf = build_transform(cfg, train=True)
    torch.manual_seed(0)
    outs = [tf(frames) for _ in range(20)]
    assert all(torch.equal(o, plain) or torch.equal(o, mirrored) for o in outs)
    assert any(torch.equal(o, mirrored) for o in outs)
    assert any(torch.equal(o, plain) for o in outs)


# --- normalization ---------------------------------------------------------------------------


def test_normalization_uses_mean_and_std_per_channel():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    cfg = transform(mean=mean, std=std, **SMALL)
    colour = torch.tensor([200, 100, 50], dtype=torch.uint8)
    frames = colour.view(1, 1, 1, 3).expand(2, 40, 50, 3).contiguous()
    for train in (True, False):
        out = build_transform(cfg, train=train)(frames)
        for c in range(3):
            expected = (colour[c].item() / 255 - mean[c]) / std[c]
            torch.testing.assert_close(out[c], torch.full_like(out[c], expected), atol=1e-5, rtol=0)


def test_denormalize_round_trip_is_exact_without_resampling():
    cfg = transform(size=28, crop_size=28, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    frames = clip(3, 28, 28)
    out = build_transform(cfg, train=False)(frames)
    assert torch.equal(denormalize(out, cfg), frames)


def test_denormalize_shape_batched_and_clamped():
    cfg = transform(**SMALL)
    batch = torch.stack([build_transform(cfg, train=True)(clip(4, 40, 50, seed=s)) for s in range(2)])
    back = denormalize(batch, cfg)
    assert back.shape == (2, 4, 28, 28, 3)
    assert back.dtype == torch.uint8
    extreme = torch.full((3, 1, 2, 2), 100.0)
    assert (denormalize(extreme, cfg) == 255).all()
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, T, H, W\]"):
        denormalize(torch.zeros(4, 3, 8, 8), cfg)


def test_denormalize_after_resize_is_close_to_input():
    cfg = transform(size=28, crop_size=28)
    smooth = horizontal_ramp(2, 56, 56)  # a downsampled ramp stays a ramp
    back = denormalize(build_transform(cfg, train=False)(smooth), cfg)
    expected = horizontal_ramp(2, 28, 28)
    assert (back.int() - expected.int()).abs().max() <= 6


# --- letterbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "content"), [(60, 40, (30, 20)), (40, 60, (20, 30)), (9, 15, (18, 30))])
def test_letterbox_keeps_aspect_and_pads_with_mean(h, w, content):
    cfg = transform(resize="letterbox", size=30, crop_size=30)
    white = torch.full((2, h, w, 3), 255, dtype=torch.uint8)
    out = build_transform(cfg, train=False)(white)
    assert out.shape == (3, 2, 30, 30)
    white_value = (1.0 - cfg.mean[0]) / cfg.std[0]
    is_content = (out[0, 0] - white_value).abs() < 1e-4
    rows = torch.nonzero(is_content.any(dim=1)).flatten()
    cols = torch.nonzero(is_content.any(dim=0)).flatten()
    assert (len(rows), len(cols)) == content
    # Centred content: the padding splits evenly between the two sides.
    assert rows[0].item() == (30 - content[0]) // 2 and cols[0].item() == (30 - content[1]) // 2
    # Everything else is padding in the mean colour, i.e. ~0 after normalization.
    pad = out[:, :, ~is_content]
    assert pad.numel() > 0
    assert pad.abs().max() < 0.01


def test_letterbox_fill_is_mean_colour():
    assert letterbox_fill(transform(mean=(0.0, 0.5, 1.0))) == [0, 128, 255]


def test_short_side_crops_portrait_instead_of_padding():
    cfg = transform(resize="short_side", size=30, crop_size=30)
    white = torch.full((1, 60, 40, 3), 255, dtype=torch.uint8)
    out = build_transform(cfg, train=False)(white)
    torch.testing.assert_close(out, torch.full_like(out, (1.0 - 0.45) / 0.225), atol=1e-4, rtol=0)


# --- pickling --------------------------------------------------------------------------------


@pytest.mark.parametrize("resize", ["short_side", "letterbox"])
@pytest.mark.parametrize("train", [True, False])
def test_pickle_round_trip(resize, train):
    tf = build_transform(transform(resize=resize, **SMALL), train=train)
    clone = pickle.loads(pickle.dumps(tf))
    frames = clip(3, 40, 50)
    torch.manual_seed(3)
    a = tf(frames)
    torch.manual_seed(3)
    assert torch.equal(clone(frames), a)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "letterbox"])
def test_yaml_group_files_load_and_are_complete(name):
    omegaconf = pytest.importorskip("omegaconf")
    raw = omegaconf.OmegaConf.load(CONF / f"{name}.yaml")
    assert set(raw.keys()) == set(TransformConfig.__dataclass_fields__)
    cfg = TransformConfig.from_mapping(raw)
    assert cfg == TransformConfig.preset(name)
    assert isinstance(cfg.crop_scale, tuple) and isinstance(cfg.mean, tuple)
    assert all(isinstance(v, float) for v in cfg.mean + cfg.std + cfg.crop_scale + cfg.crop_ratio)
    assert cfg.resize == ("letterbox" if name == "letterbox" else "short_side")
    hash(cfg)
    out = build_transform(cfg, train=True)(clip(2, 90, 50))
    assert out.shape == (3, 2, cfg.crop_size, cfg.crop_size)


@pytest.mark.parametrize(("name", "base"), [("small", "default"), ("small_portrait", "letterbox")])
def test_yaml_options_build_on_their_defaults(name, base):
    assert TransformConfig.preset(name) == TransformConfig.preset(base, size=80, crop_size=80)


def test_config_from_mapping_coerces_lists():
    values = {**TransformConfig.preset("default").to_dict(), "crop_scale": [0.3, 1], "mean": [0, 0.5, 1],
              "size": np.int64(64), "crop_size": 64}
    cfg = TransformConfig.from_mapping(values)
    assert cfg.crop_scale == (0.3, 1.0) and cfg.mean == (0.0, 0.5, 1.0)
    assert type(cfg.size) is int
    assert TransformConfig.from_mapping(transform().to_dict()) == transform()
    with pytest.raises(ValueError, match=r"^transform\.hflip is missing"):
        TransformConfig.from_mapping({k: v for k, v in transform().to_dict().items() if k != "hflip"})


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"resize": "stretch"}, r"^transform\.resize=stretch: choose one of short_side, letterbox$"),
        ({"train_crop": "five"}, r"^transform\.train_crop=five: choose one of random_resized, random, center$"),
        ({"size": 0}, r"^transform\.size=0: must be an integer >= 1$"),
        ({"size": 128.0}, r"^transform\.size=128\.0: "),
        ({"crop_size": 200}, r"^transform\.crop_size=200: must be <= transform\.size \(128\)$"),
        ({"crop_scale": [0.5]}, r"^transform\.crop_scale=\[0\.5\]: must be a list of 2 numbers"),
        ({"crop_scale": [0.9, 0.5]}, r"^transform\.crop_scale=\[0\.9, 0\.5\]: must satisfy 0 < min <= max <= 1"),
        ({"crop_scale": [0.0, 1.0]}, r"^transform\.crop_scale=\[0\.0, 1\.0\]: "),
        ({"crop_scale": "0.5,1"}, r"^transform\.crop_scale=0\.5,1: must be a list of 2 numbers"),
        ({"crop_ratio": [1.3, 0.7]}, r"^transform\.crop_ratio=\[1\.3, 0\.7\]: "),
        ({"hflip": "yes"}, r"^transform\.hflip=yes: must be true or false$"),
        ({"mean": [0.5, 0.5]}, r"^transform\.mean=\[0\.5, 0\.5\]: must be a list of 3 numbers"),
        ({"mean": [0.5, 0.5, "x"]}, r"^transform\.mean=\[0\.5, 0\.5, 'x'\]: "),
        ({"mean": [128, 128, 128]}, r"^transform\.mean=\[128, 128, 128\]: .*in \[0, 1\]"),
        ({"std": [0.2, 0.0, 0.2]}, r"^transform\.std=\[0\.2, 0\.0, 0\.2\]: "),
        ({"crop": 112}, r"^transform\.crop is not a known key; allowed keys of transform: resize, size"),
    ],
)
def test_config_validation_errors(raw, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        transform(**raw)
    assert "\n" not in str(err.value)
