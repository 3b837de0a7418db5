"""``python -m behavior.evaluate checkpoint=PATH data.root=DIR``: the full report for every clip under DIR."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from behavior.cli import entry_point
from behavior.config import Settings, check_bool, check_device, check_number, check_text, device_of
from behavior.data.pipeline import ClipPipeline
from behavior.data.prepare import check_cache_folder, clip_cache, clip_regions, resolve_records
from behavior.data.prescan import ScanResult, prescan, write_bad_clips
from behavior.data.settings import EvaluateData
from behavior.engine.checkpoint import Checkpoint, load_model, read_checkpoint
from behavior.engine.distributed import World, collective, on_main, rank_device, start
from behavior.engine.evaluation import EvalLoader, evaluate_split
from behavior.engine.finetune import weights_provenance
from behavior.engine.inference import pipeline_of
from behavior.engine.loop import amp_enabled
from behavior.errors import DataError
from behavior.provenance import file_sha256
from behavior.video import DecodeOverride


@dataclass(frozen=True)
class EvaluateSettings(Settings):
    """conf/evaluate.yaml, checked: sampling, transforms, regions and classes come from the checkpoint."""

    GROUP = ""
    checkpoint: str
    data: EvaluateData
    decode: DecodeOverride
    num_views: int | None
    batch_size: int
    num_workers: int
    device: str
    amp: bool
    progress: bool

    def __post_init__(self) -> None:
        check_text("checkpoint", self.checkpoint, what="the checkpoint to evaluate (checkpoint=PATH/best.pt)")
        object.__setattr__(self, "data", EvaluateData.from_mapping(self.data))
        object.__setattr__(self, "decode", DecodeOverride.from_mapping(self.decode))
        check_number("num_views", self.num_views, 1, integer=True, none_ok=True)
        check_number("batch_size", self.batch_size, 1, integer=True)
        check_number("num_workers", self.num_workers, 0, integer=True)
        check_device("device", self.device)
        check_bool("amp", self.amp)
        check_bool("progress", self.progress)


@dataclass(frozen=True)
class EvaluatePlan:
    """An evaluation checked before its folder exists: the model, the readable clips and where the report goes."""

    settings: EvaluateSettings
    run_dir: Path
    model: torch.nn.Module
    checkpoint: Checkpoint
    checkpoint_sha256: str
    pipeline: ClipPipeline
    scan: ScanResult
    ranks: World  # torchrun's processes (one by default)


def report_folder(run_dir: Path) -> Path:
    """Where the report goes: ``run_dir``, unless that folder already holds files (a training run's folder, an
    earlier evaluation): then a new sub-folder of it, so nothing finished is replaced."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return run_dir
    inside = run_dir / f"evaluate_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    holds = "a training run" if (run_dir / "best.pt").exists() or (run_dir / "last.pt").exists() else "files"
    print(f"warning: hydra.run.dir={run_dir} holds {holds}; left as it is: the report goes to {inside}",
          file=sys.stderr)
    return inside


def check_clips(settings: EvaluateSettings, run_dir: Path) -> tuple[str, ScanResult, Path]:
    """The checkpoint's sha256, the pre-scanned clips and the report folder; done once (rank 0 under torchrun)."""
    checkpoint = read_checkpoint(settings.checkpoint)
    checkpoint_sha256 = file_sha256(settings.checkpoint)  # now: the bytes loaded, even if the file is replaced later
    data = settings.data
    check_cache_folder(data)
    records, _ = resolve_records(data.root, data.manifest)
    unknown = sorted({r.label for r in records} - set(checkpoint.class_names))
    if unknown:
        raise DataError(f"class(es) {unknown} under {data.root or data.manifest} are not among the "
                        f"checkpoint's classes {checkpoint.class_names}")
    pipeline = pipeline_of(checkpoint, settings.decode.backend, settings.num_views)
    scan = prescan(records, backend=pipeline.backend, verify=data.prescan == "full", progress=settings.progress,
                   timeout=data.decode_timeout)
    if not scan.good:
        raise DataError(f"no readable clips under {data.root or data.manifest}")
    return checkpoint_sha256, scan, report_folder(run_dir)


def prepare(cfg: DictConfig, run_dir: Path, run_dir_given: bool) -> EvaluatePlan:
    settings = EvaluateSettings.from_mapping(cfg)
    ranks = start(device_of(settings.device))
    with collective(ranks):
        checkpoint_sha256, scan, report_dir = on_main(lambda: check_clips(settings, run_dir))
    model, checkpoint = load_model(settings.checkpoint, rank_device(device_of(settings.device), ranks))
    pipeline = pipeline_of(checkpoint, settings.decode.backend, settings.num_views)
    return EvaluatePlan(settings, report_dir, model, checkpoint, checkpoint_sha256, pipeline, scan, ranks)


def run(plan: EvaluatePlan) -> dict:
    """The report; under torchrun each rank classifies its shard of the clips and rank 0 writes the report."""
    with collective(plan.ranks):
        return _report(plan, plan.ranks)


def _report(plan: EvaluatePlan, here: World) -> dict:
    began = time.perf_counter()
    settings, run_dir, scan, checkpoint = plan.settings, plan.run_dir, plan.scan, plan.checkpoint
    data = settings.data
    device = rank_device(device_of(settings.device), here)
    if here.main:
        write_bad_clips(run_dir / "bad_clips.csv", scan.bad)
    if scan.bad:
        print(f"{len(scan.bad)} unreadable clip(s) left out, listed in {run_dir / 'bad_clips.csv'}")
    origin = weights_provenance(checkpoint.state.get("initial_weights"))
    if origin:
        print(f"the model was trained from {origin['pretrained']} ({origin['kind']}, sha256 "
              f"{(origin['sha256'] or '?')[:12]}): {origin['summary']}")
    pipeline = plan.pipeline
    cache = clip_cache(data, pipeline.backend, pipeline.transform, pipeline.flow)
    # The checkpoint's region settings: evaluation crops the way training did.
    regions = clip_regions({"evaluate": scan.good}, pipeline.roi, pipeline.backend, scan.num_frames,
                           run_dir if here.main else None, settings.progress, cache)
    pipeline = replace(pipeline, timeout=data.decode_timeout, cache=cache, num_frames=scan.num_frames,
                       regions=regions)
    metrics = evaluate_split(plan.model, scan.good, checkpoint.class_names, pipeline, device,
                             amp_enabled(settings.amp, device),
                             EvalLoader(settings.batch_size, settings.num_workers, settings.progress), run_dir,
                             "evaluate", extra={"checkpoint": settings.checkpoint, "unreadable_clips": len(scan.bad),
                                                "initial_weights": origin},
                             checkpoint=settings.checkpoint, checkpoint_sha256=plan.checkpoint_sha256)
    print(f"wall time {time.perf_counter() - began:.1f}s; report in {run_dir}")
    return metrics


@entry_point("evaluate", prepare=prepare, log=True)
def main(cfg: DictConfig, plan: EvaluatePlan) -> float:
    return run(plan).get("top1", float("nan"))


if __name__ == "__main__":
    main()
