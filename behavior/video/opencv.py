"""OpenCV, loaded on first use: only region detection, cameras, drawing and the face demo need it."""

from __future__ import annotations

from behavior.errors import ConfigError


def load_cv2():
    try:
        import cv2
    except ImportError as err:
        raise ConfigError(f"OpenCV is needed here (region detection, cameras, drawing) but cannot be imported "
                          f"({err}); install it with: pip install 'opencv-python-headless<5'") from None
    return cv2
