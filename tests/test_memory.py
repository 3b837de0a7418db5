"""Memory bounds of decoding, measured where the bytes live: peak resident set of a fresh process per backend.

The promise (docs/reliability.md, "Big clips are not loaded whole"): the pre-scan counts frames while streaming,
training reads only the sampled frames, the clip cache decodes 16 frames at a time, and predict decodes straight to
twice the model's input size (``decode.max_short_side=auto``). ``tests/memory_probe.py`` runs each path in a fresh
process, one per backend, and reports how far the kernel's high-water mark of the resident set (VmHWM) rose during it:
NumPy, torch's CPU allocator and the decoders' own FFmpeg buffers all count (tracemalloc saw NumPy only).

Every promise has a budget and a mutant row: the same measurement with the promise deliberately broken inside the
probe (a whole-clip decode, the cache's chunking off, predict at full size) must land above the budget, so the test
tells the promise from its break.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from behavior.video import BACKENDS, backend_available
from behavior.video.writer import VideoWriter, write_video
from tests.conftest import REPO
from tests.helpers import tiny_checkpoint, tiny_recipe

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")

LONG_FRAMES, SIDE = 900, 256
WHOLE_CLIP = LONG_FRAMES * SIDE * SIDE * 3  # 177 MB (169 MiB) decoded
UHD_FRAME = 2160 * 3840 * 3  # one 4K RGB frame: 24.9 MB (23.7 MiB)
SAMPLED = 8  # frames the predict checkpoint samples per clip
OPS = ("prescan", "dataset", "cache", "predict")
# Each break once on PyAV; on decord, whose budget differs, and predict's on the backends that shrink their own way
# (decord in its filter graph, torchcodec a frame at a time after decoding).
MUTANTS = {"pyav": OPS, "decord": ("prescan", "predict"), "torchcodec": ("predict",)}


def budget(backend: str, op: str) -> int:
    if op == "predict":
        return SAMPLED * UHD_FRAME  # the sampled frames held at full size, before any transform
    # decord's decoder thread decodes ahead of the frames asked for while the reading thread waits for a core: what
    # piles up is dropped after every read (DecordReader._drop_lookahead), but within a read it depends on the load.
    # With four busy processes on two cores the pre-scan once peaked at 73 MiB (7-14 MiB otherwise).
    return WHOLE_CLIP // (2 if backend == "decord" else 4)


def write_long_clip(path: Path) -> Path:
    """A 900-frame 256x256 clip, written a frame at a time (the test itself never holds it whole)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    base = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    # A keyframe every 16 frames: each 16-frame chunk the cache decodes starts on one (no decoding up to it).
    with VideoWriter(path, SIDE, SIDE, fps=30, codec="mpeg4", keyframe_every=16) as writer:
        for t in range(LONG_FRAMES):
            frame = base.copy()
            frame[:, (2 * t) % SIDE:(2 * t) % SIDE + 16] = 255  # a bar moving across: every frame differs
            writer.write(frame)
    return path


def write_uhd_clip(path: Path) -> Path:
    """A 4K clip with as many frames as predict samples, so each sampled frame is a different one."""
    with VideoWriter(path, 3840, 2160, fps=25, codec="mpeg4") as writer:
        for t in range(SAMPLED):
            frame = np.zeros((2160, 3840, 3), np.uint8)
            frame[1000:1200, 400 * t:400 * t + 200] = 255
            writer.write(frame)
    return path


@pytest.fixture(scope="module")
def peaks(tmp_path_factory) -> dict[str, dict]:
    """Probe every backend that loads here (side by side, one process each); backend -> case -> measurement."""
    root = tmp_path_factory.mktemp("memory")
    small = (np.random.default_rng(0).random((24, 64, 64, 3)) * 255).astype(np.uint8)
    clips = {"long": write_long_clip(root / "long.mp4"), "uhd": write_uhd_clip(root / "uhd.mp4"),
             "small": write_video(root / "small.mp4", small, 25, "mpeg4")}
    checkpoint = tiny_checkpoint(root / "tiny.pt", ["a", "b"], tiny_recipe(f"sampling.num_frames={SAMPLED}"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "OMP_NUM_THREADS": "1"}
    cases = {backend: [[op, False] for op in OPS] + [[op, True] for op in MUTANTS[backend]]
             for backend in BACKENDS if backend_available(backend)}
    spec = root / "spec.json"
    spec.write_text(json.dumps({"clips": {k: str(v) for k, v in clips.items()}, "checkpoint": str(checkpoint),
                                "work": str(root), "cases": cases}))
    # Its own session: on a timeout the probe and the children it forked go together.
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "memory_probe.py"), str(spec)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, f"memory probe exited {proc.returncode}\n{err[-3000:]}"
    reports = json.loads(out.splitlines()[-1])
    for backend, report in reports.items():
        assert "error" not in report, f"memory probe ({backend}): {report['error']}\n{err[-3000:]}"
    print("\n".join(f"{backend} {case}: {mb(m['peak'])} (budget {mb(budget(backend, case.split('/')[0]))})"
                    for backend, report in reports.items() for case, m in report.items()))  # shown by pytest -s
    return reports


def report_of(peaks: dict, backend: str) -> dict:
    if backend not in peaks:
        pytest.skip(f"decode.backend={backend} does not load here")
    return peaks[backend]


def mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_peak_stays_under_budget(peaks, backend, op):
    case = report_of(peaks, backend)[f"{op}/real"]
    limit = budget(backend, op)
    assert case["peak"] < limit, f"{backend} {op} peaked at {mb(case['peak'])}, budget {mb(limit)}"
    expected = {
        "prescan": {"frames": LONG_FRAMES},
        "dataset": {"shape": [1, 3, 8, 64, 64]},
        "cache": {"shape": [LONG_FRAMES, 32, 32, 3]},  # every frame, resized while decoding in chunks
        "predict": {"ok": 1, "max_short_side": 80},  # auto = 2 x the checkpoint's transform.size (40)
    }[op]
    assert case["facts"] == expected


@pytest.mark.parametrize(("backend", "op"), [(b, op) for b, ops in MUTANTS.items() for op in ops])
def test_a_broken_promise_breaks_the_budget(peaks, backend, op):
    case = report_of(peaks, backend)[f"{op}/mutant"]
    assert case["exact"], "the high-water mark could not be reset, and the mutant did not raise it"
    limit = budget(backend, op)
    assert case["peak"] > limit, f"mutant {backend} {op} peaked at {mb(case['peak'])}, budget {mb(limit)}"
