"""Optical flow as data: dense motion between each sampled frame and the frames right after it.

Stage order: decode -> sample -> roi -> resize -> **flow** -> transform. For every sampled frame ``i`` the flow
stack holds ``stack`` (L) fields, between frames ``j, j+1, ..., j+L`` with ``j = min(i, n - 1 - L)`` so that a
frame near the end of the clip still gets L real pairs (TSN's stacked flow). Each field is OpenCV's DIS flow
(no extra package, nothing to download) on the grayscale frames at the transform's resize size, so what the
network sees moves in its own pixels.

A field is stored like a frame: uint8, two channels (x, y) per pair, ``128 + round(127 * f / bound)`` with the
displacement ``f`` clipped to ``±bound`` pixels. 128 is no motion, and ``256 - q`` is the exact negation, which is
what a horizontal flip does to the x channel (:func:`flip_flow_x`). Crops and resizes move flow pixels exactly
like frame pixels; the displacement values are not rescaled with a crop's zoom (as in TSN practice).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from behavior.config import Settings, check_choice, check_number
from behavior.video.opencv import load_cv2

PRESETS = ("ultrafast", "fast", "medium")
ZERO = 128  # the uint8 code of no motion
SCALE = 127  # codes per bound: 128 +/- 127 spans [1, 255], so 256 - q negates exactly
MIN_SIDE = 12  # DIS needs a frame at least this wide or tall


@dataclass(frozen=True)
class FlowConfig(Settings):
    """The ``flow`` group: how motion is computed from the decoded frames."""

    GROUP = "flow"
    quality: str  # the DIS preset: ultrafast | fast | medium (slower, finer)
    bound: float  # pixels; larger displacements are clipped
    stack: int  # flow fields per sampled frame (L consecutive pairs)

    def __post_init__(self) -> None:
        check_choice("flow.quality", self.quality, PRESETS)
        check_number("flow.bound", self.bound, 0, above=True)
        check_number("flow.stack", self.stack, 1, 16, integer=True)

    @property
    def channels(self) -> int:
        return 2 * self.stack


def encode_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """float displacements [..., 2] in pixels -> uint8 codes (see the module docstring)."""
    return (ZERO + np.rint(np.clip(flow, -bound, bound) * (SCALE / bound))).astype(np.uint8)


def decode_flow(codes: np.ndarray, bound: float) -> np.ndarray:
    """uint8 codes -> float32 displacements in pixels, within ``±bound``."""
    return (codes.astype(np.float32) - ZERO) * (bound / SCALE)


def flip_flow_x(codes: np.ndarray | torch.Tensor, x_channels: Sequence[int]) -> np.ndarray | torch.Tensor:
    """Negate the x displacement of a horizontally flipped flow: ``256 - q`` on the x channels (last axis for
    numpy [..., C], axis -3 for a torch video [T, C, H, W]); the y channels are unchanged."""
    out = codes.copy() if isinstance(codes, np.ndarray) else codes.clone()
    if isinstance(codes, np.ndarray):
        out[..., list(x_channels)] = (256 - codes[..., list(x_channels)].astype(np.int16)).astype(np.uint8)
    else:
        out[..., list(x_channels), :, :] = (256 - codes[..., list(x_channels), :, :].short()).to(codes.dtype)
    return out


def pair_starts(indices: Sequence[int], num_frames: int, stack: int) -> list[int]:
    """First frame of each sampled frame's stack of ``stack`` pairs, kept inside a clip of ``num_frames``."""
    last = max(0, num_frames - 1 - stack)
    return [min(max(0, i), last) for i in indices]


def frames_needed(indices: Sequence[int], num_frames: int, stack: int) -> list[int]:
    """Sorted frame indices to decode for the flow stacks of ``indices`` (each start and the ``stack`` after it)."""
    return sorted({min(j + k, num_frames - 1) for j in pair_starts(indices, num_frames, stack)
                   for k in range(stack + 1)})


class FlowComputer:
    """DIS flow fields and stacks for one flow setting."""

    def __init__(self, cfg: FlowConfig):
        self.cfg = cfg

    def field(self, prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
        """Displacement [H, W, 2] float32 (x, y) from ``prev_gray`` to ``next_gray`` (uint8 [H, W])."""
        if max(prev_gray.shape) < MIN_SIDE:  # DIS refuses frames this small; there is no motion to see anyway
            return np.zeros((*prev_gray.shape, 2), np.float32)
        cv2 = load_cv2()
        preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                  "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[self.cfg.quality]
        # A new DIS object per pair (a few microseconds): one object starts each pair from the previous result,
        # so a field would depend on which pairs came before it (the cache and a direct read would disagree).
        return cv2.DISOpticalFlow_create(preset).calc(prev_gray, next_gray, None)

    def stacks(self, frames: np.ndarray, positions: dict[int, int], indices: Sequence[int],
               num_frames: int) -> np.ndarray:
        """uint8 flow stacks [len(indices), H, W, 2 * stack] for sampled frame ``indices`` of a clip of
        ``num_frames``; ``frames`` [N, H, W, 3] uint8 holds the decoded frames, ``positions`` maps a frame index to
        its row in ``frames`` (it must hold every index of :func:`frames_needed`). A clip of one frame has no
        motion to measure: its flow is zero, with a warning."""
        stack, bound = self.cfg.stack, self.cfg.bound
        height, width = frames.shape[1:3]
        out = np.full((len(indices), height, width, 2 * stack), ZERO, dtype=np.uint8)
        if num_frames < 2:
            warnings.warn("optical flow of a clip with one frame: no motion to measure, the flow is zero",
                          stacklevel=2)
            return out
        cv2 = load_cv2()
        gray: dict[int, np.ndarray] = {}

        def grey(index: int) -> np.ndarray:
            if index not in gray:
                gray[index] = cv2.cvtColor(np.ascontiguousarray(frames[positions[index]]), cv2.COLOR_RGB2GRAY)
            return gray[index]

        fields: dict[int, np.ndarray] = {}
        for row, start in enumerate(pair_starts(indices, num_frames, stack)):
            for k in range(stack):
                a, b = min(start + k, num_frames - 1), min(start + k + 1, num_frames - 1)
                if a not in fields:
                    fields[a] = encode_flow(self.field(grey(a), grey(b)), bound) if a != b else \
                        np.full((height, width, 2), ZERO, dtype=np.uint8)
                out[row, ..., 2 * k: 2 * k + 2] = fields[a]
        return out


def with_flow(frames, position: dict[int, int], sampled: Sequence[int], num_frames: int, cfg: FlowConfig,
              rgb: bool, resize) -> tuple[torch.Tensor, dict[int, int]]:
    """The model-input channels of the ``sampled`` frames of a clip of ``num_frames``: the frames resized by the
    transform's geometric ``resize`` (flow is measured in the pixels the network sees) with their flow stacks
    after the RGB channels (or alone, without ``rgb``), uint8 [len(sampled), h, w, (3 +) 2L]; and the row of each
    sampled index. ``frames`` [N, H, W, 3] (cropped to the clip's region) must hold, at ``position``, every index
    of :func:`frames_needed`."""
    frames = resize(torch.as_tensor(frames).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    frames = np.ascontiguousarray(frames.numpy())
    sampled = sorted(set(sampled))
    stacks = FlowComputer(cfg).stacks(frames, position, sampled, num_frames)
    channels = np.concatenate([frames[[position[i] for i in sampled]], stacks], axis=-1) if rgb else stacks
    return torch.from_numpy(channels), {index: row for row, index in enumerate(sampled)}
