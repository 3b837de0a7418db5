"""Compare run folders side by side: their metrics, and the config keys whose values differ between them.

    python -m behavior.compare RUN_DIR RUN_DIR [RUN_DIR ...] [--output compare.html] [--all-keys]

A RUN_DIR is a folder ``python -m behavior.train`` / ``behavior.evaluate`` or a bench
(``<bench>/runs/<model>_seed<k>``) wrote; a relative one is tried from the cwd, then from the folder the commands run
in, as ``load_run`` does. The config is the run's ``.hydra/config.yaml``, else the recipe its checkpoint carries (bench
runs have no .hydra), flattened to dotted keys. Both tables are printed, and written with a bar chart of the headline
metrics and (when every run has a history.csv) the validation accuracy curves into one self-contained HTML page.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from behavior.cli import one_line_errors
from behavior.errors import BehaviorError
from behavior.paths import work_root
from behavior.report import html
from behavior.report.inspect import CHECKPOINTS, HYDRA_CONFIG, format_table, new_figure, read_config, read_rows
from behavior.report.writer import HISTORY_CSV, METRICS_FILE, PER_CLASS_FILE

HEADLINE = ("top1", "top5", "mean_class_accuracy", "macro_f1")  # higher is better; Δ and the bar chart show these
MISSING = "—"  # a key the run's config does not have

# Keys that differ from run to run without changing what was trained or measured, left out unless --all-keys
# (a key is left out with everything under it).
IGNORED_KEYS = {
    "hydra": "Hydra's own settings: the run folder, the time, the job",
    "progress": "evaluate's progress bars",
    "trainer.progress": "progress bars",
    "trainer.resume": "where a run picked up after an interruption: the same training either way",
    "data.cache": "the decoded-clip cache folder: the same clips, decoded once",
    "data.scan_workers": "processes of the pre-scan, which only checks clips",
    "data.synthetic.workers": "processes making synthetic clips, which come out the same",
}


@dataclass
class Run:
    """One column of the comparison: what a run folder holds, parsed; absent files give empty values."""

    folder: Path
    name: str
    metrics: dict
    per_class: list[dict]
    history: list[dict]
    config: dict | None  # flattened dotted keys; None when neither .hydra nor a checkpoint gives one
    config_source: str
    notes: list[str] = field(default_factory=list)


def run_folder(run_dir: str) -> Path:
    """A RUN_DIR as a folder, resolved as ``load_run`` does; BehaviorError naming it when it holds no run."""
    folder = Path(run_dir)
    if not folder.is_absolute() and not folder.is_dir():
        folder = work_root() / folder
    if not folder.is_dir():
        raise BehaviorError(f"{run_dir}: no such run folder")
    # An interrupted run has no metrics.json yet, but its config and (after an epoch) history and last.pt.
    markers = (METRICS_FILE, HISTORY_CSV, str(HYDRA_CONFIG), *CHECKPOINTS)
    if not any((folder / m).is_file() for m in markers):
        raise BehaviorError(f"{run_dir}: not a run folder (no {METRICS_FILE}, {HYDRA_CONFIG} or checkpoint)")
    return folder.resolve()


def column_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name, with as many parent folders as it takes to tell it from the others
    (bench runs are all ``runs/<model>_seed<k>``, so one parent is not always enough)."""
    parts = [f.parts for f in folders]
    names = []
    for i, mine in enumerate(parts):
        depth = 1
        while depth < len(mine) and any(p[-depth:] == mine[-depth:] for j, p in enumerate(parts) if j != i):
            depth += 1
        names.append("/".join(mine[-depth:]))
    return names


def flatten(config: Mapping, prefix: str = "") -> dict:
    """Nested dicts as {"model.attention": True, ...}; lists stay whole values (``transform.crop_scale``)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def read_run(folder: Path, name: str) -> Run:
    metrics_file = folder / METRICS_FILE
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    except ValueError as err:
        raise BehaviorError(f"{metrics_file}: not valid JSON ({err})") from None
    # Class names read as text: a class named "01" must stay "01".
    per_class = [{**row, "f1": float(row["f1"])} for row in read_rows(folder / PER_CLASS_FILE, numeric=False)]
    history = read_rows(folder / HISTORY_CSV)
    config, source, problem = read_config(folder)
    config = None if config is None else flatten(config)
    run = Run(folder, name, metrics, per_class, history, config, source)
    if not metrics:
        run.notes.append(f"no {METRICS_FILE} (unfinished run)"
                         + (f", {len(history)} epochs in {HISTORY_CSV}" if history else ""))
    if problem:
        run.notes.append(problem)
    return run


def shown(value: object) -> str:
    """A config value as YAML writes it: null, true, [0.7, 1.0]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return str(value)


def ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def config_rows(runs: Sequence[Run], all_keys: bool = False) -> list[dict]:
    """One row per key whose value differs between the runs with a known config (missing counts as a value)."""
    known = [r for r in runs if r.config is not None]
    keys = list(dict.fromkeys(k for r in known for k in r.config))
    rows = []
    for key in keys:
        values = [r.config.get(key, MISSING) for r in known]
        if not all_keys and (ignored(key) or all(v == values[0] for v in values)):
            continue
        rows.append({"key": key, **{r.name: "unknown" if r.config is None else
                                    shown(r.config[key]) if key in r.config else MISSING for r in runs}})
    return rows


def per_class_f1(runs: Sequence[Run]) -> dict[str, list]:
    """{class: F1 per run} when every finished run has the same classes in order, else {}."""
    finished = [r for r in runs if r.per_class]
    classes = [tuple(row["class"] for row in r.per_class) for r in finished]
    if not finished or any(c != classes[0] for c in classes):
        return {}
    f1 = {r.name: {row["class"]: row["f1"] for row in r.per_class} for r in finished}
    return {c: [f1[r.name][c] if r.name in f1 else "" for r in runs] for c in classes[0]}


def metric_rows(runs: Sequence[Run]) -> tuple[list[dict], list[set[str]]]:
    """The metrics table's rows, and per row the runs holding its best value (none when all are equal)."""
    def epochs(m: Mapping) -> str:
        return f"{m['best_epoch']}/{m.get('epochs_run', '?')}" if "best_epoch" in m else ""

    table = [(key, [r.metrics.get(key, "") for r in runs], key in HEADLINE) for key in HEADLINE]
    table += [("num_clips", [r.metrics.get("num_clips", "") for r in runs], False),
              ("split", [r.metrics.get("split", "") for r in runs], False),
              ("best_epoch/epochs_run", [epochs(r.metrics) for r in runs], False)]
    table += [(f"f1:{c}", values, True) for c, values in per_class_f1(runs).items()]
    rows, best = [], []
    for key, values, higher_better in table:
        row = {"metric": key, **{r.name: v for r, v in zip(runs, values, strict=True)}}
        numbers = [v for v in values if isinstance(v, int | float)]
        top = max(numbers) if higher_better and numbers else None
        best.append({r.name for r, v in zip(runs, values, strict=True)
                     if top is not None and len(set(numbers)) > 1 and v == top})
        if len(runs) == 2 and key in HEADLINE:
            row["Δ"] = f"{values[1] - values[0]:+.4f}" if len(numbers) == 2 else ""
        rows.append(row)
    return rows, best


def text_metrics(rows: Sequence[dict], best: Sequence[set[str]]) -> list[dict]:
    """Cells as text, ``*`` after a row's best value (the others padded so the columns stay aligned)."""
    def text(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return [{k: text(v) + ("*" if k in marked else " ") if k not in ("metric", "Δ") else v for k, v in row.items()}
            for row, marked in zip(rows, best, strict=True)]


def bar_chart(runs: Sequence[Run]) -> bytes | None:
    """Grouped bars: the headline metrics, one bar per finished run; None when no run has finished."""
    finished = [r for r in runs if r.metrics]
    if not finished:
        return None
    fig = new_figure(max(6.0, 1.5 + len(HEADLINE) * (0.5 + 0.35 * len(finished))), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(HEADLINE))
    width = 0.8 / max(1, len(finished))
    for i, run in enumerate(finished):
        values = [float(run.metrics.get(k) or 0.0) for k in HEADLINE]
        ax.bar(x + (i - (len(finished) - 1) / 2) * width, values, width=width, label=run.name)
    ax.set_xticks(x)
    ax.set_xticklabels(HEADLINE)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("score")
    ax.grid(True, axis="y", alpha=0.3)
    # Above the axes: inside, it would hide the bars of whichever metric it sits on.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(3, len(finished)), fontsize=8, frameon=False)
    fig.tight_layout()
    return html.figure_png(fig)


def val_curves(runs: Sequence[Run]) -> bytes | None:
    """Validation accuracy per epoch of every run on one chart; None unless each run has history.csv with it."""
    series = [[(row["epoch"], row["val_acc"]) for row in r.history if row.get("val_acc") not in (None, "")]
              for r in runs]
    if not all(series):
        return None
    fig = new_figure(7.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for run, points in zip(runs, series, strict=True):
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=run.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return html.figure_png(fig)


def config_note(runs: Sequence[Run], config: Sequence[dict]) -> str:
    """What to say instead of the config table, or "" when there is a table."""
    if sum(r.config is not None for r in runs) < 2:
        return "fewer than two runs with a known config: nothing to compare"
    return "" if config else "no config key differs between these runs"


def html_page(runs: Sequence[Run], metrics: list[dict], best: list[set[str]], config: list[dict]) -> str:
    names = [r.name for r in runs]
    about = [{"run": r.name, "folder": str(r.folder), "config from": r.config_source, "notes": "; ".join(r.notes)}
             for r in runs]
    columns = ["metric", *names, *(["Δ"] if len(runs) == 2 else [])]
    bars = bar_chart(runs)
    sections = [("Runs", html.table(about)),
                ("Metrics", html.table(metrics, columns, strong=best)
                 + '<p class="sub">bold: the best value of a row; Δ: second run minus first</p>'
                 + (html.image(bars, "headline metrics per run") if bars is not None else "")),
                ("Config differences", html.note(config_note(runs, config)) if config_note(runs, config)
                 else html.table(config, ["key", *names]))]
    curves = val_curves(runs)
    if curves is not None:
        sections.append(("Validation accuracy", html.image(curves, "validation accuracy per epoch")))
    return html.page("Run comparison", f"{len(runs)} runs: {', '.join(names)}", sections)


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run folders, at least two")
    parser.add_argument("--output", default="compare.html", help="the HTML page to write (default compare.html)")
    parser.add_argument("--all-keys", action="store_true", help="also the config keys left out as meaningless")
    args = parser.parse_args(argv)
    if len(args.run_dirs) < 2:
        raise BehaviorError(f"give at least two run folders to compare (got {len(args.run_dirs)})")
    folders = [run_folder(d) for d in args.run_dirs]
    for d, folder in zip(args.run_dirs, folders, strict=True):
        if folders.count(folder) > 1:
            raise BehaviorError(f"{d}: the same run folder is given twice")
    runs = [read_run(f, n) for f, n in zip(folders, column_names(folders), strict=True)]
    metrics, best = metric_rows(runs)
    config = config_rows(runs, args.all_keys)
    print(format_table(text_metrics(metrics, best)))
    print("(* best value of a row)\n\nconfig differences")
    print(f"({config_note(runs, config)})" if config_note(runs, config) else format_table(config))
    for run in runs:
        for line in run.notes:
            print(f"{run.name}: {line}")
    page = html.write_page(args.output, html_page(runs, metrics, best, config))
    print(f"wrote {page.resolve()}")


if __name__ == "__main__":
    main()
