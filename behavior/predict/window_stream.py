"""The decoding side of window mode: one video's windows, read front to back once and transformed, in batches.

:class:`WindowStream` runs inside a DataLoader worker (a process of its own, so ``decode.timeout`` bounds it and
decoding overlaps the model in the main process). It sends an :class:`Opened` when the video is open (its windows,
region, warning and how many windows the consumer already holds stay valid), then one :class:`Windows` per batch, or
a :class:`Failed` naming why the video cannot be read. A clip found truncated or corrupt part-way is opened again over
its leading frames that decode (``engine.inference.salvaging``); the windows sent before stay valid as far as the
new windows agree with them, so nothing is decoded twice that need not be, and a resumed run (``done``) goes on from
its last finished window the same way.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset

from behavior.data.flow import frames_needed, with_flow
from behavior.data.pipeline import ClipPipeline, one_thread
from behavior.data.roi import WHOLE_FRAME, Region, crop_frames, region_of_reader
from behavior.data.sampling import sample_views
from behavior.engine.inference import failure_reason, salvaging
from behavior.video import VideoDecodeError, VideoReader

Span = tuple[int, int]  # (first frame, frame count) of a window
DECODE_THREADS = 2  # FFmpeg threads of the one worker: they use the core the model leaves idle between batches


class WindowFrames:
    """The frames a video's windows sample, read front to back once: each batch of windows decodes only the frames
    past the last one read, and the frames later windows still need are held (about one window's worth), so the
    reader never seeks back, which for a container without a seek index (mkv, webm, ts) would mean decoding
    again from its first frame. Windows before ``start`` are not read at all.

    The evaluation transform treats each frame alone (resize, centre crop, normalize: checked by the tests), so RGB
    frames are transformed once when decoded, not once per window that samples them."""

    def __init__(self, reader: VideoReader, spans: Sequence[Span], pipeline: ClipPipeline, transform,
                 region: Region = WHOLE_FRAME, start: int = 0):
        self.reader, self.pipeline, self.transform, self.region = reader, pipeline, transform, region
        self.views = [[[first + i for i in view] for view in sample_views(count, pipeline.sampling)]
                      for first, count in spans]
        sampled = [sorted({i for view in views for i in view}) for views in self.views]
        flow = [[] if pipeline.flow is None else frames_needed(s, len(reader), pipeline.flow.stack) for s in sampled]
        self.sampled = sampled
        self.needed = [sorted({*s, *f}) for s, f in zip(sampled, flow, strict=True)]
        self.every = sorted({i for needed in self.needed[start:] for i in needed})
        self.per_frame = pipeline.flow is None
        self.held: dict[int, torch.Tensor] = {}
        self.read_up_to = -1

    def batch(self, first: int, last: int) -> torch.Tensor:
        """Evaluation views of windows ``first``..``last - 1``, ``[B, V, C, T, S, S]``."""
        top = max(self.needed[w][-1] for w in range(first, last))
        new = self.every[bisect.bisect_right(self.every, self.read_up_to): bisect.bisect_right(self.every, top)]
        if new:
            frames = crop_frames(self.reader.get_frames(new), self.region)
            # [C, S, S] per frame when transformed alone (all new frames in one call); views stack them in time.
            self.held.update(zip(new, self.transform(frames).unbind(1) if self.per_frame else frames, strict=True))
        self.read_up_to = max(self.read_up_to, top)
        if self.per_frame:
            views = torch.stack([torch.stack([torch.stack([self.held[i] for i in view], dim=1) for view in views])
                                 for views in self.views[first:last]])
        else:
            views = self._flow_views(first, last)
        later = [self.needed[w][0] for w in range(last, len(self.views))]
        keep_from = min(later) if later else self.read_up_to + 1
        self.held = {i: frame for i, frame in self.held.items() if i >= keep_from}
        return views

    def _flow_views(self, first: int, last: int) -> torch.Tensor:
        # Flow channels come from each sampled frame's neighbours, so clips are transformed whole, as in training.
        wanted = sorted({i for w in range(first, last) for i in self.needed[w]})
        frames = torch.stack([self.held[i] for i in wanted])
        position = {index: k for k, index in enumerate(wanted)}
        sampled = sorted({i for w in range(first, last) for i in self.sampled[w]})
        frames, position = with_flow(frames, position, sampled, len(self.reader), self.pipeline.flow,
                                     self.pipeline.rgb, self.pipeline.resize)
        return torch.stack([torch.stack([self.transform(frames[[position[i] for i in view]]) for view in views])
                            for views in self.views[first:last]])


@dataclass
class Opened:
    spans: list[Span]
    fps: float
    num_frames: int
    region: Region
    warning: str  # partly decoded, stream cut short; empty for a clean video
    keep: int  # windows the consumer holds that stay valid: the stream goes on from there


@dataclass
class Windows:
    first: int  # index of the first window in this batch
    views: torch.Tensor  # [B, V, C, T, S, S]


@dataclass
class Failed:
    reason: str


@dataclass(frozen=True)
class WindowConfig:
    window: float  # seconds
    stride: float  # seconds between window starts


def window_spans(num_frames: int, fps: float, config: WindowConfig) -> list[Span]:
    """``(first frame, frame count)`` of each window of a video of ``num_frames`` frames."""
    size = max(1, round(config.window * fps))
    step = max(1, round(config.stride * fps))
    if num_frames <= size:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - size + 1, step))
    if starts[-1] + size < num_frames:
        starts.append(num_frames - size)
    return [(start, size) for start in starts]


def agreeing(held: Sequence[Span], spans: Sequence[Span]) -> int:
    """How many leading windows of ``held`` are also the leading windows of ``spans``."""
    count = 0
    for a, b in zip(held, spans, strict=False):
        if a != b:
            break
        count += 1
    return count


class WindowStream(IterableDataset):
    """One video's window batches (see the module docstring); ``done``/``done_region``: what a resumed run holds."""

    def __init__(self, path: str, pipeline: ClipPipeline, config: WindowConfig, batch_size: int,
                 done: Sequence[Span] = (), done_region: Region | None = None, threads: int = 1):
        self.path, self.pipeline, self.config = path, pipeline, config
        self.batch_size, self.done, self.done_region, self.threads = batch_size, list(done), done_region, threads

    def __iter__(self) -> Iterator[Opened | Windows | Failed]:
        held, held_region = list(self.done), self.done_region

        def windows(reader: VideoReader, warning: str) -> Iterator[Opened | Windows]:
            nonlocal held_region
            n, fps = len(reader), reader.meta.fps
            if fps <= 0:
                raise VideoDecodeError(reader.path, "frame rate unknown: windows cannot be placed in time")
            spans = window_spans(n, fps, self.config)
            # One region for the whole video, from detections spread over it (see behavior.data.roi).
            region = region_of_reader(reader, self.pipeline.roi)
            keep = agreeing(held, spans) if region == held_region or not held else 0
            del held[keep:]
            held_region = region
            yield Opened(spans, fps, n, region, warning, keep)
            frames = WindowFrames(reader, spans, self.pipeline, self.pipeline.clip_transform(train=False), region,
                                  start=keep)
            reader.read_only(frames.every).decode_threads(self.threads)
            for at in range(keep, len(spans), self.batch_size):
                last = min(at + self.batch_size, len(spans))
                yield Windows(at, frames.batch(at, last))
                held.extend(spans[at:last])

        try:
            yield from salvaging(self.path, self.pipeline, windows)
        except Exception as exc:  # noqa: BLE001 - one bad video costs one error row, as in clip mode
            yield Failed(failure_reason(self.path, exc))


def _as_is(item):
    return item


def window_items(stream: WindowStream, workers: int, timeout: float | None) -> Iterator[Opened | Windows | Failed]:
    """The stream's items, from one DataLoader worker (waiting at most ``timeout`` seconds for each) or, with
    ``workers=0``, from this process (no time limit)."""
    if workers == 0:
        return iter(stream)
    stream.threads = DECODE_THREADS  # the worker opens its own decoder, so its threads are its own
    loader = DataLoader(stream, batch_size=None, num_workers=1, collate_fn=_as_is, worker_init_fn=one_thread,
                        timeout=timeout or 0, prefetch_factor=2)
    return iter(loader)
