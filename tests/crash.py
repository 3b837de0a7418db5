"""Killing a write for real at a chosen point, for tests/test_crash_writes.py.

The write runs in a forked child. At a byte point the child, as it opens the k-th file, lowers its file-size limit
(RLIMIT_FSIZE) to n bytes and gives SIGXFSZ its default action back (Python ignores it): the kernel writes the first
n bytes and kills the process when the write goes on, so no except or finally block runs. At an event point the
child calls os._exit just before fsync, just before os.replace or just after it. A fault point keeps SIGXFSZ
ignored: the write fails with EFBIG, as on a full disk, and the writer's own cleanup runs. Linux only (fork,
RLIMIT_FSIZE, prctl).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

KILLED, FINISHED, RAISED = 86, 87, 88  # a child's exit status: killed at an event, kill point never reached, raised
EVENTS = ("fsync", "replace", "replaced")  # os._exit just before fsync, just before os.replace, just after it
CHILD_TIMEOUT = 60


@dataclass(frozen=True)
class Point:
    file: int  # the k-th file the write opens, from 1
    at: int | str  # a byte count (killed when the file would grow past it) or one of EVENTS
    fault: bool = False  # the write fails (EFBIG, as on a full disk) instead of the process being killed

    def __str__(self) -> str:
        where = f"byte {self.at}" if isinstance(self.at, int) else self.at
        return f"file {self.file} {'fault at' if self.fault else 'kill at'} {where}"


def in_child(write: Callable[[], object], arm: Callable[[], None]) -> str:
    """Run ``arm`` then ``write`` in a forked child: "killed", "raised" or "finished" (never reached its point)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = FINISHED
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
            ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0: no core dump, whatever core_pattern says
            torch.set_num_threads(1)  # no intra-op thread pool inherited half-alive across the fork
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(CHILD_TIMEOUT)  # a child that hangs dies ("signal 14") instead of holding the test
            arm()
            write()
        except BaseException:
            code = RAISED
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed" if os.WTERMSIG(status) == signal.SIGXFSZ else f"signal {os.WTERMSIG(status)}"
    return {KILLED: "killed", FINISHED: "finished", RAISED: "raised"}[os.WEXITSTATUS(status)]


def limit_file_size(n: int, fault: bool = False) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if fault else signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def arm_atomic(point: Point, modules: tuple) -> Callable[[], None]:
    """In the child: count the files opened through each module's ``atomic_open`` (or the mutant in its place)."""

    def arm() -> None:
        opened = [0]

        def here(event: str) -> bool:
            return opened[0] == point.file and point.at == event

        def counted(opener):
            @contextlib.contextmanager
            def wrapper(path, mode="wb", **kwargs):
                opened[0] += 1
                if opened[0] == point.file and isinstance(point.at, int):
                    limit_file_size(point.at, point.fault)
                with opener(path, mode, **kwargs) as fh:
                    yield fh
            return wrapper

        for module in modules:
            module.atomic_open = counted(module.atomic_open)
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            if here("fsync"):
                os._exit(KILLED)
            real_fsync(fd)

        def replace(src, dst):
            if here("replace"):
                os._exit(KILLED)
            real_replace(src, dst)
            if here("replaced"):
                os._exit(KILLED)

        os.fsync, os.replace = fsync, replace
    return arm


@contextlib.contextmanager
def plain_open(path, mode="wb", **kwargs):
    """The mutant: straight onto the file, as code without behavior.atomic would write."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, **kwargs) as fh:
        yield fh


def temp_files(folders) -> dict[Path, int]:
    return {p: p.stat().st_size for folder in folders if folder.is_dir() for p in folder.glob(".*.tmp")}


@dataclass
class Target:
    """Files one write puts on disk, in the order it writes them, with what was there before (None: nothing)."""

    modules: tuple  # the modules whose atomic_open it writes through
    write: Callable[[], object]
    old: dict[Path, bytes | None]
    loads: Callable[[], str | None] = lambda: None  # what is wrong with the files as behavior reads them back
    may_vanish: tuple[Path, ...] = ()  # files allowed to be absent midway besides old and new
    new: dict[Path, bytes] = field(default_factory=dict)

    def restore(self) -> None:
        for path, data in self.old.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

    def learn_new(self) -> Target:
        """Write once, uninterrupted, to know the new version byte for byte; then put the old one back."""
        self.restore()
        self.write()
        self.new = {path: path.read_bytes() for path in self.old}
        assert any(self.new[p] != self.old[p] for p in self.old), "the new version must differ from the old"
        self.restore()
        return self

    def points(self, cuts: int) -> list[Point]:
        """Per file: ``cuts`` byte points spread over its whole length (first and last byte included), each event,
        and a fault midway."""
        found = []
        for k, path in enumerate(self.old, start=1):
            size = len(self.new[path])
            found += [Point(k, n) for n in sorted({0, 1, size - 1, *(size * i // cuts for i in range(1, cuts))})]
            found += [Point(k, event) for event in EVENTS] + [Point(k, size // 2, fault=True)]
        return found

    def mutant_points(self) -> list[Point]:
        """Enough to catch a break, cheaply: a kill midway through each file, and one just after the first is in
        place."""
        return [Point(k, len(self.new[path]) // 2) for k, path in enumerate(self.old, start=1)] + [
            Point(1, "replaced")]

    def problems(self) -> list[str]:
        found = []
        for path in self.old:
            data = path.read_bytes() if path.exists() else None
            allowed = {self.old[path], self.new[path], *([None] if path in self.may_vanish else [])}
            if data not in allowed:
                found.append(f"{path.name} is neither the old nor the new version "
                             f"({'absent' if data is None else f'{len(data)} bytes'}; new: {len(self.new[path])})")
        return found + [why for why in [self.loads()] if why]

    def kill_problems(self, points: list[Point], atomic: bool = True) -> list[str]:
        """Kill the write at each point and say what is broken on disk afterwards; with ``atomic``, also check that
        the child died where it was meant to."""
        folders = {path.parent for path in self.old}
        found = []
        for point in points:
            self.restore()
            before = temp_files(folders)
            outcome = in_child(self.write, arm_atomic(point, self.modules))
            left = {p: size for p, size in temp_files(folders).items() if p not in before}
            if atomic:
                self.died_where_meant(point, outcome, left)
            found += [f"{point}: {why}" for why in self.problems()]
        return found

    def died_where_meant(self, point: Point, outcome: str, left: dict[Path, int]) -> None:
        """A fault runs the writer's cleanup: no temp file. A kill at byte n leaves that file's temp file n bytes
        long; before fsync or os.replace, all of it; after os.replace, none."""
        path = list(self.old)[point.file - 1]
        if point.fault:
            assert outcome in ("raised", "finished") and not left, (str(point), outcome, left)
            return
        assert outcome == "killed", (str(point), outcome)
        size = point.at if isinstance(point.at, int) else None if point.at == "replaced" else len(self.new[path])
        assert [(p.name.startswith(f".{path.name}."), n) for p, n in left.items()] == (
            [] if size is None else [(True, size)]), (str(point), left)

    def check_next_write(self) -> None:
        """Temp files the kills left are not cleaned up; the next write goes on beside them and they stay harmless."""
        folders = {path.parent for path in self.old}
        left = temp_files(folders)
        self.restore()
        self.write()
        assert {path: path.read_bytes() for path in self.old} == self.new and self.loads() is None
        assert temp_files(folders) == left


def mutate(monkeypatch, modules: tuple) -> None:
    for module in modules:
        monkeypatch.setattr(module, "atomic_open", plain_open)


def verdict(problems: list[str], mutant: bool) -> None:
    """No problem under the real code; under the mutant, the same check must find one (it tells the two apart)."""
    if mutant:
        assert problems, "the check did not catch the deliberate break"
    else:
        assert problems == []
