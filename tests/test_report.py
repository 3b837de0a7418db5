"""Tests for behavior.report: metrics on hand-checked examples, files written, figures rendered."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from behavior.provenance import git_commit, git_state, package_version
from behavior.report import (
    compute_metrics,
    confusion_counts,
    format_per_class_table,
    per_class_rows,
    plot_confusion_matrix,
    plot_curves,
    to_probabilities,
    write_history,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Hand example, 3 classes:
#   true: 0 0 0 1 1 2      pred: 0 0 1 1 2 2
#   class 0: TP 2 FP 0 FN 1 -> P 1,   R 2/3, F1 0.8
#   class 1: TP 1 FP 1 FN 1 -> P 1/2, R 1/2, F1 1/2
#   class 2: TP 1 FP 1 FN 0 -> P 1/2, R 1,   F1 2/3
Y3 = [0, 0, 0, 1, 1, 2]
P3 = [0, 0, 1, 1, 2, 2]
NAMES3 = ["walk", "run, fast", "café"]


def _onehot_logits(pred: list[int], num_classes: int) -> np.ndarray:
    # Logits (not probabilities), so the softmax path of write_report is exercised too.
    scores = np.zeros((len(pred), num_classes))
    scores[np.arange(len(pred)), pred] = 3.0
    return scores


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_compute_metrics_hand_example():
    m = compute_metrics(Y3, _onehot_logits(P3, 3), NAMES3)
    assert m["top1"] == pytest.approx(4 / 6)
    assert "top5" not in m  # C < 5
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["num_clips"] == 6 and m["num_classes"] == 3 and m["absent_classes"] == []
    assert all(type(v) in (int, float) for k, v in m.items() if k != "absent_classes")
    json.dumps(m)


def test_per_class_rows_hand_example():
    rows = per_class_rows(Y3, P3, NAMES3)
    assert [r["class"] for r in rows] == NAMES3
    expected = [(1.0, 2 / 3, 0.8, 3), (0.5, 0.5, 0.5, 2), (0.5, 1.0, 2 / 3, 1)]
    for row, (p, r, f, s) in zip(rows, expected, strict=True):
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(f)
        assert row["support"] == s


def test_top5_and_topk_from_scores():
    # 6 classes; true label ranks 1st, 5th and 6th in the three rows -> top1 1/3, top5 2/3.
    scores = np.array(
        [
            [0.9, 0.05, 0.02, 0.01, 0.01, 0.01],
            [0.30, 0.25, 0.20, 0.15, 0.06, 0.04],
            [0.30, 0.25, 0.20, 0.15, 0.06, 0.04],
        ]
    )
    m = compute_metrics([0, 4, 5], scores, [f"c{i}" for i in range(6)])
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top5"] == pytest.approx(2 / 3)
    # Logits with the same ordering give the same accuracies.
    m_logits = compute_metrics([0, 4, 5], np.log(scores) * 7.0 + 2.0, [f"c{i}" for i in range(6)])
    assert m_logits["top1"] == m["top1"] and m_logits["top5"] == m["top5"]


def test_confusion_counts_matches_hand_example():
    cm = confusion_counts(Y3, P3, 3)
    assert cm.dtype.kind == "i"
    assert cm.sum() == len(Y3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])


def test_empty_input_raises():
    with pytest.raises(ValueError, match="no clips"):
        compute_metrics([], np.zeros((0, 3)), NAMES3)
    with pytest.raises(ValueError, match="no clips"):
        write_report("unused", [], [], np.zeros((0, 3)), NAMES3)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        compute_metrics([0, 1], np.zeros((2, 4)), NAMES3)
    with pytest.raises(ValueError, match="outside"):
        compute_metrics([0, 3], np.zeros((2, 3)), NAMES3)


@pytest.mark.filterwarnings("error")
def test_zero_support_class_no_warnings(tmp_path):
    # Class 3 never occurs in y_true; class 2 is predicted but never true, class 3 never predicted.
    names = ["a", "b", "c", "d"]
    y = [0, 0, 1, 1]
    pred = [0, 2, 1, 1]
    m = compute_metrics(y, _onehot_logits(pred, 4), names)
    # Mean class accuracy only over present classes 0 and 1: (1/2 + 1) / 2.
    assert m["mean_class_accuracy"] == pytest.approx(0.75)
    assert m["num_classes_present"] == 2
    rows = per_class_rows(y, pred, names)
    assert rows[2]["precision"] == 0.0 and rows[3]["support"] == 0 and rows[3]["f1"] == 0.0
    assert all(math.isfinite(r[k]) for r in rows for k in ("precision", "recall", "f1"))
    write_report(tmp_path, ["a", "b", "c", "d"], y, _onehot_logits(pred, 4), names)
    _assert_png(tmp_path / "confusion_matrix.png")


def _macro_row(table: str) -> list[float]:
    line = next(line for line in table.splitlines() if line.startswith("macro avg"))
    return [float(cell) for cell in line.split("|")[1:4]]


def test_classes_without_clips_stay_out_of_the_averages_and_are_named(tmp_path):
    # Clips of 2 of the model's 4 classes; c is predicted once (a false positive), d never appears at all.
    names = ["a", "b", "c", "d"]
    y, pred = [0, 0, 1, 1], [0, 2, 1, 1]
    m = write_report(tmp_path, [f"{i}.mp4" for i in range(4)], y, _onehot_logits(pred, 4), names)
    # a: P 1, R 1/2, F1 2/3; b: P 1, R 1, F1 1. The absent c and d would halve the averages.
    assert m["mean_class_accuracy"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["absent_classes"] == ["c", "d"]
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["absent_classes"] == ["c", "d"]
    table = format_per_class_table(per_class_rows(y, pred, names), m)
    # The printed table agrees with metrics.json: macro recall is the mean class accuracy, macro F1 the macro_f1.
    precision, recall, f1 = _macro_row(table)
    assert (precision, recall, f1) == (1.0, pytest.approx(m["mean_class_accuracy"], abs=5e-5),
                                       pytest.approx(m["macro_f1"], abs=5e-5))
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in table.splitlines()
            if "|" in line}
    assert rows["c"] == rows["d"] == ["-", "-", "-", "0"]
    assert "absent classes (no clips, not in the averages): c, d" in table
    assert "mean class acc 0.7500  macro-F1 0.8333" in table


def test_format_per_class_table():
    m = compute_metrics(Y3, _onehot_logits(P3, 3), NAMES3)
    text = format_per_class_table(per_class_rows(Y3, P3, NAMES3), m)
    lines = text.splitlines()
    assert lines[0].split(" | ")[0].strip() == "class"
    assert [c.strip() for c in lines[0].split("|")] == ["class", "precision", "recall", "f1", "support"]
    assert any(line.startswith("run, fast") and "0.5000" in line for line in lines)
    # Column separators line up across header and class rows.
    assert len({line.index("|") for line in lines[:5] if "|" in line}) == 1
    assert "top1 0.6667" in text and "macro-F1" in text and "clips 6" in text and "top5" not in text
    assert "absent" not in text


def test_write_report_files(tmp_path):
    names = ["walk", "run, fast", "café", "sit down", "jump"]
    rng = np.random.default_rng(0)
    n = 40
    y = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), y] += 1.5
    paths = [f"clips/{i:03d}.mp4" for i in range(n)]
    out = tmp_path / "report"
    m = write_report(out, paths, y, logits, names, split="val", extra={"checkpoint": "best.pt", "epoch": 3})

    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved == m
    assert saved["split"] == "val" and saved["checkpoint"] == "best.pt" and saved["epoch"] == 3
    assert saved["num_clips"] == n and "top5" in saved and saved["class_names"] == names
    assert saved["top1"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))

    per_class = _read_csv(out / "per_class.csv")
    assert per_class[0] == ["class", "precision", "recall", "f1", "support"]
    assert [r[0] for r in per_class[1:]] == names
    assert sum(int(r[4]) for r in per_class[1:]) == n

    cm_rows = _read_csv(out / "confusion_matrix.csv")
    assert cm_rows[0] == ["true\\pred", *names]
    assert [r[0] for r in cm_rows[1:]] == names
    counts = np.array([[int(v) for v in r[1:]] for r in cm_rows[1:]])
    assert counts.sum() == n
    np.testing.assert_array_equal(counts, confusion_counts(y, logits.argmax(1), 5))

    preds = _read_csv(out / "predictions.csv")
    assert preds[0] == ["path", "true", "pred", "score", "correct", *(f"prob:{c}" for c in names)]
    assert len(preds) == n + 1
    probs = to_probabilities(logits)
    for i, row in enumerate(preds[1:]):
        assert row[0] == paths[i] and row[1] == names[y[i]]
        p = int(logits[i].argmax())
        assert row[2] == names[p]
        assert float(row[3]) == pytest.approx(probs[i, p], abs=1e-4)
        assert row[4] == str(int(p == y[i]))
        class_probs = [float(v) for v in row[5:]]
        assert sum(class_probs) == pytest.approx(1.0, abs=1e-3)
        assert float(row[3]) == max(class_probs)

    _assert_png(out / "confusion_matrix.png")
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_probabilities_written_unchanged():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(to_probabilities(probs), probs)
    logits = np.array([[2.0, 1.0, -1.0]])
    out = to_probabilities(logits)
    assert out.sum() == pytest.approx(1.0) and out.argmax() == 0


def test_metrics_json_records_provenance(tmp_path):
    names = ["walk", "run, fast", "café"]
    inside, outside = tmp_path / "run" / "best.pt", tmp_path / "elsewhere.pt"
    inside.parent.mkdir()
    inside.write_bytes(b"weights of the run")
    outside.write_bytes(b"\x00other weights" * 100_000)  # bigger than one read: hashed in chunks
    m = write_report(inside.parent, list("abcdef"), Y3, _onehot_logits(P3, 3), names, checkpoint=inside)
    assert m["provenance"] == {"version": package_version(), "git_commit": git_commit(),
                               "git_dirty": git_state()[1], "checkpoint": "best.pt",
                               "checkpoint_sha256": hashlib.sha256(b"weights of the run").hexdigest()}
    assert json.loads((inside.parent / "metrics.json").read_text(encoding="utf-8"))["provenance"] == m["provenance"]
    m = write_report(tmp_path / "eval", list("abcdef"), Y3, _onehot_logits(P3, 3), names, checkpoint=outside)
    assert m["provenance"]["checkpoint"] == str(outside)
    assert m["provenance"]["checkpoint_sha256"] == hashlib.sha256(outside.read_bytes()).hexdigest()
    m = write_report(tmp_path / "plain", list("abcdef"), Y3, _onehot_logits(P3, 3), names)
    assert m["provenance"]["checkpoint"] is None and m["provenance"]["checkpoint_sha256"] is None


def test_git_commit_only_from_the_package_own_checkout(monkeypatch, tmp_path):
    import behavior.provenance as provenance

    commit, dirty = provenance.git_state()
    assert (commit is None and dirty is None) or (len(commit) == 40 and dirty in (True, False, None))
    project = tmp_path / "project"  # someone's repository with the package installed in its virtual environment
    installed = project / ".venv" / "site-packages" / "behavior"
    installed.mkdir(parents=True)
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(project)], check=True)
        subprocess.run(["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                        "--allow-empty", "-m", "x"], check=True)  # HEAD exists: only the top folder rules it out
    try:
        for package_dir in (installed, tmp_path / "not_a_checkout" / "behavior"):
            monkeypatch.setattr(provenance, "PACKAGE_DIR", package_dir)
            provenance.git_state.cache_clear()
            assert provenance.git_state() == (None, None)
        monkeypatch.undo()

        def no_git(*args, **kwargs):
            raise FileNotFoundError("git")

        monkeypatch.setattr(provenance.subprocess, "run", no_git)
        provenance.git_state.cache_clear()
        assert provenance.git_state() == (None, None)  # no git at all: no commit, and no error
    finally:
        monkeypatch.undo()
        provenance.git_state.cache_clear()


def test_extra_cannot_override_metrics(tmp_path):
    with pytest.warns(UserWarning, match="top1"):
        m = write_report(tmp_path, list("abcdef"), Y3, _onehot_logits(P3, 3), NAMES3, extra={"top1": 1.0})
    assert m["top1"] == pytest.approx(4 / 6)


def test_plot_confusion_matrix_sizes(tmp_path):
    for c in (2, 5, 30):
        cm = np.arange(c * c).reshape(c, c)
        cm[0] = 0  # zero-support row must not divide by zero
        out = plot_confusion_matrix(cm, [f"class {i}" for i in range(c)], tmp_path / f"cm{c}.png", title="t")
        _assert_png(out)
    small = imread(tmp_path / "cm2.png").shape
    big = imread(tmp_path / "cm30.png").shape
    assert big[0] > small[0] and big[1] > small[1]
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "bad.png")


def test_write_history_tolerates_missing_keys(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "lr": 1e-3},
        {"epoch": 2, "train_loss": 1.1, "train_acc": 0.55, "val_loss": None, "lr": 1e-4},
        {"epoch": 3, "train_loss": 0.9, "val_loss": 1.0, "val_acc": 0.6, "lr": 1e-5, "note": "best"},
    ]
    write_history(tmp_path, history)
    rows = _read_csv(tmp_path / "history.csv")
    assert rows[0] == ["epoch", "train_loss", "train_acc", "lr", "val_loss", "val_acc", "note"]
    assert rows[1] == ["1", "1.5", "0.4", "0.001", "", "", ""]
    assert rows[2][4] == "" and rows[3][2] == ""
    assert float(rows[3][3]) == pytest.approx(1e-5)
    _assert_png(tmp_path / "curves.png")


@pytest.mark.parametrize("epochs", [1, 2, 3, 7])
def test_curves_have_whole_epoch_ticks(epochs):
    from behavior.report.plots import curves_figure

    history = [{"epoch": e, "train_loss": 1 / e, "val_acc": e / 10, "lr": 1e-3 / e} for e in range(1, epochs + 1)]
    fig = curves_figure(history)
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_plot_curves_edge_cases(tmp_path):
    # No epoch key, NaN values, a single row, and no rows at all must all still render.
    _assert_png(plot_curves([{"train_loss": 1.0}, {"train_loss": float("nan")}], tmp_path / "a.png"))
    _assert_png(plot_curves([{"epoch": 1, "val_acc": 0.5}], tmp_path / "b.png"))
    _assert_png(plot_curves([], tmp_path / "c.png"))
    write_history(tmp_path / "empty", [])
    assert (tmp_path / "empty" / "history.csv").read_text() == ""
    _assert_png(tmp_path / "empty" / "curves.png")
