"""Sharing one bench's runs between processes, so N machines (or GPUs) finish it in about 1/N of the time.

Every model x seed (x fold) run is an independent training run in its own folder, so the runs only have to be
divided; each still trains in one process with the ordinary single-process code. Two ways:

- ``bench.shard=I/N``: N invocations that never talk (by hand on N machines, SLURM array jobs). Each takes a fixed
  share, the same whenever it is run, because it depends only on the bench's settings, never on which runs are
  finished: running shard I again (or ``bench.shard=null``) completes what a killed shard left.
- torchrun: the ranks of one job. Rank 0 divides the runs not finished yet and sends every rank its part (one
  decision, so ranks whose view of a shared folder lags cannot disagree about what is done), then waits for the
  other ranks' runs in the shared folder and writes the tables.

Both divide by expected cost (longest first onto the least loaded process), so one process does not get all the
3D networks while another gets the light ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from behavior.atomic import atomic_open
from behavior.config import device_of, fail
from behavior.engine import distributed
from behavior.engine.distributed import DistributedError, World
from behavior.errors import ConfigError
from behavior.recipe import Recipe
from behavior.runlog import LineFilter, Tee

# A run's cost is its network's GFLOPs per clip plus this: the data path's per-clip share (decode or cache read,
# augmentation). From the saved CPU benches, a near-zero-GFLOP model (stats) trains at ~100 clips/s and a
# 0.26-GFLOP one at ~57, so the data path costs about as much as 0.3 GFLOPs of network.
DATA_GFLOPS = 0.3
RANKS_FILE = "bench_ranks.json"  # rank 0's division of the runs; also how the others check they share the folder
SHARED_WAIT_S = 30.0  # how long a rank looks for rank 0's RANKS_FILE (a shared filesystem may show it late)
POLL_S = 2.0  # rank 0 checking the shared folder for the other ranks' finished runs


def parse_shard(value: object) -> tuple[int, int] | None:
    """``bench.shard``: ``"I/N"`` as (I, N), or None for every run."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", value) if isinstance(value, str) else None
    if match is None or not 0 <= int(match[1]) < int(match[2]):
        raise fail("bench.shard", value, "must be I/N with 0 <= I < N (this invocation's share of N, e.g. "
                                         "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), or null for every run")
    return int(match[1]), int(match[2])


def balanced(costs: Sequence[float], parts: int) -> list[list[int]]:
    """The indices of ``costs`` in ``parts`` groups of about equal total: the costliest first, each onto the
    group with the least so far (ties: the lower index, so every process computes the same division). Each group
    keeps the given order."""
    groups: list[list[int]] = [[] for _ in range(parts)]
    totals = [0.0] * parts
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        lightest = min(range(parts), key=lambda p: (totals[p], p))
        groups[lightest].append(index)
        totals[lightest] += costs[index]
    return [sorted(group) for group in groups]


def check_run_dir(here: World, shard: str | None, run_dir_given: bool) -> None:
    """Processes that share the runs must write into one folder: refuse the default, which is each one's own."""
    if run_dir_given or not (here.distributed or shard is not None):
        return
    who = f"bench.shard={shard}" if shard is not None else f"behavior.bench under torchrun ({here.size} ranks)"
    raise ConfigError(f"{who}: give hydra.run.dir=<the one folder every process writes into>; each process's "
                      "default (outputs/bench/${now:...}) would be its own")


def keeps_bench_log() -> bool:
    """Whether this process appends to bench.log: all but torchrun's ranks 1..N-1, which keep their own
    (:func:`rank_output`). Decided when the bench module loads, as the entry point's log is fixed then."""
    try:
        return distributed.world().main
    except DistributedError:  # reported in one line when the bench starts
        return True


def rank_recipe(recipe: Recipe, here: World) -> Recipe:
    """Under torchrun each rank trains on its own GPU (``cuda:LOCAL_RANK``, wrapping round when there are more
    ranks than GPUs) where ``trainer.device`` names no index."""
    device = device_of(recipe.trainer.device)
    mine = distributed.rank_device(device, here)
    return recipe if mine == device else replace(recipe, trainer=replace(recipe.trainer, device=str(mine)))


@contextlib.contextmanager
def one_process() -> Iterator[None]:
    """A bench run sees a world of one process, whatever torchrun said: the training code would otherwise join
    the other ranks (data-parallel) instead of training its own run. Only the torchrun variables the engine reads
    are changed, and only while the run trains."""
    keys = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def divide_over_ranks(here: World, bench_dir: Path, share: Sequence[str], todo: Sequence[str],
                      costs: Callable[[], Sequence[float]]) -> list[str]:
    """The names of this rank's runs. Rank 0 divides its ``todo`` (the runs of ``share`` not finished) by
    ``costs`` and sends each rank its part; every rank checks it sees rank 0's bench folder and plans the same
    ``share``."""
    ranks = distributed.start(device_of("cpu"))  # Gloo, whatever trains: this only sends a few names
    try:
        plan = None
        if here.main:
            parts = [[todo[i] for i in part] for part in balanced(costs(), here.size)]
            plan = {"token": uuid.uuid4().hex, "runs": list(share), "assignment": parts}
            with atomic_open(bench_dir / RANKS_FILE, "w", encoding="utf-8") as f:
                f.write(json.dumps(plan, indent=2) + "\n")
            print(f"{len(todo)} run(s) to do over {here.size} ranks: "
                  + ", ".join(f"rank {r} {len(part)}" for r, part in enumerate(parts)), flush=True)
        with distributed.collective(ranks):
            plan = distributed.broadcast(plan)
    finally:
        # No process group while the runs train: the training code's own collectives would pair with ours.
        distributed.stop()
    if not here.main:
        check_same_bench(here, bench_dir, plan, list(share))
    return plan["assignment"][here.rank]


def check_same_bench(here: World, bench_dir: Path, plan: dict, names: list[str]) -> None:
    """Refuse a rank that does not see rank 0's bench folder (not shared: rank 0 would wait forever for runs
    written elsewhere) or that plans other runs (another command line)."""
    file, deadline = bench_dir / RANKS_FILE, time.monotonic() + SHARED_WAIT_S
    while True:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(file.read_text(encoding="utf-8")).get("token") == plan["token"]:
                break
        if time.monotonic() > deadline:
            raise DistributedError(f"rank {here.rank}: hydra.run.dir={bench_dir}: rank 0's {RANKS_FILE} is not "
                                   f"there after {SHARED_WAIT_S:.0f} s; every rank must write into one shared folder")
        time.sleep(0.5)
    if names != plan["runs"]:
        raise DistributedError(f"rank {here.rank}: {len(names)} runs to do here, rank 0 has {len(plan['runs'])} "
                               "(other bench settings?); give every rank the same command line")


@contextlib.contextmanager
def rank_output(here: World, bench_dir: Path) -> Iterator[Callable[[], AbstractContextManager]]:
    """What a process prints while it runs its share, and ``quiet``: the context its trainings run in.

    Rank 0 (and a single process) print as usual, into bench.log too. Another torchrun rank keeps everything in
    its own ``bench.rank<r>.log``, and its trainings' lines stay out of the console, which then shows only its
    runs' start and done lines rather than N trainings interleaved."""
    if here.main:
        yield contextlib.nullcontext
        return
    with open(bench_dir / f"bench.rank{here.rank}.log", "a", encoding="utf-8") as file, \
            open(os.devnull, "w", encoding="utf-8") as nowhere:
        log = LineFilter(file)
        console = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(console[0], log), Tee(console[1], log)

        @contextlib.contextmanager
        def quiet() -> Iterator[None]:
            loud = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = Tee(nowhere, log), Tee(nowhere, log)
            try:
                yield
            finally:
                sys.stdout, sys.stderr = loud

        try:
            yield quiet
        finally:
            sys.stdout, sys.stderr = console
            if log.pending:
                log.write("\n")


def wait_for_others(pending: Sequence[str], finished: Callable[[str], dict | None],
                    announce: Callable[[str, dict], None]) -> None:
    """Rank 0, its own runs done: wait until the other ranks' runs are finished in the shared folder,
    ``announce``-ing each. No time limit (a barrier's would be minutes, while ranks may finish an hour apart):
    a rank that fails ends the whole job through torchrun."""
    left = list(pending)
    if left:
        print(f"waiting for {len(left)} run(s) on the other ranks", flush=True)
    while left:
        for name in list(left):
            record = finished(name)
            if record is not None:
                announce(name, record)
                left.remove(name)
        if left:
            time.sleep(POLL_S)
