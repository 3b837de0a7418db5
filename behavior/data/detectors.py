"""The region detectors OpenCV ships: the frontal-face Haar cascade and the HOG people detector.

No downloads: the cascade XML comes inside the ``opencv-python-headless`` wheel (``cv2.data.haarcascades``;
OpenCV 5 wheels dropped it, hence the ``<5`` pin) and the HOG person model is compiled into OpenCV.

A detector takes one uint8 RGB frame ``[H, W, 3]`` and returns :class:`Detection` boxes in fractions of the
frame (0..1), so callers never care at which size detection ran. OpenCV objects do not pickle: each process
(DataLoader workers included) builds its own on first use (``detector_for``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from behavior.errors import ConfigError
from behavior.video.opencv import load_cv2

FACE_CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Detection:
    """A box in fractions of the frame: left, top, right, bottom in [0, 1], and the detector's confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


def _resized(frame: np.ndarray, detect_size: int):
    """The frame scaled so its longer side is ``detect_size`` (up or down), as OpenCV wants it."""
    cv2 = load_cv2()
    height, width = frame.shape[:2]
    scale = detect_size / max(height, width)
    if abs(scale - 1.0) < 1e-3:
        return np.ascontiguousarray(frame)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), size, interpolation=method)


def _normalised(boxes, scores, width: int, height: int) -> list[Detection]:
    found = []
    for (x, y, w, h), score in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), scores, strict=True):
        found.append(Detection(max(0.0, x / width), max(0.0, y / height), min(1.0, (x + w) / width),
                               min(1.0, (y + h) / height), float(score)))
    return found


class FaceDetector:
    """Frontal faces with the Haar cascade (Viola-Jones); confidence = how many neighbouring windows agreed."""

    def __init__(self, detect_size: int = 480, min_size: float = 0.05) -> None:
        cv2 = load_cv2()
        path = os.path.join(cv2.data.haarcascades, FACE_CASCADE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ConfigError(f"roi=face: cannot load the face cascade {path} (OpenCV {cv2.__version__}; "
                              "OpenCV 5 no longer ships it: install 'opencv-python-headless<5')")
        self.detect_size = detect_size
        self.min_size = min_size

    def __call__(self, frame: np.ndarray) -> list[Detection]:
        cv2 = load_cv2()
        small = _resized(frame, self.detect_size)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        height, width = gray.shape
        smallest = max(20, round(self.min_size * min(height, width)))
        boxes, neighbours = self.cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5,
                                                           minSize=(smallest, smallest))
        return _normalised(boxes, np.asarray(neighbours).reshape(-1), width, height)


class PersonDetector:
    """Upright people with OpenCV's built-in HOG + linear SVM (Dalal & Triggs); confidence = the SVM margin."""

    def __init__(self, detect_size: int = 640, min_size: float = 0.05) -> None:
        cv2 = load_cv2()
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.detect_size = detect_size
        self.min_size = min_size

    def __call__(self, frame: np.ndarray) -> list[Detection]:
        small = _resized(frame, self.detect_size)
        height, width = small.shape[:2]
        if height < 128 or width < 64:  # smaller than the detector's 64x128 window: nothing can be found
            return []
        boxes, weights = self.hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
        found = _normalised(boxes, np.asarray(weights).reshape(-1), width, height)
        return [d for d in found if d.height >= self.min_size]


DETECTORS = {"face": FaceDetector, "person": PersonDetector}


@functools.cache
def detector_for(kind: str, detect_size: int, min_size: float):
    """This process's detector for ``kind``, built once (loading the cascade costs more than a detection)."""
    return DETECTORS[kind](detect_size, min_size)
