"""Encode uint8 RGB frames into a real video file with PyAV (synthetic data and test fixtures)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Codec name -> (PyAV encoder, pixel format). The encoders ship inside PyAV's own FFmpeg build.
CODECS = {
    "h264": ("libx264", "yuv420p"),
    "hevc": ("libx265", "yuv420p"),
    "mpeg4": ("mpeg4", "yuv420p"),
    "mjpeg": ("mjpeg", "yuvj420p"),
}


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, codec: str = "h264",
                quality: int | None = None) -> Path:
    """Write ``frames`` (``[T, H, W, 3]`` uint8 RGB, even H and W) to ``path``; returns the path.

    ``quality`` is the encoder's CRF for h264/hevc and qscale for mpeg4/mjpeg (lower is better).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if codec not in CODECS:
        raise ValueError(f"write_video: unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    encoder, pix_fmt = CODECS[codec]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        options = {}
        if codec in ("h264", "hevc"):
            options = {"crf": str(18 if quality is None else quality), "preset": "veryfast"}
            if codec == "hevc":
                options["x265-params"] = "log-level=error"
        else:
            # Fixed quantiser: keeps test clips close to their source frames.
            stream.codec_context.qscale = 2 if quality is None else quality
            stream.codec_context.flags |= av.codec.context.Flags.qscale
        stream.options = options
        for frame in frames:
            packet = stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))
            container.mux(packet)
        container.mux(stream.encode(None))
    return path
