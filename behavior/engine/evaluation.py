"""Evaluate a model on a list of clips: predict every clip, write the report files, print the per-class table.

Shared by ``behavior.train`` (its final report) and ``behavior.evaluate`` (a checkpoint on new clips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from behavior.data.pipeline import ClipPipeline
from behavior.data.records import ClipRecord
from behavior.engine.distributed import active, gather_predictions, shard, unwrap
from behavior.engine.loop import predict
from behavior.report import format_per_class_table, per_class_rows, write_report
from behavior.report.run_report import report_quietly


@dataclass(frozen=True)
class EvalLoader:
    """How evaluation batches are formed (train's ``trainer.eval_batch_size``..., evaluate's ``batch_size``...)."""

    batch_size: int
    num_workers: int
    progress: bool


def evaluate_split(model, records: Sequence[ClipRecord], class_names: Sequence[str], pipeline: ClipPipeline,
                   device: torch.device, amp: bool, loading: EvalLoader, out_dir: Path, split: str,
                   extra: Mapping | None = None, checkpoint: str | Path | None = None,
                   checkpoint_sha256: str | None = None) -> dict:
    """Predict every clip through ``pipeline``, write the report files into ``out_dir`` and print the per-class
    table; returns the metrics. ``checkpoint`` (and its sha256, when hashed as it was loaded) goes into
    metrics.json's provenance."""
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    # Under torchrun each rank predicts its shard (no clip twice, no padding) and rank 0 writes the report of all
    # of them: the same files one process writes.
    here = active()
    loader = pipeline.loader(shard(records, here), class_to_idx, False, loading.batch_size, loading.num_workers,
                             seed=0, pin_memory=device.type == "cuda")
    # Not the split's name: behavior.evaluate names its split "evaluate", and its bar read "evaluate: ..." under
    # the command of that name.
    indices, labels, probs = gather_predictions(*predict(unwrap(model), loader, device, amp, desc="classify clips",
                                                         progress=loading.progress))
    if not here.main:
        return {}
    paths = [records[i].path for i in indices]
    extra = {**(extra or {}), "decode_backend": pipeline.backend}
    metrics = write_report(out_dir, paths, labels.tolist(), probs, list(class_names), split=split, extra=extra,
                           checkpoint=checkpoint, checkpoint_sha256=checkpoint_sha256)
    rows = per_class_rows(labels.tolist(), probs.argmax(1).tolist(), list(class_names))
    print(f"\nper-class results on the {split} split ({len(records)} clips):")
    print(format_per_class_table(rows, metrics))
    # The page shows the attention of the model in hand, so it needs no checkpoint read back.
    report_quietly(out_dir, model=(unwrap(model), list(class_names), pipeline))
    return metrics
