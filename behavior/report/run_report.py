"""``report.html``: a run folder as one self-contained page — headline metrics, per-class table, confusion matrix,
curves, the most-confused pairs, and the misclassified clips as short animated previews with the model's attention.

Everything on the page comes from the functions the notebook calls (``behavior.report.inspect`` and
``behavior.report.overlays``): one implementation, two front ends. A folder with files missing (an interrupted run,
a deleted checkpoint, clips moved away) still gets a page that says what is missing and why a part is empty.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from behavior.models import SpatialAttention
from behavior.report import html
from behavior.report.inspect import (
    RunResults,
    config_text,
    confusion_figure,
    curves_figure,
    load_run,
    misclassified,
    most_confused_pairs,
    plot_per_class_bars,
)
from behavior.report.overlays import Overlay, clip_overlay, even_frames, run_model
from behavior.report.writer import (
    CONFUSION_CSV,
    CONFUSION_PNG,
    CURVES_PNG,
    HISTORY_CSV,
    METRICS_FILE,
    PER_CLASS_FILE,
    PREDICTIONS_FILE,
)

REPORT_FILE = "report.html"
PREVIEWS = 8  # misclassified clips shown as animations: a page of 1000 test clips stays a few MB
PREVIEW_FRAMES = 8
PREVIEW_HEIGHT = 112  # frames shown without a model (no checkpoint) are scaled to this height

# What each file of a run folder gives the page, for the note when it is absent.
EXPECTED = {
    METRICS_FILE: "the run did not finish its report (interrupted, or still running): no headline metrics",
    PER_CLASS_FILE: "no per-class table",
    CONFUSION_CSV: "no confusion matrix",
    PREDICTIONS_FILE: "no predictions: no misclassified clips to show",
    HISTORY_CSV: "no training curves (the run stopped before its first epoch ended)",
}


def saved_or_drawn(run: RunResults, name: str, figure: Callable[[RunResults], Figure]) -> bytes:
    """The run folder's own PNG when it is there, otherwise the notebook's figure drawn anew from the parsed files."""
    saved = run.run_dir / name
    return saved.read_bytes() if saved.is_file() else html.figure_png(figure(run))


def missing_files(run: RunResults) -> list[str]:
    # An evaluate run trains nothing: no history is expected of it.
    expected = {k: v for k, v in EXPECTED.items() if not (k == HISTORY_CSV and run.metrics.get("split") == "evaluate")}
    return [f"{name}: {why}" for name, why in expected.items() if not (run.run_dir / name).is_file()]


def headline(run: RunResults) -> str:
    m = run.metrics
    values = [(label, f"{100 * float(m[key]):.1f}%") for key, label in
              (("top1", "top-1 accuracy"), ("top5", "top-5 accuracy"), ("mean_class_accuracy", "mean class accuracy"),
               ("macro_f1", "macro F1")) if isinstance(m.get(key), int | float)]
    if "num_clips" in m:
        values.append((f"{m.get('split', '')} clips", str(m["num_clips"])))
    if "best_epoch" in m:
        values.append(("best epoch", f"{m['best_epoch']} of {m.get('epochs_run', '?')}"))
    return html.cards(values) if values else html.note("no metrics to show")


def preview_frames(overlay: Overlay) -> np.ndarray:
    """The clip as the model saw it, with its last attention heatmap beside each frame when the model has one."""
    if not overlay.blended:
        return overlay.frames
    gap = np.full((*overlay.frames.shape[:2], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([overlay.frames, gap, overlay.blended[-1]], axis=2)


def clip_previews(run: RunResults, count: int, model=None) -> str:
    """The ``count`` most confident mistakes as looping GIFs (frames | attention), each with its caption."""
    if not run.predictions:
        return html.note("no predictions.csv: no clips to show")
    rows, notes = misclassified(run, count), []
    if not rows:  # nothing wrong: the least sure right answers are the next most telling clips
        rows = sorted(run.predictions, key=lambda row: float(row["score"]))[:count]
        notes.append(f'<p class="sub">no misclassified clips among the {len(run.predictions)} predictions; '
                     "the least confident correct ones instead</p>")
    if model is None:
        try:
            model = run_model(run)
        except Exception as err:  # noqa: BLE001 - no checkpoint, another model: show the frames alone
            notes.append(html.note(f"attention not shown ({str(err).splitlines()[0]}); frames only"))
    items = []
    for row in rows:
        caption = (f"{html.escape(row['path'])}: true <b>{html.escape(row['true'])}</b>, predicted "
                   f"<b>{html.escape(row['pred'])}</b> ({float(row['score']):.2f})")
        try:
            if model is not None:
                network, names, pipeline = model
                device = next(network.parameters()).device
                frames = preview_frames(clip_overlay(network, names, pipeline, row["path"], str(row["true"]),
                                                     run.root, device=device))
            else:
                frames = even_frames(row["path"], PREVIEW_FRAMES, run.backend, PREVIEW_HEIGHT, run.root)
            width = 2 * frames.shape[2] if frames.shape[2] < 300 else frames.shape[2]
            picture = html.image(html.animated_gif(frames), f"preview of {row['path']}", "image/gif", "preview",
                                 width)
        except Exception as err:  # noqa: BLE001 - a moved or broken clip costs its preview, not the page
            picture = html.note(f"cannot show this clip: {str(err).splitlines()[0]}")
        items.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    if model is not None:
        with_maps = any(isinstance(m, SpatialAttention) for m in model[0].modules())
        notes.append('<p class="sub">left: the frames the model was given; right: its last spatial attention '
                     "(red = most attended, stretched per clip)</p>" if with_maps else
                     '<p class="sub">this model has no spatial attention modules: frames only</p>')
    return "".join(notes) + '<div class="clips">' + "".join(items) + "</div>"


def prediction_table(run: RunResults) -> str:
    rows = [{"clip": r["path"], "true": r["true"], "predicted": r["pred"], "score": float(r["score"])}
            for r in run.predictions]
    bad = [r["true"] != r["predicted"] for r in rows]
    return (f"<details><summary>all {len(rows)} predictions ({sum(bad)} wrong, tinted)</summary>"
            f"{html.table(rows, bad=bad)}</details>")


def sections(run: RunResults, previews: int, model=None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    missing = missing_files(run)
    if missing:
        out.append(("", html.note("Missing from this run folder: " + "; ".join(missing))))
    out.append(("Results", headline(run)))
    if run.per_class:
        bars = html.figure_png(plot_per_class_bars(run))
        out.append(("Per class", html.side_by_side(
            html.table(run.per_class, ["class", "precision", "recall", "f1", "support"]),
            html.image(bars, "per-class precision, recall and F1", box="per-class"))))
    if run.confusion.size:
        png = saved_or_drawn(run, CONFUSION_PNG, confusion_figure)
        pairs = most_confused_pairs(run)
        confused = (html.table(pairs, headers={"share_of_true": "share of true class"}) if pairs
                    else '<p class="sub">no confusions</p>')
        out.append(("Confusion matrix", html.side_by_side(html.image(png, "confusion matrix", box="confusion"),
                                                          "<h3>Most confused pairs</h3>" + confused)))
    if run.history:
        out.append(("Training curves", html.image(saved_or_drawn(run, CURVES_PNG, curves_figure),
                                                  "training curves", box="curves")))
    out.append((f"Misclassified clips (the {previews} most confident mistakes)",
                clip_previews(run, previews, model)))
    if run.predictions:
        out.append(("Predictions", prediction_table(run)))
    if run.config:
        out.append(("Configuration", f"<details><summary>the run's config</summary>"
                                     f"<pre>{html.escape(config_text(run))}</pre></details>"))
    return out


def write_run_report(run_dir: str | os.PathLike, previews: int = PREVIEWS, model=None) -> Path:
    """Write ``run_dir/report.html`` and return its path. ``model``: (network, class names, eval pipeline) already
    in memory (the run that just reported); by default the run's checkpoint is loaded."""
    run = load_run(run_dir, partial=True)
    m = run.metrics
    model_name = (run.config.get("model") or {}).get("name") if run.config else None
    subtitle = " · ".join(str(part) for part in (
        run.run_dir, model_name and f"model {model_name}", m.get("split") and f"{m['split']} split",
        (m.get("provenance") or {}).get("git_commit") and f"commit {m['provenance']['git_commit'][:10]}",
        time.strftime("%Y-%m-%d %H:%M", time.localtime((run.run_dir / METRICS_FILE).stat().st_mtime))
        if (run.run_dir / METRICS_FILE).is_file() else "unfinished") if part)
    page = html.page(f"Run report: {run.run_dir.name}", subtitle, sections(run, previews, model))
    return html.write_page(run.run_dir / REPORT_FILE, page)


def report_quietly(run_dir: Path, model=None) -> Path | None:
    """:func:`write_run_report` after a run: a page that cannot be made costs a warning, never the run's files."""
    try:
        return write_run_report(run_dir, model=model)
    except Exception as err:  # noqa: BLE001 - the metrics and checkpoints are written already
        print(f"warning: {Path(run_dir) / REPORT_FILE} not written: {str(err).splitlines()[0]}")
        return None

