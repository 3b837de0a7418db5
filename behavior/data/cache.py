"""Decoded-clip cache: each clip's frame pool decoded and resized once, then memory-mapped from disk.

What is stored: the frames the sampler may pick from (the *pool*), as uint8 ``[N, H, W, 3]`` after the
transform's own geometric resize (short side = ``size``, or longer side = ``size`` for letterbox; the
letterbox padding and all random steps still run per item). Clips of at most ``max_frames`` frames keep
every frame, so sampling and the resulting tensors are identical to decoding directly. Longer clips keep
``max_frames`` evenly spaced frames and the sampler then runs over the pool instead of the whole clip
(a TSN/uniform draw still spans the clip; a dense clip's ``frame_interval`` counts pool frames).

Layout: ``<root>/<key[:2]>/<key>.npy`` plus ``<key>.json`` naming the source clip for humans. The key is
the sha1 of the clip's absolute path, size and mtime_ns and of every setting that shapes the pixels
(backend, resize mode, size, max_frames, frame count from the pre-scan, torchvision version, format
version), so editing a clip or changing a setting makes a new entry; stale entries are never read (delete
the folder to reclaim the space).

Writers use a temp file in the same folder and ``os.replace``: concurrent DataLoader workers filling the
same entry each write a complete, identical file and the last rename wins; a reader sees the old file or
the new one, never a torn one. A file that does not parse or whose size disagrees with its header is
rebuilt. A cache that cannot be written (disk full, read-only folder) warns once and the run goes on
with the frames it just decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision import tv_tensors

from behavior.atomic import atomic_open
from behavior.data.flow import FlowConfig, frames_needed, with_flow
from behavior.data.roi import WHOLE_FRAME, Region, crop_frames
from behavior.data.transforms import geometric_resize
from behavior.video import open_video

FORMAT_VERSION = 1
# Frames resized per decode call: bounds memory to this many full-size frames on long high-res clips.
DECODE_CHUNK = 16


@dataclass(frozen=True)
class CacheSettings:
    """Everything besides the clip file itself that decides the cached pixels."""

    backend: str = "pyav"
    resize: str = "short_side"
    size: int = 128
    max_frames: int = 64


def pool_indices(total: int, max_frames: int) -> list[int]:
    """All frames of a short clip; for a longer one, the centres of ``max_frames`` equal bins."""
    if total <= max_frames:
        return list(range(total))
    return [((2 * i + 1) * total) // (2 * max_frames) for i in range(max_frames)]


def decode_pool(path: str, settings: CacheSettings, total_hint: int | None = None,
                region: Region = WHOLE_FRAME, flow: FlowConfig | None = None) -> np.ndarray:
    """Decode, crop to ``region`` and resize the pool of ``path``: uint8 ``[N, H, W, 3]``, or with ``flow``
    ``[N, H, W, 3 + 2L]``: each pool frame's flow stack, measured against the clip's real next frames (not the
    next pool frame), after its RGB channels.

    ``total_hint`` is the pre-scan's count of frames that really decode (the dataset uses the same bound).
    The crop comes before the resize so a small face or person keeps the source's detail.
    """
    resize = geometric_resize(settings.resize, settings.size)
    with open_video(path, backend=settings.backend) as reader:
        total = reader.meta.num_frames if total_hint is None else min(total_hint, reader.meta.num_frames)
        pool = pool_indices(total, settings.max_frames)
        chunks = []
        for start in range(0, len(pool), DECODE_CHUNK):
            part = pool[start:start + DECODE_CHUNK]
            wanted = part if flow is None else sorted({*part, *frames_needed(part, total, flow.stack)})
            frames = crop_frames(reader.get_frames(wanted), region)
            if flow is not None:
                channels, _ = with_flow(frames, {index: k for k, index in enumerate(wanted)}, part, total, flow,
                                        True, resize)
                chunks.append(channels.numpy())
                continue
            video = resize(tv_tensors.Video(frames.permute(0, 3, 1, 2)))
            chunks.append(video.as_subclass(torch.Tensor).permute(0, 2, 3, 1).numpy())
    return np.ascontiguousarray(np.concatenate(chunks))


def load_entry(file: Path, channels: int = 3) -> np.ndarray | None:
    """The memory-mapped frames in ``file``, or None when it is missing, torn or not a frame array of
    ``channels`` channels."""
    try:
        frames = np.load(file, mmap_mode="r", allow_pickle=False)
        size = file.stat().st_size
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(frames, np.memmap) or frames.dtype != np.uint8 or frames.ndim != 4:
        return None
    # A file cut short fails to map; one with trailing junk maps fine, so also check the exact length.
    if frames.shape[0] < 1 or frames.shape[-1] != channels or frames.offset + frames.nbytes != size:
        return None
    return frames


class ClipCache:
    """``get(path)`` returns a clip's pool from disk, decoding and storing it on the first request.

    With ``flow`` the pool holds each frame's optical-flow stack after its RGB channels, so flow is computed once
    per clip (its entries are keyed by the flow settings too; RGB-only entries keep their keys).
    Picklable (DataLoader workers get a copy); ``hits``/``misses`` count this process's requests only.
    """

    def __init__(self, root: str | os.PathLike, settings: CacheSettings, flow: FlowConfig | None = None):
        self.root = Path(root)
        self.settings = settings
        self.flow = flow
        self.hits = 0
        self.misses = 0
        self.writable = True

    def describe_key(self, path: str, total_hint: int | None = None, region: Region = WHOLE_FRAME) -> dict:
        stat = os.stat(path)
        key = {"source": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
               "total_hint": total_hint, **asdict(self.settings), "torchvision": torchvision.__version__,
               "format": FORMAT_VERSION}
        if region.box is not None:  # only then: whole-frame entries keep the keys they had before regions existed
            key["roi_box"] = [round(v, 6) for v in region.box]
        if self.flow is not None:  # likewise: RGB-only entries keep theirs
            key["flow"] = asdict(self.flow)
        return key

    def entry(self, path: str, total_hint: int | None = None, region: Region = WHOLE_FRAME) -> Path:
        """Where the pool of ``path`` lives under the current settings (it may not exist yet)."""
        text = json.dumps(self.describe_key(path, total_hint, region), sort_keys=True)
        key = hashlib.sha1(text.encode("utf-8")).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def get(self, path: str, total_hint: int | None = None, region: Region = WHOLE_FRAME) -> np.ndarray:
        """uint8 ``[N, H, W, 3 (+ 2L)]``: memory-mapped when cached, freshly decoded (and stored) otherwise."""
        file = self.entry(path, total_hint, region)
        frames = load_entry(file, 3 + (self.flow.channels if self.flow is not None else 0))
        if frames is not None:
            self.hits += 1
            return frames
        self.misses += 1
        frames = decode_pool(path, self.settings, total_hint, region, self.flow)
        if self.writable:
            self._store(file, frames, path, total_hint, region)
        return frames

    def _store(self, file: Path, frames: np.ndarray, path: str, total_hint: int | None, region: Region) -> None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            info = {**self.describe_key(path, total_hint, region), "shape": list(frames.shape)}
            # The sidecar goes first: an .npy never exists without the note saying where it came from.
            with atomic_open(file.with_suffix(".json"), "w", encoding="utf-8") as fh:
                fh.write(json.dumps(info, indent=1))
            with atomic_open(file, "wb") as fh:
                np.save(fh, frames, allow_pickle=False)
        except OSError as err:
            # Training must not die for a cache: stop writing in this process and say so once.
            self.writable = False
            print(f"warning: clip cache {self.root} is not writable ({err}); decoding clips without caching",
                  file=sys.stderr, flush=True)

    def summary(self, paths: Iterable[str], hints: dict[str, int] | None = None,
                regions: Mapping[str, Region] | None = None) -> str:
        """One line for the run log: where the cache is and how much of ``paths`` it already holds."""
        hints, regions = hints or {}, regions or {}
        cached, nbytes, total = 0, 0, 0
        for path in paths:
            total += 1
            try:
                file = self.entry(path, hints.get(path), regions.get(path, WHOLE_FRAME))
                nbytes += file.stat().st_size
                cached += 1
            except OSError:
                continue
        return (f"clip cache {self.root}: {cached} of {total} clips cached ({nbytes / 2**20:.0f} MiB); "
                f"{'nothing to decode' if cached == total else 'the first epoch decodes and stores the rest'}")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["hits"] = state["misses"] = 0
        return state
