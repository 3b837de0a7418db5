"""Draw a live prediction onto a video frame: attention heatmap, region box, label and score.

OpenCV drawing on uint8 arrays: a 640x360 frame costs about a millisecond, which live mode pays on every
frame it writes. Frames stay RGB throughout; only OpenCV's colour maps come out BGR and are flipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behavior.video.opencv import load_cv2

BOX_COLOUR = (60, 220, 60)  # RGB
MISSING_COLOUR = (235, 170, 40)


@dataclass
class Annotation:
    """What to draw: ``box``/``seen`` in pixels (left, top, right, bottom), ``heat`` in [0, 1] over ``seen``."""

    label: str
    score: float
    box: tuple[int, int, int, int] | None = None  # the region of interest (None: whole frame)
    seen: tuple[int, int, int, int] | None = None  # the part of the frame the model saw (after its square crop)
    heat: np.ndarray | None = None  # [h, w] attention of the last attention stage
    note: str = ""  # e.g. "no face found: whole frame"


def _stretch(heat: np.ndarray) -> np.ndarray:
    # Gates of a briefly trained model span a narrow band; stretch so the map shows where, not how much.
    low, high = float(heat.min()), float(heat.max())
    return (heat - low) / (high - low) if high > low else np.zeros_like(heat)


def blend_heatmap(frame: np.ndarray, heat: np.ndarray, where: tuple[int, int, int, int], alpha: float = 0.4) -> None:
    """Colour ``heat`` with the jet map and blend it over ``frame[where]``, in place."""
    cv2 = load_cv2()
    left, top, right, bottom = where
    if right - left < 2 or bottom - top < 2:
        return
    heat = cv2.resize(_stretch(np.asarray(heat, np.float32)), (right - left, bottom - top),
                      interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    patch = frame[top:bottom, left:right]
    cv2.addWeighted(colours, alpha, patch, 1.0 - alpha, 0.0, dst=patch)


def _text(frame: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    cv2 = load_cv2()
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 2))
    (width, height), base = cv2.getTextSize(text, font, scale, thickness)
    x, y = origin
    cv2.rectangle(frame, (x, y), (x + width + 6, y + height + base + 6), (0, 0, 0), thickness=-1)
    cv2.putText(frame, text, (x + 3, y + height + 3), font, scale, colour, thickness, cv2.LINE_AA)


def annotate(frame: np.ndarray, annotation: Annotation | None, status: str = "") -> np.ndarray:
    """A copy of the RGB ``frame`` with the annotation drawn; ``None`` (no label yet) draws only ``status``."""
    cv2 = load_cv2()
    out = np.ascontiguousarray(frame).copy()
    scale = max(0.4, min(out.shape[:2]) / 600)
    if annotation is not None:
        if annotation.heat is not None and annotation.seen is not None:
            blend_heatmap(out, annotation.heat, annotation.seen)
        if annotation.box is not None:
            left, top, right, bottom = annotation.box
            cv2.rectangle(out, (left, top), (right - 1, bottom - 1), BOX_COLOUR, max(1, round(scale * 2)))
        _text(out, f"{annotation.label} {annotation.score:.2f}", (4, 4), (255, 255, 255), scale)
        if annotation.note:
            _text(out, annotation.note, (4, round(40 * scale) + 8), MISSING_COLOUR, scale * 0.8)
    if status:
        _text(out, status, (4, out.shape[0] - round(36 * scale) - 4), (200, 200, 200), scale * 0.8)
    return out
