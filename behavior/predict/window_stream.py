"""The decoding side of window mode: one video's windows, read front to back once and transformed, in batches.

:class:`WindowStream` runs inside DataLoader workers (processes of their own, so ``decode.timeout`` bounds them and
decoding overlaps the model in the main process); with several workers each decodes its own contiguous share of the
windows, the later ones from a keyframe near their first window. Each worker sends an :class:`Opened` when the
video is open (its windows, region, warning, and which windows the consumer already holds stay valid), then one
:class:`Windows` per batch, or a :class:`Failed` naming why the video cannot be read. A clip found truncated or
corrupt part-way is opened again over its leading frames that decode (``engine.inference.salvaging``); the windows
already done stay valid where the new windows are the same, and a resumed run (``done``) skips them the same way.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

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
    again from its first frame. Only the windows of ``todo`` (ascending; default all) are read, in that order.

    The evaluation transform treats each frame alone (resize, centre crop, normalize: checked by the tests), so RGB
    frames are transformed once when decoded, not once per window that samples them."""

    def __init__(self, reader: VideoReader, spans: Sequence[Span], pipeline: ClipPipeline, transform,
                 region: Region = WHOLE_FRAME, todo: Sequence[int] | None = None):
        self.reader, self.pipeline, self.transform, self.region = reader, pipeline, transform, region
        self.views = [[[first + i for i in view] for view in sample_views(count, pipeline.sampling)]
                      for first, count in spans]
        sampled = [sorted({i for view in views for i in view}) for views in self.views]
        flow = [[] if pipeline.flow is None else frames_needed(s, len(reader), pipeline.flow.stack) for s in sampled]
        self.sampled = sampled
        self.needed = [sorted({*s, *f}) for s, f in zip(sampled, flow, strict=True)]
        self.todo = list(range(len(spans))) if todo is None else list(todo)
        self.every = sorted({i for w in self.todo for i in self.needed[w]})
        self.per_frame = pipeline.flow is None
        self.held: dict[int, torch.Tensor] = {}
        self.read_up_to = -1
        self.done = 0  # windows of todo read so far

    def batch(self, windows: Sequence[int]) -> torch.Tensor:
        """Evaluation views of ``windows`` (the next ones of ``todo``), ``[B, V, C, T, S, S]``."""
        top = max(self.needed[w][-1] for w in windows)
        new = self.every[bisect.bisect_right(self.every, self.read_up_to): bisect.bisect_right(self.every, top)]
        if new:
            frames = crop_frames(self.reader.get_frames(new), self.region)
            # [C, S, S] per frame when transformed alone (all new frames in one call); views stack them in time.
            self.held.update(zip(new, self.transform(frames).unbind(1) if self.per_frame else frames, strict=True))
        self.read_up_to = max(self.read_up_to, top)
        if self.per_frame:
            views = torch.stack([torch.stack([torch.stack([self.held[i] for i in view], dim=1) for view in views])
                                 for views in (self.views[w] for w in windows)])
        else:
            views = self._flow_views(windows)
        self.done += len(windows)
        later = [self.needed[w][0] for w in self.todo[self.done:]]
        keep_from = min(later) if later else self.read_up_to + 1
        self.held = {i: frame for i, frame in self.held.items() if i >= keep_from}
        return views

    def _flow_views(self, windows: Sequence[int]) -> torch.Tensor:
        # Flow channels come from each sampled frame's neighbours, so clips are transformed whole, as in training.
        wanted = sorted({i for w in windows for i in self.needed[w]})
        frames = torch.stack([self.held[i] for i in wanted])
        position = {index: k for k, index in enumerate(wanted)}
        sampled = sorted({i for w in windows for i in self.sampled[w]})
        frames, position = with_flow(frames, position, sampled, len(self.reader), self.pipeline.flow,
                                     self.pipeline.rgb, self.pipeline.resize)
        return torch.stack([torch.stack([self.transform(frames[[position[i] for i in view]]) for view in views])
                            for views in (self.views[w] for w in windows)])


@dataclass
class Opened:
    spans: list[Span]
    fps: float
    num_frames: int
    region: Region
    warning: str  # partly decoded, stream cut short; empty for a clean video
    kept: list[Span]  # the windows the consumer holds that stay valid: the stream does the others


@dataclass
class Windows:
    windows: list[int]  # indices of the windows in this batch
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


def share(todo: Sequence[int], batch_size: int, worker: int, workers: int) -> list[list[int]]:
    """Worker ``worker``'s batches of ``todo``: the batches, cut from the start, split into ``workers`` contiguous
    runs. Cut the same way whatever the number of workers, so the model sees the same batches."""
    batches = [list(todo[at: at + batch_size]) for at in range(0, len(todo), batch_size)]
    return batches[worker * len(batches) // workers: (worker + 1) * len(batches) // workers]


class WindowStream(IterableDataset):
    """One video's window batches (see the module docstring); ``done``/``done_region``: what a resumed run holds.

    In a DataLoader with several workers, each opens the video and decodes its own contiguous share of the windows
    (the second from a keyframe near its first window), so a video is decoded by several processes at once."""

    def __init__(self, path: str, pipeline: ClipPipeline, config: WindowConfig, batch_size: int,
                 done: Sequence[Span] = (), done_region: Region | None = None, threads: int = 1):
        self.path, self.pipeline, self.config = path, pipeline, config
        self.batch_size, self.done, self.done_region, self.threads = batch_size, list(done), done_region, threads

    def __iter__(self) -> Iterator[Opened | Windows | Failed]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        held, held_region = set(self.done), self.done_region

        def windows(reader: VideoReader, warning: str) -> Iterator[Opened | Windows]:
            nonlocal held, held_region
            n, fps = len(reader), reader.meta.fps
            if fps <= 0:
                raise VideoDecodeError(reader.path, "frame rate unknown: windows cannot be placed in time")
            spans = window_spans(n, fps, self.config)
            # One region for the whole video, from detections spread over it (see behavior.data.roi).
            region = region_of_reader(reader, self.pipeline.roi)
            held = {s for s in spans if s in held} if region == held_region else set()
            held_region = region
            yield Opened(spans, fps, n, region, warning, sorted(held))
            todo = [w for w, span in enumerate(spans) if span not in held]
            mine = share(todo, self.batch_size, worker, workers)
            frames = WindowFrames(reader, spans, self.pipeline, self.pipeline.clip_transform(train=False), region,
                                  [w for batch in mine for w in batch])
            reader.read_only(frames.every).decode_threads(self.threads)
            reader.seek_unindexed = True  # a share or a resumed run may start far into the video
            for batch in mine:
                yield Windows(batch, frames.batch(batch))
                held.update(spans[w] for w in batch)

        try:
            yield from salvaging(self.path, self.pipeline, windows)
        except Exception as exc:  # noqa: BLE001 - one bad video costs one error row, as in clip mode
            yield Failed(failure_reason(self.path, exc))


def _as_is(item):
    return item


def window_items(stream: WindowStream, workers: int, timeout: float | None) -> Iterator[Opened | Windows | Failed]:
    """The stream's items, from ``workers`` DataLoader workers (waiting at most ``timeout`` seconds for each item;
    each worker sends its Opened, then its batches) or, with ``workers=0``, from this process (no time limit)."""
    if workers == 0:
        return iter(stream)
    if workers == 1:
        stream.threads = DECODE_THREADS  # the worker opens its own decoder, so its threads are its own
    loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is, worker_init_fn=one_thread,
                        timeout=timeout or 0, prefetch_factor=2)
    return iter(loader)
