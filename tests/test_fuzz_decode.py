"""Property test of the decode stage: whatever the bytes, the outcome is frames or VideoDecodeError.

CI runs a few hundred cases on PyAV in-process and a few dozen on every backend (PyAV, decord, torchcodec), each
in a guarded worker process, so a decoder that crashes or hangs shows up as a failure instead of killing or
stalling the test run; ``pytest -m fuzz_long`` runs thousands per backend. Mutations: byte flips, filled and
zeroed runs, truncation, spliced bytes, duplicated chunks and corrupted header fields.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behavior.video import BACKENDS, VideoDecodeError, backend_available, open_video, probe_video
from behavior.video.guard import DecodeTimeout, map_with_timeout
from behavior.video.writer import write_video
from tests.conftest import moving_square_clip

SEED_CLIPS = {"h264": ".mp4", "mpeg4": ".avi", "mjpeg": ".avi"}


@pytest.fixture(scope="module")
def seed_clips(tmp_path_factory) -> list[bytes]:
    root = tmp_path_factory.mktemp("fuzz_seeds")
    clips = []
    for i, (codec, ext) in enumerate(SEED_CLIPS.items()):
        path = write_video(root / f"seed{i}{ext}", moving_square_clip(i, seed=i, num_frames=8, size=32), fps=8,
                           codec=codec)
        clips.append(path.read_bytes())
    return clips


# A mutation: flip bytes, overwrite a run with one value (zeros included), truncate, splice in random bytes,
# duplicate a chunk in place, or corrupt the container's header fields (the first bytes: box sizes, RIFF lengths).
mutations = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
        st.tuples(st.just("fill"), st.floats(0, 1), st.integers(0, 255), st.integers(1, 4096)),
        st.tuples(st.just("cut"), st.floats(0, 1)),
        st.tuples(st.just("splice"), st.floats(0, 1), st.binary(min_size=1, max_size=256)),
        st.tuples(st.just("dup"), st.floats(0, 1), st.integers(1, 2048)),
        st.tuples(st.just("header"), st.integers(0, 63), st.integers(1, 255)),
    ),
    min_size=1, max_size=6)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        at = int(op[1] * max(0, len(buf) - 1))
        if op[0] == "flip" and buf:
            buf[at] ^= op[2]
        elif op[0] == "fill":
            buf[at:at + op[3]] = bytes([op[2]]) * len(buf[at:at + op[3]])
        elif op[0] == "cut":
            del buf[at:]
        elif op[0] == "splice":
            buf[at:at] = op[2]
        elif op[0] == "dup":
            buf[at:at] = buf[at:at + op[2]]
        elif op[0] == "header" and op[1] < len(buf):
            buf[op[1]] ^= op[2]
    return bytes(buf)


def decode_all(path: str, backend: str = "pyav") -> str:
    """The whole decode stage on one file: probe with full verification, then read frames by index; and every
    frame read without that probe, as training with data.prescan=quick and predict read a clip (the verified
    probe rejects a clip with a frame that fails to decode before a reader ever meets that frame)."""
    outcomes = []
    for verify in (True, False):
        try:
            if verify:
                meta = probe_video(path, backend=backend, verify=True)
            with open_video(path, backend=backend) as reader:
                count = min(meta.num_frames, len(reader)) if verify else len(reader)
                frames = reader.get_frames(sorted({0, count // 2, count - 1}) if verify else range(count))
        except VideoDecodeError as err:
            assert err.path == path and err.reason and "\n" not in err.reason
            outcomes.append("error")
            continue
        array = np.asarray(frames)
        assert array.ndim == 4 and array.shape[-1] == 3 and array.dtype == np.uint8
        outcomes.append("frames")
    return outcomes[0]


def write_case(tmp_path: Path, data: bytes, suffix: str) -> str:
    path = tmp_path / f"case{suffix}"
    path.write_bytes(data)
    return str(path)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(SEED_CLIPS) - 1), ops=mutations)
def test_mutated_clips_give_frames_or_a_decode_error(seed_clips, tmp_path, which, ops):
    suffix = list(SEED_CLIPS.values())[which]
    assert decode_all(write_case(tmp_path, mutate(seed_clips[which], ops), suffix)) in ("frames", "error")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".mp4", ".avi", ".mkv", ".webm", ""]))
def test_random_bytes_give_a_decode_error(tmp_path, data, suffix):
    assert decode_all(write_case(tmp_path, data, suffix)) in ("frames", "error")


def _guarded_case(job: tuple[str, str]) -> str:
    return decode_all(*job)


def random_ops(rng: np.random.Generator) -> list[tuple]:
    """One case's mutations, drawn from every kind (the guarded runs cannot use hypothesis' strategies)."""
    ops = []
    for _ in range(int(rng.integers(1, 6))):
        kind, at = ["flip", "fill", "cut", "splice", "dup", "header"][int(rng.integers(6))], float(rng.random())
        ops.append({"flip": ("flip", at, int(rng.integers(1, 256))),
                    "fill": ("fill", at, int(rng.choice([0, int(rng.integers(256))])), int(rng.integers(1, 4096))),
                    "cut": ("cut", at),
                    "splice": ("splice", at, rng.bytes(int(rng.integers(1, 257)))),
                    "dup": ("dup", at, int(rng.integers(1, 2049))),
                    "header": ("header", int(rng.integers(64)), int(rng.integers(1, 256)))}[kind])
    return ops


def guarded_fuzz(seed_clips, tmp_path: Path, backend: str, count: int, seed: int) -> list:
    """``count`` mutated clips decoded by ``backend``, each in a guarded worker process: the cases whose decoder
    crashed, hung or raised anything but VideoDecodeError."""
    if not backend_available(backend):
        pytest.skip(f"{backend} not available here")
    rng, jobs = np.random.default_rng(seed), []
    for k in range(count):
        which = int(rng.integers(len(SEED_CLIPS)))
        path = tmp_path / f"case{k}{list(SEED_CLIPS.values())[which]}"
        path.write_bytes(mutate(seed_clips[which], random_ops(rng)))
        jobs.append((str(path), backend))
    return [(jobs[i][0], value) for i, ok, value in map_with_timeout(_guarded_case, jobs, timeout=30, workers=2,
                                                                     name=lambda job: job[0])
            if not ok and (isinstance(value, DecodeTimeout) or not isinstance(value, VideoDecodeError)
                           or "crashed" in str(value))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_guarded_fuzz_of_every_backend(seed_clips, tmp_path, backend):
    # A few dozen cases per backend in CI; pytest -m fuzz_long runs thousands.
    failures = guarded_fuzz(seed_clips, tmp_path, backend, count=30, seed=1)
    assert not failures, failures[:5]


@pytest.mark.fuzz_long
@pytest.mark.timeout(3 * 3600)  # thousands of cases on every backend: far past the suite's per-test limit
@pytest.mark.parametrize("backend", BACKENDS)
def test_long_fuzz_every_backend(seed_clips, tmp_path, backend):
    failures = guarded_fuzz(seed_clips, tmp_path, backend, int(os.environ.get("FUZZ_CASES", "2000")),
                            int(os.environ.get("FUZZ_SEED", "0")))
    assert not failures, failures[:5]
