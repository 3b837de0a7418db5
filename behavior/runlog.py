"""What a command prints, also kept in its run folder's log (``train.log``, ``evaluate.log``, ``bench.log``).

The commands talk through ``print``: the scan counts, the epochs, the per-class table. A run folder is read
later, often on another machine, so the same lines go into the log as they are printed. Progress bars are left
out (a redrawn bar would fill the file with frames); the line a bar leaves behind when it is done is kept.

The checks before the run folder exists print too (the dataset summary); :func:`capture_output` holds those
lines until :func:`tee_output` has a file to put them in.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


class LineFilter:
    """Whole lines of what was written, as a file would show them: carriage-return redraws collapsed to their
    last state, terminal control sequences (a bar's cursor moves) dropped."""

    def __init__(self, sink: TextIO):
        self.sink, self.pending = sink, ""

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            shown = line.rsplit("\r", 1)[-1]
            if "\x1b" in shown or (not shown.strip() and "\r" in line):
                continue
            self.sink.write(shown + "\n")
        self.sink.flush()


class Tee(io.TextIOBase):
    """A stdout/stderr stand-in: everything to the real stream, whole lines to the log too."""

    def __init__(self, stream: TextIO, log: LineFilter):
        super().__init__()
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # progress bars ask the real stream whether a terminal is there
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return self.stream.encoding


@contextlib.contextmanager
def _teed(sink: TextIO) -> Iterator[None]:
    log = LineFilter(sink)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(out, log), Tee(err, log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        if log.pending:
            log.write("\n")


@contextlib.contextmanager
def capture_output() -> Iterator[io.StringIO]:
    """Print as usual, and keep the lines in the yielded buffer."""
    buffer = io.StringIO()
    with _teed(buffer):
        yield buffer


@contextlib.contextmanager
def tee_output(path: Path, earlier: str = "") -> Iterator[None]:
    """Print as usual, and append the lines to ``path`` (after ``earlier``: lines captured before it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        log.write(earlier)
        with _teed(log):
            yield
