"""The predictions file of batch-classify, its one owner: columns, rows, appending, resuming, provenance, reading.

One row per clip, in CSV (or JSON lines when the name ends in ``.jsonl``), appended and flushed as each clip is
done and fsynced after every batch, so a crash or kill loses nothing already classified. A resumed run skips the
clips already in the file (matched by absolute path, symlinks not resolved) and cuts off a row torn by a crash so
that clip is done again. An existing file that is not a predictions file with the same columns is refused and left
untouched.

``<output>.provenance.json``, written when the file is created, records the checkpoint (path and sha256), the
settings that change the answers (``SETTING_KEYS``), the package version and git commit. A resume with another
checkpoint or another setting is refused before anything is decoded or written, and both files are left as they
were; ``on_mismatch=new`` writes to ``<stem>-2<suffix>`` (the first number that is free or already holds this
checkpoint's and settings' predictions) instead. A file without that record (an older version's) is resumed with
a warning and gets one.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from behavior import provenance
from behavior.atomic import atomic_open
from behavior.engine.inference import ClipResult, top_k
from behavior.errors import ConfigError, DataError

LEAD_COLUMNS = ("path", "status", "label", "score")
TAIL_COLUMNS = ("num_frames", "warning", "error")
ROI_COLUMN = "roi_box"  # with a region-of-interest checkpoint: "left top right bottom" in fractions of the frame
LOCK_TRIES = 20  # 0.1 s apart
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
            raise ConfigError(f"output={self.path}: is a folder; give a file name ending in .csv or .jsonl")
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
        for _ in range(LOCK_TRIES):
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                time.sleep(0.1)  # the workers of a run killed a moment ago may still be exiting
        raise DataError(f"output {self.path} is being written by another predict run; wait for it to end "
                        f"or give another output")

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
        start = '{"path": '  # how our rows begin: a kill may have left only its first bytes, as with the CSV header
        if tail and offset == 0 and not (tail.startswith(start) or start.startswith(tail)):
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


PREDICTION_COLUMNS = ("path", "status", "label", "score", "error")


def _read_prediction_file(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson") or text.lstrip().startswith("{"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {number} is not JSON ({err.msg})") from None
        return rows
    return list(csv.DictReader(text.splitlines()))


def summarize_predictions(path: str | os.PathLike) -> dict:
    """Summary of a batch-classify output (CSV or JSON lines with path,status,label,score,error).

    Returns {"file", "total", "ok", "error", "warnings" (rows with a non-empty warning column),
    "labels" (ok clips per label, most common first), "mean_score" (over ok clips; None when there are
    none), "errors" (the first 10 (path, error) pairs)}. Extra columns (top-k, num_frames) are ignored.
    A row counts as ok when its status is "ok" (any case); anything else is an error.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"predictions file not found: {file} (write one with the batch-classify command)")
    rows = _read_prediction_file(file)
    if rows:
        missing = [c for c in PREDICTION_COLUMNS if c not in rows[0]]
        if missing:
            raise ValueError(f"{file}: missing column(s) {', '.join(missing)}; "
                             f"expected {', '.join(PREDICTION_COLUMNS)}")
    ok, bad = [], []
    for row in rows:
        (ok if str(row.get("status") or "").strip().lower() == "ok" else bad).append(row)
    scores = [float(r["score"]) for r in ok if r.get("score") not in (None, "")]
    labels = Counter(str(r.get("label")) for r in ok)
    return {"file": str(file), "total": len(rows), "ok": len(ok), "error": len(bad),
            "warnings": sum(1 for r in rows if r.get("warning")),
            "labels": dict(labels.most_common()), "mean_score": float(np.mean(scores)) if scores else None,
            "errors": [(str(r.get("path")), str(r.get("error") or r.get("status") or "")) for r in bad[:10]]}


def format_prediction_summary(summary: Mapping) -> str:
    """Plain-text view of :func:`summarize_predictions`: counts, label histogram, first errors."""
    mean = summary["mean_score"]
    lines = [f"{summary['file']}: {summary['total']} clips, {summary['ok']} ok, {summary['error']} error(s); "
             f"mean score {'n/a' if mean is None else f'{mean:.4f}'}"
             + (f"; {summary['warnings']} with a warning" if summary.get("warnings") else "")]
    if summary["labels"]:
        width = max(len(label) for label in summary["labels"])
        top = max(summary["labels"].values())
        for label, count in summary["labels"].items():
            lines.append(f"  {label.ljust(width)} {count:5d} {'#' * max(1, round(30 * count / top))}")
    for clip, error in summary["errors"]:
        lines.append(f"  error: {clip}: {error}")
    return "\n".join(lines)
