"""Write an evaluation report (metrics, tables, predictions, figures) and training history to disk.

Files written by write_report into out_dir:
  per_class.csv         class,precision,recall,f1,support (support 0: a class with no clips here, named in
                        metrics.json's absent_classes and left out of its averages)
  confusion_matrix.csv  "true\\pred",<class 0>,...,<class C-1>; one row per true class with counts
  confusion_matrix.png  row-normalised colours, counts in cells
  predictions.csv       path,true,pred,score,correct,prob:<class 0>,...,prob:<class C-1>
                        true/pred are class NAMES; score is the probability of the predicted class;
                        correct is 1/0. Probabilities are the scores as given when every row already
                        sums to ~1 within [0, 1], otherwise a row softmax of the scores (logits).
  metrics.json          compute_metrics(...) + split + class_names + provenance + extra -- written LAST (an
                        earlier report's is removed first), so its presence means the whole report is complete.
                        provenance: {version, git_commit, git_dirty, checkpoint, checkpoint_sha256}
                        (behavior/provenance.py; nulls where unknown or when no checkpoint is involved).
Every file goes through a temp file + os.replace, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from behavior.atomic import atomic_open
from behavior.provenance import report_provenance
from behavior.report.metrics import compute_metrics, confusion_counts, per_class_rows, to_probabilities
from behavior.report.plots import plot_confusion_matrix, plot_curves

METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_CSV = "history.csv"
CURVES_PNG = "curves.png"

PROB_PREFIX = "prob:"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to path via a sibling temp file and os.replace (atomic on POSIX and Windows)."""
    # newline="" because the csv module writes its own \r\n line endings.
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _jsonable(value: object) -> object:
    """Numpy scalars/arrays, Paths and non-finite floats made JSON-safe (NaN is not valid JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _f(value: float) -> str:
    return f"{float(value):.4f}"


def write_report(
    out_dir: str | os.PathLike,
    paths: Sequence[str],
    y_true: Sequence[int],
    scores: np.ndarray,
    class_names: Sequence[str],
    split: str = "test",
    extra: Mapping | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
) -> dict:
    """Write the full evaluation report into out_dir (see module docstring) and return metrics.json's dict.

    Keys in extra that collide with computed metrics are ignored with a warning: the written numbers
    must be the ones computed from the predictions. ``checkpoint`` is the file the scores came from; its
    sha256 goes into the provenance (pass ``checkpoint_sha256`` when it was hashed as it was loaded).
    """
    names = [str(c) for c in class_names]
    # compute_metrics validates y_true/scores (empty, shapes, ranges) before anything is written.
    metrics = compute_metrics(y_true, scores, names)
    y = np.asarray(y_true).astype(np.int64)
    path_list = [str(p) for p in paths]
    if len(path_list) != y.size:
        raise ValueError(f"got {len(path_list)} paths but {y.size} labels")

    probs = to_probabilities(np.asarray(scores, dtype=np.float64))
    raw = np.asarray(scores, dtype=np.float64)
    # Prediction comes from the raw scores so it matches compute_metrics exactly even when softmax rounds.
    y_pred = raw.argmax(axis=1)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # An earlier report's metrics.json goes first: a kill midway must not leave it beside files of this report, as if
    # the folder held one whole report.
    (out / METRICS_FILE).unlink(missing_ok=True)

    rows = per_class_rows(y, y_pred, names)
    atomic_write_text(
        out / PER_CLASS_FILE,
        _csv_text(
            ["class", "precision", "recall", "f1", "support"],
            [[r["class"], _f(r["precision"]), _f(r["recall"]), _f(r["f1"]), r["support"]] for r in rows],
        ),
    )

    cm = confusion_counts(y, y_pred, len(names))
    atomic_write_text(
        out / CONFUSION_CSV,
        _csv_text(["true\\pred", *names], [[name, *map(int, cm[i])] for i, name in enumerate(names)]),
    )
    title = f"Confusion matrix - {split} ({y.size} clips)"
    plot_confusion_matrix(cm, names, out / CONFUSION_PNG, title=title)

    pred_rows = []
    for i, path in enumerate(path_list):
        t, p = int(y[i]), int(y_pred[i])
        pred_rows.append(
            [path, names[t], names[p], _f(probs[i, p]), int(t == p), *(_f(v) for v in probs[i])]
        )
    atomic_write_text(
        out / PREDICTIONS_FILE,
        _csv_text(
            ["path", "true", "pred", "score", "correct", *(PROB_PREFIX + n for n in names)], pred_rows
        ),
    )

    result: dict = dict(metrics)
    result["split"] = split
    result["class_names"] = names
    result["provenance"] = report_provenance(checkpoint, checkpoint_sha256, out)
    for key, value in (extra or {}).items():
        if str(key) in result:
            msg = f"write_report: extra key {key!r} collides with a computed field; ignored"
            warnings.warn(msg, stacklevel=2)
            continue
        result[str(key)] = value
    result = _jsonable(result)  # type: ignore[assignment]
    atomic_write_text(out / METRICS_FILE, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def _history_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        # 6 significant digits keeps small learning rates (1e-5) that a fixed 4 decimals would zero out.
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


def write_history(out_dir: str | os.PathLike, history: Sequence[Mapping[str, object]]) -> None:
    """history.csv (union of keys in first-seen order; missing/None/NaN -> empty cell) + curves.png."""
    rows = list(history)
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = _csv_text(keys, [[_history_cell(row.get(k)) for k in keys] for row in rows]) if keys else ""
    atomic_write_text(out / HISTORY_CSV, text)
    plot_curves(rows, out / CURVES_PNG)
