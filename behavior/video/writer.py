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


class VideoWriter:
    """Encode RGB frames one at a time (a live stream's annotated output, or a whole clip via ``write_video``).

    ``fragmented=True`` writes an MP4 in self-contained fragments (a keyframe every ``keyframe_every`` frames):
    a process killed mid-recording leaves a file that plays up to its last complete fragment, instead of an
    MP4 without its index. Frames of odd width or height lose their last column or row (yuv420p needs even
    sizes).
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 25.0, codec: str = "h264",
                 quality: int | None = None, preset: str = "veryfast", fragmented: bool = False,
                 keyframe_every: int | None = None) -> None:
        if codec not in CODECS:
            raise ValueError(f"write_video: unknown codec {codec!r}; choose one of {sorted(CODECS)}")
        encoder, pix_fmt = CODECS[codec]
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width - width % 2, height - height % 2
        if self.width < 2 or self.height < 2:
            raise ValueError(f"write_video: frames of {width}x{height} are too small to encode")
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fragmented else {}
        self.container = av.open(str(self.path), mode="w", options=options)
        self.stream = self.container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, pix_fmt
        if keyframe_every:
            self.stream.codec_context.gop_size = keyframe_every
        codec_options = {}
        if codec in ("h264", "hevc"):
            codec_options = {"crf": str(18 if quality is None else quality), "preset": preset}
            if codec == "hevc":
                codec_options["x265-params"] = "log-level=error"
        else:
            # Fixed quantiser: keeps test clips close to their source frames.
            self.stream.codec_context.qscale = 2 if quality is None else quality
            self.stream.codec_context.flags |= av.codec.context.Flags.qscale
        self.stream.options = codec_options
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame[: self.height, : self.width])
        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            self.container.mux(self.stream.encode(None))  # flush the frames the encoder still holds
        finally:
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, codec: str = "h264",
                quality: int | None = None) -> Path:
    """Write ``frames`` (``[T, H, W, 3]`` uint8 RGB, even H and W) to ``path``; returns the path.

    ``quality`` is the encoder's CRF for h264/hevc and qscale for mpeg4/mjpeg (lower is better).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    with VideoWriter(path, frames.shape[2], frames.shape[1], fps, codec, quality) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def remux(source: str | Path, target: str | Path, options: dict[str, str] | None = None) -> Path:
    """The video stream of ``source`` copied into another container (by ``target``'s suffix) without re-encoding;
    ``options`` go to the muxer (e.g. ``{"movflags": "faststart"}``: an MP4 with its index first)."""
    with av.open(str(source)) as inp, av.open(str(target), "w", options=options or {}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:  # the demuxer's final flush packet carries no data
                packet.stream = stream
                out.mux(packet)
    return Path(target)
