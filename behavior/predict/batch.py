"""Batch-classify: every clip under a folder (or one file) through a checkpoint, into a predictions file.

A clip that cannot be decoded gets an error row; the run goes on and exits 0. A folder with no video files is a
one-line error (exit 2) that leaves the output untouched. ``predict.window=SECONDS`` classifies each video window
by window and writes its timeline (``behavior.predict.timeline``). Under ``torchrun --nproc_per_node=N`` the clips
still to do are shared out among N processes (``behavior.predict.sharded``); rank 0 alone prints and checks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from behavior import provenance
from behavior.config import (
    Settings,
    check_bool,
    check_choice,
    check_device,
    check_keys,
    check_number,
    check_text,
    device_of,
    fail,
    plain,
)
from behavior.data.roi import active
from behavior.data.scan import find_videos
from behavior.engine.distributed import rank_device, shard, stop, world
from behavior.engine.inference import ClipResult, classify_paths, load_classifier
from behavior.errors import DataError
from behavior.predict.predictions import (
    ON_MISMATCH,
    ROI_COLUMN,
    PredictionsFile,
    columns_for,
    open_output,
    printable,
    provenance_record,
    row_of,
)
from behavior.predict.sharded import Job, PartFile, fold, leftover_parts, part_path
from behavior.predict.timeline import COLUMNS as TIMELINE_COLUMNS
from behavior.predict.timeline import WindowConfig, classify_timelines, timelines_folder, window_config
from behavior.progress import Progress
from behavior.video import require_backend


def find_inputs(target: Path, extensions: tuple[str, ...]) -> list[str]:
    """Absolute paths of the clips to classify: ``target`` itself, or every video file below it."""
    if target.is_file():
        return [os.path.abspath(target)]  # named explicitly: taken whatever its extension
    if not target.is_dir():
        raise DataError(f"input={target}: not found" if not os.path.lexists(target)
                        else f"input={target}: neither a file nor a folder (or a broken symlink)")
    errors: list[OSError] = []
    paths = [os.path.abspath(p) for p in find_videos(target, extensions, errors)]
    for err in errors:
        if os.path.abspath(err.filename or "") == os.path.abspath(target):
            raise DataError(f"input: cannot read folder {target} ({err.strerror})")
        print(printable(f"warning: cannot read folder {err.filename} ({err.strerror}); its clips are left out"),
              file=sys.stderr)
    if not paths:  # most likely a wrong folder or extensions: an empty predictions file would hide that
        raise DataError(printable(f"input={target}: no video files with the extensions {', '.join(extensions)} "
                                  f"found in this folder or below it (extensions=[...] sets others)"))
    return paths


def inputs_line(target: str, paths: list[str]) -> str:
    """What is about to be classified: the file itself, or how many clips a folder holds."""
    if Path(target).is_file():
        return f"1 clip: {target}"
    return f"{len(paths)} clip{'' if len(paths) == 1 else 's'} under {target}"


@dataclass(frozen=True)
class PredictDecode(Settings):
    GROUP = "decode"
    backend: str | None  # null = the checkpoint's
    max_short_side: int | str | None  # auto | null | pixels
    timeout: float | None  # seconds one clip may take in a worker; null = no limit

    def __post_init__(self) -> None:
        if self.backend is not None:
            require_backend(self.backend)
        if self.max_short_side != "auto":
            check_number("decode.max_short_side", self.max_short_side, 1, integer=True, none_ok=True)
        check_number("decode.timeout", self.timeout, 0, above=True, none_ok=True)


@dataclass(frozen=True)
class PredictSettings(Settings):
    """conf/predict.yaml, checked before the checkpoint is loaded."""

    GROUP = ""
    checkpoint: str
    input: str
    output: str
    extensions: tuple[str, ...]  # lower-cased
    top_k: int
    num_views: int | None
    decode: PredictDecode
    batch_size: int
    num_workers: int
    device: str
    amp: bool
    progress: bool
    predict: WindowConfig | None  # window mode (predict.window / predict.stride), or None: one row per clip
    on_mismatch: str  # refuse | new: when output holds another checkpoint's or other settings' predictions

    def __post_init__(self) -> None:
        check_text("checkpoint", self.checkpoint, what="the checkpoint to use (checkpoint=PATH/best.pt)")
        check_text("input", self.input, what="a clip or a folder of clips (input=DIR)")
        check_text("output", self.output, what="the predictions file to write (output=predictions.csv or .jsonl)")
        if Path(self.output).suffix.lower() not in (".csv", ".jsonl"):
            raise fail("output", self.output, "name a .csv or .jsonl file")
        extensions = self.extensions
        if (not isinstance(extensions, list | tuple) or not extensions
                or not all(isinstance(e, str) and e.startswith(".") and len(e) > 1 for e in extensions)):
            raise fail("extensions", extensions, "give a non-empty list of file extensions such as [.mp4,.avi]")
        object.__setattr__(self, "extensions", tuple(e.lower() for e in extensions))
        for key, low in (("top_k", 1), ("batch_size", 1), ("num_workers", 0)):
            check_number(key, getattr(self, key), low, integer=True)
        check_number("num_views", self.num_views, 1, integer=True, none_ok=True)
        if not isinstance(self.decode, PredictDecode):
            object.__setattr__(self, "decode", PredictDecode.from_mapping(self.decode))
        check_device("device", self.device)
        check_bool("amp", self.amp)
        check_bool("progress", self.progress)
        check_choice("on_mismatch", self.on_mismatch, ON_MISMATCH)
        if not isinstance(self.predict, WindowConfig | None):
            window = plain(self.predict)
            check_keys(window, "predict", ("window", "stride"))
            object.__setattr__(self, "predict", window_config(window["window"], window["stride"]))


def run_settings(classifier, k: int, windows) -> dict:
    """The settings of SETTING_KEYS as this run resolved them (null in the config: the checkpoint's own), from the
    loaded Classifier, the top-k it writes and the WindowConfig (or None)."""
    pipeline = classifier.pipeline
    return {"num_views": pipeline.sampling.num_views, "decode.backend": pipeline.backend,
            "decode.max_short_side": pipeline.max_short_side, "roi": pipeline.roi.kind,
            "predict.window": windows and windows.window, "predict.stride": windows and windows.stride, "top_k": k}


def summary(counts: dict[str, int], skipped: int, seconds: float, output: Path, failures: list[ClipResult]) -> str:
    done = counts["ok"] + counts["error"]
    lines = [f"predict: {counts['ok']} clip(s) ok ({counts['partial']} partly decoded), {counts['error']} failed, "
             f"{skipped} already in {output.name} and skipped",
             f"{done} clip(s) in {seconds:.1f}s ({done / max(seconds, 1e-9):.1f} clips/s); predictions in {output}"]
    for result in failures[:5]:
        lines.append(f"  failed: {result.path}: {result.error}")
    if len(failures) > 5:
        lines.append(f"  ... and {len(failures) - 5} more (status=error in {output.name})")
    return printable("\n".join(lines))


@dataclass(frozen=True)
class Plan:
    """What rank 0 decided before any clip is classified, for every rank."""

    output: str  # the predictions file (another than cfg.output with on_mismatch=new)
    todo: list[str]  # clips not yet in it, in the order found
    found: int  # clips found under input
    folded: tuple[int, int] = (0, 0)  # rows added to output from part files a killed run left, and how many files


def open_checked(cfg: PredictSettings, classifier, k: int, extra: tuple[str, ...]) -> PredictionsFile:
    """The output, opened, checked against this run's checkpoint and settings, and locked: rank 0's alone."""
    # Hashed once loaded: the record names the bytes this run classifies with. A mismatch stops here, before any clip
    # is decoded and before the output is touched.
    sha256 = provenance.file_sha256(cfg.checkpoint)
    record = provenance_record(cfg.checkpoint, sha256, run_settings(classifier, k, cfg.predict))
    out = open_output(Path(os.path.abspath(cfg.output)), columns_for(k, extra), record, cfg.on_mismatch)
    if out.unrecorded:
        print(printable(f"warning: {out.path.name} has no provenance record (written by an older version), so the "
                        f"checkpoint behind its {out.unrecorded} row(s) is unknown; resuming it with checkpoint "
                        f"{cfg.checkpoint} (sha256 {provenance.short_hash(sha256)}), recorded in "
                        f"{out.provenance_path.name}"), file=sys.stderr)
    return out


def run(cfg: PredictSettings) -> dict[str, int]:
    """Classify the clips of ``cfg.input`` into ``cfg.output``; under torchrun, this rank's share of them.

    Returns the counts of the run (on ranks other than 0: of this rank's share)."""
    device = rank_device(device_of(cfg.device), world())
    job = Job.join(device)
    try:
        return _run(cfg, job, device)
    finally:
        stop()


def _run(cfg: PredictSettings, job: Job, device) -> dict[str, int]:
    windows = cfg.predict
    out: PredictionsFile | None = None
    plan, error = None, None
    try:  # every rank gets ready; what goes wrong is shared first, so no rank waits for another that has stopped
        paths = find_inputs(Path(cfg.input), cfg.extensions) if job.main else []
        classifier = load_classifier(cfg.checkpoint, device, cfg.amp, cfg.num_views, cfg.decode.backend,
                                     cfg.decode.max_short_side)
        extra = (*(TIMELINE_COLUMNS if windows else ()),
                 *((ROI_COLUMN,) if active(classifier.pipeline.roi) else ()))
        k = min(cfg.top_k, len(classifier.class_names))
        if job.main:
            out = open_checked(cfg, classifier, k, extra)
            # Rows a killed run left in part files count as done before the clips still to do are chosen.
            parts = leftover_parts(out.path)
            folded = (fold(out, parts), len(parts))
            plan = Plan(str(out.path), [p for p in paths if p not in out.done], len(paths), folded)
    except Exception as err:
        error = err
    sink: PredictionsFile | None = out
    try:
        plan = job.agree(error, plan)
        output = Path(plan.output)
        if job.main:
            if plan.folded[1]:
                print(printable(f"{plan.folded[0]} row(s) from {plan.folded[1]} part file(s) an interrupted run "
                                f"left beside {output.name} merged into it"))
            torn = " (a row torn by an earlier crash was cut off and is redone)" if out.torn else ""
            ranks = f" by {job.here.size} processes" if job.here.distributed else ""
            print(printable(f"{inputs_line(cfg.input, paths)}: {plan.found - len(plan.todo)} already in "
                            f"{output.name}, {len(plan.todo)} to classify{ranks}{torn}"))
        else:
            sink = PartFile(part_path(output, job.here.rank), columns_for(k, extra),
                            output.suffix.lower() == ".jsonl").open()
        todo = shard(plan.todo, job.here)
        start = time.perf_counter()
        counts, failures = classify_into(sink, cfg, classifier, k, extra, todo, output, job)
        if not job.main:
            sink.close()  # before the others are told: rank 0 then opens it to merge it
        counts, failures = job.totals(counts, failures)
        if not job.main:
            return counts
        fold(out, leftover_parts(output))
    finally:
        if sink is not None:
            sink.close()
        if out is not None:
            out.close()
    print(summary(counts, plan.found - len(plan.todo), time.perf_counter() - start, output, failures))
    if windows:
        print(printable(f"timelines (CSV and PNG per video) in {timelines_folder(output)}"))
    return counts


def classify_into(sink: PredictionsFile, cfg: PredictSettings, classifier, k: int, extra: tuple[str, ...],
                  todo: list[str], output: Path, job: Job) -> tuple[dict[str, int], list[ClipResult]]:
    """Classify ``todo`` and append a row per clip to ``sink``; the counts and the clips that failed.

    Only rank 0 shows progress and says how to go on after Ctrl-C; the other ranks stay quiet."""
    windows = cfg.predict
    progress = cfg.progress and job.main
    counts = {"ok": 0, "error": 0, "partial": 0}
    failures: list[ClipResult] = []
    try:
        with Progress(total=len(todo), desc="predict", unit="clip", enabled=progress) as bar:
            if windows:  # one video at a time, its windows shared among the workers; each decodes its share once
                target = Path(os.path.abspath(str(cfg.input)))
                identity = json.dumps({"sha256": provenance.file_sha256(cfg.checkpoint),
                                       **run_settings(classifier, k, windows)}, sort_keys=True)
                stream = classify_timelines(classifier, todo, windows, cfg.batch_size, output,
                                            target if target.is_dir() else target.parent, identity,
                                            cfg.num_workers, cfg.decode.timeout, progress)
            else:
                stream = classify_paths(classifier, todo, cfg.batch_size, cfg.num_workers, cfg.decode.timeout)
            for results in stream:
                for result in results:
                    sink.write(row_of(result, classifier.class_names, k, extra))
                    counts["ok" if result.ok else "error"] += 1
                    counts["partial"] += bool(result.ok and result.warning)
                    if not result.ok:
                        failures.append(result)
                sink.sync()
                bar.update(len(results))
                bar.set_postfix(failed=counts["error"])
    except KeyboardInterrupt:
        if job.main:
            elsewhere = " (the other ranks' rows are in part files beside it)" if job.here.distributed else ""
            print(printable(f"interrupted: {counts['ok'] + counts['error']} row(s) written to {output}{elsewhere}; "
                            f"run the same command again to classify the rest"), file=sys.stderr)
        sys.exit(130)
    return counts, failures
