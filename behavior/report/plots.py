"""Report figures: a row-normalised confusion matrix and training curves.

Figures are built with matplotlib's object API (Figure + Agg canvas) rather than pyplot, so nothing
here touches the global backend or pyplot's figure registry -- safe in headless training jobs and
in processes that also use pyplot interactively.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from behavior.atomic import atomic_open

# Long class names are shortened on the axes only (the CSV files keep them whole).
_MAX_LABEL_CHARS = 28


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Save as PNG through a temp file + os.replace so a crash never leaves a truncated image."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", bbox_inches="tight", dpi=fig.dpi)
    return Path(path)


def _short(name: str) -> str:
    name = str(name)
    return name if len(name) <= _MAX_LABEL_CHARS else name[: _MAX_LABEL_CHARS - 1] + "\u2026"


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows with zero support stay all zero instead of NaN."""
    counts = np.asarray(cm, dtype=np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)


def plot_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    show_percent: bool | None = None,
) -> Path:
    """Confusion matrix PNG: colours are row-normalised (recall per true class), cells show counts.

    show_percent adds the row percentage under each non-zero count; by default only when C <= 12,
    since beyond that the cells are too small for two lines.
    """
    counts = np.asarray(cm)
    c = len(class_names)
    if counts.shape != (c, c):
        raise ValueError(f"confusion matrix has shape {counts.shape} but there are {c} class names")
    if show_percent is None:
        show_percent = c <= 12
    norm = row_normalize(counts)

    # Cell size shrinks slowly with C so 2 classes isn't huge and 30 classes still fit readable text.
    cell = 0.9 if c <= 8 else 0.6 if c <= 16 else 0.5
    side = max(4.0, c * cell + 2.5)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of true class (row-normalised)")

    labels = [_short(n) for n in class_names]
    label_size = 10 if c <= 8 else 9 if c <= 16 else 7
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=label_size)
    ax.set_yticklabels(labels, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(counts.sum())
    ax.set_title(title or f"Confusion matrix ({total} clips)")

    # Minor-tick grid draws thin lines between cells, which helps reading large matrices.
    ax.set_xticks(np.arange(-0.5, c, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, c, 1), minor=True)
    ax.grid(which="minor", color="#d0d0d0", linewidth=0.5)
    ax.tick_params(which="minor", length=0)

    count_size = 11 if c <= 8 else 8 if c <= 16 else 7
    for i in range(c):
        for j in range(c):
            n = int(counts[i, j])
            # White text on the dark half of the Blues map, black on the light half.
            colour = "white" if norm[i, j] > 0.5 else ("#9a9a9a" if n == 0 else "black")
            text = str(n)
            if show_percent and n > 0:
                text += f"\n{100 * norm[i, j]:.0f}%"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=count_size, linespacing=1.1)

    return _save(fig, path)


def _number(value: object) -> float | None:
    """Float value or None for missing/None/NaN/unparseable (history rows may come back from CSV)."""
    if value is None or value == "":
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _series(history: Sequence[Mapping[str, object]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        y = _number(row.get(key))
        if y is None:
            continue
        x = _number(row.get("epoch"))
        xs.append(float(i + 1) if x is None else x)
        ys.append(y)
    return xs, ys


def _panel(ax, history, keys: Sequence[tuple[str, str]], ylabel: str) -> bool:
    drawn = False
    for key, label in keys:
        xs, ys = _series(history, key)
        if xs:
            # Markers keep single-epoch runs visible (a one-point line draws nothing).
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
            drawn = True
    ax.set_xlabel("epoch")
    # Epochs are whole: the default locator ticked 1.5, 2.5 on a short run and 0.96, 0.98 on a one-epoch run (which
    # min_n_ticks=1 keeps on whole numbers too).
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(loc="best", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    return drawn


def plot_curves(history: Sequence[Mapping[str, object]], path: str | os.PathLike) -> Path:
    """:func:`curves_figure` saved as a PNG."""
    return _save(curves_figure(history), path)


def curves_figure(history: Sequence[Mapping[str, object]]) -> Figure:
    """Loss (train/val) and accuracy (train/val) vs epoch; a third learning-rate panel if lr is logged.

    Missing keys, None and NaN are skipped point by point, so a run without validation still plots.
    """
    rows = list(history)
    has_lr = any(_number(r.get("lr")) is not None for r in rows)
    panels = 3 if has_lr else 2
    fig = _new_figure(5.0 * panels, 4.0)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]

    _panel(axes[0], rows, [("train_loss", "train"), ("val_loss", "val")], "loss")
    axes[0].set_title("Loss")
    _panel(axes[1], rows, [("train_acc", "train"), ("val_acc", "val")], "accuracy")
    axes[1].set_title("Accuracy")
    if has_lr:
        _panel(axes[2], rows, [("lr", "lr")], "learning rate")
        axes[2].set_title("Learning rate")
        _, lrs = _series(rows, "lr")
        # Log scale shows step/cosine schedules spanning decades; only valid when all values are > 0.
        if lrs and min(lrs) > 0 and max(lrs) / min(lrs) > 10:
            axes[2].set_yscale("log")
    fig.tight_layout()
    return fig
