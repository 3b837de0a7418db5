"""Compose the data stages for a run: find clips, pre-scan them, split them, find their regions, open the cache."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from behavior.config import fail
from behavior.data.cache import CacheSettings, ClipCache
from behavior.data.flow import FlowConfig
from behavior.data.prescan import BadClip, prescan, write_bad_clips
from behavior.data.records import ClipRecord
from behavior.data.roi import Region, RegionCache, RoiConfig, find_regions, summarise_regions, write_regions
from behavior.data.scan import empty_class_folders, load_records
from behavior.data.settings import DataConfig, EvaluateData, SyntheticSource
from behavior.data.splits import Split, split_records, write_split
from behavior.data.transforms import TransformConfig
from behavior.errors import DataError
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


def resolve_records(root: str | None, manifest: str | None,
                    synthetic: SyntheticSource | None = None) -> tuple[list[ClipRecord], Path]:
    """The clips named by ``data.root`` / ``data.manifest`` (relative to the working directory), or the built-in
    synthetic set (generated on first use) when neither is set and ``synthetic`` is given."""
    if not root and not manifest and synthetic is not None:
        from behavior.data.synthetic import KNOWN_CLASSES, SYNTHETIC_CLASSES, SyntheticSpec, ensure_synthetic

        root = str(user_path(synthetic.root))
        # In one fixed order, so a reordered list names the same set (the completion marker compares the spec).
        classes = tuple(c for c in KNOWN_CLASSES if c in (synthetic.classes or SYNTHETIC_CLASSES))
        ensure_synthetic(root, SyntheticSpec(clips_per_class=synthetic.clips_per_class, seed=synthetic.seed,
                                             classes=classes), workers=synthetic.workers)
    records = load_records(root, manifest)
    return records, Path(manifest).parent if manifest else Path(root)


def prepare_data(data: DataConfig, backend: str, seed: int, progress: bool = True) -> PreparedData:
    """Find, pre-scan and split the clips; reads only (a run's records are written by :func:`write_data_records`).

    What changes what is learned is said before training, in one block (:func:`dataset_warnings`)."""
    check_cache_folder(data)
    records, base = resolve_records(data.root, data.manifest, data.synthetic)

    def split(clips: list[ClipRecord]) -> Split:
        return split_records(clips, data.split, data.val_fraction, data.test_fraction, seed,
                             data.split_files.to_dict(), base, data.folds, data.fold)

    split(records)  # a split that cannot be made (no groups, missing list files) stops before the long pre-scan
    start = time.perf_counter()
    if data.prescan == "off":
        good, bad, num_frames = records, [], {}
    else:
        scan = prescan(records, backend=backend, verify=data.prescan == "full", workers=data.scan_workers,
                       progress=progress, timeout=data.decode_timeout)
        good, bad, num_frames = scan.good, scan.bad, scan.num_frames
        print(f"scanned {len(records)} clips in {time.perf_counter() - start:.1f}s: {len(good)} readable, "
              f"{len(bad)} unreadable" + (" (listed in bad_clips.csv)" if bad else ""))
    if not good:
        raise DataError(f"no readable clips among {len(records)} (first reason: {bad[0].reason if bad else '-'})")
    class_names = sorted({r.label for r in good})
    if len(class_names) < 2:
        unreadable = sorted({r.label for r in records} - set(class_names))
        raise DataError(f"need at least 2 classes with readable clips, found {class_names}"
                        + (f" (no clip of {unreadable} is readable: see the pre-scan)" if unreadable else ""))
    prepared = PreparedData(class_names, split(good), num_frames, bad)
    warnings = dataset_warnings(records, prepared, data)
    if warnings:
        print("dataset check: " + str(len(warnings)) + " thing(s) change what is learned")
        print("\n".join(f"  warning: {line}" for line in warnings))
    if not prepared.split.train:
        raise DataError("the training split is empty")
    return prepared


def dataset_warnings(records: Sequence[ClipRecord], prepared: PreparedData, data: DataConfig) -> list[str]:
    """Dataset problems a run would otherwise carry silently: classes left with no readable clip, class folders
    with no clips, classes too small for every part of the split, an empty validation split."""
    found = Counter(r.label for r in records)
    readable = Counter(r.label for r in prepared.split.train + prepared.split.val + prepared.split.test)
    lines = [f"class {name!r}: none of its {found[name]} clip(s) is readable: left out (reasons in bad_clips.csv)"
             for name in sorted(set(found) - set(readable))]
    if data.root:
        lines += [f"class folder {name!r} holds no video clips: not a class"
                  for name in empty_class_folders(user_path(data.root))]
    wanted = {"val": data.val_fraction > 0 or data.split == "kfold", "test": data.test_fraction > 0
              or data.split == "kfold"}
    for name in prepared.class_names:
        missing = [part for part, recs in prepared.split.parts().items()
                   if part != "train" and wanted.get(part) and not any(r.label == name for r in recs)]
        if missing and data.split != "predefined":
            lines.append(f"class {name!r} has {readable[name]} readable clip(s): none in {' or '.join(missing)}")
    if not prepared.split.val:
        lines.append("the validation split is empty: best.pt is the epoch with the best training accuracy and "
                     "trainer.patience has no effect (set data.val_fraction > 0)")
    return lines


def write_data_records(run_dir: Path, data: DataConfig, prepared: PreparedData) -> None:
    """The run's ``split.csv`` and, when the clips were pre-scanned, ``bad_clips.csv`` (even when empty: proof
    the scan ran)."""
    if data.prescan != "off":
        write_bad_clips(run_dir / "bad_clips.csv", prepared.bad)
    write_split(run_dir / "split.csv", prepared.split)


def check_cache_folder(data: DataConfig | EvaluateData) -> None:
    """``data.cache`` names a folder (made on first use): an existing file there is a mistake, not a cache."""
    if data.cache and user_path(data.cache).exists() and not user_path(data.cache).is_dir():
        raise fail("data.cache", data.cache, "is a file; give a folder for the decoded clips (or null)")


def clip_cache(data: DataConfig | EvaluateData, backend: str, transform: TransformConfig,
               flow: FlowConfig | None = None) -> ClipCache | None:
    """The decoded-clip cache named by ``data.cache`` (relative to the working directory), or None when null;
    with ``flow`` (a flow model's settings) its entries hold each frame's flow too."""
    if not data.cache:
        return None
    return ClipCache(user_path(data.cache), CacheSettings(backend, transform.resize, transform.size,
                                                          data.cache_max_frames), flow)


def clip_regions(parts: Mapping[str, Sequence[ClipRecord]], roi: RoiConfig, backend: str,
                 num_frames: Mapping[str, int], run_dir: Path | None, progress: bool = True,
                 cache: ClipCache | None = None) -> dict[str, Region]:
    """Each clip's region of interest, listed in ``run_dir/roi.csv`` (run_dir None: not listed, as on torchrun's
    ranks but 0); empty (whole frames) with ``roi=none``.

    With a clip cache (``data.cache``) the regions are kept beside it and found only once per clip."""
    if not roi.active:
        return {}
    start = time.perf_counter()
    records = [r for recs in parts.values() for r in recs]
    stored = RegionCache(cache.root, backend) if cache is not None else None
    regions = find_regions(records, roi, backend, num_frames, progress, stored)
    if run_dir is not None:
        write_regions(run_dir / "roi.csv", regions)
    reused = f", {stored.hits} from {stored.root}" if stored is not None and stored.hits else ""
    print(f"{summarise_regions(regions, roi.kind, 'roi.csv')} ({time.perf_counter() - start:.1f}s{reused})")
    return regions
