"""Region of interest: find the face or person in a clip and crop every sampled frame to it.

Stage order: decode -> sample -> **roi** -> transform. The detector (``behavior.data.detectors``) runs on a few
frames spread over the clip; its boxes are linked over time into tracks, the most persistent track wins, and
the union of its boxes, grown by a margin and made square, is the clip's one region. One box per clip (not per
frame) keeps the motion inside the crop: a per-frame crop would follow the subject and erase its movement,
which is what the classifier needs to see.

When nothing is found the clip keeps the whole frame and its :class:`Region` says so (``found`` is false); train
and evaluate list every clip's region in ``roi.csv``, predict writes it in each row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from behavior.atomic import atomic_open
from behavior.config import Settings, check_bool, check_choice, check_number
from behavior.data.detectors import Detection, detector_for
from behavior.data.records import ClipRecord
from behavior.progress import Progress
from behavior.video import VideoReader, open_video

ROI_KINDS = ("none", "face", "person")
Box = tuple[float, float, float, float]  # left, top, right, bottom in fractions of the frame


@dataclass(frozen=True)
class RoiConfig(Settings):
    """The ``roi`` group: what to look for and how the per-clip box is formed."""

    GROUP = "roi"
    kind: str
    detect_frames: int  # frames per clip the detector runs on, spread evenly over the clip
    detect_size: int  # frames are scaled (up or down) to this longer side before detection
    min_size: float  # smallest region, as a fraction of the frame height (person) or shorter side (face)
    margin: float  # the box grows by this fraction of its width and height on every side
    square: bool  # grow the shorter side so the square centre crop of the transform keeps the whole region

    def __post_init__(self) -> None:
        check_choice("roi.kind", self.kind, ROI_KINDS)
        check_number("roi.detect_frames", self.detect_frames, 1, integer=True)
        check_number("roi.detect_size", self.detect_size, 64, integer=True)
        check_number("roi.min_size", self.min_size, 0.0, 1.0)
        check_number("roi.margin", self.margin, 0.0, 2.0)
        check_bool("roi.square", self.square)

    @property
    def active(self) -> bool:
        return self.kind != "none"


def active(roi: RoiConfig | None) -> bool:
    """Whether ``roi`` crops anything (None: whole frames, e.g. a stage called without a region setting)."""
    return roi is not None and roi.active


@dataclass(frozen=True)
class Region:
    """A clip's region: ``box`` in fractions of the frame, or None for the whole frame (nothing found)."""

    box: Box | None
    hits: int = 0  # of the frames checked, how many the chosen region was detected in
    checked: int = 0
    kind: str = "none"

    @property
    def found(self) -> bool:
        return self.box is not None

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` x ``height`` frame: left, top, right, bottom (right/bottom exclusive).

        Always at least 2 x 2 pixels and inside the frame; the whole frame when nothing was found."""
        if self.box is None:
            return 0, 0, width, height
        x0, y0, x1, y1 = self.box
        left, top = min(width - 2, math.floor(x0 * width)), min(height - 2, math.floor(y0 * height))
        right, bottom = max(left + 2, math.ceil(x1 * width)), max(top + 2, math.ceil(y1 * height))
        return max(0, left), max(0, top), min(width, right), min(height, bottom)

    def note(self) -> str:
        """What a report says about this clip: empty when the region was found."""
        if self.found or self.kind == "none":
            return ""
        return f"roi: no {self.kind} found in {self.checked} frame(s); the whole frame was used"


WHOLE_FRAME = Region(None)


def crop_frames(frames: torch.Tensor, region: Region) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` frames cut to ``region`` (a view, no copy); the whole frames when nothing was found."""
    if region.box is None:
        return frames
    left, top, right, bottom = region.pixels(frames.shape[2], frames.shape[1])
    return frames[:, top:bottom, left:right]


def detection_indices(total: int, count: int) -> list[int]:
    """``count`` frames spread evenly over a clip of ``total`` frames (the centres of equal bins)."""
    count = max(1, min(count, total))
    return sorted({((2 * i + 1) * total) // (2 * count) for i in range(count)})


def _near(a: Detection, b: Detection) -> bool:
    # The same subject a few frames later: its centre moved by less than one box size.
    (ax, ay), (bx, by) = a.centre, b.centre
    reach = max(a.width, a.height, b.width, b.height)
    return abs(ax - bx) <= reach and abs(ay - by) <= reach


def link_tracks(per_frame: Sequence[Sequence[Detection]]) -> list[list[Detection]]:
    """Greedy tracking over the checked frames, in order: each detection extends the nearest open track."""
    tracks: list[list[Detection]] = []
    for detections in per_frame:
        extended: set[int] = set()
        for det in sorted(detections, key=lambda d: -d.score):
            candidates = [i for i, track in enumerate(tracks) if i not in extended and _near(track[-1], det)]
            if candidates:
                best = min(candidates, key=lambda i: math.dist(tracks[i][-1].centre, det.centre))
                tracks[best].append(det)
                extended.add(best)
            else:
                tracks.append([det])
                extended.add(len(tracks) - 1)
    return tracks


def grow_box(box: Box, margin: float, square: bool, aspect: float) -> Box:
    """``box`` grown by ``margin`` on every side, squared in pixels (``aspect`` = width / height), kept in frame."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
    if square:
        side = max(w * aspect, h)  # in units of the frame height
        w, h = side / aspect, side
    w, h = min(w, 1.0), min(h, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # Shift rather than cut at the frame edge, so the region keeps its size.
    left = min(max(cx - w / 2, 0.0), 1.0 - w)
    top = min(max(cy - h / 2, 0.0), 1.0 - h)
    return float(left), float(top), float(left + w), float(top + h)


def merge_detections(per_frame: Sequence[Sequence[Detection]], cfg: RoiConfig, aspect: float) -> Region:
    """One region for the clip: the most persistent track (ties: the more confident), its boxes' union, grown."""
    tracks = link_tracks(per_frame)
    if not tracks:
        return Region(None, 0, len(per_frame), cfg.kind)
    best = max(tracks, key=lambda track: (len(track), sum(d.score for d in track)))
    union = (min(d.x0 for d in best), min(d.y0 for d in best), max(d.x1 for d in best), max(d.y1 for d in best))
    return Region(grow_box(union, cfg.margin, cfg.square, aspect), len(best), len(per_frame), cfg.kind)


def detect_region(frames: torch.Tensor | np.ndarray, cfg: RoiConfig) -> Region:
    """The region of a clip from a few of its uint8 frames ``[N, H, W, 3]`` (see :func:`detection_indices`)."""
    if not active(cfg):
        return WHOLE_FRAME
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    detector = detector_for(cfg.kind, cfg.detect_size, cfg.min_size)
    height, width = frames.shape[1:3]
    return merge_detections([detector(frame) for frame in frames], cfg, width / height)


class RegionTracker:
    """The streaming form of :func:`detect_region`, for live mode: the detector runs on one new frame at most every
    ``every`` frames, and the detections of the last ``detect_frames`` such frames still in the window are merged."""

    def __init__(self, cfg: RoiConfig, every: int = 1) -> None:
        self.cfg = cfg
        self.every = every
        self.recent: deque[tuple[int, list[Detection]]] = deque(maxlen=cfg.detect_frames)
        self.region = WHOLE_FRAME

    def update(self, index: int, frame: np.ndarray, oldest: int) -> Region:
        """The region for a window ending at frame ``index`` (``frame``) and starting at frame ``oldest``."""
        if not active(self.cfg):
            return WHOLE_FRAME
        if self.recent and index - self.recent[-1][0] < self.every:
            return self.region  # detected recently enough: detection costs more than the classifier
        detector = detector_for(self.cfg.kind, self.cfg.detect_size, self.cfg.min_size)
        self.recent.append((index, detector(frame)))
        while self.recent and self.recent[0][0] < oldest:
            self.recent.popleft()
        height, width = frame.shape[:2]
        self.region = merge_detections([found for _, found in self.recent], self.cfg, width / height)
        return self.region


def region_of_reader(reader: VideoReader, cfg: RoiConfig, first: int = 0, count: int | None = None) -> Region:
    """The region of frames ``[first, first + count)`` of an open clip, from its detection frames."""
    if not active(cfg):
        return WHOLE_FRAME
    count = len(reader) - first if count is None else count
    return detect_region(reader.get_frames([first + i for i in detection_indices(count, cfg.detect_frames)]), cfg)


def region_of_clip(path: str, cfg: RoiConfig, backend: str = "pyav", total_hint: int | None = None) -> Region:
    """Open a clip and return its region (``total_hint``: the pre-scan's count of frames that decode)."""
    with open_video(path, backend=backend) as reader:
        return region_of_reader(reader, cfg, 0, len(reader) if total_hint is None else min(total_hint, len(reader)))


class RegionCache:
    """Regions already found, one small JSON file per clip under ``<data.cache>/roi/``, so a rerun, a resume or a
    bench over several models and seeds detects once. The key is the clip's absolute path, size and mtime, its
    frame count and every roi setting: editing a clip or a setting detects again. Unwritable: silently skipped
    (detection is only slower)."""

    def __init__(self, root: str | Path, backend: str) -> None:
        self.root = Path(root) / "roi"
        self.backend = backend
        self.hits = 0

    def _file(self, path: str, cfg: RoiConfig, total_hint: int | None) -> Path:
        stat = os.stat(path)
        key = json.dumps({"source": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                          "total_hint": total_hint, "backend": self.backend, **asdict(cfg)}, sort_keys=True)
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / f"{digest}.json"

    def get(self, path: str, cfg: RoiConfig, total_hint: int | None) -> Region | None:
        try:
            saved = json.loads(self._file(path, cfg, total_hint).read_text(encoding="utf-8"))
            region = Region(tuple(saved["box"]) if saved["box"] else None, saved["hits"], saved["checked"], cfg.kind)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self.hits += 1
        return region

    def put(self, path: str, cfg: RoiConfig, total_hint: int | None, region: Region) -> None:
        try:
            file = self._file(path, cfg, total_hint)
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(file, "w", encoding="utf-8") as fh:
                json.dump({"box": region.box, "hits": region.hits, "checked": region.checked}, fh)
        except OSError:
            pass


def find_regions(records: Sequence[ClipRecord], cfg: RoiConfig, backend: str = "pyav",
                 num_frames: Mapping[str, int] | None = None, progress: bool = True,
                 cache: RegionCache | None = None) -> dict[str, Region]:
    """Every clip's region, for a training or evaluation run (the clips have passed the pre-scan).

    Runs in this process: OpenCV spreads each detection over the cores itself. A clip that fails to decode
    here keeps the whole frame (with a warning) rather than stopping a run whose pre-scan accepted it."""
    regions: dict[str, Region] = {}
    if not active(cfg):
        return regions
    num_frames = num_frames or {}
    for record in Progress(records, desc=f"roi {cfg.kind}", unit="clip", enabled=progress):
        hint = num_frames.get(record.path)
        try:
            found = cache.get(record.path, cfg, hint) if cache is not None else None
            if found is None:
                found = region_of_clip(record.path, cfg, backend, hint)
                if cache is not None:
                    cache.put(record.path, cfg, hint, found)
            regions[record.path] = found
        except Exception as err:  # noqa: BLE001 - one clip's detection must not cost the run
            print(f"warning: roi: {record.path}: detection failed ({' '.join(str(err).split())}); whole frame used",
                  file=sys.stderr)
            regions[record.path] = Region(None, 0, 0, cfg.kind)
    return regions


def summarise_regions(regions: Mapping[str, Region], kind: str, where: str = "") -> str:
    missing = sum(not r.found for r in regions.values())
    line = f"roi={kind}: a region in {len(regions) - missing} of {len(regions)} clips"
    if missing:
        line += f"; {missing} without one use the whole frame" + (f" (found=false in {where})" if where else "")
    return line


def write_regions(path: Path, regions: Mapping[str, Region]) -> None:
    """``roi.csv``: each clip's box (fractions of the frame), whether one was found, and in how many frames."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "found", "x0", "y0", "x1", "y1", "hits", "checked"])
        for clip, region in regions.items():
            box = [f"{v:.4f}" for v in region.box] if region.box else ["", "", "", ""]
            out.writerow([clip, str(region.found).lower(), *box, region.hits, region.checked])
