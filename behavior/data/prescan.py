"""Open every clip once before training: unreadable clips are listed with their reason and left out."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from behavior.data.records import ClipRecord
from behavior.video import VideoDecodeError, probe_video


@dataclass(frozen=True)
class BadClip:
    path: str
    label: str
    reason: str


@dataclass
class ScanResult:
    good: list[ClipRecord]
    bad: list[BadClip]
    num_frames: dict[str, int]  # path -> frames that really decode


def prescan(records, backend: str = "pyav", verify: bool = True, workers: int = 2,
            progress: bool = True) -> ScanResult:
    """Probe each clip (``verify`` decodes every frame, catching truncated files); decoders release the GIL."""

    def probe(record: ClipRecord):
        try:
            return record, probe_video(record.path, backend=backend, verify=verify), None
        except VideoDecodeError as err:
            return record, None, err.reason

    good, bad, frames = [], [], {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(probe, records)
        for record, meta, reason in tqdm(results, total=len(records), desc="scan clips", disable=not progress,
                                         unit="clip", leave=False):
            if meta is not None and meta.num_frames < 1:
                meta, reason = None, "no frames decode"
            if meta is None:
                bad.append(BadClip(record.path, record.label, reason))
            else:
                good.append(record)
                frames[record.path] = meta.num_frames
    return ScanResult(good, bad, frames)


def write_bad_clips(path: Path, bad: list[BadClip]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "reason"])
        for b in bad:
            w.writerow([b.path, b.label, b.reason])
