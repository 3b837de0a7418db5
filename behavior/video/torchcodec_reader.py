"""torchcodec backend (CPU decoding through the system's FFmpeg libraries)."""

from __future__ import annotations

import importlib
import os

import torch

from behavior.video.base import VideoReader
from behavior.video.errors import DecoderUnavailableError, VideoDecodeError
from behavior.video.pyav_scan import Scan, scan_video

_FFMPEG_HINT = ("install the FFmpeg shared libraries (versions 4-8): apt-get install -y ffmpeg "
                "(or conda install -c conda-forge 'ffmpeg<8'), then make sure torchcodec matches your torch: "
                "pip install torchcodec")


def _import(name: str):
    return importlib.import_module(name)


def load_torchcodec():
    """torchcodec's VideoDecoder class, or DecoderUnavailableError saying what to install."""
    try:
        decoders = _import("torchcodec.decoders")
        _load_ffmpeg()
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("torchcodec"):
            raise DecoderUnavailableError(
                "torchcodec", f"torchcodec fails to import ({exc}): pip install torchcodec") from exc
        raise DecoderUnavailableError(
            "torchcodec", "decode.backend=torchcodec needs the torchcodec package, which is not installed: "
                          f"pip install torchcodec; it also needs FFmpeg: {_FFMPEG_HINT}") from exc
    except Exception as exc:
        # torchcodec loads libavcodec & co. when imported; without them it raises RuntimeError/OSError.
        raise DecoderUnavailableError(
            "torchcodec", f"torchcodec cannot load FFmpeg ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); {_FFMPEG_HINT}") from exc
    return decoders.VideoDecoder


def _load_ffmpeg() -> None:
    # torchcodec >= 0.17 imports without FFmpeg and loads its libraries on the first decoder built; load them now so
    # a missing FFmpeg is one setup error, not a "decode failed" on every clip.
    ops = _import("torchcodec._core.ops")
    if not getattr(ops, "_FFMPEG_AVAILABLE", True) and hasattr(ops, "load_core_libraries"):
        ops.load_core_libraries()


class TorchCodecReader(VideoReader):
    backend = "torchcodec"

    def __init__(self, path: str | os.PathLike, scan: Scan | None = None):
        load_torchcodec()
        scan = scan or scan_video(path)
        super().__init__(path, scan.meta)
        self.scan = scan
        self._count = scan.meta.num_frames

    def _decoder(self):
        if self._handle is None:
            video_decoder = load_torchcodec()
            # device="cpu": otherwise torchcodec follows torch's default device and may pick NVDEC, whose
            # colour conversion differs. One thread: readers usually run inside DataLoader workers.
            # "exact" seek mode scans the file once so frame i is the i-th frame in presentation order.
            self._handle = video_decoder(self.path, stream_index=self.scan.stream_index, device="cpu",
                                         dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=1)
            self._count = min(self.meta.num_frames, int(self._handle.metadata.num_frames or 0))
        return self._handle

    def _read(self, indices: list[int]) -> torch.Tensor:
        decoder = self._decoder()
        top = max(indices)
        if top >= self._count:
            raise VideoDecodeError(self.path, f"frame index {top} out of range for torchcodec "
                                              f"(torchcodec finds {self._count} of {self.meta.num_frames} "
                                              f"frames)")
        batch = decoder.get_frames_at(indices=list(indices))
        return batch.data.contiguous()
