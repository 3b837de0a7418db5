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

A video's windows are shared among the DataLoader workers, each decoding its share front to back once
(``behavior.predict.window_stream``), while this process classifies the windows already decoded; ``decode.timeout``
bounds each batch of windows. While a video is in progress its finished windows are kept in ``<timeline>.part``
(``behavior.predict.partial_timeline``), so a run killed part-way classifies only the windows not yet finished and
ends with the timeline an uninterrupted run writes. A decoder that hangs or crashes part-way costs the video an error
row; the windows finished from its start on are kept as its timeline.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from behavior.atomic import atomic_open
from behavior.config import check_number, fail
from behavior.data.roi import WHOLE_FRAME, Region
from behavior.engine.inference import Classifier, ClipResult, failure_reason, worker_lost
from behavior.errors import ConfigError
from behavior.predict.partial_timeline import PartialTimeline
from behavior.predict.predictions import printable
from behavior.predict.window_stream import Failed, Opened, WindowConfig, WindowStream, window_items
from behavior.progress import Progress
from behavior.video import VideoDecodeError

COLUMNS = ("segments", "timeline")  # extra columns of the main output in window mode
TIMELINE_COLUMNS = ("start", "end", "label", "score")


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


class WindowFailure(Exception):
    """A video stopped part-way (its decoder hung or crashed): the reason and the timeline of the windows before."""

    def __init__(self, reason: str, timeline: Timeline | None):
        super().__init__(reason)
        self.reason, self.timeline = reason, timeline


def timeline_of(spans: Sequence[tuple[int, int]], probs: Sequence[np.ndarray], class_names: Sequence[str],
                num_frames: int, fps: float, warning: str, region: Region) -> Timeline:
    """Windows and their class probabilities -> the video's timeline, and its probabilities averaged over time."""
    windows = []
    for (first, count), p in zip(spans, probs, strict=True):
        best = int(np.argmax(p))
        windows.append(Segment(first / fps, (first + count) / fps, class_names[best], float(p[best])))
    weights = np.array([end - start for start, end in owned_spans(windows)])
    weights = weights if weights.sum() > 0 else np.ones(len(windows))
    average = (np.stack(probs) * weights[:, None]).sum(0) / weights.sum()
    note = "; ".join(w for w in (warning, region.note()) if w)
    return Timeline(windows, average, num_frames, num_frames / fps, note, region)


def video_timeline(classifier: Classifier, path: str, config: WindowConfig, batch_size: int, part: PartialTimeline,
                   workers: int = 1, timeout: float | None = None, progress: bool = False) -> Timeline:
    """The timeline of one video, decoded by ``workers`` DataLoader workers (each its share of the windows) while
    this process classifies the windows already decoded.

    ``part`` holds the windows an interrupted run finished (they are not classified again) and gets each batch as
    it is done. A truncated or corrupt video is done over its leading frames that decode; a decoder that hangs
    longer than ``timeout`` seconds for one batch, or crashes, raises WindowFailure with the windows before it."""
    part.load()
    threads = torch.get_num_threads()
    if workers:  # the decoding workers keep cores busy: torch threads spinning for them would slow the model down
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - workers))
    run = WindowRun(classifier, path, part, progress)
    try:
        while not run.classify(WindowStream(path, classifier.pipeline, config, batch_size, part.spans, part.region),
                               workers, timeout):
            workers = 1  # a worker found the video damaged part-way: one worker redoes it over what decodes
    finally:
        torch.set_num_threads(threads)
        run.close()
    return run.timeline(len(run.opened.spans))


class WindowRun:
    """The main-process side of one video: the windows' probabilities into ``part``, progress, the timeline."""

    def __init__(self, classifier: Classifier, path: str, part: PartialTimeline, progress: bool):
        self.classifier, self.path, self.part, self.progress = classifier, path, part, progress
        self.opened: Opened | None = None
        self.bar: Progress | None = None

    def classify(self, stream: WindowStream, workers: int, timeout: float | None) -> bool:
        """Classify what ``stream`` sends; False when the workers no longer agree on the video's windows."""
        items = window_items(stream, workers, timeout)
        try:
            for item in items:
                if isinstance(item, Failed):
                    raise VideoDecodeError(self.path, item.reason)
                if isinstance(item, Opened):
                    if self.opened is not None and (item.spans, item.region) == (self.opened.spans,
                                                                                 self.opened.region):
                        continue  # another worker's view of the same windows
                    if self.opened is not None and workers > 1:
                        return False
                    self._open(item)
                    continue
                probs = self.classifier.probabilities(item.views).numpy()
                self.part.add([self.opened.spans[w] for w in item.windows], probs)
                self.bar.update(len(probs))
        except RuntimeError as err:
            reason = worker_lost(err)
            if reason is None:
                raise
            if reason.startswith("decoding timed out"):
                reason = f"decoding timed out after {timeout:g}s (abandoned)"
            raise self.failure(reason) from None
        finally:
            del items  # shuts the workers down (a hung one is terminated)
        return True

    def _open(self, item: Opened) -> None:
        if item.kept and self.opened is None:
            print(printable(f"{self.path}: {len(item.kept)} of {len(item.spans)} windows were finished by an "
                            f"interrupted run (kept in {self.part.path.name}); classifying the other "
                            f"{len(item.spans) - len(item.kept)}"), flush=True)
        self.opened = item
        self.part.begin(item.region, item.kept)
        if self.bar is not None:
            self.bar.close()
        self.bar = Progress(total=len(item.spans), desc=os.path.basename(self.path)[-30:], unit="window",
                            leave=False, enabled=self.progress, position=1)
        self.bar.update(len(self.part.spans))

    def timeline(self, count: int) -> Timeline:
        """The timeline of the video's first ``count`` windows, which must all be done."""
        opened, done = self.opened, dict(zip(self.part.spans, self.part.probs, strict=True))
        spans = opened.spans[:count]
        frames = opened.num_frames if count == len(opened.spans) else spans[-1][0] + spans[-1][1]
        return timeline_of(spans, [done[s] for s in spans], self.classifier.class_names, frames, opened.fps,
                           opened.warning, opened.region)

    def failure(self, reason: str) -> WindowFailure:
        """The video stopped part-way: the reason, and the timeline of the windows finished from its start on."""
        opened, done = self.opened, set(self.part.spans)
        count = next((w for w, span in enumerate(opened.spans) if span not in done), len(opened.spans)) \
            if opened is not None else 0
        if not count:
            return WindowFailure(reason, None)
        timeline = self.timeline(count)
        return WindowFailure(f"{reason} after {timeline.duration:.1f}s of {opened.num_frames / opened.fps:.1f}s; "
                             f"the timeline covers the {count} window(s) before", timeline)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.part.close()


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
                       output: Path, root: Path, identity: str, workers: int = 1, timeout: float | None = None,
                       progress: bool = False) -> Iterator[list[ClipResult]]:
    """One result per video, in order, after its timeline CSV and PNG are on disk; a bad video is an error row.

    ``identity`` names the checkpoint and settings, so a partial timeline another run left is used only by the same.
    """
    folder = timelines_folder(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output={output}: cannot create the timelines folder {folder} "
                          f"({err.strerror or err})") from None
    for path in paths:
        csv_path, part = timeline_path(folder, root, path), None
        try:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            part = PartialTimeline(csv_path.with_name(csv_path.name + ".part"), path, identity,
                                   classifier.class_names)
            timeline = video_timeline(classifier, path, config, batch_size, part, workers, timeout, progress)
        except WindowFailure as failure:
            extra = {}
            if failure.timeline is not None:  # the windows before the hang are kept as the video's timeline
                extra = write_timeline(failure.timeline, csv_path, classifier.class_names, path)
                part.remove()
            yield [ClipResult(path, error=failure.reason, extra=extra)]
            continue
        except Exception as exc:  # one bad video costs one error row, as in clip mode
            if part is not None:
                part.remove()  # its row says what went wrong; a re-run skips the video, so nothing would resume it
            yield [ClipResult(path, error=failure_reason(path, exc))]
            continue
        extra = write_timeline(timeline, csv_path, classifier.class_names, path)
        part.remove()
        yield [ClipResult(path, timeline.probs, timeline.num_frames, timeline.warning, region=timeline.region,
                          extra=extra)]


def write_timeline(timeline: Timeline, csv_path: Path, class_names: Sequence[str], video: str) -> dict:
    """The timeline's CSV and PNG, and the output columns that point to them."""
    segments = timeline.segments
    write_timeline_csv(csv_path, segments)
    plot_timeline(csv_path.with_suffix(".png"), segments, timeline.duration, class_names, os.path.basename(video))
    return {"segments": len(segments), "timeline": str(csv_path)}
