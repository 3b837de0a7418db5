"""Time-bounded decoding: each clip's job runs in a worker process that is killed when it overruns.

A decoder stuck inside C code (decord on a file whose header promises frames that are not there, an FFmpeg
demuxer looping on a crafted file) never returns to Python, so no signal or thread timeout can stop it; only
killing the process does. ``map_with_timeout`` keeps ``workers`` processes busy, kills one whose job runs past
``timeout`` seconds, reports that job as a :class:`DecodeTimeout`, and starts a fresh worker for the rest.

Workers are forked where the platform allows (cheap, and they see the parent's modules as loaded); elsewhere
they are spawned. Job functions and their results must pickle.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from behavior.video.errors import VideoDecodeError


class DecodeTimeout(VideoDecodeError):
    """A clip whose decoding ran past the time limit and was abandoned."""


def _context():
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() and os.name == "posix" else "spawn")


def _serve(conn: Connection, fn: Callable[[Any], Any]) -> None:
    torch = sys.modules.get("torch")
    if torch is not None:  # one decode at a time per worker; torch threads here would only fight the parent
        torch.set_num_threads(1)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        index, item = job
        try:
            conn.send((index, True, fn(item)))
        except BaseException as exc:  # the parent decides what is expected; here only make it pickle
            try:
                conn.send((index, False, exc))
            except Exception:
                conn.send((index, False, RuntimeError(f"{type(exc).__name__}: {exc}")))


class _Worker:
    def __init__(self, fn: Callable[[Any], Any]):
        parent, child = _context().Pipe()
        self.process = _context().Process(target=_serve, args=(child, fn), daemon=True)
        self.process.start()
        child.close()
        self.conn = parent
        self.job: tuple[int, float] | None = None  # (index, deadline)

    def give(self, index: int, item: Any, timeout: float) -> None:
        self.conn.send((index, item))
        self.job = (index, time.monotonic() + timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


def map_with_timeout(fn: Callable[[Any], Any], items: Sequence[Any], timeout: float, workers: int = 2,
                     name: Callable[[Any], str] = str) -> Iterator[tuple[int, bool, Any]]:
    """Yield ``(index, ok, result_or_exception)`` for every item, in completion order.

    A job still running ``timeout`` seconds after it started is killed and yields ``DecodeTimeout(name(item))``;
    a worker that dies (a decoder crash) yields a ``VideoDecodeError`` for its job. Neither stops the others.
    """
    if not items:
        return
    pending = list(range(len(items)))[::-1]
    pool = [_Worker(fn) for _ in range(max(1, min(workers, len(items))))]
    try:
        while pending or any(w.job for w in pool):
            for w in pool:
                if w.job is None and pending:
                    index = pending.pop()
                    w.give(index, items[index], timeout)
            busy = [w for w in pool if w.job]
            next_deadline = min(w.job[1] for w in busy)
            left = next_deadline - time.monotonic()
            ready = wait([w.conn for w in busy], timeout=None if left == float("inf") else max(0.0, left))
            for slot, w in enumerate(pool):
                if w.job is None:
                    continue
                index = w.job[0]
                if w.conn in ready:
                    try:
                        got_index, ok, value = w.conn.recv()
                    except (EOFError, OSError):  # the worker died mid-job: a crash in native code
                        code = w.process.exitcode
                        w.kill()
                        pool[slot] = _Worker(fn)
                        yield index, False, VideoDecodeError(name(items[index]),
                                                             f"decoder crashed (worker exit code {code})")
                        continue
                    w.job = None
                    yield got_index, ok, value
                elif time.monotonic() >= w.job[1]:
                    w.kill()
                    pool[slot] = _Worker(fn)
                    yield index, False, DecodeTimeout(name(items[index]),
                                                      f"decoding timed out after {timeout:g}s (abandoned)")
    finally:
        for w in pool:
            if w.job is None:
                w.close()
            else:
                w.kill()
