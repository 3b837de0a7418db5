"""A bench folder's ``report.html``: the results table, a per-model comparison chart (mean ± std over seeds, or
seeds x folds), and every run with its headline metrics and a link to its own report.html.

Read from the files the bench writes (results.csv, runs/*/metrics.json), so it can be made again at any time, also
while runs are missing (the page says which)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from behavior.bench_tables import METRICS, percent_spread
from behavior.report import html
from behavior.report.inspect import new_figure, read_rows
from behavior.report.run_report import REPORT_FILE

LABELS = {"top1": "top-1", "mean_class_accuracy": "mean class accuracy", "macro_f1": "macro F1"}


def is_bench_folder(folder: Path) -> bool:
    return (folder / "results.csv").is_file() or ((folder / "runs").is_dir() and not (folder / "metrics.json").exists())


def comparison_chart(rows: list[dict]) -> bytes:
    """Grouped bars per model: each headline metric's mean over its runs, the std as an error bar."""
    fig = new_figure(max(6.0, 0.9 * len(rows) + 2.5), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    width = 0.8 / len(METRICS)
    for k, key in enumerate(METRICS):
        means = [100 * float(r[f"{key}_mean"]) for r in rows]
        stds = [100 * float(r[f"{key}_std"] or 0) for r in rows]
        ax.bar(x + (k - (len(METRICS) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=LABELS[key])
    ax.set_xticks(x)
    ax.set_xticklabels([str(r["model"]) for r in rows], rotation=30 if len(rows) > 4 else 0,
                       ha="right" if len(rows) > 4 else "center")
    ax.set_ylabel("% (mean ± std over runs)")
    ax.set_ylim(0, 100)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Models compared")
    fig.tight_layout()
    return html.figure_png(fig)


def display_row(row: dict) -> dict:
    """A results.csv row as results.md shows it: metrics in percent, mean ± std."""
    runs = row.get("runs") or row["seeds"]
    counts = {k: row[k] for k in ("seeds", "folds", "runs") if k in row}
    return {"model": row["model"], **counts,
            **{f"{LABELS[k]} (%)": percent_spread(float(row[f"{k}_mean"]), float(row[f"{k}_std"] or 0), int(runs))
               for k in METRICS},
            "params (M)": f"{float(row['parameters']) / 1e6:.2f}",
            "train clips/s": f"{float(row['train_clips_per_s']):.1f}",
            "inference clips/s": f"{float(row['inference_clips_per_s']):.1f}",
            "wall time (s)": f"{float(row['wall_s']):.0f}"}


def run_rows(bench_dir: Path) -> list[dict]:
    """One row per run folder: its headline metrics (blank while unfinished) and a link to its page."""
    rows = []
    for folder in sorted(p for p in (bench_dir / "runs").glob("*") if p.is_dir()):
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
        page = folder / REPORT_FILE
        link = (html.Markup(f'<a href="{html.escape(os.path.relpath(page, bench_dir))}">report</a>')
                if page.is_file() else "no report.html yet")
        rows.append({"run": folder.name, **{LABELS[k]: metrics.get(k) for k in METRICS},
                     "status": "finished" if metrics else "not finished", "page": link})
    return rows


def write_bench_report(bench_dir: str | os.PathLike) -> Path:
    folder = Path(bench_dir)
    results = read_rows(folder / "results.csv")
    sections = []
    if results:
        sections.append(("Results", html.table([display_row(r) for r in results])))
        sections.append(("Per model", html.image(comparison_chart(results), "models compared", box="comparison")))
    else:
        sections.append(("Results", html.note("no results.csv yet: no run of this bench has finished")))
    runs = run_rows(folder)
    unfinished = [r["run"] for r in runs if r["status"] != "finished"]
    if unfinished:
        sections.append(("", html.note(f"{len(unfinished)} of {len(runs)} runs not finished: "
                                       + ", ".join(unfinished[:8]) + (" ..." if len(unfinished) > 8 else ""))))
    sections.append(("Runs", html.table(runs, bad=[r["status"] != "finished" for r in runs])))
    notes = folder / "results.md"
    subtitle = f"{folder} · {len(runs)} runs" + (" · results.md beside this page" if notes.is_file() else "")
    return html.write_page(folder / REPORT_FILE, html.page(f"Bench report: {folder.name}", subtitle, sections))
