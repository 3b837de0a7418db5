"""Run inspection: reading a real tiny run back, the figures, attention overlays, and the notebook end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient

from behavior.predict.predictions import format_prediction_summary, summarize_predictions
from behavior.report.inspect import (
    RunResults,
    class_probabilities,
    config_text,
    confusion_figure,
    curves_figure,
    format_table,
    load_run,
    metrics_table,
    misclassified,
    most_confused_pairs,
    newest_run,
    plot_per_class_bars,
)
from behavior.report.overlays import (
    GAP,
    Overlay,
    attention_overlays,
    frame_strip,
    heatmap_blend,
    plot_attention_overlays,
    plot_misclassified,
    resolve_clip,
)
from tests.conftest import REPO
from tests.helpers import train_tiny_run

pytestmark = pytest.mark.slow  # trains or runs the commands in subprocesses

# Headless: nothing here imports pyplot, and Agg makes sure nothing could open a window.
matplotlib.use("Agg")

NOTEBOOK = REPO / "notebooks" / "inspect_results.ipynb"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("inspect"))


@pytest.fixture(scope="module")
def run(run_dir) -> RunResults:
    return load_run(run_dir)


def toy_run(cm, names=("a", "b", "c"), predictions=()) -> RunResults:
    return RunResults(Path("."), {}, {"split": "test"}, [], np.asarray(cm), list(names), list(predictions), [])


def test_load_run_reads_every_report_file(run, run_dir):
    assert run.run_dir == run_dir and run.class_names == ["left", "right", "up"]
    assert run.backend == "pyav" and run.config["model"]["widths"] == [8, 16]
    n = run.metrics["num_clips"]
    assert run.confusion.shape == (3, 3) and run.confusion.sum() == n == len(run.predictions) > 0
    row = run.predictions[0]
    assert isinstance(row["score"], float) and row["correct"] in (0, 1)
    probs = class_probabilities(row)
    assert list(probs) == run.class_names and sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert [r["class"] for r in run.per_class] == run.class_names
    assert isinstance(run.per_class[0]["f1"], float) and isinstance(run.per_class[0]["support"], int)
    assert [r["epoch"] for r in run.history] == [1] and isinstance(run.history[0]["train_loss"], float)
    assert {r["split"] for r in run.split} == {"train", "val", "test"}


def test_load_run_refuses_unfinished_or_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        load_run(tmp_path / "half")


def test_newest_run_picks_the_latest_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run"):
        newest_run(base=tmp_path)
    older = tmp_path / "outputs" / "train" / "2026-01-01_10-00-00"
    newer = tmp_path / "multirun" / "train" / "2026-01-02_10-00-00" / "0_behaviornet"
    for i, folder in enumerate([older, newer]):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("{}")
        os.utime(folder / "metrics.json", (1000 + i, 1000 + i))
    (tmp_path / "outputs" / "train" / "still_training").mkdir()  # no metrics.json: never picked
    assert newest_run(base=tmp_path) == newer
    assert newest_run("outputs", base=tmp_path) == older


def test_text_views(run):
    table = metrics_table(run)
    assert "macro avg" in table and "top1" in table and "best epoch 1 of 1" in table
    for name in run.class_names:
        assert name in table
    text = config_text(run, ["model", "sampling"])
    assert text.startswith("model:") and "num_frames: 4" in text and "trainer" not in text
    assert "widths: [8, 16]" in text
    lines = format_table([{"name": "x", "v": 0.5}, {"name": "longer", "v": 12}]).splitlines()
    assert lines[0].split() == ["name", "|", "v"] and lines[2].endswith("0.5000") and len(lines) == 4
    assert format_table([]) == "(no rows)"


def test_most_confused_pairs_are_sorted_off_diagonal_counts():
    run = toy_run([[5, 2, 0], [3, 1, 2], [0, 2, 9]])
    pairs = most_confused_pairs(run, k=3)
    assert [(p["true"], p["predicted"], p["clips"]) for p in pairs] == [("b", "a", 3), ("b", "c", 2), ("a", "b", 2)]
    assert pairs[2]["share_of_true"] == pytest.approx(2 / 7)  # ties in count: the larger share of its class first
    assert len(most_confused_pairs(run, k=10)) == 4  # zero cells are not pairs
    assert most_confused_pairs(toy_run(np.eye(3, dtype=int) * 4)) == []


def test_misclassified_puts_confident_mistakes_first():
    rows = [{"path": "p1", "true": "a", "pred": "b", "score": 0.4},
            {"path": "p2", "true": "a", "pred": "a", "score": 0.99},
            {"path": "p3", "true": "c", "pred": "b", "score": 0.9}]
    run = toy_run(np.zeros((3, 3), int), predictions=rows)
    assert [r["path"] for r in misclassified(run)] == ["p3", "p1"]
    assert [r["path"] for r in misclassified(run, 1)] == ["p3"]


def test_figures(run):
    bars = plot_per_class_bars(run)
    assert isinstance(bars, Figure) and len(bars.axes[0].patches) == 3 * len(run.class_names)
    heights = [p.get_height() for p in bars.axes[0].patches]
    assert heights[:3] == pytest.approx([r["precision"] for r in run.per_class])
    for fig in (curves_figure(run), confusion_figure(run)):
        assert isinstance(fig, Figure)
        image = fig.axes[0].get_images()[0].get_array()
        assert image.shape[0] > 100 and image.shape[1] > 100 and np.ptp(image) > 0


def test_frame_strip_lays_frames_side_by_side(run):
    path = run.predictions[0]["path"]
    strip = frame_strip(path, num_frames=8)
    assert strip.dtype == np.uint8 and strip.shape == (48, 8 * 48 + 7 * GAP, 3)
    assert (strip[:, 48:48 + GAP] == 255).all() and strip[:, :48].mean() < 200
    assert frame_strip(path, num_frames=30, gap=0).shape == (48, 12 * 48, 3)  # clip has only 12 frames
    assert frame_strip(path, num_frames=2, height=24, gap=0).shape == (24, 48, 3)


def test_resolve_clip_anchors_relative_paths_at_the_project_root(tmp_path):
    assert resolve_clip("clips/a.mp4", tmp_path) == tmp_path / "clips" / "a.mp4"
    assert resolve_clip(tmp_path / "x.mp4") == tmp_path / "x.mp4"


def test_plot_misclassified(run):
    fig = plot_misclassified(run, n=2)
    assert isinstance(fig, Figure)
    wrong = misclassified(run, 2)
    assert len(fig.axes) == max(1, len(wrong))
    if wrong:
        assert wrong[0]["true"] in fig.axes[0].get_title(loc="left") and fig.axes[0].get_images()
    perfect = toy_run(np.eye(3, dtype=int), predictions=[{"path": "p", "true": "a", "pred": "a", "score": 1.0}])
    assert "no misclassified" in plot_misclassified(perfect).axes[0].texts[0].get_text()


def test_attention_overlays_blend_upsampled_maps_over_frames(run):
    paths = [run.predictions[0]["path"], run.predictions[-1]["path"]]
    overlays = attention_overlays(run, paths, stages="all")
    assert [o.path for o in overlays] == paths
    for o in overlays:
        assert o.frames.dtype == np.uint8 and o.frames.shape == (4, 32, 32, 3)
        assert len(o.maps) == len(o.blended) == len(o.stage_names) == 1  # TINY: attention after stage 1 only
        assert o.maps[0].shape == (4, 32, 32) and 0.0 < o.maps[0].min() <= o.maps[0].max() < 1.0
        assert o.blended[0].shape == o.frames.shape and not np.array_equal(o.blended[0], o.frames)
        assert o.pred in run.class_names and 0.0 < o.score <= 1.0
        assert o.true == next(r["true"] for r in run.predictions if r["path"] == o.path)
    fig = plot_attention_overlays(overlays)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 2 * 4  # 2 clips x (frames + 1 map) x 4 frames
    assert len(attention_overlays(run.run_dir, n=2)) == 2  # default clips, from a path
    with pytest.raises(ValueError, match="out of range"):
        attention_overlays(run, paths[:1], stages=5)


def test_attention_of_an_evaluate_run_uses_the_checkpoint_it_names(run, tmp_path):
    metrics = {**run.metrics, "checkpoint": str(run.run_dir / "best.pt")}
    evaluated = RunResults(tmp_path, {}, metrics, [], run.confusion, run.class_names, run.predictions, [])
    (overlay,) = attention_overlays(evaluated, n=1)
    assert overlay.maps and overlay.path == run.predictions[0]["path"]


def test_heatmap_blend_and_models_without_attention():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    heat = np.zeros((2, 4, 4))
    heat[1, 2, 2] = 0.8
    assert np.array_equal(heatmap_blend(frames, heat, alpha=0.0), frames)
    full = heatmap_blend(frames, heat, alpha=1.0)
    assert full[1, 2, 2, 0] > 100 and full[1, 2, 2, 2] < 50  # hottest spot is red in "jet"
    assert full[0, 0, 0, 2] > 100  # coldest is blue
    bare = Overlay("x.mp4", "a", "a", 0.9, frames)
    assert "no SpatialAttention" in plot_attention_overlays([bare]).axes[0].texts[0].get_text()


def test_summarize_predictions_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "preds.csv"
    csv_file.write_text("path,status,label,score,label_1,score_1,warning,error\na.mp4,ok,walk,0.9,walk,0.9,,\n"
                        "b.mp4,ok,walk,0.7,walk,0.7,shorter than 8 frames,\nc.mp4,ok,run,0.5,run,0.5,,\n"
                        "d.mp4,error,,,,,,truncated: only 3 of 10 frames decode\n")
    summary = summarize_predictions(csv_file)
    assert (summary["total"], summary["ok"], summary["error"]) == (4, 3, 1)
    assert summary["labels"] == {"walk": 2, "run": 1} and summary["mean_score"] == pytest.approx(0.7)
    assert summary["errors"] == [("d.mp4", "truncated: only 3 of 10 frames decode")]
    text = format_prediction_summary(summary)
    assert summary["warnings"] == 1 and "1 with a warning" in text
    assert "4 clips, 3 ok, 1 error(s)" in text and "truncated" in text

    jsonl = tmp_path / "preds.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"path": "a.mp4", "status": "OK", "label": "jump", "score": 0.6, "error": None},
        {"path": "b.mp4", "status": "error", "label": None, "score": None, "error": "not a video"}]) + "\n")
    summary = summarize_predictions(jsonl)
    assert (summary["ok"], summary["error"], summary["labels"]) == (1, 1, {"jump": 1})

    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        summarize_predictions(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("path,label\na.mp4,walk\n")
    with pytest.raises(ValueError, match="status"):
        summarize_predictions(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("path,status,label,score,error\n")
    assert summarize_predictions(tmp_path / "empty.csv")["mean_score"] is None


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert code[0].source.splitlines() == ["RUN_DIR = None", "PREDICTIONS = None"]


def test_notebook_runs_headless(run_dir, tmp_path):
    predictions = tmp_path / "batch.csv"
    predictions.write_text("path,status,label,score,error\na.mp4,ok,left,0.8,\nb.mp4,error,,,not a video\n")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.source = f"RUN_DIR = {str(run_dir)!r}\nPREDICTIONS = {str(predictions)!r}"
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # curves, per-class bars, confusion, misclassified, attention
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "macro avg" in text and "2 clips, 1 ok, 1 error(s)" in text
