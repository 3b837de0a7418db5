"""Video transforms: decoded uint8 frames [T, H, W, 3] -> normalized float32 [3, T, S, S].

Frames are wrapped as a ``tv_tensors.Video`` so torchvision's v2 transforms draw one set of
random parameters per call and apply it to every frame: a clip is cropped and flipped as a
whole, never frame by frame. Geometry (resize, pad, crop, flip) runs on uint8, which is cheaper
and lets antialiased resizing use its fast integer path; conversion to float comes last.

Everything in the pipeline is a torchvision class or a module-level class here, so the built
transform pickles for DataLoader workers started with ``spawn``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from behavior.config import Settings, check_bool, check_choice, check_number, check_numbers, fail

RESIZES = ("short_side", "letterbox")
FLOW_ZERO = 128  # uint8 code of no motion (behavior.data.flow.ZERO)
FLOW_STD = 0.25  # flow codes / 255 spread: +/- the bound maps to about +/- 2 after normalizing
TRAIN_CROPS = ("random_resized", "random", "center")
# transform.mean/std = null without pretrained weights: Kinetics-400's statistics, the usual ones for video.
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class TransformConfig(Settings):
    """Spatial preprocessing of a clip (the ``transform`` group); checked (lists made tuples) on construction."""

    GROUP = "transform"
    resize: str
    size: int
    crop_size: int
    train_crop: str
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    hflip: bool
    mean: tuple[float, float, float]  # null in the YAML: the recipe fills in the pretrained weights' own
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        check_choice("transform.resize", self.resize, RESIZES)
        check_choice("transform.train_crop", self.train_crop, TRAIN_CROPS)
        for name in ("size", "crop_size"):
            object.__setattr__(self, name, check_number(f"transform.{name}", getattr(self, name), 1, integer=True))
        if self.crop_size > self.size:
            # The resized frame's short side is `size`; a larger crop would need padding, not cropping.
            raise fail("transform.crop_size", self.crop_size, f"must be <= transform.size ({self.size})")
        check_bool("transform.hflip", self.hflip)
        scale = check_numbers("transform.crop_scale", self.crop_scale, 2)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise fail("transform.crop_scale", list(scale), "must satisfy 0 < min <= max <= 1")
        ratio = check_numbers("transform.crop_ratio", self.crop_ratio, 2)
        if not 0.0 < ratio[0] <= ratio[1]:
            raise fail("transform.crop_ratio", list(ratio), "must satisfy 0 < min <= max")
        mean = check_numbers("transform.mean", KINETICS_MEAN if self.mean is None else self.mean, 3, 0.0, 1.0)
        std = check_numbers("transform.std", KINETICS_STD if self.std is None else self.std, 3)
        if not all(s > 0.0 for s in std):
            raise fail("transform.std", list(std), "must be 3 numbers > 0")
        for name, value in (("crop_scale", scale), ("crop_ratio", ratio), ("mean", mean), ("std", std)):
            object.__setattr__(self, name, value)


class ToVideo(nn.Module):
    """uint8 [T, H, W, C] (decoder layout; C = 3 RGB channels, then any flow channels) -> tv_tensors.Video
    [T, C, H, W] (v2 layout)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, frames: torch.Tensor | np.ndarray) -> tv_tensors.Video:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if frames.ndim != 4 or frames.shape[-1] != self.channels or frames.shape[0] < 1:
            raise ValueError(f"expected frames of shape [T, H, W, {self.channels}] with T >= 1; "
                             f"got {tuple(frames.shape)}")
        if frames.dtype != torch.uint8:
            # Float input would skip the /255 scaling silently and produce wrong normalization.
            raise ValueError(f"expected uint8 frames; got {frames.dtype}")
        return tv_tensors.Video(frames.permute(0, 3, 1, 2))


class PadToSquare(nn.Module):
    """Pad a video centred to a square, filling with a constant per-channel uint8 colour."""

    def __init__(self, fill: Sequence[int]) -> None:
        super().__init__()
        self.fill = [int(v) for v in fill]

    def forward(self, video: tv_tensors.Video) -> tv_tensors.Video:
        h, w = video.shape[-2:]
        side = max(h, w)
        left, top = (side - w) // 2, (side - h) // 2
        return F.pad(video, [left, top, side - w - left, side - h - top], fill=self.fill)


class ToChannelsFirst(nn.Module):
    """Video [T, C, H, W] -> plain tensor [C, T, H, W], the layout of torchvision video models."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()


def visible_box(box: tuple[int, int, int, int], cfg: TransformConfig) -> tuple[int, int, int, int]:
    """The part of the frame region ``box`` (left, top, right, bottom in pixels) that survives the eval transform's
    resize and centre crop: where the model's input, and so its attention map, lies in the frame."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    scale = cfg.size / (min(width, height) if cfg.resize == "short_side" else max(width, height))
    side = cfg.crop_size / scale
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return (max(left, round(cx - side / 2)), max(top, round(cy - side / 2)), min(right, round(cx + side / 2)),
            min(bottom, round(cy + side / 2)))


class FlipWithFlow(nn.Module):
    """Random horizontal flip of frames and flow together; the flow's x channels change sign (a flipped leftward
    motion is a rightward one). Channels: RGB first (if any), then (x, y) per flow field."""

    def __init__(self, flow_x: list[int], p: float = 0.5) -> None:
        super().__init__()
        self.flow_x, self.p = flow_x, p

    def forward(self, video: tv_tensors.Video) -> tv_tensors.Video:
        if torch.rand(1).item() >= self.p:
            return video
        flipped = F.horizontal_flip(video).as_subclass(torch.Tensor).clone()
        # uint8 flow codes: 256 - q negates (behavior.data.flow)
        flipped[:, self.flow_x] = (256 - flipped[:, self.flow_x].short()).to(torch.uint8)
        return tv_tensors.wrap(flipped, like=video)


def letterbox_fill(cfg: TransformConfig, flow_channels: int = 0, rgb: bool = True) -> list[int]:
    """Pad colour for letterboxing: the normalization mean, so padding is ~0 after normalize (RGB channels unless
    ``rgb`` is false); flow pads with no motion."""
    return [round(m * 255) for m in cfg.mean] * rgb + [FLOW_ZERO] * flow_channels


def geometric_resize(resize: str, size: int) -> v2.Resize:
    """The resize step alone (no padding): the decoded-clip cache stores frames after exactly this step.

    Applying it again to its own output is a no-op (torchvision returns the input when the size already
    matches), so cached frames go through the full transform unchanged.
    """
    if resize == "short_side":
        return v2.Resize(size, antialias=True)
    # max_size with size=None scales so the longer side equals `size` (up- or down-sampling).
    return v2.Resize(None, max_size=size, antialias=True)


def _resize(cfg: TransformConfig, flow_channels: int, rgb: bool) -> list[nn.Module]:
    if cfg.resize == "short_side":
        return [geometric_resize(cfg.resize, cfg.size)]
    return [geometric_resize(cfg.resize, cfg.size), PadToSquare(letterbox_fill(cfg, flow_channels, rgb))]


def _train_crop(cfg: TransformConfig) -> nn.Module:
    if cfg.train_crop == "random_resized":
        return v2.RandomResizedCrop(
            cfg.crop_size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True
        )
    if cfg.train_crop == "random":
        return v2.RandomCrop(cfg.crop_size)
    return v2.CenterCrop(cfg.crop_size)


def build_transform(cfg: TransformConfig, train: bool, flow_channels: int = 0,
                    rgb: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """Clip transform: uint8 [T, H, W, C] -> float32 [C, T, crop_size, crop_size], normalized; C is 3 RGB channels
    (unless ``rgb`` is false) followed by ``flow_channels`` flow channels (behavior.data.flow), which take every
    geometric step with the frames.

    Train: resize -> random (resized) crop -> optional horizontal flip -> float -> normalize.
    Eval:  resize -> center crop -> float -> normalize. Randomness comes from torch's global RNG,
    which DataLoader seeds per worker.
    """
    first_flow = 3 if rgb else 0
    steps: list[nn.Module] = [ToVideo(first_flow + flow_channels), *_resize(cfg, flow_channels, rgb)]
    if train:
        steps.append(_train_crop(cfg))
        if cfg.hflip and flow_channels:
            steps.append(FlipWithFlow(list(range(first_flow, first_flow + flow_channels, 2))))
        elif cfg.hflip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
    else:
        steps.append(v2.CenterCrop(cfg.crop_size))
    mean, std = (list(cfg.mean), list(cfg.std)) if rgb else ([], [])
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=mean + [FLOW_ZERO / 255] * flow_channels, std=std + [FLOW_STD] * flow_channels),
        ToChannelsFirst(),
    ]
    return v2.Compose(steps)


def denormalize(video: torch.Tensor, cfg: TransformConfig) -> torch.Tensor:
    """Undo normalization for display: float [..., 3, T, H, W] -> uint8 [..., T, H, W, 3]."""
    if video.ndim < 4 or video.shape[-4] != 3:
        raise ValueError(f"expected a video of shape [..., 3, T, H, W]; got {tuple(video.shape)}")
    shape = (3, 1, 1, 1)
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=video.device).view(shape)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=video.device).view(shape)
    pixels = (video.detach().float() * std + mean).mul(255.0).round().clamp(0, 255).to(torch.uint8)
    return pixels.movedim(-4, -1).contiguous()
