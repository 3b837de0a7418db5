"""Frames as they arrive, for live mode: a webcam index, a video file, or a network stream (rtsp://, http://...).

Unlike the clip readers (``VideoReader``), a stream is read once, forward, without knowing its length: a
camera has no length. Files and URLs go through PyAV (its own FFmpeg); a webcam index goes through OpenCV's
capture, which knows the platform's camera APIs (V4L2, AVFoundation, DirectShow).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import numpy as np

from behavior.config import fail
from behavior.errors import DataError
from behavior.video.opencv import load_cv2

DEFAULT_FPS = 25.0  # when a camera or stream does not say (its FrameSource.fps is then 0)


@dataclass
class FrameSource:
    """An open source: iterate for uint8 RGB frames ``[H, W, 3]``; ``live`` sources cannot wait for us."""

    name: str
    fps: float  # as the source states it; 0 when it does not
    live: bool
    frames: Iterator[np.ndarray]
    problem: list[str] = field(default_factory=list)  # why the source ended early, if it did
    _close: object = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames

    def close(self) -> None:
        if callable(self._close):
            self._close()


def _camera(index: int) -> FrameSource:
    cv2 = load_cv2()
    try:  # errors only: probing a missing camera otherwise prints a warning per capture backend
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging utilities
        pass
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise DataError(f"source={index}: no camera with that index can be opened")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0

    def frames() -> Iterator[np.ndarray]:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return FrameSource(f"camera {index}", float(fps), True, frames(), _close=capture.release)


def _pyav(target: str, live: bool) -> FrameSource:
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

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except (av.error.FFmpegError, OSError) as err:
            # A damaged tail or a dropped connection ends the stream; what was read is kept.
            source.problem.append(" ".join(str(err).split()))

    source.frames = frames()
    return source


def open_source(source: object) -> FrameSource:
    """``source`` as given on the command line: an integer (webcam), a URL, or a file path."""
    if isinstance(source, bool) or source is None or source == "":
        raise fail("source", source, "give a webcam index (source=0), a video file or a stream URL")
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return _camera(int(source))
    target = str(source)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", target):
        return _pyav(target, live=True)
    if not os.path.isfile(target):
        raise DataError(f"source={target}: " + ("is a folder; give a video file, a camera index or a stream URL"
                                                if os.path.isdir(target) else "file not found"))
    return _pyav(target, live=False)
