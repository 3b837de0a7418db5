"""Classify clips with a trained checkpoint: decode -> evaluation views -> transforms -> model -> probabilities.

No knowledge of output files or the command line. A clip that fails never stops a stream of clips: the
dataset turns the failure into an error item inside its DataLoader worker, and ``collate_items`` keeps error
items apart from clips that decoded, so one bad file costs one error row and nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from behavior.data.flow import frames_needed, with_flow
from behavior.data.pipeline import ClipPipeline, input_channels, one_thread
from behavior.data.roi import WHOLE_FRAME, Region, RoiConfig, active, crop_frames, detect_region, detection_indices
from behavior.data.sampling import sample_views
from behavior.deploy.runtime import load_any_model
from behavior.engine.checkpoint import Checkpoint
from behavior.engine.loop import amp_enabled, autocast
from behavior.video import VideoDecodeError, VideoReader, open_leading_frames, open_video, require_backend
from behavior.video.base import describe

T = TypeVar("T")

# Reasons after which the leading frames of a clip may still decode. Empty files, non-videos, files without
# a video stream or with a lost mp4 index have nothing to salvage.
SALVAGEABLE = ("truncated", "corrupt", "decode failed")


@dataclass
class ClipInput:
    views: torch.Tensor  # [V, 3, T, S, S]
    num_frames: int  # frames the views were sampled from
    warning: str = ""
    region: Region = WHOLE_FRAME


@dataclass
class ClipResult:
    path: str
    probs: np.ndarray | None = None  # [C], averaged over views; None when the clip failed
    num_frames: int = 0
    warning: str = ""
    error: str = ""
    region: Region = WHOLE_FRAME
    extra: dict = field(default_factory=dict)  # further output columns (window mode: its timeline)

    @property
    def ok(self) -> bool:
        return self.probs is not None


def views_of(reader: VideoReader, pipeline: ClipPipeline, transform, first: int = 0, count: int | None = None,
             region: Region | None = None) -> tuple[torch.Tensor, Region]:
    """Evaluation views of frames ``[first, first + count)`` of an open clip, cropped to its region and
    transformed, ``[V, C, T, S, S]``, and the region.

    The region is ``region`` when given; otherwise the pipeline's ``roi`` finds it on its detection frames, decoded
    in the same pass as the views (whole frames with roi none). One decode pass serves all views (and, for a flow
    model, the frames each flow stack needs).
    """
    count = len(reader) - first if count is None else count
    views = [[first + i for i in view] for view in sample_views(count, pipeline.sampling)]
    sampled = sorted({i for view in views for i in view})
    detect = [] if region is not None or not active(pipeline.roi) else [
        first + i for i in detection_indices(count, pipeline.roi.detect_frames)]
    flow = [] if pipeline.flow is None else frames_needed(sampled, first + count, pipeline.flow.stack)
    wanted = sorted({*detect, *sampled, *flow})
    frames = reader.get_frames(wanted)
    position = {index: k for k, index in enumerate(wanted)}
    if region is None:
        region = detect_region(frames[[position[i] for i in detect]], pipeline.roi) if detect else WHOLE_FRAME
    frames = crop_frames(frames, region)
    if pipeline.flow is not None:
        frames, position = with_flow(frames, position, sampled, first + count, pipeline.flow, pipeline.rgb,
                                     pipeline.resize)
    return torch.stack([transform(frames[[position[i] for i in view]]) for view in views]), region


def _short_stream_warning(reader: VideoReader) -> str:
    # Matroska, WebM or TS cut mid-way demux cleanly; only the duration in their header says frames are missing.
    promised, n = getattr(getattr(reader, "scan", None), "promised", None), len(reader)
    if promised and n < promised - max(2, 0.1 * promised):
        return f"partly decoded: classified from the first {n} of {promised} frames (stream cut short)"
    return ""


def read_salvaging(path: str, pipeline: ClipPipeline, use: Callable[[VideoReader], T]) -> tuple[T, int, str]:
    """``use(reader)`` on the clip, returning ``(result, frames read, warning)``.

    A truncated or corrupt clip is read again over its leading frames that decode (with PyAV whatever the
    backend), and the warning says so; a clip with nothing usable raises its first VideoDecodeError.
    """
    def once(reader: VideoReader, warning: str) -> Iterator[tuple[T, int, str]]:
        yield use(reader), len(reader), warning

    return next(salvaging(path, pipeline, once))


def salvaging(path: str, pipeline: ClipPipeline, use: Callable[[VideoReader, str], Iterator[T]]) -> Iterator[T]:
    """``use(reader, warning)``'s items on the clip, as :func:`read_salvaging` reads it: when the clip turns out
    truncated or corrupt (on opening, or part-way), ``use`` starts again on a reader of its leading frames that
    decode, with a warning saying so. The items already given stay given: the consumer decides what they are worth.
    """
    try:
        with open_video(path, pipeline.backend, pipeline.max_short_side) as reader:
            yield from use(reader, _short_stream_warning(reader))
            return
    except VideoDecodeError as err:
        if not err.reason.startswith(SALVAGEABLE):
            raise
        damage = err
    try:
        with open_leading_frames(path, pipeline.max_short_side) as reader:
            n, promised = len(reader), reader.scan.promised
            of = f" of {promised}" if promised and promised > n else ""
            yield from use(reader, f"partly decoded: classified from the first {n}{of} frames ({damage.reason})")
    except VideoDecodeError:
        raise damage from None  # the first reason says what is wrong with the file


def load_clip(path: str, pipeline: ClipPipeline, transform) -> ClipInput:
    """Decode, find the region, sample and transform one clip; raises VideoDecodeError when nothing usable
    decodes."""

    def use(reader: VideoReader) -> tuple[torch.Tensor, Region]:
        return views_of(reader, pipeline, transform)

    (views, region), n, warning = read_salvaging(path, pipeline, use)
    return ClipInput(views, n, "; ".join(w for w in (warning, region.note()) if w), region)


def failure_reason(path: str, exc: BaseException) -> str:
    if isinstance(exc, VideoDecodeError):
        if exc.reason == "file not found" and os.path.islink(path):
            return "broken symlink (its target is missing, or links loop)"
        return exc.reason
    return " ".join(describe(exc).split())


class PredictDataset(Dataset):
    """``paths[i]`` -> ``("ok", i, ClipInput)`` or ``("error", i, reason)``: it never raises for a bad file."""

    def __init__(self, paths: Sequence[str], pipeline: ClipPipeline):
        self.paths = list(paths)
        self.pipeline = pipeline
        self.transform = pipeline.clip_transform(train=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            return "ok", index, load_clip(path, self.pipeline, self.transform)
        except Exception as exc:  # whatever breaks on one file (decoder, permissions, memory) must not stop the rest
            return "error", index, failure_reason(path, exc)


@dataclass
class Batch:
    videos: torch.Tensor | None  # [B, V, 3, T, S, S] of the clips that decoded, or None when none did
    ok: list[tuple[int, int, str, Region]]  # (index, num_frames, warning, region), in the order of ``videos``
    errors: list[tuple[int, str]]  # (index, reason)

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this on custom batch types
        if self.videos is not None:
            self.videos = self.videos.pin_memory()
        return self


def collate_items(items) -> Batch:
    good = [item for item in items if item[0] == "ok"]
    videos = torch.stack([item[2].views for item in good]) if good else None
    return Batch(videos, [(i, clip.num_frames, clip.warning, clip.region) for _, i, clip in good],
                 [(i, reason) for status, i, reason in items if status == "error"])


@dataclass
class Classifier:
    model: torch.nn.Module
    class_names: list[str]
    pipeline: ClipPipeline
    device: torch.device
    amp: bool = False

    @torch.no_grad()
    def probabilities(self, videos: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, C]`` of ``[B, V, 3, T, S, S]`` clips, averaged over the V views."""
        batch, views = videos.shape[:2]
        with autocast(self.device, self.amp):
            logits = self.model(videos.flatten(0, 1).to(self.device, non_blocking=True))
        return logits.float().softmax(-1).view(batch, views, -1).mean(1).cpu()

    def classify(self, path: str) -> ClipResult:
        """One clip in this process; a window mode or a notebook needs no DataLoader."""
        item = PredictDataset([path], self.pipeline)[0]
        return results_of(self, [path], collate_items([item]))[0]


def pipeline_of(checkpoint: Checkpoint, backend: str | None = None, num_views: int | None = None,
                roi: RoiConfig | None = None, max_short_side: int | None = None) -> ClipPipeline:
    """The clip pipeline a checkpoint was trained with: its sampling, transforms, region settings and decoder.

    ``backend``, ``num_views`` and ``roi`` replace the checkpoint's (None keeps them); ``max_short_side``
    shrinks big frames while decoding (batch-classify)."""
    recipe = checkpoint.recipe
    trained = recipe.roi
    if roi is not None and roi.kind != trained.kind:
        print(f"warning: roi={roi.kind} replaces the checkpoint's roi={trained.kind}: the model was trained on "
              f"{'whole frames' if not trained.active else trained.kind + ' regions'}", file=sys.stderr)
    pipeline = ClipPipeline(recipe.sampling, recipe.transform, require_backend(backend or recipe.decode.backend),
                            roi or trained, max_short_side=max_short_side,
                            **input_channels(recipe.model.input, recipe.flow))
    return pipeline.with_views(num_views)


def decode_size(max_short_side: int | str | None, pipeline: ClipPipeline) -> int | None:
    """``decode.max_short_side`` in pixels: ``auto`` decodes big clips straight to twice the transform's resize
    target, leaving the final antialiased resize to the transform training used; with a region of interest it
    decodes full-size frames, so the detector and the crop see what they saw in training."""
    if max_short_side == "auto":
        return None if active(pipeline.roi) else 2 * pipeline.transform.size
    return max_short_side


def load_classifier(checkpoint: str, device: torch.device, amp: bool = False, num_views: int | None = None,
                    backend: str | None = None, max_short_side: int | str | None = "auto",
                    roi: RoiConfig | None = None) -> Classifier:
    """The checkpoint's model (or an export's: .onnx, .pt2) with its own classes and clip pipeline (see
    :func:`pipeline_of` and :func:`decode_size`)."""
    model, saved = load_any_model(checkpoint, device)
    pipeline = pipeline_of(saved, backend, num_views, roi)
    pipeline = replace(pipeline, max_short_side=decode_size(max_short_side, pipeline))
    return Classifier(model, saved.class_names, pipeline, device, amp_enabled(amp, device))


def results_of(classifier: Classifier, paths: Sequence[str], batch: Batch) -> list[ClipResult]:
    results = {i: ClipResult(paths[i], error=reason) for i, reason in batch.errors}
    if batch.videos is not None:
        probs = classifier.probabilities(batch.videos).numpy()
        for (i, frames, warning, region), p in zip(batch.ok, probs, strict=True):
            results[i] = ClipResult(paths[i], p, frames, warning, region=region)
    return [results[i] for i in sorted(results)]


def _stream(classifier: Classifier, paths: list[str], batch_size: int, num_workers: int,
            timeout: float | None) -> Iterator[list[ClipResult]]:
    # A worker decodes a whole batch, so its wait is bounded per clip times the batch size.
    loader = DataLoader(PredictDataset(paths, classifier.pipeline), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_items,
                        pin_memory=classifier.device.type == "cuda",
                        worker_init_fn=one_thread if num_workers > 0 else None,
                        timeout=timeout * batch_size if timeout and num_workers > 0 else 0)
    for batch in loader:
        yield results_of(classifier, paths, batch)


def worker_lost(err: RuntimeError) -> str | None:
    """Why a DataLoader worker gave no batch (it died, or it hung past the timeout), or None for other errors."""
    text = " ".join(str(err).split())
    if "DataLoader worker" in text:
        return f"decoder crashed ({text})"
    if "DataLoader timed out" in text:
        return "decoding timed out (abandoned)"
    return None


def classify_paths(classifier: Classifier, paths: Sequence[str], batch_size: int = 16,
                   num_workers: int = 2, timeout: float | None = None) -> Iterator[list[ClipResult]]:
    """Classify ``paths`` in order, yielding each batch's results (clips that failed included) as it is done.

    With workers, a decoder that crashes its process (rather than raising), or that hangs past ``timeout``
    seconds for one clip, costs one error row: the clips that were in flight are redone one per fresh worker,
    so only the culprit is lost. Without workers (``num_workers=0``) no timeout applies.
    """
    paths, done = list(paths), 0
    while done < len(paths):
        try:
            for results in _stream(classifier, paths[done:], batch_size, num_workers, timeout):
                done += len(results)
                yield results
            return
        except RuntimeError as err:
            if num_workers == 0 or not worker_lost(err):
                raise
        for path in paths[done: done + batch_size * num_workers * 2]:  # at most this many were in flight
            try:
                results = [r for batch in _stream(classifier, [path], 1, 1, timeout) for r in batch]
            except RuntimeError as err:
                reason = worker_lost(err)
                if not reason:
                    raise
                if reason.startswith("decoding timed out"):
                    reason = f"decoding timed out after {timeout:g}s (abandoned)"
                results = [ClipResult(path, error=reason)]
            done += 1
            yield results


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely classes, best first (ties keep class order)."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(class_names[i], float(probs[i])) for i in order]
