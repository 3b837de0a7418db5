"""``torchrun --nproc_per_node=N -m behavior.predict ...``: the clips still to do shared out among N processes.

Rank 0 alone reads the input folder, opens (and checks, or refuses) ``output`` and its provenance record, and
decides what is left to do; the others load the checkpoint meanwhile and then take every N-th of those clips
(``distributed.shard``). Rank 0 appends its rows to ``output`` itself; rank r > 0 appends its rows, in the same
format and flushed per clip, to its own part file beside it, ``<output>.rank<r>.part`` (one writer per file, no
interleaved bytes). When every rank is done, rank 0 appends the part files' rows to ``output`` in rank order and
deletes them. A run killed on any rank leaves its rows in those files (a torn last row is cut off and redone): the next
run's rank 0 (with any number of processes) first folds leftover part files into ``output``, skipping clips
already there, so no clip gets two rows.

Everything here is the identity in one process: no group, no part files written, ``agree`` re-raises at once.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from behavior.engine.distributed import DistributedError, World, start
from behavior.predict.predictions import ENCODING, PredictionsFile

# How long a rank waits for the others, at the start (rank 0 scans a folder and reads the output) and at the end
# (the slowest rank's share of clips may take hours more than the others'). A rank that dies is noticed without it:
# torchrun stops the whole job, and Gloo errors out when a peer's connection closes. So this only bounds a wait on
# a process that is alive but stuck.
WAIT = datetime.timedelta(days=7)


def part_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.rank{rank}.part")


def leftover_parts(output: Path) -> list[Path]:
    """The part files beside ``output``, in rank order (a killed run may have had more ranks than this one)."""
    pattern = re.compile(re.escape(output.name) + r"\.rank(\d+)\.part")
    try:
        names = os.listdir(output.parent)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := pattern.fullmatch(name))]
    return [output.with_name(name) for _, name in sorted(found)]


class PartFile(PredictionsFile):
    """One rank's rows beside the output, in the output's format whatever the part's own name ends in; it takes no
    provenance record (the output's covers it) and, as the output does, a lock: one writer at a time."""

    def __init__(self, path: Path, columns: list[str], jsonl: bool):
        super().__init__(path, columns)
        self.jsonl = jsonl

    def rows(self) -> Iterator[dict]:
        """Its rows, as ``write`` takes them. Call after ``open``, which has cut off a torn last row."""
        text = self.path.read_bytes().decode(*ENCODING)
        if self.jsonl:
            # Split on newlines only: json.dumps escapes them, but other line breaks (U+2028) stay raw in a name.
            yield from (json.loads(line) for line in text.split("\n") if line)
            return
        records = csv.reader(io.StringIO(text, newline=""))
        next(records, None)  # the header
        for values in records:
            # "" for an empty value writes back exactly as the None it was written from.
            yield dict(zip(self.columns, values, strict=True))


def fold(out: PredictionsFile, parts: Sequence[Path]) -> int:
    """Append to ``out`` the rows of ``parts`` for clips it lacks, make them durable, and delete each part.

    A kill anywhere in between loses nothing and duplicates nothing: a part is deleted only after its rows are on
    disk in ``out``, and folding it again skips them. Returns how many rows were added."""
    added = 0
    for path in parts:
        # Refused when another process still writes it, or when it is not a part of this output's columns.
        part = PartFile(path, out.columns, out.jsonl).open()
        try:
            for row in part.rows():
                if row["path"] not in out.done:
                    out.write(row)
                    out.done.add(row["path"])
                    added += 1
            out.sync()
            path.unlink()
        finally:
            part.close()
    return added


class Quiet(SystemExit):
    """A rank other than the one that reports the failure leaves without a word and with status 0, so that torchrun,
    which stops every rank once one fails, does not stop the reporting rank before it has printed its line."""

    def __init__(self) -> None:
        super().__init__(0)


class Job:
    """This process's part in the run: its World and the Gloo group the ranks talk over (None in one process).

    The group is Gloo on GPUs too (only small Python objects are exchanged) and has its own long ``WAIT``; the
    default group's bounded timeout is for steps that take about as long on every rank, which a share of clips is
    not."""

    def __init__(self, here: World, group: Any = None):
        self.here, self.group = here, group

    @classmethod
    def join(cls, device: torch.device) -> Job:
        """Join the others (``distributed.start``; nothing to do in one process), on this rank's GPU."""
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # NCCL's default group works on the current device
        here = start(device)
        if not here.distributed:
            return cls(here)
        try:
            group = dist.new_group(backend="gloo", timeout=WAIT)
        except Exception as err:
            raise DistributedError(f"rank {here.rank} of {here.size}: could not set up the Gloo group predict "
                                   f"talks over: {str(err).strip().splitlines()[0]}") from None
        return cls(here, group)

    @property
    def main(self) -> bool:
        return self.here.main

    def _everyone(self, value: Any, what: str) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.group is None:
            return [value]
        parts: list[Any] = [None] * self.here.size
        try:
            dist.all_gather_object(parts, value, group=self.group)
        except Exception as err:
            raise DistributedError(f"rank {self.here.rank}: lost the other ranks at '{what}': "
                                   f"{str(err).strip().splitlines()[0]}") from None
        return parts

    def agree(self, error: BaseException | None, plan: Any) -> Any:
        """Rank 0's ``plan`` on every rank, once every rank has got ready without an ``error``.

        Otherwise the lowest rank that failed raises its own error (rank 0's refusals first: one line, status 2),
        and every other rank leaves quietly (:class:`Quiet`) instead of waiting for work that will not come."""
        outcomes = self._everyone((error is not None, plan if self.main else None), "getting ready")
        failed = [rank for rank, (bad, _) in enumerate(outcomes) if bad]
        if not failed:
            return outcomes[0][1]
        if failed[0] == self.here.rank:
            raise error
        raise Quiet

    def totals(self, counts: dict[str, int], failures: list) -> tuple[dict[str, int], list]:
        """Every rank's counts summed and its failed clips joined, once every rank has closed its part file."""
        shares = self._everyone((counts, failures), "all clips done")
        summed = {key: sum(share[key] for share, _ in shares) for key in counts}
        return summed, [result for _, share in shares for result in share]
