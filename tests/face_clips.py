"""Test clips with a real face: scikit-image's astronaut photo moved and scaled over a textured background."""

from __future__ import annotations

import cv2
import numpy as np

# The astronaut's head with some context, and the face inside it (the Haar cascade's box on the full photo).
HEAD = (130, 20, 320, 220)  # left, top, right, bottom in the 512 x 512 photo
FACE = (177, 66, 272, 161)


def textured_background(height: int, width: int, seed: int) -> np.ndarray:
    """Stripes, blobs and noise: enough structure to tempt a detector, no face."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / (7 + 5 * c) + rng.uniform(0, 6)) * np.cos(y / (11 + 3 * c)) for c in range(3)], -1)
    noise = rng.normal(0, 0.25, (height, width, 3))
    return ((base + noise) * 50 + 110).clip(0, 255).astype(np.uint8)


def face_clip(num_frames: int = 24, height: int = 240, width: int = 320, seed: int = 0, face: bool = True,
              travel: float = 0.3) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Frames ``[T, H, W, 3]`` and, per frame, the face box in pixels (empty list without a face).

    The head slides right by ``travel`` of the frame width and grows from 0.55x to 0.7x of its size in the
    photo (a 52 to 67 pixel face); where it starts depends on ``seed``."""
    from skimage import data

    photo = data.astronaut()
    head = photo[HEAD[1]:HEAD[3], HEAD[0]:HEAD[2]]
    background = textured_background(height, width, seed)
    rng = np.random.default_rng(seed)
    start_x = rng.uniform(0, width * (0.95 - travel) - head.shape[1] * 0.7)
    start_y = rng.uniform(0, height * 0.85 - head.shape[0] * 0.7)
    frames, boxes = [], []
    for t in range(num_frames):
        frame = background.copy()
        if face:
            progress = t / max(1, num_frames - 1)
            scale = 0.55 + 0.15 * progress
            h, w = round(head.shape[0] * scale), round(head.shape[1] * scale)
            left = round(start_x + progress * travel * width)
            top = round(start_y + progress * 0.1 * height)
            frame[top:top + h, left:left + w] = cv2.resize(head, (w, h), interpolation=cv2.INTER_AREA)
            boxes.append((left + round((FACE[0] - HEAD[0]) * scale), top + round((FACE[1] - HEAD[1]) * scale),
                          left + round((FACE[2] - HEAD[0]) * scale), top + round((FACE[3] - HEAD[1]) * scale)))
        frames.append(frame)
    return np.stack(frames), boxes
