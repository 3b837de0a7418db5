"""A long video's finished windows, kept on disk while it is classified, so a re-run goes on from the last one.

``<timeline>.part`` beside the video's timeline CSV: a first line naming what the windows belong to (the
checkpoint and settings, the video's size and modification time, the class names, the region), then one line per
finished window, ``first frame,frame count,probability of each class``, appended and fsynced after every batch.
The probabilities are written as Python's shortest exact text of each float32, so windows read back merge into the
same timeline as an uninterrupted run's. A line torn by a kill is cut off; a file that belongs to another checkpoint,
setting or version of the video is started again. The file goes once the timeline is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from behavior.atomic import atomic_open
from behavior.data.roi import Region

Span = tuple[int, int]


def _region_json(region: Region) -> list:
    return [list(region.box) if region.box is not None else None, region.hits, region.checked, region.kind]


def _region_of(saved: list) -> Region:
    box, hits, checked, kind = saved
    return Region(tuple(box) if box is not None else None, hits, checked, kind)


class PartialTimeline:
    """The finished windows of one video (``spans``, ``probs`` [N, C] float32 rows, ``region``), in the order they were
    finished (several workers finish windows from several places of the video)."""

    def __init__(self, path: Path, video: str, identity: str, class_names: Sequence[str]):
        self.path = path
        try:
            stat = os.stat(video)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # the decoder says what is wrong with it
            size = mtime = None
        self.key = {"identity": identity, "video": os.path.abspath(video), "size": size, "mtime_ns": mtime,
                    "classes": list(class_names)}
        self.spans: list[Span] = []
        self.probs: list[np.ndarray] = []
        self.region: Region | None = None
        self._file = None

    def load(self) -> PartialTimeline:
        """Read what an interrupted run left; nothing when there is no file or it belongs to something else."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return self
        lines = text.split("\n")[:-1]  # the piece after the last newline is a torn line (or nothing)
        try:
            head = json.loads(lines[0]) if lines else None
            if not isinstance(head, dict) or {k: head.get(k) for k in self.key} != self.key:
                return self
            region = _region_of(head["region"])
        except (ValueError, TypeError, KeyError):
            return self
        classes = len(self.key["classes"])
        for row in csv.reader(lines[1:]):
            try:
                span = (int(row[0]), int(row[1]))
                probs = np.array([float(v) for v in row[2:]], dtype=np.float32)
            except (ValueError, IndexError):
                break
            if len(probs) != classes:
                break
            self.spans.append(span)
            self.probs.append(probs)
        self.region = region
        return self

    def begin(self, region: Region, kept: Collection[Span]) -> None:
        """Start writing: of the windows held, those in ``kept`` stay, with ``region``; the file is rewritten so."""
        kept = set(kept)
        rows = [(span, p) for span, p in zip(self.spans, self.probs, strict=True) if span in kept]
        self.spans, self.probs = [span for span, _ in rows], [p for _, p in rows]
        self.region = region
        self.close()
        with atomic_open(self.path, "w", encoding="utf-8", newline="") as fh:
            fh.write(json.dumps({**self.key, "region": _region_json(region)}) + "\n")
            fh.write(self._lines(self.spans, self.probs))
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - kept open across batches

    def add(self, spans: Sequence[Span], probs: np.ndarray) -> None:
        """Windows just finished, on disk (fsynced) before this returns."""
        self.spans.extend(spans)
        self.probs.extend(probs)
        self._file.write(self._lines(spans, probs))
        self._file.flush()
        os.fsync(self._file.fileno())

    @staticmethod
    def _lines(spans: Sequence[Span], probs: Sequence[np.ndarray]) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for (first, count), p in zip(spans, probs, strict=True):
            writer.writerow([first, count, *(repr(float(v)) for v in p)])
        return buf.getvalue()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
