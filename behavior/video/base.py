"""Backend-neutral pieces: the clip metadata record and the reader interface every backend implements."""

from __future__ import annotations

import abc
import operator
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from behavior.config import check_choice
from behavior.video.errors import DecoderUnavailableError, VideoDecodeError

BACKENDS = ("pyav", "decord", "torchcodec")
SHRINK_CHUNK = 1  # full-size frames decoded at once by a backend that shrinks after decoding (torchcodec)

# Decoders inherited through fork. Freeing one in the child deadlocks (FFmpeg waits for the parent's
# decoder threads, which do not exist there), so the child keeps them referenced until it exits.
_INHERITED: list = []


@dataclass(frozen=True)
class VideoMeta:
    """What a clip holds, measured rather than copied from the container header.

    ``num_frames`` counts the video packets that are really in the file (headers can lie or be absent).
    ``width``/``height`` are the size of the frames ``get_frames`` returns, i.e. after the container's
    display rotation is applied (a portrait phone clip stored as 1920x1080 reports 1080x1920).
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    codec: str

    @property
    def duration(self) -> float:
        """Seconds covered by the frames, derived from the honest frame count, not the header."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def check_backend(backend: str) -> str:
    return check_choice("decode.backend", backend, BACKENDS)


def as_index_list(indices: Sequence[int] | np.ndarray | torch.Tensor) -> list[int]:
    if isinstance(indices, torch.Tensor | np.ndarray):
        indices = indices.tolist()
    # operator.index refuses floats: a fractional frame index is a caller bug, not something to round.
    return [operator.index(i) for i in indices]


def stack_frames(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(frames)))


def fit_short_side(height: int, width: int, limit: int | None) -> tuple[int, int]:
    """``(height, width)`` shrunk, aspect kept, so the shorter side is at most ``limit``; never enlarged."""
    short = min(height, width)
    if not limit or short <= limit:
        return height, width
    scale = limit / short
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` resized to ``size`` with antialiasing (for backends that cannot scale on decode).

    Resized as uint8, as torchvision resizes uint8 clips: no float copy four times the size of the frames."""
    x = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=size, mode="bilinear", antialias=True,
                                        align_corners=False)
    return x.permute(0, 2, 3, 1).contiguous()


def describe(exc: BaseException) -> str:
    """``Type: message`` without the timestamps and C++ source locations decord and torchcodec prepend."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\]|\S*/\S+\.(?:cc|cpp|h):\d+[:,]?", " ", str(exc))
    return f"{type(exc).__name__}: {' '.join(text.split())}"


def judge_decode(path: str, meta: VideoMeta, promised: int | None, decoded: int, failed: list[int],
                 message: str = "") -> int:
    """Turn a full decode pass into the count of frames that really decode, or a VideoDecodeError.

    ``failed`` lists the (ascending) frame ordinals that failed; ``promised`` is the frame count the
    container header implies, when it has one worth trusting.
    """
    count = meta.num_frames
    if failed:
        detail = f" ({message})" if message else ""
        if failed == list(range(count - len(failed), count)):
            raise VideoDecodeError(path, f"truncated: only {count - len(failed)} of {count} frames "
                                         f"decode{detail}")
        raise VideoDecodeError(path, f"corrupt: {len(failed)} of {count} frames fail to decode, "
                                     f"first is frame {failed[0]}{detail}")
    if promised is not None and decoded < promised - max(2, 0.1 * promised):
        raise VideoDecodeError(path, f"truncated: stream ends after {decoded} frames but the container "
                                     f"promises {promised} ({meta.fps:g} fps)")
    return min(decoded, count)


class VideoReader(abc.ABC):
    """Random access to the frames of one clip; use as a context manager.

    Opening only measures the clip (cheap); the decoder itself is opened on the first ``get_frames``
    and dropped when pickled, so a reader can be handed to DataLoader workers.
    """

    backend: str = ""
    scales_on_decode = False  # True: _read itself returns frames of ``frame_size`` (PyAV scales while converting)

    def __init__(self, path: str | os.PathLike, meta: VideoMeta):
        self.path = os.fspath(path)
        self.meta = meta
        # (height, width) of the frames get_frames returns; smaller than the clip after limit_short_side.
        self.frame_size = (meta.height, meta.width)
        self._handle = None
        self._pid = os.getpid()
        self.planned: frozenset[int] | None = None  # see read_only
        self.threads = 1  # see decode_threads
        # PyAV: seek to the keyframe before a read even without a full index (mkv: its cues list the keyframes); a
        # seek that lands past the frame falls back to decoding from the start. For a reader that starts far into a
        # long video once (window mode); reads of sampled frames keep to what is exact.
        self.seek_unindexed = False

    def read_only(self, indices: Sequence[int]) -> VideoReader:
        """Promise that only ``indices`` will be read from now on (window mode knows every frame it samples up front).

        A backend may then skip decoding frames that no other frame refers to (PyAV: non-reference frames outside
        ``indices``); reading a frame outside the promise stays correct, only slower."""
        self.planned = frozenset(as_index_list(indices))
        return self

    def decode_threads(self, threads: int) -> VideoReader:
        """Decode with ``threads`` FFmpeg threads where the backend allows (PyAV). Only for a reader opened in the
        process that reads it: a DataLoader worker forked from a process whose decoder had threads deadlocks."""
        self.threads = threads
        return self

    def limit_short_side(self, limit: int | None) -> VideoReader:
        """Return frames scaled down so their shorter side is at most ``limit`` (None: full size).

        PyAV and decord scale each frame as it is decoded, so a 1080p clip never sits in memory at full size;
        torchcodec decodes at full size and shrinks SHRINK_CHUNK frames at a time.
        """
        self.frame_size = fit_short_side(self.meta.height, self.meta.width, limit)
        return self

    def _forget_if_forked(self) -> None:
        # A DataLoader worker forked after the parent read frames inherits the parent's decoder, whose file
        # offset and threads it cannot use; park that one (never close or free it) and open a private one.
        if self._pid != os.getpid():
            if self._handle is not None:
                _INHERITED.append(self._handle)
            self._handle, self._pid = None, os.getpid()

    def __len__(self) -> int:
        return self.meta.num_frames

    def __repr__(self) -> str:
        m = self.meta
        return (f"{type(self).__name__}({self.path!r}, frames={m.num_frames}, fps={m.fps:g}, "
                f"size={m.width}x{m.height}, codec={m.codec})")

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 RGB frames ``[T, H, W, 3]`` in the requested order; duplicates and any order allowed."""
        wanted = as_index_list(indices)
        n = self.meta.num_frames
        for i in wanted:
            if not 0 <= i < n:
                raise VideoDecodeError(self.path, f"frame index {i} out of range (clip has {n} frames)")
        self._forget_if_forked()
        if not wanted:
            return torch.empty((0, *self.frame_size, 3), dtype=torch.uint8)
        try:
            out = self._read(wanted) if self.scales_on_decode else self._read_shrunk(wanted)
        except (VideoDecodeError, DecoderUnavailableError):
            raise
        except Exception as exc:  # any backend failure on a bad file becomes one error type
            self._drop_handle()
            raise VideoDecodeError(self.path, f"decode failed ({describe(exc)})") from exc
        expected = (len(wanted), *self.frame_size, 3)
        if tuple(out.shape) != expected or out.dtype != torch.uint8:
            raise VideoDecodeError(self.path, f"backend {self.backend} returned {out.dtype} "
                                              f"{tuple(out.shape)}, expected uint8 {expected}")
        return out

    def _read_shrunk(self, wanted: list[int]) -> torch.Tensor:
        """``_read`` for a backend that decodes at full size: with ``limit_short_side`` the frames are read and shrunk
        SHRINK_CHUNK at a time, so a 4K clip never has more than that many full-size frames in memory."""
        full = (self.meta.height, self.meta.width)
        if self.frame_size == full:
            return self._read(wanted)
        unique = sorted(set(wanted))
        parts = []
        for start in range(0, len(unique), SHRINK_CHUNK):
            part = self._read(unique[start:start + SHRINK_CHUNK])
            parts.append(shrink_frames(part, self.frame_size) if part.ndim == 4 and tuple(part.shape[1:3]) == full
                         else part)
        position = {index: k for k, index in enumerate(unique)}
        return torch.cat(parts)[[position[i] for i in wanted]]

    def verify(self, chunk: int = 16) -> int:
        """Decode every frame once; return how many decode, or raise VideoDecodeError (truncated, corrupt)."""
        self._forget_if_forked()
        count, failed, message = self.meta.num_frames, [], ""
        for start in range(0, count, chunk):
            block = list(range(start, min(start + chunk, count)))
            try:
                self._read(block)
                continue
            except Exception as exc:
                message = message or getattr(exc, "reason", None) or describe(exc)
                self._drop_handle()
            if failed:  # later broken blocks count whole: probing each frame can cost a decode from 0
                failed.extend(block)
                continue
            for i in block:
                try:
                    self._read([i])
                except Exception:
                    failed.append(i)
                    self._drop_handle()
        promised = getattr(getattr(self, "scan", None), "promised", None)
        return judge_decode(self.path, self.meta, promised, count - len(failed), failed, message)

    @abc.abstractmethod
    def _read(self, indices: list[int]) -> torch.Tensor:
        """Decode in-range ``indices`` (any order, duplicates) into ``[T, H, W, 3]`` uint8."""

    def _drop_handle(self) -> None:
        handle, self._handle = self._handle, None
        close = getattr(handle, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # closing a broken decoder must not mask the real error
                pass

    def close(self) -> None:
        self._drop_handle()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        return state
