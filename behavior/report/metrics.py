"""Classification metrics for a finished evaluation: accuracy, per-class table, confusion counts.

Everything returned is plain Python (float/int/str/list) so it can go straight into JSON.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

# Scores whose rows sum to 1 within this tolerance (and lie in [0, 1]) are taken to be probabilities.
_PROB_ATOL = 1e-3


def _as_labels(y: Sequence[int], name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        # Float labels like 3.0 come from careless tensor conversions; accept them only when exact.
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_range(y: np.ndarray, num_classes: int, name: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} holds class indices outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}"
        )


def _check_scores(scores: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"scores must be a 2-D array [N, C], got shape {arr.shape}")
    if arr.shape != (n, num_classes):
        raise ValueError(
            f"scores has shape {arr.shape} but there are {n} labels and {num_classes} class names"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores contain NaN or infinite values")
    return arr


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """True when every row is non-negative, at most 1 and sums to ~1."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.size == 0:
        return True
    in_range = bool(np.all(arr >= -_PROB_ATOL) and np.all(arr <= 1 + _PROB_ATOL))
    return in_range and bool(np.allclose(arr.sum(axis=1), 1.0, atol=_PROB_ATOL))


def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Return scores as probabilities: unchanged if they already look like them, else a row softmax.

    The argmax (and so the prediction) is the same either way; only the written numbers differ.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if looks_like_probabilities(arr):
        return np.clip(arr, 0.0, 1.0)
    # Subtracting the row max keeps exp() from overflowing on large logits.
    shifted = arr - arr.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def topk_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the k highest scores (ties: lower index wins)."""
    y = np.asarray(y_true)
    if y.size == 0:
        raise ValueError("topk_accuracy needs at least one clip")
    k = min(k, scores.shape[1])
    # Stable sort of the negated scores gives a deterministic tie order, matching argmax for k == 1.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def confusion_counts(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """[C, C] int counts, rows = true class, columns = predicted class (every class, even unseen ones)."""
    yt = _as_labels(y_true, "y_true")
    yp = _as_labels(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} labels but y_pred has {yp.size}")
    _check_range(yt, num_classes, "y_true")
    _check_range(yp, num_classes, "y_pred")
    if yt.size == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    cm = confusion_matrix(yt, yp, labels=list(range(num_classes)))
    return cm.astype(np.int64)


def per_class_rows(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> list[dict]:
    """One dict per class (class, precision, recall, f1, support), in class-index order.

    Classes with no support or no predictions get 0 for the undefined ratios instead of a warning.
    """
    names = [str(c) for c in class_names]
    yt = _as_labels(y_true, "y_true")
    yp = _as_labels(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} labels but y_pred has {yp.size}")
    if yt.size == 0:
        raise ValueError("per_class_rows needs at least one clip (got an empty y_true)")
    _check_range(yt, len(names), "y_true")
    _check_range(yp, len(names), "y_pred")
    p, r, f, s = precision_recall_fscore_support(
        yt, yp, labels=list(range(len(names))), zero_division=0
    )
    return [
        {
            "class": name,
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(names)
    ]


def compute_metrics(y_true: Sequence[int], scores: np.ndarray, class_names: Sequence[str]) -> dict:
    """Summary metrics for one evaluation.

    Keys: top1, top5 (only when C >= 5), mean_class_accuracy and macro_f1, num_clips, num_classes,
    num_classes_present, absent_classes. The averages are over the classes with at least one clip in y_true:
    a class a small or partial set has no clips of has no recall to measure, and counting it as 0 (sklearn's
    convention) would report a macro recall below the mean class accuracy of the same predictions. The classes
    left out are named in absent_classes, and format_per_class_table marks them.
    """
    num_classes = len(class_names)
    yt = _as_labels(y_true, "y_true")
    if yt.size == 0:
        raise ValueError("compute_metrics got no clips (y_true is empty); nothing to evaluate")
    if num_classes == 0:
        raise ValueError("compute_metrics needs at least one class name")
    arr = _check_scores(scores, yt.size, num_classes)
    _check_range(yt, num_classes, "y_true")

    y_pred = arr.argmax(axis=1)
    _, recall, f1, support = precision_recall_fscore_support(yt, y_pred, labels=list(range(num_classes)),
                                                             zero_division=0)
    present = support > 0

    metrics: dict = {"top1": float(np.mean(y_pred == yt))}
    if num_classes >= 5:
        metrics["top5"] = topk_accuracy(yt, arr, 5)
    metrics["mean_class_accuracy"] = float(np.mean(recall[present]))
    metrics["macro_f1"] = float(np.mean(f1[present]))
    metrics["num_clips"] = int(yt.size)
    metrics["num_classes"] = int(num_classes)
    metrics["num_classes_present"] = int(present.sum())
    metrics["absent_classes"] = [str(name) for name, seen in zip(class_names, present, strict=True) if not seen]
    return metrics


def _width(text: str) -> int:
    # East-Asian wide characters take two terminal columns; counting them as one misaligns the table.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool = False) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill


def format_per_class_table(rows: Sequence[Mapping], metrics: Mapping) -> str:
    """Aligned plain-text table: class | precision | recall | f1 | support, a macro row, then summary.

    A class with no clips (support 0) shows "-" for its ratios, stays out of the macro row (as it stays out of
    compute_metrics' averages) and is named on a line under the table.
    """
    header = ["class", "precision", "recall", "f1", "support"]
    ratios = ("precision", "recall", "f1")
    present = [r for r in rows if int(r["support"]) > 0]
    absent = [str(r["class"]) for r in rows if int(r["support"]) == 0]
    body = [
        [str(r["class"]), *(f"{float(r[k]):.4f}" if int(r["support"]) else "-" for k in ratios), str(int(r["support"]))]
        for r in rows
    ]
    footer: list[list[str]] = []
    if present:
        means = [f"{np.mean([float(r[k]) for r in present]):.4f}" for k in ratios]
        footer.append(["macro avg", *means, str(sum(int(r["support"]) for r in rows))])
    widths = [max(_width(line[i]) for line in [header, *body, *footer]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        rest = [_pad(c, w, right=True) for c, w in zip(line[1:], widths[1:], strict=True)]
        cells = [_pad(line[0], widths[0]), *rest]
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    out = [fmt(header), rule, *(fmt(line) for line in body)]
    if footer:
        out += [rule, *(fmt(line) for line in footer)]
    if absent:
        out.append(f"absent classes (no clips, not in the averages): {', '.join(absent)}")
    out.append("")
    out.append(summary_line(metrics))
    return "\n".join(out)


def summary_line(metrics: Mapping) -> str:
    """One line with the headline numbers; keys that are missing (e.g. top5 for C < 5) are skipped."""
    parts = []
    for key, label in [
        ("top1", "top1"),
        ("top5", "top5"),
        ("mean_class_accuracy", "mean class acc"),
        ("macro_f1", "macro-F1"),
    ]:
        value = metrics.get(key)
        if value is not None:
            parts.append(f"{label} {float(value):.4f}")
    if metrics.get("num_clips") is not None:
        parts.append(f"clips {int(metrics['num_clips'])}")
    if metrics.get("split"):
        parts.insert(0, f"[{metrics['split']}]")
    return "  ".join(parts)
