"""Open every clip once before training: unreadable clips are listed with their reason and left out."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from behavior.data.records import ClipRecord
from behavior.progress import Progress
from behavior.video import VideoDecodeError, VideoMeta, probe_video
from behavior.video.guard import map_with_timeout

DEFAULT_TIMEOUT = 120.0  # seconds per clip; a full decode of a 2 s 720p clip takes well under one


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


def _probe(path: str, backend: str, verify: bool) -> VideoMeta:
    return probe_video(path, backend=backend, verify=verify)


def prescan(records, backend: str = "pyav", verify: bool = True, workers: int = 2,
            progress: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> ScanResult:
    """Probe each clip (``verify`` decodes every frame, catching truncated files) in worker processes.

    A clip whose probe runs past ``timeout`` seconds (None: no limit) is abandoned, its worker killed, and
    listed as bad with a "timed out" reason; a decoder crash is listed the same way ("decoder crashed").
    """
    records = list(records)
    probe = functools.partial(_probe, backend=backend, verify=verify)
    outcome: list[VideoMeta | str | None] = [None] * len(records)
    jobs = map_with_timeout(probe, [r.path for r in records], float("inf") if timeout is None else timeout,
                            workers)
    for index, ok, value in Progress(jobs, total=len(records), desc="scan clips", enabled=progress, unit="clip",
                                     leave=False, lines=True):
        if not ok and not isinstance(value, VideoDecodeError):
            raise value  # a missing backend or a bug: not the clip's fault, so not a bad clip either
        if ok and value.num_frames < 1:
            value = "no frames decode"
        outcome[index] = value if ok or isinstance(value, str) else value.reason
    good, bad, frames = [], [], {}
    for record, result in zip(records, outcome, strict=True):
        if isinstance(result, VideoMeta):
            good.append(record)
            frames[record.path] = result.num_frames
        else:
            bad.append(BadClip(record.path, record.label, str(result)))
    return ScanResult(good, bad, frames)


def write_bad_clips(path: Path, bad: list[BadClip]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "reason"])
        for b in bad:
            w.writerow([b.path, b.label, b.reason])
