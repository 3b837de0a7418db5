"""Read a finished run folder back for inspection: tables, per-class bars, confused pairs, mistakes.

Everything here reads the files ``python -m behavior.train`` / ``behavior.evaluate`` write (see
``behavior/report/writer.py``) and returns plain Python values, strings or matplotlib Figures, so
the notebook ``notebooks/inspect_results.ipynb`` only calls these functions and the tests can check
the same values without a display. Pandas is deliberately not used: it is not a project dependency.
Frame strips and attention overlays, which need the decoder and the model, live in
``behavior/report/overlays.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from behavior.paths import RUN_ROOTS, run_origin, work_root
from behavior.report.metrics import format_per_class_table
from behavior.report.plots import plot_confusion_matrix, plot_curves
from behavior.report.writer import (
    CONFUSION_CSV,
    HISTORY_CSV,
    METRICS_FILE,
    PER_CLASS_FILE,
    PREDICTIONS_FILE,
    PROB_PREFIX,
)


def new_figure(width: float, height: float) -> Figure:
    """A Figure with an Agg canvas and no pyplot: works headless, and Jupyter still renders it inline."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def newest_run(roots: str | os.PathLike | Sequence[str | os.PathLike] = RUN_ROOTS,
               base: str | os.PathLike | None = None) -> Path:
    """The most recently finished run folder (the one whose metrics.json is newest) under ``roots``.

    Relative roots are taken under ``base`` (default: :func:`behavior.paths.work_root`). metrics.json is written
    last, so a folder of a run that crashed or is still training is never picked.
    """
    if isinstance(roots, str | os.PathLike):
        roots = [roots]
    base_dir = Path(base) if base is not None else work_root()
    folders = [Path(r) if Path(r).is_absolute() else base_dir / r for r in roots]
    found = [m for folder in folders if folder.is_dir() for m in folder.rglob(METRICS_FILE)]
    if not found:
        searched = ", ".join(str(f) for f in folders)
        raise FileNotFoundError(f"no finished run (a folder with {METRICS_FILE}) under {searched}; train one with "
                                "`python -m behavior.train` or set RUN_DIR to a run folder")
    return max(found, key=lambda m: (m.stat().st_mtime, str(m))).parent


def _number(text: str) -> float | int | str:
    """CSV cell -> int or float when it is one (empty stays ''), else the text unchanged."""
    if text is None or text == "":
        return ""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_rows(path: str | os.PathLike, numeric: bool = True) -> list[dict]:
    """Rows of a CSV file as dicts; numbers parsed when ``numeric``; a missing file gives []."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if numeric:
        rows = [{k: _number(v) for k, v in row.items()} for row in rows]
    return rows


def _read_confusion(path: Path) -> tuple[np.ndarray, list[str]]:
    if not path.is_file():
        return np.zeros((0, 0), dtype=np.int64), []
    with open(path, newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    names = lines[0][1:]
    counts = np.array([[int(v) for v in line[1:]] for line in lines[1:] if line], dtype=np.int64)
    return counts.reshape(len(names), len(names)), names


@dataclass
class RunResults:
    """Everything a run folder reports, parsed; optional files that are absent give empty values."""

    run_dir: Path
    config: dict
    metrics: dict
    per_class: list[dict]
    confusion: np.ndarray
    class_names: list[str]
    predictions: list[dict]
    history: list[dict]
    split: list[dict] = field(default_factory=list)

    @property
    def backend(self) -> str:
        """The decoder the run used (metrics.json records it), so clips are shown exactly as the model saw them."""
        if "decode_backend" in self.metrics:
            return str(self.metrics["decode_backend"])
        return str(self.config["decode"]["backend"]) if "decode" in self.config else "pyav"  # older run folders

    @property
    def root(self) -> Path:
        """Where relative clip paths in the CSV files are anchored: the folder the run was started from."""
        return run_origin(self.run_dir)


HYDRA_CONFIG = Path(".hydra") / "config.yaml"
CHECKPOINTS = ("best.pt", "last.pt")


def read_config(folder: Path) -> tuple[dict | None, str, str]:
    """A run's configuration, where it came from and, when it could not be read, why: Hydra's record of it (train
    and evaluate runs), else the recipe its checkpoint keeps (bench runs have no .hydra folder)."""
    if (folder / HYDRA_CONFIG).is_file():
        try:
            config = yaml.safe_load((folder / HYDRA_CONFIG).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            return None, "unknown", f"{HYDRA_CONFIG} does not parse ({str(err).splitlines()[0]})"
        if not isinstance(config, Mapping):
            return None, "unknown", f"{HYDRA_CONFIG} is not a mapping of settings"
        return config, str(HYDRA_CONFIG), ""
    from behavior.engine.checkpoint import CheckpointError, read_checkpoint  # torch and every model: only here

    for name in CHECKPOINTS:
        if (folder / name).is_file():
            try:  # read_checkpoint loads with weights_only=True: a checkpoint never runs code here
                return read_checkpoint(folder / name).recipe.to_dict(), name, ""
            except CheckpointError as err:
                return None, "unknown", str(err)
    return None, "unknown", f"config unknown: no {HYDRA_CONFIG} and no checkpoint"


def load_run(run_dir: str | os.PathLike | None = None, partial: bool = False) -> RunResults:
    """Parse a run folder; ``None`` means :func:`newest_run`. A relative path is tried from the cwd, then
    from the folder the commands run in (:func:`behavior.paths.work_root`). Raises FileNotFoundError unless the
    folder holds a finished report, or, with ``partial``, unless it is a folder (an interrupted run's files are
    read as they are, the missing ones give empty values)."""
    if run_dir is None:
        folder = newest_run()
    else:
        folder = Path(run_dir)
        if not folder.is_absolute() and not folder.is_dir():
            folder = work_root() / folder
    if not (folder / METRICS_FILE).is_file() and not (partial and folder.is_dir()):
        state = "does not exist" if not folder.is_dir() else f"has no {METRICS_FILE} (unfinished or not a run)"
        raise FileNotFoundError(f"run folder {folder} {state}")
    metrics_file = folder / METRICS_FILE
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    config = read_config(folder)[0] or {}
    confusion, names = _read_confusion(folder / CONFUSION_CSV)
    # Read as text and convert known numeric columns only: a class named "1" must stay a name.
    predictions = read_rows(folder / PREDICTIONS_FILE, numeric=False)
    for row in predictions:
        for key in row:
            if key == "score" or key.startswith(PROB_PREFIX):
                row[key] = float(row[key])
        row["correct"] = int(row["correct"])
    per_class = read_rows(folder / PER_CLASS_FILE, numeric=False)
    for row in per_class:
        row.update({k: float(row[k]) for k in ("precision", "recall", "f1")}, support=int(row["support"]))
    return RunResults(folder, config, metrics, per_class, confusion,
                      names or list(metrics.get("class_names", [])), predictions,
                      read_rows(folder / HISTORY_CSV), read_rows(folder / "split.csv", numeric=False))


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Aligned plain-text table of dict rows (floats to 4 decimals); ``columns`` picks and orders keys."""
    rows = list(rows)
    if not rows:
        return "(no rows)"
    keys = list(columns) if columns is not None else list(rows[0])

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    body = [[cell(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(str(k)), *(len(line[i]) for line in body)) for i, k in enumerate(keys)]
    numeric = [all(isinstance(row.get(k), int | float) for row in rows) for k in keys]

    def fmt(line: Sequence[str]) -> str:
        return " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(line, widths, numeric, strict=True))

    return "\n".join([fmt([str(k) for k in keys]), "-+-".join("-" * w for w in widths),
                      *(fmt(line).rstrip() for line in body)])


def config_text(run: RunResults, sections: Sequence[str] | None = None) -> str:
    """The run's configuration as YAML, optionally only some top-level sections (e.g. model, data)."""
    config = run.config if sections is None else {k: run.config[k] for k in sections if k in run.config}
    return yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False).rstrip()


class _ConfigDumper(yaml.SafeDumper):
    """Lists on one line ([24, 48, 96]) as in conf/*.yaml; block style makes a config three times as long."""


_ConfigDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


def metrics_table(run: RunResults) -> str:
    """Per-class precision/recall/F1/support, a macro row and the headline metrics, as plain text."""
    m = run.metrics
    head = f"{m.get('split', '?')} split, {m.get('num_clips', '?')} clips"
    if "best_epoch" in m:
        head += f"; best epoch {m['best_epoch']} of {m.get('epochs_run', '?')}"
    return f"{run.run_dir}\n{head}\n\n{format_per_class_table(run.per_class, m)}"


def plot_per_class_bars(run: RunResults, ax=None) -> Figure:
    """Grouped bars of precision, recall and F1 per class, support under each class name."""
    if ax is None:
        fig = new_figure(max(5.0, 1.1 * len(run.per_class) + 2.0), 4.0)
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    names = [f"{r['class']}\n(n={r['support']})" for r in run.per_class]
    x = np.arange(len(names))
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1"), strict=True):
        values = [float(r[key]) for r in run.per_class]
        ax.bar(x + offset, values, width=0.27, label=key)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"Per-class results - {run.metrics.get('split', '')} ({run.metrics.get('num_clips', '?')} clips)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return fig


def image_figure(path: str | os.PathLike) -> Figure:
    """Show a PNG at its own pixel size in a Figure (how the report's saved plots are displayed)."""
    pixels = imread(os.fspath(path))
    fig = new_figure(pixels.shape[1] / 100, pixels.shape[0] / 100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(pixels)
    ax.set_axis_off()
    return fig


def _via_png(draw) -> Figure:
    # The report's plot functions write PNGs; drawing them fresh from the parsed data into a temp file
    # keeps one look for saved and inspected plots, and works when the run's PNG was deleted.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        draw(path)
        return image_figure(path)


def curves_figure(run: RunResults) -> Figure:
    """Loss, accuracy and learning rate per epoch, from history.csv."""
    return _via_png(lambda path: plot_curves(run.history, path))


def confusion_figure(run: RunResults) -> Figure:
    """The confusion matrix: colours row-normalised (recall per true class), counts in the cells."""
    title = f"Confusion matrix - {run.metrics.get('split', '')} ({int(run.confusion.sum())} clips)"
    return _via_png(lambda path: plot_confusion_matrix(run.confusion, run.class_names, path, title=title))


def most_confused_pairs(run: RunResults, k: int = 5) -> list[dict]:
    """The ``k`` largest off-diagonal cells: true class, predicted class, clips, and their share of the
    true class. Ties are broken by the larger share, then by class order; zero cells are left out."""
    cm = run.confusion
    support = cm.sum(axis=1)
    pairs = [(int(cm[i, j]), cm[i, j] / support[i], i, j)
             for i in range(cm.shape[0]) for j in range(cm.shape[1]) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], -p[1], p[2], p[3]))
    return [{"true": run.class_names[i], "predicted": run.class_names[j], "clips": n, "share_of_true": float(s)}
            for n, s, i, j in pairs[:k]]


def misclassified(run: RunResults, n: int | None = None) -> list[dict]:
    """Prediction rows the model got wrong, most confident mistakes first (those are the telling ones)."""
    wrong = [row for row in run.predictions if str(row["true"]) != str(row["pred"])]
    wrong.sort(key=lambda row: -float(row["score"]))
    return wrong if n is None else wrong[:n]


def class_probabilities(row: Mapping) -> dict[str, float]:
    """The ``prob:<class>`` columns of a prediction row as {class: probability}."""
    return {k[len(PROB_PREFIX):]: float(v) for k, v in row.items() if k.startswith(PROB_PREFIX)}
