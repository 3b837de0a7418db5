"""``python -m behavior.evaluate checkpoint=PATH data.root=DIR``: the full report for every clip under DIR."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from behavior.cli import entry_point, hydra_run_dir, select_device
from behavior.data.cache import ClipCache
from behavior.data.prepare import clip_cache, clip_regions, decode_timeout, make_loader, resolve_records
from behavior.data.prescan import prescan, write_bad_clips
from behavior.data.records import ClipRecord
from behavior.data.roi import Region, roi_config
from behavior.data.sampling import SamplingConfig, sampling_config
from behavior.data.settings import check_keys, data_config
from behavior.data.transforms import TransformConfig, build_transform, transform_config
from behavior.engine.checkpoint import load_model
from behavior.engine.loop import amp_enabled, predict
from behavior.errors import ConfigError, DataError
from behavior.provenance import file_sha256
from behavior.report import format_per_class_table, per_class_rows, write_report


def evaluate_split(model, records: Sequence[ClipRecord], class_names: Sequence[str], sampling: SamplingConfig,
                   transform: TransformConfig, backend: str, num_frames: Mapping[str, int] | None,
                   device: torch.device, amp: bool, loader_cfg: Mapping, out_dir: Path, split: str,
                   extra: Mapping | None = None, cache: ClipCache | None = None,
                   clip_timeout: float | None = None, regions: Mapping[str, Region] | None = None,
                   checkpoint: str | Path | None = None, checkpoint_sha256: str | None = None) -> dict:
    """Predict every clip, write the report files into ``out_dir`` and print the per-class table.

    ``checkpoint`` (and its sha256, when hashed as it was loaded) goes into metrics.json's provenance."""
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    loader = make_loader(records, class_to_idx, sampling, build_transform(transform, train=False), False,
                         loader_cfg["eval_batch_size"], loader_cfg["num_workers"], backend, dict(num_frames or {}),
                         seed=0, pin_memory=device.type == "cuda", cache=cache, clip_timeout=clip_timeout,
                         regions=regions)
    indices, labels, probs = predict(model, loader, device, amp, desc=f"evaluate {split}",
                                     progress=loader_cfg.get("progress", True))
    paths = [records[i].path for i in indices]
    metrics = write_report(out_dir, paths, labels.tolist(), probs, list(class_names), split=split, extra=extra,
                           checkpoint=checkpoint, checkpoint_sha256=checkpoint_sha256)
    rows = per_class_rows(labels.tolist(), probs.argmax(1).tolist(), list(class_names))
    print(f"\nper-class results on the {split} split ({len(records)} clips):")
    print(format_per_class_table(rows, metrics))
    return metrics


@entry_point("evaluate")
def main(cfg: DictConfig) -> float:
    start = time.perf_counter()
    if not cfg.checkpoint:
        raise ConfigError("checkpoint: give the checkpoint to evaluate (checkpoint=PATH/best.pt)")
    if not cfg.data.root and not cfg.data.manifest:
        raise ConfigError("data.root: give the clips to evaluate (data.root=DIR or data.manifest=FILE)")
    data_config(cfg.data)
    check_keys(cfg.decode, "decode", ("backend",))
    run_dir = hydra_run_dir()
    device = select_device(cfg.device)
    model, state = load_model(cfg.checkpoint, device)
    checkpoint_sha256 = file_sha256(cfg.checkpoint)  # now: the bytes loaded, even if the file is replaced later
    class_names = list(state["class_names"])
    records, _ = resolve_records(cfg.data)
    unknown = sorted({r.label for r in records} - set(class_names))
    if unknown:
        raise DataError(f"class(es) {unknown} under {cfg.data.root or cfg.data.manifest} are not among the "
                        f"checkpoint's classes {class_names}")
    backend = cfg.decode.backend or state.get("decode", {}).get("backend", "pyav")
    sampling_dict = dict(state["sampling"])
    if cfg.num_views:
        sampling_dict["num_views"] = cfg.num_views
    scan = prescan(records, backend=backend, verify=cfg.data.prescan == "full", progress=cfg.progress,
                   timeout=decode_timeout(cfg.data))
    write_bad_clips(run_dir / "bad_clips.csv", scan.bad)
    if scan.bad:
        print(f"{len(scan.bad)} unreadable clip(s) left out, listed in {run_dir / 'bad_clips.csv'}")
    if not scan.good:
        raise DataError(f"no readable clips under {cfg.data.root or cfg.data.manifest}")
    amp = amp_enabled(cfg.amp, device)
    transform = transform_config(state["transform"])
    cache = clip_cache(cfg.data, backend, transform)
    # The checkpoint's region settings: evaluation crops the way training did.
    regions = clip_regions({"evaluate": scan.good}, roi_config(state.get("roi")), backend, scan.num_frames, run_dir,
                           cfg.progress, cache)
    metrics = evaluate_split(model, scan.good, class_names, sampling_config(sampling_dict),
                             transform, backend, scan.num_frames, device, amp,
                             {"eval_batch_size": cfg.batch_size, "num_workers": cfg.num_workers,
                              "progress": cfg.progress}, run_dir, "evaluate",
                             extra={"checkpoint": str(cfg.checkpoint), "unreadable_clips": len(scan.bad)},
                             cache=cache, clip_timeout=decode_timeout(cfg.data), regions=regions,
                             checkpoint=cfg.checkpoint, checkpoint_sha256=checkpoint_sha256)
    print(f"wall time {time.perf_counter() - start:.1f}s; report in {run_dir}")
    return metrics["top1"]


if __name__ == "__main__":
    main()
