"""``python -m behavior.predict checkpoint=PATH input=DIR_OR_FILE output=FILE``: classify every clip under a folder.

One row per clip, in CSV (or JSON lines when ``output`` ends in ``.jsonl``), appended and flushed as each clip is
done and fsynced after every batch, so a crash or kill loses nothing already classified. Running the same command
again skips the clips already in ``output`` (matched by absolute path, symlinks not resolved) and cuts off a row
torn by a crash so that clip is done again. An existing ``output`` that is not a predictions file with the same
columns is refused and left untouched. A clip that cannot be decoded gets an error row; the run goes on and exits 0.

``predict.window=SECONDS`` classifies each video window by window and writes its timeline (behavior/timeline.py).

``<output>.provenance.json``, written when ``output`` is created, records the checkpoint (path and sha256), the
settings that change the answers (``SETTING_KEYS``), the package version and git commit. A resume with another
checkpoint or another setting is refused before anything is decoded or written, and both files are left as they
were; ``on_mismatch=new`` writes to ``<stem>-2<suffix>`` (the first number that is free or already holds this
checkpoint's and settings' predictions) instead. An output without that record (an older version's) is resumed with
a warning and gets one.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from behavior import provenance
from behavior.atomic import atomic_open
from behavior.cli import entry_point
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
from behavior.engine.inference import ClipResult, classify_paths, load_classifier, top_k
from behavior.errors import ConfigError, DataError
from behavior.progress import Progress
from behavior.timeline import COLUMNS as TIMELINE_COLUMNS
from behavior.timeline import WindowConfig, classify_timelines, timelines_folder, window_config
from behavior.video import require_backend

LEAD_COLUMNS = ("path", "status", "label", "score")
TAIL_COLUMNS = ("num_frames", "warning", "error")
ROI_COLUMN = "roi_box"  # with a region-of-interest checkpoint: "left top right bottom" in fractions of the frame
ENCODING = ("utf-8", "surrogateescape")  # file names that are not UTF-8 round-trip byte for byte
PROVENANCE_SUFFIX = ".provenance.json"  # the record beside the output: <output>.provenance.json
PROVENANCE_FORMAT = 1
# The settings that change the answers besides the checkpoint itself (its classes, sampling, transforms and region
# settings are implied by its sha256), as run() resolves them: what a resume must keep.
SETTING_KEYS = ("num_views", "decode.backend", "decode.max_short_side", "roi", "predict.window", "predict.stride",
                "top_k")
ON_MISMATCH = ("refuse", "new")


def printable(text: str) -> str:
    # A file name that is not UTF-8 carries lone surrogates, which a strict UTF-8 stdout refuses to print.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def columns_for(k: int, extra: Sequence[str] = ()) -> list[str]:
    return [*LEAD_COLUMNS, *(f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "score")), *TAIL_COLUMNS,
            *extra]


def row_of(result: ClipResult, class_names: Sequence[str], k: int, extra: Sequence[str] = ()) -> dict:
    """Output values of one clip; None marks a value an error row does not have."""
    row = dict.fromkeys(columns_for(k, extra))
    row.update(path=result.path, status="ok" if result.ok else "error", warning=result.warning, error=result.error)
    row.update({key: result.extra.get(key) for key in extra})
    if ROI_COLUMN in row and result.region.box is not None:
        row[ROI_COLUMN] = " ".join(f"{v:.4f}" for v in result.region.box)
    if result.ok:
        best = top_k(result.probs, class_names, k)
        row.update(label=best[0][0], score=round(best[0][1], 6), num_frames=result.num_frames)
        for i, (label, score) in enumerate(best, start=1):
            row[f"label_{i}"], row[f"score_{i}"] = label, round(score, 6)
    return row


def csv_line(values: Sequence) -> str:
    # The csv module's default dialect quotes fields holding \r or \n, so every name survives a read back.
    buf = io.StringIO()
    csv.writer(buf).writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def provenance_path(output: Path) -> Path:
    return output.with_name(output.name + PROVENANCE_SUFFIX)


def provenance_record(checkpoint: str, sha256: str, settings: dict) -> dict:
    """What goes into ``<output>.provenance.json``: the checkpoint, the settings and the code."""
    return {"format": PROVENANCE_FORMAT, "written_by": "behavior.predict",
            "checkpoint": {"path": checkpoint, "absolute": os.path.abspath(checkpoint), "sha256": sha256},
            "settings": {key: settings[key] for key in SETTING_KEYS}, **provenance.code_provenance(),
            "created": provenance.now()}


def _setting(key: str, value) -> str:
    return f"{key}={'null' if value is None else value}"


class ProvenanceMismatch(DataError):
    """The output holds the predictions of another checkpoint or other settings, or its record is unreadable."""

    def __init__(self, output: Path, reason: str):
        self.output, self.reason = output, reason
        free = output.with_name(f"{output.stem}-2{output.suffix}").name
        super().__init__(f"output {output} {reason}; it is left untouched: give another output, or pass "
                         f"on_mismatch=new to write to a new file next to it ({free} or the next free number)")


class PredictionsFile:
    """The append-only predictions file, its already-done paths, and the lock that keeps it to one run.

    With ``record`` (a :func:`provenance_record`) the file is one checkpoint's and one set of settings': an
    existing output whose record names others is refused (:class:`ProvenanceMismatch`) before a byte changes. One
    without a record (an older version's) is taken on, and ``unrecorded`` counts its rows, unless
    ``adopt_unrecorded`` is false."""

    def __init__(self, path: Path, columns: list[str], record: dict | None = None,
                 adopt_unrecorded: bool = True):
        self.path, self.columns = path, columns
        self.jsonl = path.suffix.lower() == ".jsonl"
        self.done: set[str] = set()
        self.torn = False
        self.record, self.adopt_unrecorded = record, adopt_unrecorded
        self.unrecorded = 0  # rows of unknown provenance found in an output that had no record
        self._fh = None

    def open(self) -> PredictionsFile:
        if self.path.is_dir():
            raise ConfigError(f"output={self.path} is a folder; give a file name ending in .csv or .jsonl")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._fh, created = open(self.path, "xb"), True
            except FileExistsError:
                self._fh, created = open(self.path, "r+b"), False
        except OSError as err:
            raise ConfigError(f"output={self.path}: cannot write it ({err.strerror or err})") from None
        try:
            self._lock()
            # Checked under the lock and before anything is cut or written: a refusal leaves both files as they were.
            recorded = self._check_provenance() if self.record is not None and not created else None
            data = b"" if created else self._fh.read()
            keep = self._recognise(data)
            if keep < len(data):  # a row torn by a crash: only bytes this command wrote are cut
                self._fh.truncate(keep)
                self.torn = True
            self._fh.seek(keep)
            if not self.jsonl and keep < len(self._header()):
                self._write(self._header()[keep:])  # new file, or a header a kill tore: finish it, remove nothing
            self.sync()
            if self.record is not None and recorded is None:
                self.unrecorded = len(self.done)
                self._write_provenance()
        except BaseException:
            self._fh.close()
            raise
        return self

    @property
    def provenance_path(self) -> Path:
        return provenance_path(self.path)

    def _check_provenance(self) -> dict | None:
        """The existing output's record when it matches this run's; None when there is none (an older version's)."""
        where = self.provenance_path
        try:
            text = where.read_text(encoding="utf-8")
        except FileNotFoundError:
            if self.adopt_unrecorded:
                return None
            raise ProvenanceMismatch(self.path, f"has no provenance record ({where.name})") from None
        except (OSError, UnicodeError) as err:
            raise ProvenanceMismatch(self.path, f"has a provenance record {where.name} that cannot be read "
                                                f"({getattr(err, 'strerror', None) or err})") from None
        try:
            saved = json.loads(text)
            given, old = self.record["checkpoint"], saved["checkpoint"]
            sha256, settings = old["sha256"], saved["settings"]
            if not isinstance(sha256, str) or not isinstance(settings, dict):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            raise ProvenanceMismatch(self.path, f"has a provenance record {where.name} that is not as "
                                                f"behavior.predict writes it (edited?)") from None
        if isinstance(saved.get("format"), int) and saved["format"] > PROVENANCE_FORMAT:
            raise ProvenanceMismatch(self.path, f"has a provenance record {where.name} of a newer behavior "
                                                f"(format {saved['format']})")
        if sha256 != given["sha256"]:
            then, now = (provenance.short_hash(value) for value in (sha256, given["sha256"]))
            raise ProvenanceMismatch(self.path, f"holds the predictions of checkpoint {old.get('absolute')} (sha256 "
                                                f"{then}), not of checkpoint {given['absolute']} (sha256 {now})")
        ours = self.record["settings"]
        changed = [key for key in SETTING_KEYS if key in settings and settings[key] != ours[key]]
        if changed:
            then, given = (", ".join(_setting(k, values[k]) for k in changed) for values in (settings, ours))
            raise ProvenanceMismatch(self.path, f"was written with {then}; this run gives {given} (same checkpoint, "
                                                f"sha256 {provenance.short_hash(sha256)})")
        return saved

    def _write_provenance(self) -> None:
        record = {**self.record, "unknown_provenance_rows": self.unrecorded}
        try:
            with atomic_open(self.provenance_path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(record, indent=2) + "\n")  # ASCII: a path that is not UTF-8 survives
        except OSError as err:
            raise ConfigError(f"output={self.path}: cannot write its provenance record {self.provenance_path.name} "
                              f"({err.strerror or err})") from None

    def _header(self) -> bytes:
        return csv_line(self.columns).encode(*ENCODING)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one run per output is then up to the user
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(f"output {self.path} is being written by another predict run; wait for it to end "
                            f"or give another output") from None

    def _refuse(self, first_line: str, where: str = "") -> DataError:
        ours = first_line.startswith(",".join(LEAD_COLUMNS)) or first_line.startswith('{"path": ')
        if ours and not where:
            why = (f"holds predictions with other columns (written with another top_k, checkpoint or predict.window?); "
                   f"expected {', '.join(self.columns)}")
        elif ours:
            why = f"{where} is not as behavior.predict writes it (edited?)"
        else:
            why = "exists and is not a predictions file of behavior.predict"
        return DataError(f"output {self.path} {why}; it is left untouched: give another output")

    def _recognise(self, data: bytes) -> int:
        """Fill ``done`` from our rows and return how many bytes to keep; refuse a file that is not ours."""
        text = data.decode(*ENCODING)
        return self._recognise_jsonl(text) if self.jsonl else self._recognise_csv(text)

    def _recognise_csv(self, text: str) -> int:
        header = csv_line(self.columns)
        if header.startswith(text):
            return len(text.encode(*ENCODING))
        if not text.startswith(header):
            raise self._refuse(text.split("\n", 1)[0])
        offset = len(header)
        try:  # walk rows while each one is exactly what csv_line writes for it
            for row in csv.reader(io.StringIO(text[offset:], newline="")):
                line = csv_line(row)
                if len(row) != len(self.columns) or row[1] not in ("ok", "error") or not text.startswith(line, offset):
                    break
                self.done.add(row[0])
                offset += len(line)
        except csv.Error:
            pass
        tail = text[offset:]
        if tail and _csv_records(tail) > 1:  # more than one torn row is not a crash: someone edited the file
            raise self._refuse(header, f"row {len(self.done) + 2}")
        return len(text[:offset].encode(*ENCODING))

    def _recognise_jsonl(self, text: str) -> int:
        lines, offset = text.split("\n"), 0
        for number, line in enumerate(lines[:-1], start=1):
            record = _json_object(line)
            if record is None or list(record) != self.columns or record["status"] not in ("ok", "error"):
                raise self._refuse(line, f"line {number}" if number > 1 else "")
            self.done.add(record["path"])
            offset += len(line) + 1
        tail = lines[-1]
        if tail and offset == 0 and not tail.startswith('{"path": '):
            raise self._refuse(tail)  # one line, no newline, and not the start of our row: not ours
        return len(text[:offset].encode(*ENCODING))

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._fh.flush()  # in the OS now: a killed process loses nothing written so far

    def write(self, row: dict) -> None:
        if self.jsonl:
            self._write((json.dumps(row, ensure_ascii=False) + "\n").encode(*ENCODING))
        else:
            self._write(csv_line([row[c] for c in self.columns]).encode(*ENCODING))

    def sync(self) -> None:
        os.fsync(self._fh.fileno())  # on disk: a power cut loses at most the batch being written

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self.sync()
            self._fh.close()


def _csv_records(text: str) -> int:
    count = 0
    try:
        for _ in csv.reader(io.StringIO(text, newline="")):
            count += 1
    except csv.Error:
        pass
    return count


def _json_object(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def find_inputs(target: Path, extensions: tuple[str, ...]) -> list[str]:
    """Absolute paths of the clips to classify: ``target`` itself, or every video file below it."""
    if target.is_file():
        return [os.path.abspath(target)]  # named explicitly: taken whatever its extension
    if not target.is_dir():
        raise DataError(f"input: not found: {target}" if not os.path.lexists(target)
                        else f"input: {target} is neither a file nor a folder (or is a broken symlink)")
    errors: list[OSError] = []
    paths = [os.path.abspath(p) for p in find_videos(target, extensions, errors)]
    for err in errors:
        if os.path.abspath(err.filename or "") == os.path.abspath(target):
            raise DataError(f"input: cannot read folder {target} ({err.strerror})")
        print(printable(f"warning: cannot read folder {err.filename} ({err.strerror}); its clips are left out"),
              file=sys.stderr)
    return paths


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


def open_output(output: Path, columns: list[str], record: dict, on_mismatch: str) -> PredictionsFile:
    """``output``, or with ``on_mismatch=new`` when it holds other predictions, the first ``<stem>-N<suffix>`` that
    is free or holds this run's (so the same command run again resumes it)."""
    try:
        return PredictionsFile(output, columns, record).open()
    except ProvenanceMismatch as err:
        if on_mismatch != "new":
            raise
        reason = err.reason
    for number in itertools.count(2):
        candidate = output.with_name(f"{output.stem}-{number}{output.suffix}")
        try:
            out = PredictionsFile(candidate, columns, record, adopt_unrecorded=False).open()
        except DataError:  # another checkpoint's, unrecorded, not a predictions file, or being written: next one
            continue
        print(printable(f"output {output.name} {reason}: writing to {candidate} instead (on_mismatch=new)"))
        return out
    raise AssertionError("unreachable")


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


def run(cfg: PredictSettings) -> dict[str, int]:
    windows = cfg.predict
    paths = find_inputs(Path(cfg.input), cfg.extensions)
    device = device_of(cfg.device)
    classifier = load_classifier(cfg.checkpoint, device, cfg.amp, cfg.num_views, cfg.decode.backend,
                                 cfg.decode.max_short_side)
    extra = (*(TIMELINE_COLUMNS if windows else ()), *((ROI_COLUMN,) if active(classifier.pipeline.roi) else ()))
    k = min(cfg.top_k, len(classifier.class_names))
    # Hashed once loaded: the record names the bytes this run classifies with. A mismatch stops here, before any clip
    # is decoded and before the output is touched.
    sha256 = provenance.file_sha256(cfg.checkpoint)
    record = provenance_record(cfg.checkpoint, sha256, run_settings(classifier, k, windows))
    out = open_output(Path(os.path.abspath(cfg.output)), columns_for(k, extra), record, cfg.on_mismatch)
    output = out.path
    if out.unrecorded:
        print(printable(f"warning: {output.name} has no provenance record (written by an older version), so the "
                        f"checkpoint behind its {out.unrecorded} row(s) is unknown; resuming it with checkpoint "
                        f"{cfg.checkpoint} (sha256 {provenance.short_hash(sha256)}), recorded in "
                        f"{out.provenance_path.name}"), file=sys.stderr)
    counts = {"ok": 0, "error": 0, "partial": 0}
    failures: list[ClipResult] = []
    todo = [p for p in paths if p not in out.done]
    if not paths:
        print(printable(f"no video files ({', '.join(cfg.extensions)}) under {cfg.input}; nothing to classify"))
    else:
        torn = " (a row torn by an earlier crash was cut off and is redone)" if out.torn else ""
        print(printable(f"{len(paths)} clip(s) under {cfg.input}: {len(paths) - len(todo)} already in "
                        f"{output.name}, {len(todo)} to classify{torn}"))
    start = time.perf_counter()
    try:
        with Progress(total=len(todo), desc="predict", unit="clip", enabled=cfg.progress) as bar:
            if windows:  # decoded in this process: one video's windows are batched, not whole videos
                target = Path(os.path.abspath(str(cfg.input)))
                stream = classify_timelines(classifier, todo, windows, cfg.batch_size, output,
                                            target if target.is_dir() else target.parent, cfg.progress)
            else:
                stream = classify_paths(classifier, todo, cfg.batch_size, cfg.num_workers, cfg.decode.timeout)
            for results in stream:
                for result in results:
                    out.write(row_of(result, classifier.class_names, k, extra))
                    counts["ok" if result.ok else "error"] += 1
                    counts["partial"] += bool(result.ok and result.warning)
                    if not result.ok:
                        failures.append(result)
                out.sync()
                bar.update(len(results))
                bar.set_postfix(failed=counts["error"])
    except KeyboardInterrupt:
        print(printable(f"interrupted: {counts['ok'] + counts['error']} row(s) written to {output}; run the same "
                        f"command again to classify the rest"), file=sys.stderr)
        sys.exit(130)
    finally:
        out.close()
    print(summary(counts, len(paths) - len(todo), time.perf_counter() - start, output, failures))
    if windows:
        print(printable(f"timelines (CSV and PNG per video) in {timelines_folder(output)}"))
    return counts


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    run(PredictSettings.from_mapping(cfg))


if __name__ == "__main__":
    main()
