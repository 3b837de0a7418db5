"""Compose the data stages for a run: find clips, pre-scan them, split, and build loaders."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from behavior.data.cache import CacheSettings, ClipCache
from behavior.data.dataset import ClipDataset
from behavior.data.prescan import DEFAULT_TIMEOUT, BadClip, prescan, write_bad_clips
from behavior.data.records import ClipRecord
from behavior.data.roi import Region, RegionCache, RoiConfig, find_regions, summarise_regions, write_regions
from behavior.data.sampling import SamplingConfig
from behavior.data.scan import load_records
from behavior.data.settings import PRESCAN_MODES
from behavior.data.splits import Split, check_split_config, split_records, write_split
from behavior.data.timed_loader import TimedLoader
from behavior.data.transforms import TransformConfig
from behavior.errors import ConfigError, DataError
from behavior.paths import user_path


@dataclass
class PreparedData:
    class_names: list[str]
    split: Split
    num_frames: dict[str, int]
    bad: list[BadClip]

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}


def resolve_records(data_cfg: Mapping) -> tuple[list[ClipRecord], Path]:
    """The clips named by ``data.root`` / ``data.manifest``, or the built-in synthetic set when neither is set."""
    root, manifest = data_cfg.get("root"), data_cfg.get("manifest")
    if not root and not manifest:
        from behavior.data.synthetic import SyntheticSpec, ensure_synthetic

        syn = data_cfg.get("synthetic") or {}
        spec = SyntheticSpec(clips_per_class=int(syn.get("clips_per_class", 50)), seed=int(syn.get("seed", 0)))
        root = str(user_path(syn.get("root") or "data/synthetic"))
        ensure_synthetic(root, spec, workers=int(syn.get("workers", 2)))
    records = load_records(root, manifest)
    return records, Path(manifest).parent if manifest else Path(root)


def decode_timeout(data_cfg: Mapping, key: str = "data.decode_timeout") -> float | None:
    """Seconds one clip may take to decode (pre-scan, loader workers) before it is abandoned; None = no limit.

    Read from ``data_cfg[<last part of key>]``; ``key`` names the setting in the error."""
    value = data_cfg.get(key.rpartition(".")[2], DEFAULT_TIMEOUT)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a number of seconds > 0, or null for no limit")
    return float(value)


def prepare_data(data_cfg: Mapping, backend: str, seed: int, run_dir: Path | None = None,
                 progress: bool = True) -> PreparedData:
    method = data_cfg.get("split", "stratified")
    val_fraction, test_fraction = float(data_cfg.get("val_fraction", 0.15)), float(data_cfg.get("test_fraction", 0.15))
    check_split_config(method, val_fraction, test_fraction)
    mode = data_cfg.get("prescan", "full")
    if mode not in PRESCAN_MODES:
        raise ConfigError(f"data.prescan={mode!r}: choose one of {', '.join(PRESCAN_MODES)}")
    records, base = resolve_records(data_cfg)
    start = time.perf_counter()
    if mode == "off":
        good, bad, num_frames = records, [], {}
    else:
        scan = prescan(records, backend=backend, verify=mode == "full", workers=int(data_cfg.get("scan_workers", 2)),
                       progress=progress, timeout=decode_timeout(data_cfg))
        good, bad, num_frames = scan.good, scan.bad, scan.num_frames
        print(f"scanned {len(records)} clips in {time.perf_counter() - start:.1f}s: {len(good)} readable, "
              f"{len(bad)} unreadable" + (" (listed in bad_clips.csv)" if bad and run_dir else ""))
    if not good:
        raise DataError(f"no readable clips among {len(records)} (first reason: {bad[0].reason if bad else '-'})")
    if run_dir is not None and mode != "off":  # written even when empty: proof the scan ran
        write_bad_clips(run_dir / "bad_clips.csv", bad)
    class_names = sorted({r.label for r in records})
    if len(class_names) < 2:
        raise DataError(f"need at least 2 classes, found {class_names}")
    split = split_records(good, method, val_fraction, test_fraction, seed, data_cfg.get("split_files"), base)
    if not split.train:
        raise DataError("the training split is empty")
    if run_dir is not None:
        write_split(run_dir / "split.csv", split)
    return PreparedData(class_names, split, num_frames, bad)


def clip_cache(data_cfg: Mapping, backend: str, transform: TransformConfig) -> ClipCache | None:
    """The decoded-clip cache named by ``data.cache`` (relative to the working directory), or None when null."""
    root = data_cfg.get("cache")
    if not root:
        return None
    max_frames = data_cfg.get("cache_max_frames", 64)
    if not isinstance(max_frames, int) or isinstance(max_frames, bool) or max_frames < 1:
        raise ConfigError(f"data.cache_max_frames must be an integer >= 1; got {max_frames!r}")
    return ClipCache(user_path(str(root)), CacheSettings(backend, transform.resize, transform.size, max_frames))


def clip_regions(parts: Mapping[str, Sequence[ClipRecord]], roi: RoiConfig, backend: str,
                 num_frames: Mapping[str, int], run_dir: Path, progress: bool = True,
                 cache: ClipCache | None = None) -> dict[str, Region]:
    """Each clip's region of interest, listed in ``run_dir/roi.csv``; empty (whole frames) with ``roi=none``.

    With a clip cache (``data.cache``) the regions are kept beside it and found only once per clip."""
    if not roi.active:
        return {}
    start = time.perf_counter()
    records = [r for recs in parts.values() for r in recs]
    stored = RegionCache(cache.root, backend) if cache is not None else None
    regions = find_regions(records, roi, backend, num_frames, progress, stored)
    write_regions(run_dir / "roi.csv", regions)
    reused = f", {stored.hits} from {stored.root}" if stored is not None and stored.hits else ""
    print(f"{summarise_regions(regions, roi.kind, 'roi.csv')} ({time.perf_counter() - start:.1f}s{reused})")
    return regions


def _worker_init(_: int) -> None:
    # Each loader worker decodes one clip at a time; letting it spawn torch threads only starves training.
    torch.set_num_threads(1)


def make_loader(records: Sequence[ClipRecord], class_to_idx: dict[str, int], sampling: SamplingConfig, transform,
                train: bool, batch_size: int, num_workers: int, backend: str, num_frames: dict[str, int] | None,
                seed: int, pin_memory: bool = False, cache: ClipCache | None = None,
                clip_timeout: float | None = None, regions: Mapping[str, Region] | None = None) -> TimedLoader:
    """``clip_timeout`` (``data.decode_timeout``) bounds how long the workers may take per clip of a batch;
    ``regions`` crops each clip to its region of interest."""
    dataset = ClipDataset(records, class_to_idx, sampling, transform, train, backend, num_frames, seed, cache,
                          regions)
    generator = torch.Generator().manual_seed(seed)
    return TimedLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                       drop_last=train and len(dataset) > batch_size, pin_memory=pin_memory,
                       worker_init_fn=_worker_init if num_workers > 0 else None, generator=generator,
                       clip_timeout=clip_timeout)
