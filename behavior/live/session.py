"""A live session: classify a stream as it plays (``python -m behavior.live``).

The reading loop keeps a ring buffer of the last ``window`` seconds, hands it to a worker thread every ``stride``
frames (``behavior.live.worker``) and writes each frame, annotated with the newest prediction made at or
before it, to ``output``. A frame is written once that prediction exists, so the file shows what a viewer saw
live, one latency later. Files are never dropped from: every ``stride``-th frame gets its own label. A live
source drops the classifications the worker cannot keep up with instead of falling behind the camera. With no
``output`` and no window each label is printed as a line (time in the source, label, score), so a run always
shows what it found.

Ctrl-C (SIGINT), SIGTERM or ``q`` in the window stop reading; the frames read so far are written and the video
is closed properly. The output is a fragmented MP4, so even a killed process leaves a playable file.

Frames are decoded at two sizes at most: the classifier's (``decode_size``: twice the transform's resize on the
short side, or full size with a region of interest, whose detector and crop want the whole picture) and, only
when a video is written or a window shown, the annotated size (``SHOWN_SHORT_SIDE``). Drawing and encoding 1080p
frames cost more than the classifier and kept a 30 fps 1080p file below real time on two cores.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from behavior.config import (
    Settings,
    check_bool,
    check_choice,
    check_device,
    check_number,
    check_text,
    device_of,
    fail,
    plain,
)
from behavior.data.roi import RoiConfig
from behavior.data.transforms import TransformConfig, visible_box
from behavior.engine.inference import load_classifier
from behavior.errors import DataError
from behavior.live.annotate import Annotation, annotate
from behavior.live.display import Display
from behavior.live.worker import Job, Prediction, StreamClassifier
from behavior.video.stream import DEFAULT_FPS, FrameSource, open_source
from behavior.video.writer import VideoWriter

OUTPUT_SUFFIXES = (".mp4", ".mkv", ".avi")
# Short side of the annotated frames (written and shown); smaller sources keep their size. 540 is half of 1080p
# each way: on two cores a 1080p output (x264 ~24 ms, drawing ~13 ms a frame) alone ran below 30 fps, while
# 960x540 costs about a quarter of that and still shows the label, box and heatmap plainly.
SHOWN_SHORT_SIDE = 540


@dataclass
class LiveStats:
    frames: int = 0
    predictions: int = 0
    dropped: int = 0  # classifications skipped because the worker was busy (live sources only)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    labels: list[tuple[int, str, float]] = field(default_factory=list)  # (frame index, label, score) per prediction
    stopped: str = ""  # why reading stopped before the source ended

    def add(self, predictions: list[Prediction]) -> None:
        self.predictions += len(predictions)
        self.latencies += [p.latency for p in predictions]
        self.labels += [(p.index, p.label, p.score) for p in predictions]

    def summary(self, fps: float) -> str:
        rate = self.frames / max(self.seconds, 1e-9)
        lines = [f"live: {self.frames} frame(s) in {self.seconds:.1f}s = {rate:.1f} frames/s "
                 f"({rate / fps:.2f}x real time at {fps:g} fps); {self.predictions} prediction(s)"
                 + (f", {self.dropped} skipped while the classifier was busy" if self.dropped else "")]
        if self.latencies:
            ms = np.asarray(self.latencies) * 1000
            lines.append(f"latency frame -> label: mean {ms.mean():.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, "
                         f"max {ms.max():.0f} ms")
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}")
        return "\n".join(lines)


@dataclass(frozen=True)
class LiveSettings(Settings):
    """conf/live.yaml, checked before the checkpoint is loaded or the camera opened."""

    GROUP = ""
    checkpoint: str
    source: int | str
    output: Path | None
    show: bool
    stride: int
    window: float
    drop: str | bool
    detect_every: int
    heatmap: bool
    max_frames: int | None
    fps: float | None
    threads: int | str
    device: str
    amp: bool
    roi: RoiConfig | None  # None: the checkpoint's region settings

    @classmethod
    def from_mapping(cls, values, group=None) -> LiveSettings:
        # conf/live.yaml selects no roi option (``roi: null`` in its defaults list), so the key is absent unless
        # roi=face|person|none is on the command line.
        values = plain(values)
        return super().from_mapping({"roi": None, **values} if isinstance(values, dict) else values, group)

    def __post_init__(self) -> None:
        check_text("checkpoint", self.checkpoint, what="the checkpoint to run (checkpoint=PATH/best.pt)")
        check_number("stride", self.stride, 1, integer=True)
        check_number("window", self.window, 0, above=True)
        check_number("detect_every", self.detect_every, 1, integer=True)
        check_number("max_frames", self.max_frames, 1, integer=True, none_ok=True)
        check_number("fps", self.fps, 0, above=True, none_ok=True)
        for key in ("show", "heatmap", "amp"):
            check_bool(key, getattr(self, key))
        check_choice("drop", self.drop, ("auto", True, False))
        if self.threads != "auto":
            check_number("threads", self.threads, 1, integer=True)
        check_device("device", self.device)
        if self.output is not None:
            output = Path(str(self.output))
            if output.suffix.lower() not in OUTPUT_SUFFIXES:
                raise fail("output", output, f"name a {', '.join(OUTPUT_SUFFIXES)} file")
            if output.exists():
                raise fail("output", output, "already exists; it is left untouched: give another name")
            object.__setattr__(self, "output", output)
        if self.roi is not None:
            object.__setattr__(self, "roi", RoiConfig.from_mapping(self.roi))


class FrameQueue:
    """Frames read but not yet written, each waiting for the prediction that covers it (None stands in for
    the frame when nothing is written or shown)."""

    def __init__(self) -> None:
        self.frames: deque[tuple[int, np.ndarray | None]] = deque()
        self.outstanding: deque[int] = deque()  # indices of submitted jobs without a prediction yet
        self.latest: Prediction | None = None
        self.found: deque[Prediction] = deque()  # predictions not yet in force (their frame is still queued)

    def ready(self, predictions: list[Prediction]) -> list[tuple[np.ndarray | None, Prediction | None]]:
        """Frames that can be written now, each with the prediction in force at it."""
        for p in predictions:
            self.outstanding.remove(p.index)
            self.found.append(p)
        out = []
        while self.frames and (not self.outstanding or self.frames[0][0] < self.outstanding[0]):
            index, frame = self.frames.popleft()
            while self.found and self.found[0].index <= index:
                self.latest = self.found.popleft()
            out.append((frame, self.latest))
        return out


def _annotation(p: Prediction | None, roi_kind: str, heatmap: bool, transform: TransformConfig,
                frame: np.ndarray) -> Annotation | None:
    """What to draw on ``frame``: the region (kept in fractions of the frame) in this frame's pixels, which
    differ from those of the frames the classifier saw when the two sizes differ."""
    if p is None:
        return None
    height, width = frame.shape[:2]
    box = p.region.pixels(width, height)
    note = "" if p.region.found or roi_kind == "none" else f"no {roi_kind} found: whole frame"
    return Annotation(p.label, p.score, box if p.region.found else None, visible_box(box, transform),
                      p.heat if heatmap else None, note)


def prints_labels(writing: bool, display: Display | None) -> bool:
    """Whether the labels go to stdout: with no video written and no window they would be seen nowhere else."""
    return not writing and (display is None or not display.kind)


class StopRequest:
    """A signal handler for Ctrl-C and SIGTERM that asks the reading loop to stop after the frame in hand.

    Raising from the handler (Python's default for Ctrl-C) could land between reading a frame and writing it, losing
    frames already read; the loop checks ``asked`` once per frame instead. A second signal raises
    KeyboardInterrupt, for a source that blocks and never delivers the next frame."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, *_) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        print("stopping: the frames read so far are finished and written (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)


def stream(source: FrameSource, worker: StreamClassifier, cfg: LiveSettings, fps: float, writer: VideoWriter | None,
           display: Display | None, stop: StopRequest | None = None) -> LiveStats:
    """The reading loop: buffer, submit, write what is ready; returns the counts for the summary.

    ``source`` yields (classifier frame, shown frame) pairs, or classifier frames alone when nothing is written
    or shown."""
    window = max(1, round(cfg.window * fps))
    ring: deque[np.ndarray] = deque(maxlen=window)
    drop = source.live if cfg.drop == "auto" else bool(cfg.drop)
    kind = worker.classifier.pipeline.roi.kind
    transform = worker.classifier.pipeline.transform
    queue, stats = FrameQueue(), LiveStats()
    echo = prints_labels(writer is not None, display)
    drawing = writer is not None or display is not None
    start = time.perf_counter()

    def record(done: list[Prediction]) -> None:
        stats.add(done)
        if echo:
            for p in done:
                print(f"{p.index / fps:8.2f}s  {p.label}  {p.score:.2f}", flush=True)

    def write(ready) -> bool:
        """Write (and show) frames; False once the viewer asked to stop (q, or the window closed)."""
        nonlocal display
        if not drawing:
            return True
        for frame, prediction in ready:
            status = "" if prediction else f"buffering: first label at frame {cfg.stride}"
            shown = annotate(frame, _annotation(prediction, kind, cfg.heatmap, transform, frame), status)
            if writer is not None:
                writer.write(shown)
            if display is not None and not display.show(shown):
                display = None  # the frames read so far are still written
                return False
        return True

    try:
        for index, sizes in enumerate(source):
            ring.append(sizes[0])
            queue.frames.append((index, sizes[-1] if drawing else None))
            stats.frames += 1
            if (index + 1) % cfg.stride == 0:
                if worker.submit(Job(index, list(ring), time.perf_counter()), wait=not drop):
                    queue.outstanding.append(index)
                else:
                    stats.dropped += 1
            done = worker.poll()
            record(done)
            if not write(queue.ready(done)):
                stats.stopped = "stopped from the window"
                break
            if cfg.max_frames and stats.frames >= cfg.max_frames:
                break
            if stop is not None and stop.asked:
                stats.stopped = "interrupted"
                break
    except KeyboardInterrupt:
        stats.stopped = "interrupted"
    if source.problem:
        stats.stopped = f"the source failed: {source.problem[0]}"
    # The jobs in flight take a fraction of a second: finish them so every frame read is written with its label.
    done = worker.poll(wait=True)
    record(done)
    write(queue.ready(done))
    stats.seconds = time.perf_counter() - start
    return stats


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(cfg: LiveSettings) -> LiveStats:
    device = device_of(cfg.device)
    threads = max(1, (os.cpu_count() or 2) - 1) if cfg.threads == "auto" else cfg.threads
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    # "auto": the frame size batch-classify decodes at (decode_size), so both give the model the same input.
    classifier = load_classifier(str(cfg.checkpoint), device, cfg.amp, max_short_side="auto", roi=cfg.roi)
    drawing = cfg.output is not None or cfg.show
    sides = (classifier.pipeline.max_short_side, SHOWN_SHORT_SIDE) if drawing else (classifier.pipeline.max_short_side,)
    source = open_source(cfg.source, sides)
    fps = float(cfg.fps or source.fps or DEFAULT_FPS)  # some cameras report 0 (or nonsense): fps= overrides
    display = Display(f"behavior.live: {source.name}", writing=cfg.output is not None) if cfg.show else None
    writer = None
    # Ctrl-C and SIGTERM (a service manager, `kill`) finalize the video; only the main thread may set handlers.
    main_thread = threading.current_thread() is threading.main_thread()
    stop = StopRequest() if main_thread else None
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS} if main_thread else {}
    worker = StreamClassifier(classifier, cfg.heatmap, detect_every=cfg.detect_every)
    if cfg.heatmap and not worker.heatmap:
        print("warning: heatmap=true, but this model gives no attention maps (an exported model, or one without "
              "spatial attention): labels are drawn without a heatmap", file=sys.stderr, flush=True)
    try:
        print(f"live: {source.name} at {fps:g} fps; {len(classifier.class_names)} classes; roi="
              f"{classifier.pipeline.roi.kind}; a label every {cfg.stride} frames from the last {cfg.window:g}s"
              + (f"; writing {cfg.output}" if cfg.output else "")
              + ("; each label printed as: time in the source, label, score"
                 if prints_labels(cfg.output is not None, display) else ""), flush=True)
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            why = f" ({source.problem[0]})" if source.problem else ""
            raise DataError(f"source={cfg.source}: no frames could be read{why}")
        if cfg.output is not None:
            shown = first[-1]
            writer = VideoWriter(cfg.output, shown.shape[1], shown.shape[0], fps, quality=23,
                                 fragmented=cfg.output.suffix.lower() == ".mp4",
                                 keyframe_every=max(1, round(2 * fps)))
        source.frames = _prepend(first, frames)
        stats = stream(source, worker, cfg, fps, writer, display, stop)
    finally:
        worker.close()
        if writer is not None:
            writer.close()
        if display is not None:
            display.close()
        source.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        torch.set_num_threads(previous_threads)  # a notebook or test calling run() gets its threads back
    print(stats.summary(fps), flush=True)
    if writer is not None:
        print(f"annotated video: {cfg.output} ({writer.frames} frames)")
    return stats


def _prepend(first: tuple[np.ndarray, ...], rest):
    yield first
    yield from rest
