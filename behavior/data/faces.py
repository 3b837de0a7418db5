"""Clips with a real face, for the region-of-interest tests and the live demo: scikit-image's astronaut photo
(Eileen Collins, public domain) moving over a textured background.

``face_clip`` makes one clip and returns the face box of every frame, so a test can check a detector against the
truth. ``write_face_set`` writes a small three-class set of head movements (nod, shake, still) for training a
``roi=face`` model in a couple of minutes on a CPU. scikit-image comes with the development extra
(``pip install -e '.[dev]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from behavior.errors import ConfigError
from behavior.video.opencv import load_cv2

# The astronaut's head with some context, and the face inside it (the Haar cascade's box on the full photo).
HEAD = (130, 20, 320, 220)  # left, top, right, bottom in the 512 x 512 photo
FACE = (177, 66, 272, 161)
MOTIONS = ("slide", "nod", "shake", "still")


def astronaut_head() -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the face clips need scikit-image: pip install scikit-image (or the dev extra)") from None
    return data.astronaut()[HEAD[1]:HEAD[3], HEAD[0]:HEAD[2]]


def textured_background(height: int, width: int, seed: int) -> np.ndarray:
    """Stripes, blobs and noise: enough structure to tempt a detector, no face."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / (7 + 5 * c) + rng.uniform(0, 6)) * np.cos(y / (11 + 3 * c)) for c in range(3)], -1)
    noise = rng.normal(0, 0.25, (height, width, 3))
    return ((base + noise) * 50 + 110).clip(0, 255).astype(np.uint8)


def _offset(motion: str, t: int, num_frames: int, travel: float, width: int, height: int,
            period: float) -> tuple[float, float]:
    progress = t / max(1, num_frames - 1)
    wave = np.sin(2 * np.pi * t / period)
    if motion == "slide":
        return progress * travel * width, progress * 0.1 * height
    if motion == "nod":
        return 0.0, wave * 0.08 * height
    if motion == "shake":
        return wave * 0.08 * width, 0.0
    return 0.0, 0.0


def face_clip(num_frames: int = 24, height: int = 240, width: int = 320, seed: int = 0, face: bool = True,
              travel: float = 0.3, motion: str = "slide") -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Frames ``[T, H, W, 3]`` and, per frame, the face box in pixels (an empty list without a face).

    ``slide``: the head moves right by ``travel`` of the frame width and grows from 0.55x to 0.7x of its size in the
    photo (a 52 to 67 pixel face at 240 lines); ``nod``/``shake``: it bobs up and down / left and right about a
    point; ``still``: it stays put. Where it starts, and the bobbing period, depend on ``seed``."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {', '.join(MOTIONS)}; got {motion!r}")
    cv2 = load_cv2()
    head = astronaut_head()
    background = textured_background(height, width, seed)
    rng = np.random.default_rng(seed)
    unit = height / 240  # sizes scale with the frame
    largest_w, largest_h = head.shape[1] * 0.7 * unit, head.shape[0] * 0.7 * unit
    if motion == "slide":
        start_x = rng.uniform(0, width * (0.95 - travel) - largest_w)
        start_y = rng.uniform(0, height * 0.85 - largest_h)
    else:  # room for the bobbing on every side
        start_x = rng.uniform(0.1 * width, 0.9 * width - largest_w)
        start_y = rng.uniform(0.1 * height, 0.9 * height - largest_h)
    period = rng.uniform(8, 14)
    frames, boxes = [], []
    for t in range(num_frames):
        frame = background.copy()
        if face:
            grow = t / max(1, num_frames - 1) if motion == "slide" else 0.5
            scale = (0.55 + 0.15 * grow) * unit
            h, w = round(head.shape[0] * scale), round(head.shape[1] * scale)
            dx, dy = _offset(motion, t, num_frames, travel, width, height, period)
            left = int(np.clip(round(start_x + dx), 0, width - w))
            top = int(np.clip(round(start_y + dy), 0, height - h))
            frame[top:top + h, left:left + w] = cv2.resize(head, (w, h), interpolation=cv2.INTER_AREA)
            boxes.append((left + round((FACE[0] - HEAD[0]) * scale), top + round((FACE[1] - HEAD[1]) * scale),
                          left + round((FACE[2] - HEAD[0]) * scale), top + round((FACE[3] - HEAD[1]) * scale)))
        frames.append(frame)
    return np.stack(frames), boxes


def write_face_set(root: str | Path, clips_per_class: int = 16, num_frames: int = 32, fps: float = 12.0) -> Path:
    """``root/<nod|shake|still>/<motion>_<k>.mp4``: a head-movement set for a ``roi=face`` model."""
    from behavior.video.writer import write_video

    root = Path(root)
    for c, motion in enumerate(("nod", "shake", "still")):
        for k in range(clips_per_class):
            frames, _ = face_clip(num_frames, seed=1000 * c + k, motion=motion)
            write_video(root / motion / f"{motion}_{k:03d}.mp4", frames, fps=fps)
    return root


if __name__ == "__main__":
    import sys

    target = write_face_set(sys.argv[1] if len(sys.argv) > 1 else "data/faces")
    print(f"face clips (nod, shake, still) in {target}")
