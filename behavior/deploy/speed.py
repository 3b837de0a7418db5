"""How fast and how accurate an exported model classifies, beside the checkpoint it came from.

    python -m behavior.deploy.speed RUN_DIR [--input DIR] [--repeat 2] [--batch-size 16] [--workers 2]

RUN_DIR is a training run (its ``best.pt`` and ``split.csv``). The checkpoint is exported to ONNX and torch.export
in a temp folder; then, for the checkpoint and each export, batch-classify (``behavior.predict``) runs over every
clip of the run's split (or ``--input``) into a fresh predictions file, and the model alone runs on batches of
decoded clips. Printed per model: file size, predict clips/s (median of ``--repeat`` runs: decoding included, as a
user sees it), model-only clips/s, and top-1 accuracy on the run's test split.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from behavior.config import compose_config, plain
from behavior.deploy.bundle import input_shape
from behavior.deploy.runtime import load_any_model
from behavior.export import ExportSettings, export
from behavior.predict.batch import PredictSettings
from behavior.predict.batch import run as predict
from behavior.report.inspect import read_rows

CPU = torch.device("cpu")


def read_split(run_dir: Path) -> list[dict]:
    split = run_dir / "split.csv"
    rows = read_rows(split, numeric=False)
    if not rows:
        raise SystemExit(f"error: {split}: missing or empty; give a training run folder (best.pt, split.csv)")
    for row in rows:  # older runs stored paths relative to the working directory they ran in
        row["path"] = os.path.abspath(row["path"])
        if not os.path.exists(row["path"]):
            raise SystemExit(f"error: {split}: clip {row['path']} not found (an older run stores paths relative "
                             "to the folder it was trained in: run from there)")
    return rows


def predict_once(model: Path, clips: Path, output: Path, batch_size: int, workers: int) -> tuple[float, list[dict]]:
    values = {**plain(compose_config("predict")), "checkpoint": str(model), "input": str(clips),
              "output": str(output), "progress": False, "batch_size": batch_size, "num_workers": workers}
    start = time.perf_counter()
    predict(PredictSettings.from_mapping(values))
    return time.perf_counter() - start, read_rows(output, numeric=False)


def model_rate(model: Path, batch_size: int, batches: int = 5) -> float:
    """Clips per second through the model alone, on random clips of the model's input shape."""
    net, checkpoint = load_any_model(model, CPU)
    clips = torch.randn(input_shape(checkpoint, batch_size))
    with torch.no_grad():
        net(clips)  # warm-up: ONNX Runtime and torch plan on the first call
        start = time.perf_counter()
        for _ in range(batches):
            net(clips)
    return batches * batch_size / (time.perf_counter() - start)


def accuracy(rows: list[dict], truth: dict[str, str]) -> float:
    scored = [row for row in rows if row["path"] in truth]
    return sum(row["label"] == truth[row["path"]] for row in scored) / max(len(scored), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a training run folder (best.pt, split.csv)")
    parser.add_argument("--input", type=Path, help="clips to classify (default: every clip of the run's split, "
                                                    "by their common folder)")
    parser.add_argument("--repeat", type=int, default=2, help="predict runs per model; the median is reported")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="predict's decoding workers (num_workers)")
    args = parser.parse_args(argv)
    checkpoint = args.run_dir / "best.pt"
    split = read_split(args.run_dir)
    truth = {row["path"]: row["label"] for row in split if row["split"] == "test"}
    clips = args.input or Path(os.path.commonpath([row["path"] for row in split]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = {"checkpoint (eager PyTorch)": checkpoint}
        for kind, name in (("onnx", "ONNX Runtime"), ("pt2", "torch.export")):
            start = time.perf_counter()
            models[name] = export(ExportSettings.from_mapping({**plain(compose_config("export")), "format": kind,
                                                               "checkpoint": str(checkpoint),
                                                               "output": str(folder / f"model.{kind}")}))
            print(f"{name}: exported in {time.perf_counter() - start:.1f}s")
        table = []
        for name, model in models.items():
            runs = [predict_once(model, clips, folder / f"{name[:4]}_{i}.csv", args.batch_size, args.workers)
                    for i in range(args.repeat)]
            seconds, rows = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
            table.append((name, model.stat().st_size / 2**20, len(rows), len(rows) / seconds,
                          model_rate(model, args.batch_size), accuracy(rows, truth)))
    print(f"\n{checkpoint}: {len(truth)} test clips; predict over {clips} with batch_size={args.batch_size}, "
          f"num_workers={args.workers}; torch threads {torch.get_num_threads()}")
    print("| model | file (MiB) | clips | predict clips/s | model-only clips/s | test top-1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, count, rate, alone, top1 in table:
        print(f"| {name} | {size:.1f} | {count} | {rate:.1f} | {alone:.1f} | {top1:.3f} |")


if __name__ == "__main__":
    main()
