"""A crash in the middle of a write, at many points of every file behavior writes: checkpoints, clip-cache entries,
reports (written through behavior.atomic: after a kill each file is the old version or the new one, byte for byte,
and still loads) and predictions files (appended to: a file cut at any byte resumes to exactly the file an
uninterrupted run writes). Each promise has mutant rows, deliberate breaks the same check must catch.

A kill is real: the write runs in a forked child. At a byte point the child, as it opens the k-th file, lowers its
file-size limit (RLIMIT_FSIZE) to n bytes and gives SIGXFSZ its default action back (Python ignores it): the kernel
writes the first n bytes and kills the process when the write goes on, so no except or finally block runs. At an
event point the child calls os._exit just before fsync, just before os.replace or just after it. A fault point keeps
SIGXFSZ ignored: the write fails with EFBIG, as on a full disk, and the writer's own cleanup runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import behavior.data.cache as cache_module
import behavior.engine.checkpoint as checkpoint_module
import behavior.report.plots as plots_module
import behavior.report.writer as writer_module
from behavior.data.cache import CacheSettings, ClipCache, decode_pool
from behavior.engine.checkpoint import read_checkpoint, write_checkpoint
from behavior.errors import DataError
from behavior.models import build_model
from behavior.predict.predictions import PredictionsFile, columns_for
from behavior.report.writer import METRICS_FILE, write_report
from behavior.video.writer import write_video
from tests.conftest import moving_square_clip
from tests.helpers import tiny_recipe

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, RLIMIT_FSIZE and prctl: Linux")

KILLED, FINISHED, RAISED = 86, 87, 88  # a child's exit status: killed at an event, kill point never reached, raised
EVENTS = ("fsync", "replace", "replaced")  # os._exit just before fsync, just before os.replace, just after it


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
        """Kill the write at each point and say what is broken on disk afterwards. With ``atomic``, also check that
        the child died where it was meant to: a byte point leaves that file's temp file exactly that long."""
        folders = {path.parent for path in self.old}
        found = []
        for point in points:
            self.restore()
            before = temp_files(folders)
            outcome = in_child(self.write, arm_atomic(point, self.modules))
            left = {p: size for p, size in temp_files(folders).items() if p not in before}
            if atomic:
                name = list(self.old)[point.file - 1].name
                if point.fault:
                    assert outcome in ("raised", "finished") and not left, (point, outcome, left)
                else:
                    assert outcome == "killed", (point, outcome)
                    full = len(self.new[list(self.old)[point.file - 1]])
                    size = point.at if isinstance(point.at, int) else None if point.at == "replaced" else full
                    assert [(p.name.startswith(f".{name}."), n) for p, n in left.items()] == (
                        [] if size is None else [(True, size)]), (point, left)
            found += [f"{point}: {why}" for why in self.problems()]
        return found

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


ATOMIC_MUTANTS = pytest.mark.parametrize("mutant", [False, True], ids=["atomic_open", "mutant-plain-open"])


# Checkpoints: save_checkpoint over an existing one.

@ATOMIC_MUTANTS
def test_a_checkpoint_killed_mid_save_is_the_old_or_the_new_one(tmp_path, monkeypatch, mutant):
    recipe, path = tiny_recipe(), tmp_path / "run" / "last.pt"
    states = {}
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        states[epoch] = build_model(recipe.model, 3).state_dict()
    write_checkpoint(path, recipe, ["a", "b", "c"], states[1], 1)

    def loads() -> str | None:
        try:
            checkpoint = read_checkpoint(path)
        except Exception as err:
            return f"does not load ({err})"
        weights = states[checkpoint.epoch]
        same = all(torch.equal(weights[k], checkpoint.state["model_state"][k]) for k in weights)
        return None if same else f"epoch {checkpoint.epoch} with other weights"

    target = Target((checkpoint_module,), lambda: write_checkpoint(path, recipe, ["a", "b", "c"], states[2], 2),
                    {path: path.read_bytes()}, loads).learn_new()
    if mutant:
        mutate(monkeypatch, target.modules)
    points = target.mutant_points() if mutant else target.points(cuts=16)
    verdict(target.kill_problems(points, atomic=not mutant), mutant)
    if not mutant:
        target.check_next_write()


# The clip cache: a .json sidecar, then the .npy, each through atomic_open.

@pytest.fixture(scope="module")
def cached_clip(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", moving_square_clip(0, seed=1), fps=12)
    settings = CacheSettings(size=32, max_frames=8)
    return str(path), settings, decode_pool(str(path), settings)


@ATOMIC_MUTANTS
@pytest.mark.parametrize("before", ["nothing", "torn-entry"])
def test_a_cache_entry_killed_mid_write_gives_the_right_frames_after(tmp_path, monkeypatch, cached_clip, before,
                                                                      mutant):
    """First written, or rewritten over a torn .npy (which load_entry refuses, so the entry is rebuilt). A kill
    between the sidecar and the .npy leaves a sidecar alone: the next get decodes and stores the entry."""
    clip, settings, frames = cached_clip
    cache = ClipCache(tmp_path / "cache", settings)
    npy = cache.entry(clip)
    sidecar = npy.with_suffix(".json")

    def write() -> None:
        cache_module.decode_pool = lambda *args, **kwargs: frames  # in the child only: no decoding there
        ClipCache(cache.root, settings).get(clip)

    def loads() -> str | None:
        got = ClipCache(cache.root, settings).get(clip)  # decodes (really) and stores when the entry is not whole
        if not np.array_equal(np.asarray(got), frames):
            return "get returned other frames"
        return None if npy.read_bytes() == target.new[npy] else "the entry is not whole after get"

    target = Target((cache_module,), write, {sidecar: None, npy: None}, loads).learn_new()
    if before == "torn-entry":
        target.old = {sidecar: target.new[sidecar], npy: target.new[npy][: len(target.new[npy]) // 2]}
        target.new = {}
        target.learn_new()
    if mutant:
        mutate(monkeypatch, target.modules)
    points = target.mutant_points() if mutant else target.points(cuts=8 if before == "nothing" else 4)
    problems = target.kill_problems(points, atomic=not mutant)
    # Under the mutant the torn .npy is on disk, but get still refuses it and rebuilds: load_entry checks the length.
    assert not [why for why in problems if "get" in why]
    verdict(problems, mutant)
    if not mutant:
        target.check_next_write()


# Reports: write_report over an earlier report; metrics.json last, so its presence means a whole report.

REPORT_FILES = ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv", METRICS_FILE)


@pytest.mark.parametrize("mutant", [None, "plain-open", "keeps-old-metrics"])
def test_a_report_killed_mid_write_leaves_old_or_new_files_and_never_a_mixed_report(tmp_path, monkeypatch, mutant):
    """Each file is the old or the new version; metrics.json parses, and when it is there every file is of the same
    report as it (the earlier report's metrics.json is removed before the first file is replaced)."""
    out, classes = tmp_path / "run", ["left", "right", "up"]
    paths, labels = [f"/clips/c{i}.mp4" for i in range(9)], [i % 3 for i in range(9)]
    old_scores, new_scores = (np.random.default_rng(seed).random((9, 3)) for seed in (0, 1))
    write_report(tmp_path / "scratch", paths, labels, new_scores, classes)
    png = (tmp_path / "scratch" / "confusion_matrix.png").read_bytes()
    write_report(out, paths, labels, old_scores, classes)
    # The new figure as the real renderer draws it, saved through plots._save, without 0.2 s of drawing per child.
    drawn = SimpleNamespace(dpi=100, savefig=lambda fh, **kwargs: fh.write(png))
    monkeypatch.setattr(writer_module, "plot_confusion_matrix", lambda *args, **kwargs: plots_module._save(drawn,
                                                                                                        args[2]))
    files = [out / name for name in REPORT_FILES]

    def loads() -> str | None:
        metrics = out / METRICS_FILE
        if not metrics.exists():
            return None
        try:
            json.loads(metrics.read_text(encoding="utf-8"))
        except ValueError:
            return "metrics.json does not parse"
        version = target.new if metrics.read_bytes() == target.new[metrics] else target.old
        mixed = [p.name for p in files if (p.read_bytes() if p.exists() else None) != version[p]]
        return f"metrics.json beside {', '.join(mixed)} of the other report" if mixed else None

    target = Target((writer_module, plots_module), lambda: write_report(out, paths, labels, new_scores, classes),
                    {path: path.read_bytes() for path in files}, loads, may_vanish=(out / METRICS_FILE,)).learn_new()
    if mutant == "plain-open":
        mutate(monkeypatch, target.modules)
    elif mutant == "keeps-old-metrics":
        real_unlink = Path.unlink
        monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None if self.name == METRICS_FILE
                            else real_unlink(self, missing_ok))
    points = target.mutant_points() if mutant else target.points(cuts=2)
    verdict(target.kill_problems(points, atomic=not mutant), bool(mutant))
    if not mutant:
        target.check_next_write()


# Predictions files: appended to, row by row, never replaced. A file cut at any byte (what a kill mid-append leaves)
# resumes to exactly the file an uninterrupted run writes: the whole rows kept, the torn one cut and redone.

def prediction_rows(columns: list[str]) -> list[dict]:
    names = ["/clips/a.mp4", '/clips/new\nline, "quoted" \udcff.mp4', "/clips/été €.mp4", "/clips/b.mp4"]
    rows = [dict.fromkeys(columns) | {"path": name, "status": "ok", "label": "up", "score": 0.5 + i / 10,
                                      "label_1": "up", "score_1": 0.5 + i / 10, "label_2": "left",
                                      "score_2": 0.25, "num_frames": 12} for i, name in enumerate(names)]
    rows[2] = dict.fromkeys(columns) | {"path": names[2], "status": "error", "error": 'cannot decode: "moov", atom'}
    return rows


def resume_problems(path: Path, cuts: range | None = None) -> list[str]:
    """Write a small predictions file; then, for each cut, leave only its first ``cut`` bytes, resume it as predict
    does (open, skip the rows done, append the others) and say what differs from the uninterrupted file."""
    columns = columns_for(2)
    rows = prediction_rows(columns)
    out = PredictionsFile(path, columns).open()
    ends = [path.stat().st_size]  # where the header (CSV) and then each row ends
    for row in rows:
        out.write(row)
        ends.append(path.stat().st_size)
    out.close()
    whole = path.read_bytes()
    problems = []
    for cut in cuts or range(len(whole) + 1):
        path.write_bytes(whole[:cut])
        whole_rows = sum(end <= cut for end in ends[1:])
        try:
            again = PredictionsFile(path, columns).open()
        except DataError as err:
            problems.append(f"cut at {cut}: refused ({err})")
            continue
        kept = path.read_bytes()
        if kept != whole[:ends[whole_rows]]:
            problems.append(f"cut at {cut}: resuming keeps {len(kept)} bytes, not the {ends[whole_rows]} of the "
                            f"whole rows")
        if again.done != {row["path"] for row in rows[:whole_rows]}:
            problems.append(f"cut at {cut}: {len(again.done)} row(s) taken as done, not {whole_rows}")
        for row in rows:
            if row["path"] not in again.done:
                again.write(row)
        again.close()
        if path.read_bytes() != whole:
            problems.append(f"cut at {cut}: the resumed file is not the uninterrupted one")
    return problems


def mutate_resume(monkeypatch, mutant: str) -> None:
    real_recognise, real_open = PredictionsFile._recognise, PredictionsFile.open
    if mutant == "keeps-torn-row":
        monkeypatch.setattr(PredictionsFile, "_recognise", lambda self, data: (real_recognise(self, data),
                                                                               len(data))[1])
    elif mutant == "forgets-done-rows":
        monkeypatch.setattr(PredictionsFile, "_recognise", lambda self, data: (real_recognise(self, data),
                                                                               self.done.clear())[0])
    else:  # starts-again: writes the file anew instead of appending to it
        def open_anew(self):
            if self.path.exists():
                self.path.write_bytes(b"")
            return real_open(self)
        monkeypatch.setattr(PredictionsFile, "open", open_anew)


@pytest.mark.parametrize("mutant", [None, "keeps-torn-row", "forgets-done-rows", "starts-again"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_predictions_file_cut_at_any_byte_resumes_to_the_uninterrupted_file(tmp_path, monkeypatch, suffix,
                                                                               mutant):
    """Every byte offset, rows with a newline, comma, quotes, non-ASCII and a byte that is not UTF-8 in the name."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not the point here; ~1200 opens stay fast
    if mutant:
        mutate_resume(monkeypatch, mutant)
    verdict(resume_problems(tmp_path / f"preds{suffix}"), bool(mutant))
