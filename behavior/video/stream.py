"""Frames as they arrive, for live mode: a webcam index, a video file, or a network stream (rtsp://, http://...).

Unlike the clip readers (``VideoReader``), a stream is read once, forward, without knowing its length: a
camera has no length. Files and URLs go through PyAV (its own FFmpeg); a webcam index goes through OpenCV's
capture, which knows the platform's camera APIs (V4L2, AVFoundation, DirectShow).

Each frame comes out at one or more sizes, converted straight from the decoder's YUV: live mode asks for the
classifier's small frames and, when it writes or shows them, a bounded display size, so a 1080p source is never
turned into full-size RGB unless something needs it (that conversion, plus drawing and encoding at 1080p, kept
live mode below real time on two cores).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from behavior.config import fail
from behavior.errors import DataError
from behavior.video.base import fit_short_side
from behavior.video.opencv import load_cv2

DEFAULT_FPS = 25.0  # when a camera or stream does not say (its FrameSource.fps is then 0)


@dataclass
class FrameSource:
    """An open source: iterate for tuples of uint8 RGB frames ``[H, W, 3]``, one per size asked of
    :func:`open_source` (one frame, the same array twice, where two sizes come out equal); ``live`` sources
    cannot wait for us."""

    name: str
    fps: float  # as the source states it; 0 when it does not
    live: bool
    frames: Iterator[tuple[np.ndarray, ...]]
    problem: list[str] = field(default_factory=list)  # why the source ended early, if it did
    _close: object = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        return self.frames

    def close(self) -> None:
        if callable(self._close):
            self._close()


def output_sizes(height: int, width: int, short_sides: Sequence[int | None]) -> list[tuple[int, int]]:
    """``(height, width)`` per requested short side (None: full size), never enlarged, as the clip readers size
    ``max_short_side`` (``fit_short_side``), so live mode's classifier sees the frames batch-classify sees."""
    return [fit_short_side(height, width, side) for side in short_sides]


def _camera(index: int, short_sides: Sequence[int | None]) -> FrameSource:
    cv2 = load_cv2()
    try:  # errors only: probing a missing camera otherwise prints a warning per capture backend
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging utilities
        pass
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise DataError(f"source={index}: no camera with that index can be opened")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0

    def frames() -> Iterator[tuple[np.ndarray, ...]]:
        sizes = None
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            sizes = sizes or output_sizes(*bgr.shape[:2], short_sides)  # the first frame's: a buffer needs one size
            made: dict[tuple[int, int], np.ndarray] = {}
            for size in sizes:
                if size not in made:
                    # Shrink before converting to RGB: the colour conversion then runs on the small frame.
                    small = bgr if size == bgr.shape[:2] else cv2.resize(bgr, size[::-1], interpolation=cv2.INTER_AREA)
                    made[size] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
            yield tuple(made[size] for size in sizes)

    return FrameSource(f"camera {index}", float(fps), True, frames(), _close=capture.release)


def _pyav(target: str, live: bool, short_sides: Sequence[int | None]) -> FrameSource:
    try:
        container = av.open(target, options={"rtsp_transport": "tcp"} if target.startswith("rtsp") else None,
                            timeout=(10.0, 10.0) if live else None)
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(f"source={target}: cannot be opened ({' '.join(str(err).split())})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"source={target}: holds no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads: decoding keeps ahead of the classifier
    rate = stream.average_rate or stream.guessed_rate
    source = FrameSource(target, float(rate) if rate else 0.0, live, iter(()), _close=container.close)

    def frames() -> Iterator[tuple[np.ndarray, ...]]:
        sizes, converters = None, {}
        try:
            for frame in container.decode(stream):
                if sizes is None:  # the first frame's: a mid-stream size change is scaled back to it
                    sizes = output_sizes(frame.height, frame.width, short_sides)
                    # One reformatter per size, reused: frame.to_ndarray(width=...) builds a new swscale context
                    # for every frame, four times the cost of the conversion itself.
                    converters = {size: VideoReformatter() for size in sizes}
                made = {}
                for size, converter in converters.items():
                    height, width = size
                    # BILINEAR, as the PyAV clip reader shrinks (swscale widens the filter with the scale factor,
                    # close to the antialiased resize training used); at full size it only converts the colours.
                    made[size] = converter.reformat(frame, width=width, height=height, format="rgb24",
                                                    interpolation="BILINEAR").to_ndarray()
                yield tuple(made[size] for size in sizes)
        except (av.error.FFmpegError, OSError) as err:
            # A damaged tail or a dropped connection ends the stream; what was read is kept.
            source.problem.append(" ".join(str(err).split()))

    source.frames = frames()
    return source


def open_source(source: object, short_sides: Sequence[int | None] = (None,)) -> FrameSource:
    """``source`` as given on the command line: an integer (webcam), a URL, or a file path.

    Each frame comes out once per entry of ``short_sides``: shrunk so its shorter side is at most that many
    pixels (None: full size)."""
    if isinstance(source, bool) or source is None or source == "":
        raise fail("source", source, "give a webcam index (source=0), a video file or a stream URL")
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return _camera(int(source), short_sides)
    target = str(source)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", target):
        return _pyav(target, live=True, short_sides=short_sides)
    if not os.path.isfile(target):
        raise DataError(f"source={target}: " + ("is a folder; give a video file, a camera index or a stream URL"
                                                if os.path.isdir(target) else "file not found"))
    return _pyav(target, live=False, short_sides=short_sides)
