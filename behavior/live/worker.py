"""Classify a stream of frames: a worker thread turns windows of recent frames into labels.

The reader hands over a :class:`Job` (the ring buffer's frames, by reference) every ``stride`` frames and
never waits for the model unless asked to (files); the worker finds the region of interest on the newest
frame, samples the window the way evaluation samples a clip, and returns a :class:`Prediction` with the
attention map of the last attention stage. One worker keeps predictions in frame order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from behavior.data.roi import Region, RegionTracker
from behavior.engine.inference import Classifier, views_of
from behavior.models import SpatialAttention


@dataclass
class Job:
    index: int  # number of the newest frame in the window
    frames: Sequence[np.ndarray]  # the window, oldest first
    read_at: float  # perf_counter() when the newest frame arrived


@dataclass
class Prediction:
    index: int
    label: str
    score: float
    region: Region  # in fractions of the frame: the annotated frames may be bigger than the classifier's
    heat: np.ndarray | None  # [h, w] attention over the part of the region the model saw (``visible_box``)
    latency: float  # seconds from the newest frame's arrival to this prediction


class FrameWindow:
    """The ring buffer's frames seen as a short clip, so evaluation's own sampling (``views_of``) reads them."""

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.frames[i] for i in indices]))


class StreamClassifier:
    """``submit(job)`` windows, ``poll()`` predictions; ``close()`` finishes the queued jobs and stops the thread."""

    def __init__(self, classifier: Classifier, heatmap: bool = True, backlog: int = 1, detect_every: int = 1) -> None:
        self.classifier = classifier
        self.transform = classifier.pipeline.clip_transform(train=False)
        self.tracker = RegionTracker(classifier.pipeline.roi, detect_every)
        self.attention = [m for m in classifier.model.modules() if isinstance(m, SpatialAttention)]
        self.heatmap = heatmap and bool(self.attention)
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=backlog)
        self.done: queue.Queue[Prediction] = queue.Queue()
        self.error: BaseException | None = None
        self.pending = 0  # submitted and not yet polled
        self.thread = threading.Thread(target=self._run, name="classifier", daemon=True)
        self.thread.start()

    def submit(self, job: Job, wait: bool) -> bool:
        """Queue ``job``; without ``wait``, give up (False) when the worker is still busy with the last one."""
        self._raise()
        try:
            self.jobs.put(job, block=wait)
        except queue.Full:
            return False
        self.pending += 1
        return True

    def poll(self, wait: bool = False) -> list[Prediction]:
        """Predictions finished so far, in frame order; ``wait`` blocks until every submitted job is done."""
        out = []
        while self.pending:
            try:
                out.append(self.done.get(block=wait, timeout=0.1 if wait else None))
                self.pending -= 1
            except queue.Empty:
                self._raise()
                if not wait:
                    break
        return out

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"live classifier failed: {self.error}") from self.error

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is not None:
                continue  # drain: the reader raises the first error on its next call
            try:
                self.done.put(self.classify(job))
            except BaseException as err:  # noqa: BLE001 - handed to the reading thread, which reports it
                self.error = err

    @torch.no_grad()
    def classify(self, job: Job) -> Prediction:
        region = self.tracker.update(job.index, job.frames[-1], job.index - len(job.frames) + 1)
        videos, _ = views_of(FrameWindow(job.frames), self.classifier.pipeline, self.transform, region=region)
        probs = self.classifier.probabilities(videos[None])[0].numpy()
        best = int(np.argmax(probs))
        return Prediction(job.index, self.classifier.class_names[best], float(probs[best]), region,
                          self._heat(len(videos)) if self.heatmap else None, time.perf_counter() - job.read_at)

    def _heat(self, num_views: int) -> np.ndarray:
        # The last stage's gates, [views * T, 1, h, w] for one clip: the first view's frames averaged.
        gates = self.attention[-1].last_map.float()
        frames_per_view = gates.shape[0] // max(1, num_views)
        return gates[:frames_per_view, 0].mean(0).cpu().numpy()
