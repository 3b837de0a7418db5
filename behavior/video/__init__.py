"""Decode stage: open a clip with one of three backends and read RGB frames by index.

All backends share one PyAV scan that validates the file and counts its frames honestly, so they agree
on ``VideoMeta`` and raise the same ``VideoDecodeError`` reasons for bad files. On 8-bit sources the
three return identical pixels (all use FFmpeg's default BT.601 RGB conversion and apply the display
rotation); on 10-bit sources their bundled FFmpeg versions convert differently (mean ~1-2 levels).
"""

from __future__ import annotations

import dataclasses
import os

from behavior.config import Settings
from behavior.video.base import BACKENDS, VideoMeta, VideoReader, check_backend, describe
from behavior.video.decord_reader import DecordReader, load_decord
from behavior.video.errors import DecoderUnavailableError, VideoDecodeError
from behavior.video.pyav_reader import PyAVReader
from behavior.video.pyav_scan import scan_leading_frames, scan_video
from behavior.video.torchcodec_reader import TorchCodecReader, load_torchcodec

__all__ = [
    "BACKENDS",
    "DecodeConfig",
    "DecodeOverride",
    "DecoderUnavailableError",
    "VideoDecodeError",
    "VideoMeta",
    "VideoReader",
    "open_video",
    "open_leading_frames",
    "probe_video",
    "backend_available",
    "require_backend",
]

_READERS = {"pyav": PyAVReader, "decord": DecordReader, "torchcodec": TorchCodecReader}
_LOADERS = {"pyav": lambda: None, "decord": load_decord, "torchcodec": load_torchcodec}


def backend_available(backend: str) -> bool:
    """True when ``backend`` loads here (``open_video`` would raise DecoderUnavailableError otherwise)."""
    try:
        _LOADERS[check_backend(backend)]()
    except DecoderUnavailableError:
        return False
    return True


def require_backend(backend: str) -> str:
    """``backend`` when it is a known decoder that loads here; fails once, up front, saying what to install,
    rather than once per clip inside the workers."""
    _LOADERS[check_backend(backend)]()
    return backend


@dataclasses.dataclass(frozen=True)
class DecodeConfig(Settings):
    """The ``decode`` group of train and bench: which decoder reads every clip."""

    GROUP = "decode"
    backend: str

    def __post_init__(self) -> None:
        require_backend(self.backend)


@dataclasses.dataclass(frozen=True)
class DecodeOverride(Settings):
    """The ``decode`` group of evaluate: a decoder, or null for the one the checkpoint was trained with."""

    GROUP = "decode"
    backend: str | None

    def __post_init__(self) -> None:
        if self.backend is not None:
            require_backend(self.backend)


def open_video(path: str | os.PathLike, backend: str = "pyav", max_short_side: int | None = None) -> VideoReader:
    """Validate and measure ``path``, then return a reader for it (the decoder opens on first use).

    ``max_short_side`` returns frames scaled down so their shorter side is at most that many pixels.
    Raises ValueError for an unknown backend, DecoderUnavailableError when the backend cannot load, and
    VideoDecodeError when the file is missing, empty, not a video, has no video stream or is truncated.
    """
    reader_class = _READERS[check_backend(backend)]
    _LOADERS[backend]()  # a missing backend is a setup problem: report it before looking at the file
    return reader_class(path, scan_video(path)).limit_short_side(max_short_side)


def open_leading_frames(path: str | os.PathLike, max_short_side: int | None = None) -> VideoReader:
    """A PyAV reader over the leading frames of a damaged clip that still decode (``scan_leading_frames``).

    For clips ``open_video`` or ``get_frames`` rejects as truncated or corrupt: ``len(reader)`` is the number
    of frames that decode from the start, and ``reader.scan.promised`` what the container claims, if anything.
    """
    return PyAVReader(path, scan_leading_frames(path)).limit_short_side(max_short_side)


def probe_video(path: str | os.PathLike, backend: str = "pyav", verify: bool = False) -> VideoMeta:
    """Metadata of ``path`` from one demux pass (no full decode).

    ``verify=True`` also decodes every frame once with ``backend`` and returns the number of frames that
    really decode; a stream that breaks off before what the container promised raises
    VideoDecodeError with a reason starting with "truncated".
    """
    with open_video(path, backend) as reader:
        if not verify:
            return reader.meta
        try:
            count = reader.verify()
        except (VideoDecodeError, DecoderUnavailableError):
            raise
        except Exception as exc:
            raise VideoDecodeError(reader.path, f"decode failed ({describe(exc)})") from exc
        return dataclasses.replace(reader.meta, num_frames=count)
