"""Window mode of ``behavior.predict``: classify a long video window by window and write its timeline.

``predict.window=SECONDS`` (and ``predict.stride=SECONDS``, default half the window) cuts each video into windows
of that length, ``stride`` apart; the last window is aligned to the end of the video so every frame is seen, and a
video shorter than one window is one window covering it. Each window is sampled and transformed exactly as the
checkpoint samples a whole clip (e.g. TSN: the centre frames of T equal segments of the window).

Windows overlap, so before merging each window is given the stretch of time nearest to its centre: from the
midpoint between its centre and the previous window's to the midpoint with the next one's (the first starts at 0,
the last ends at the end of the video). Neighbouring stretches with the same label are merged into one segment
whose score is the mean of its windows' top-class probabilities weighted by the time each window was given.

Per video, ``<output stem>_timelines/<path under input>.csv`` (columns start, end, label, score; seconds) and a
``.png`` label strip of the same segments are written atomically, before the video's row goes into ``output``; so
a video that has a row also has its timeline, and a re-run skips it.
"""

from __future__ import annotations

import bisect
import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from behavior.atomic import atomic_open
from behavior.config import check_number, fail
from behavior.data.flow import frames_needed, with_flow
from behavior.data.pipeline import ClipPipeline
from behavior.data.roi import WHOLE_FRAME, Region, crop_frames, region_of_reader
from behavior.data.sampling import sample_views
from behavior.engine.inference import Classifier, ClipResult, failure_reason, read_salvaging
from behavior.errors import ConfigError
from behavior.progress import Progress
from behavior.video import VideoDecodeError, VideoReader

COLUMNS = ("segments", "timeline")  # extra columns of the main output in window mode
TIMELINE_COLUMNS = ("start", "end", "label", "score")


@dataclass(frozen=True)
class WindowConfig:
    window: float  # seconds
    stride: float  # seconds between window starts


@dataclass
class Segment:
    start: float  # seconds
    end: float
    label: str
    score: float


def window_config(window: object, stride: object) -> WindowConfig | None:
    """``predict.window``/``predict.stride``, checked; None when window mode is off."""
    if window is None:
        if stride is not None:
            raise fail("predict.stride", stride, "only used with predict.window=SECONDS")
        return None
    check_number("predict.window", window, 0, above=True)
    check_number("predict.stride", stride, 0, above=True, none_ok=True)
    stride = window / 2 if stride is None else stride
    if stride > window:
        # The gap between two windows would be labelled without a frame of it being seen.
        raise fail("predict.stride", stride, f"use at most predict.window ({window}) so no time is unseen")
    return WindowConfig(float(window), float(stride))


def window_spans(num_frames: int, fps: float, config: WindowConfig) -> list[tuple[int, int]]:
    """``(first frame, frame count)`` of each window of a video of ``num_frames`` frames."""
    size = max(1, round(config.window * fps))
    step = max(1, round(config.stride * fps))
    if num_frames <= size:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - size + 1, step))
    if starts[-1] + size < num_frames:
        starts.append(num_frames - size)
    return [(start, size) for start in starts]


def owned_spans(windows: Sequence[Segment]) -> list[tuple[float, float]]:
    """The stretch of time nearest to each window's centre; together they tile [first start, last end]."""
    centres = [(w.start + w.end) / 2 for w in windows]
    cuts = [windows[0].start, *((a + b) / 2 for a, b in zip(centres, centres[1:], strict=False)), windows[-1].end]
    return list(zip(cuts, cuts[1:], strict=False))


def merge_windows(windows: Sequence[Segment]) -> list[Segment]:
    """Windows (sorted by start, possibly overlapping) -> non-overlapping segments, neighbours of one label merged.

    A segment's score is the mean of its windows' scores weighted by the time each window owns.
    """
    if not windows:
        return []
    segments: list[Segment] = []
    weights: list[float] = []
    for window, (start, end) in zip(windows, owned_spans(windows), strict=True):
        if segments and segments[-1].label == window.label:
            last = segments[-1]
            total = weights[-1] + (end - start)
            if total > 0:
                last.score = (last.score * weights[-1] + window.score * (end - start)) / total
            last.end, weights[-1] = end, total
        else:
            segments.append(Segment(start, end, window.label, window.score))
            weights.append(end - start)
    return segments


class WindowFrames:
    """The frames a video's windows sample, read front to back once: each batch of windows decodes only the frames
    past the last one read, and the frames later windows still need are held (about one window's worth), so the
    reader never seeks back, which for a container without a seek index (mkv, webm, ts) would mean decoding
    again from its first frame."""

    def __init__(self, reader: VideoReader, spans: Sequence[tuple[int, int]], pipeline: ClipPipeline, transform,
                 region: Region = WHOLE_FRAME):
        self.reader, self.pipeline, self.transform, self.region = reader, pipeline, transform, region
        self.views = [[[first + i for i in view] for view in sample_views(count, pipeline.sampling)]
                      for first, count in spans]
        sampled = [sorted({i for view in views for i in view}) for views in self.views]
        flow = [[] if pipeline.flow is None else frames_needed(s, len(reader), pipeline.flow.stack) for s in sampled]
        self.sampled = sampled
        self.needed = [sorted({*s, *f}) for s, f in zip(sampled, flow, strict=True)]
        self.every = sorted({i for needed in self.needed for i in needed})
        self.held: dict[int, torch.Tensor] = {}
        self.read_up_to = -1

    def batch(self, first: int, last: int) -> torch.Tensor:
        """Evaluation views of windows ``first``..``last - 1``, ``[B, V, C, T, S, S]``."""
        top = max(self.needed[w][-1] for w in range(first, last))
        new = self.every[bisect.bisect_right(self.every, self.read_up_to): bisect.bisect_right(self.every, top)]
        if new:
            self.held.update(zip(new, crop_frames(self.reader.get_frames(new), self.region), strict=True))
        self.read_up_to = max(self.read_up_to, top)
        wanted = sorted({i for w in range(first, last) for i in self.needed[w]})
        frames = torch.stack([self.held[i] for i in wanted])
        position = {index: k for k, index in enumerate(wanted)}
        if self.pipeline.flow is not None:
            sampled = sorted({i for w in range(first, last) for i in self.sampled[w]})
            frames, position = with_flow(frames, position, sampled, len(self.reader), self.pipeline.flow,
                                         self.pipeline.rgb, self.pipeline.resize)
        views = torch.stack([torch.stack([self.transform(frames[[position[i] for i in view]]) for view in views])
                             for views in self.views[first:last]])
        later = [self.needed[w][0] for w in range(last, len(self.views))]
        keep_from = min(later) if later else self.read_up_to + 1
        self.held = {i: frame for i, frame in self.held.items() if i >= keep_from}
        return views


@dataclass
class Timeline:
    windows: list[Segment]
    probs: np.ndarray  # [C]: window probabilities averaged, weighted by the time each window owns
    num_frames: int
    duration: float
    warning: str = ""
    region: Region = WHOLE_FRAME

    @property
    def segments(self) -> list[Segment]:
        return merge_windows(self.windows)


def classify_reader(classifier: Classifier, reader: VideoReader, config: WindowConfig, batch_size: int,
                    progress: bool = False, name: str = "") -> Timeline:
    n, fps = len(reader), reader.meta.fps
    if fps <= 0:
        raise VideoDecodeError(reader.path, "frame rate unknown: windows cannot be placed in time")
    spans = window_spans(n, fps, config)
    transform = classifier.pipeline.clip_transform(train=False)
    # One region for the whole video, from detections spread over it (see behavior.data.roi).
    region = region_of_reader(reader, classifier.pipeline.roi)
    windows, all_probs = [], []
    frames = WindowFrames(reader, spans, classifier.pipeline, transform, region)
    with Progress(total=len(spans), desc=name[-30:], unit="window", leave=False, enabled=progress,
                  position=1) as bar:
        for at in range(0, len(spans), batch_size):
            batch = spans[at: at + batch_size]
            probs = classifier.probabilities(frames.batch(at, at + len(batch)))
            for (first, count), p in zip(batch, probs.numpy(), strict=True):
                best = int(np.argmax(p))
                windows.append(Segment(first / fps, (first + count) / fps, classifier.class_names[best],
                                       float(p[best])))
                all_probs.append(p)
            bar.update(len(batch))
    weights = np.array([end - start for start, end in owned_spans(windows)])
    weights = weights if weights.sum() > 0 else np.ones(len(windows))
    probs = (np.stack(all_probs) * weights[:, None]).sum(0) / weights.sum()
    return Timeline(windows, probs, n, n / fps, region=region)


def video_timeline(classifier: Classifier, path: str, config: WindowConfig, batch_size: int,
                   progress: bool = False) -> Timeline:
    """The timeline of one video; a truncated or corrupt one is done over its leading frames that decode."""
    name = os.path.basename(path)

    def classify(reader: VideoReader) -> Timeline:
        return classify_reader(classifier, reader, config, batch_size, progress, name)

    timeline, _, warning = read_salvaging(path, classifier.pipeline, classify)
    timeline.warning = "; ".join(w for w in (warning, timeline.region.note()) if w)
    return timeline


def timeline_path(folder: Path, root: Path, video: str) -> Path:
    """``folder/<video's path under root>.csv``: the full name keeps a.mp4 and a.avi, or sub/a.mp4, apart."""
    relative = os.path.relpath(video, root)
    if relative.startswith(os.pardir):
        relative = os.path.basename(video)
    return folder / f"{relative}.csv"


def write_timeline_csv(path: Path, segments: Sequence[Segment]) -> Path:
    with atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(TIMELINE_COLUMNS)
        for s in segments:
            writer.writerow([f"{s.start:.3f}", f"{s.end:.3f}", s.label, f"{s.score:.6f}"])
    return path


def label_colours(class_names: Sequence[str]) -> dict[str, tuple]:
    # Colours follow the class index, so one label has the same colour in every video's plot.
    from matplotlib import colormaps

    n = len(class_names)
    if n <= 20:
        cmap = colormaps["tab10" if n <= 10 else "tab20"]
        return {name: cmap(i) for i, name in enumerate(class_names)}
    cmap = colormaps["hsv"]
    return {name: cmap(i / n) for i, name in enumerate(class_names)}


def plot_timeline(path: Path, segments: Sequence[Segment], duration: float, class_names: Sequence[str],
                  title: str = "") -> Path:
    """A label strip over time: one coloured bar per segment, a legend of the labels present, seconds on x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = label_colours(class_names)
    fig = Figure(figsize=(10, 1.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in segments:
        ax.broken_barh([(s.start, s.end - s.start)], (0, 1), facecolors=colours.get(s.label, "grey"),
                       edgecolor="white", linewidth=0.5)
    present = list(dict.fromkeys(s.label for s in segments))
    ax.legend(handles=[Patch(facecolor=colours.get(label, "grey"), label=label) for label in present],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    ax.set_xlim(0, max(duration, 1e-6))
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", bbox_inches="tight", dpi=fig.dpi)
    return path


def timelines_folder(output: Path) -> Path:
    return output.parent / f"{output.stem}_timelines"


def classify_timelines(classifier: Classifier, paths: Sequence[str], config: WindowConfig, batch_size: int,
                       output: Path, root: Path, progress: bool = False) -> Iterator[list[ClipResult]]:
    """One result per video, in order, after its timeline CSV and PNG are on disk; a bad video is an error row."""
    folder = timelines_folder(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output={output}: cannot create the timelines folder {folder} "
                          f"({err.strerror or err})") from None
    for path in paths:
        try:
            timeline = video_timeline(classifier, path, config, batch_size, progress)
            segments = timeline.segments
            csv_path = write_timeline_csv(timeline_path(folder, root, path), segments)
            plot_timeline(csv_path.with_suffix(".png"), segments, timeline.duration, classifier.class_names,
                          os.path.basename(path))
        except Exception as exc:  # one bad video costs one error row, as in clip mode
            yield [ClipResult(path, error=failure_reason(path, exc))]
            continue
        yield [ClipResult(path, timeline.probs, timeline.num_frames, timeline.warning, region=timeline.region,
                          extra={"segments": len(segments), "timeline": str(csv_path)})]
