"""Progress: a live bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns; written to a file (``... > run.log 2>&1``, a CI log, a
notebook capturing output) every redraw stays, and a long run's log becomes mostly bar frames. So the bar
only appears when stderr is a terminal; otherwise a counted task prints one line every tenth of the way
(``every``), and a bar that was only there for the moment (``leave=False`` unless ``lines``: batches of an epoch,
windows of a video) prints nothing: the caller's own summary line (an epoch's losses, a scan's counts) says what
was done.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Iterator

from tqdm import tqdm


def on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class Progress:
    """The small part of tqdm the stages use (iterate, ``update``, ``set_postfix``, ``with``), terminal-aware."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, leave: bool = True, lines: bool | None = None,
                 **bar_options):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.count, self.postfix = desc, unit, 0, ""
        self.bar = None
        self.every = 0  # plain lines every this many items; 0 = none
        # Under torchrun only rank 0 shows progress: N bars redrawing one terminal would be unreadable.
        enabled = enabled and os.environ.get("RANK", "0") in ("", "0")
        if enabled and on_terminal():
            self.bar = tqdm(iterable, total=self.total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                            **bar_options)
        elif enabled and (leave if lines is None else lines):
            self.every = max(1, math.ceil(self.total / 10)) if self.total else 100
        self._printed = 0

    def __iter__(self) -> Iterator:
        if self.bar is not None:
            yield from self.bar
            return
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)
            return
        self.count += n
        if self.every and (self.count // self.every > self._printed // self.every or self.count == self.total):
            self._line()

    def set_postfix(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**values)
        else:
            self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def _line(self) -> None:
        if self._printed == self.count:
            return
        of = f"/{self.total}" if self.total else ""
        percent = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.count}{of} {self.unit}s{percent}{'; ' + self.postfix if self.postfix else ''}",
              flush=True)
        self._printed = self.count

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
