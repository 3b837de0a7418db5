"""An optional window for live mode: OpenCV's when the installed OpenCV has a GUI, else matplotlib's.

The project depends on ``opencv-python-headless`` (no GUI), so a window needs either the full ``opencv-python``
or a matplotlib GUI backend (Tk, Qt) and a display. Without them the window is skipped with one warning that
says what the run still gives: the annotated video when ``output`` is set, else the labels printed one a line.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # Windows and macOS always have a desktop session when a user runs this


class Display:
    """``show(frame)`` returns False once the viewer pressed ``q`` or closed the window."""

    def __init__(self, title: str, writing: bool) -> None:
        self.title = title
        self.writing = writing  # an output video is written: the warning says so only then
        self.kind = ""
        self.stopped = False
        if not _has_display():
            self._warn("no display (DISPLAY is not set)")
            return
        try:
            import cv2

            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
            self.kind = "opencv"
            return
        except Exception:  # noqa: BLE001 - headless OpenCV raises cv2.error "The function is not implemented"
            pass
        try:
            import matplotlib

            matplotlib.use("TkAgg", force=True)
            import matplotlib.pyplot as plt

            plt.ion()
            self.figure, self.axes = plt.subplots(num=title)
            self.axes.set_axis_off()
            self.image = None
            self.figure.canvas.mpl_connect("key_press_event", self._key)
            self.figure.canvas.mpl_connect("close_event", lambda _: setattr(self, "stopped", True))
            self.kind = "matplotlib"
        except Exception as err:  # noqa: BLE001 - no Tk, or no connection to the display
            self._warn(f"no GUI toolkit ({' '.join(str(err).split()) or type(err).__name__}); install "
                       "opencv-python or python3-tk")

    def _warn(self, why: str) -> None:
        instead = "the output video is still written" if self.writing else "the labels are printed instead"
        print(f"warning: show=true: no window ({why}); {instead}", file=sys.stderr)

    def _key(self, event) -> None:
        if event.key == "q":
            self.stopped = True

    def show(self, frame: np.ndarray) -> bool:
        if self.kind == "opencv":
            import cv2

            cv2.imshow(self.title, frame[..., ::-1])
            key = cv2.waitKey(1) & 0xFF
            self.stopped = self.stopped or key == ord("q") or cv2.getWindowProperty(self.title, 0) < 0
        elif self.kind == "matplotlib":
            import matplotlib.pyplot as plt

            if self.image is None:
                self.image = self.axes.imshow(frame)
            else:
                self.image.set_data(frame)
            plt.pause(0.001)
        return not self.stopped

    def close(self) -> None:
        if self.kind == "opencv":
            import cv2

            cv2.destroyWindow(self.title)
        elif self.kind == "matplotlib":
            import matplotlib.pyplot as plt

            plt.close(self.figure)
        self.kind = ""
