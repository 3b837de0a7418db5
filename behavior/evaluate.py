"""``python -m behavior.evaluate checkpoint=PATH data.root=DIR``: the full report for every clip under DIR."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from omegaconf import DictConfig

from behavior.cli import entry_point, hydra_run_dir
from behavior.config import Settings, check_bool, check_device, check_number, check_text, device_of
from behavior.data.prepare import clip_cache, clip_regions, resolve_records
from behavior.data.prescan import prescan, write_bad_clips
from behavior.data.settings import EvaluateData
from behavior.engine.checkpoint import load_model
from behavior.engine.evaluation import EvalLoader, evaluate_split
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


def run(settings: EvaluateSettings) -> dict:
    start = time.perf_counter()
    run_dir = hydra_run_dir()
    device = device_of(settings.device)
    model, checkpoint = load_model(settings.checkpoint, device)
    checkpoint_sha256 = file_sha256(settings.checkpoint)  # now: the bytes loaded, even if the file is replaced later
    data = settings.data
    records, _ = resolve_records(data.root, data.manifest)
    unknown = sorted({r.label for r in records} - set(checkpoint.class_names))
    if unknown:
        raise DataError(f"class(es) {unknown} under {data.root or data.manifest} are not among the "
                        f"checkpoint's classes {checkpoint.class_names}")
    pipeline = pipeline_of(checkpoint, settings.decode.backend, settings.num_views)
    scan = prescan(records, backend=pipeline.backend, verify=data.prescan == "full", progress=settings.progress,
                   timeout=data.decode_timeout)
    write_bad_clips(run_dir / "bad_clips.csv", scan.bad)
    if scan.bad:
        print(f"{len(scan.bad)} unreadable clip(s) left out, listed in {run_dir / 'bad_clips.csv'}")
    if not scan.good:
        raise DataError(f"no readable clips under {data.root or data.manifest}")
    cache = clip_cache(data, pipeline.backend, pipeline.transform, pipeline.flow)
    # The checkpoint's region settings: evaluation crops the way training did.
    regions = clip_regions({"evaluate": scan.good}, pipeline.roi, pipeline.backend, scan.num_frames, run_dir,
                           settings.progress, cache)
    pipeline = replace(pipeline, timeout=data.decode_timeout, cache=cache, num_frames=scan.num_frames,
                       regions=regions)
    metrics = evaluate_split(model, scan.good, checkpoint.class_names, pipeline, device,
                             amp_enabled(settings.amp, device),
                             EvalLoader(settings.batch_size, settings.num_workers, settings.progress), run_dir,
                             "evaluate", extra={"checkpoint": settings.checkpoint, "unreadable_clips": len(scan.bad)},
                             checkpoint=settings.checkpoint, checkpoint_sha256=checkpoint_sha256)
    print(f"wall time {time.perf_counter() - start:.1f}s; report in {run_dir}")
    return metrics


@entry_point("evaluate")
def main(cfg: DictConfig) -> float:
    return run(EvaluateSettings.from_mapping(cfg))["top1"]


if __name__ == "__main__":
    main()
