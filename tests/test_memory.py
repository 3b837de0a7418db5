"""Memory bound on decoding: a long clip is streamed and a 4K clip is shrunk while decoding, never held whole.

tracemalloc sees every NumPy and torch-CPU buffer Python code allocates (NumPy reports its data buffers to it), so
its peak is the largest amount of decoded frames alive at once in the decode -> sample -> transform path.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from behavior.data.cache import CacheSettings, ClipCache
from behavior.data.dataset import ClipDataset
from behavior.data.pipeline import ClipPipeline
from behavior.data.records import ClipRecord
from behavior.data.sampling import SamplingConfig
from behavior.data.transforms import TransformConfig, build_transform
from behavior.engine.inference import load_clip
from behavior.video import probe_video
from behavior.video.writer import write_video

LONG_FRAMES, SIDE = 900, 64


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    frames = np.repeat((rng.random((1, SIDE, SIDE, 3)) * 255).astype(np.uint8), LONG_FRAMES, axis=0)
    frames[:, :, :8] = np.arange(LONG_FRAMES, dtype=np.uint8)[:, None, None, None]  # something changes each frame
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", frames, fps=30)


def whole_clip_bytes() -> int:
    return LONG_FRAMES * SIDE * SIDE * 3


def test_a_long_clip_is_streamed_by_prescan_dataset_and_cache(long_clip, tmp_path):
    transform = TransformConfig.preset("default", size=SIDE, crop_size=SIDE)
    record = ClipRecord(str(long_clip), "a")
    sampling = SamplingConfig.preset("tsn", num_frames=8)
    dataset = ClipDataset([record], {"a": 0}, sampling, build_transform(transform, False), False, "pyav", None, 0, None)
    cache = ClipCache(tmp_path / "cache", CacheSettings("pyav", "short_side", SIDE, 64))
    budget = whole_clip_bytes() // 4
    assert peak_bytes(lambda: probe_video(str(long_clip), verify=True)) < budget
    assert peak_bytes(lambda: dataset[0]) < budget
    assert peak_bytes(lambda: cache.get(str(long_clip))) < budget
    assert cache.get(str(long_clip)).shape[0] == 64  # evenly spaced frames kept, not all 900


def test_a_4k_clip_is_shrunk_while_decoding(tmp_path):
    frames = np.zeros((2, 2160, 3840, 3), np.uint8)
    frames[:, 1000:1200, 1800:2000] = 255
    path = write_video(tmp_path / "uhd.mp4", frames, fps=25, codec="mpeg4")
    transform = TransformConfig.preset("default", size=112, crop_size=112)
    pipeline = ClipPipeline(SamplingConfig.preset("tsn", num_frames=4), transform, "pyav", max_short_side=224)
    one_4k_frame = 2160 * 3840 * 3
    clip = None

    def load():
        nonlocal clip
        clip = load_clip(str(path), pipeline, build_transform(transform, False))

    assert peak_bytes(load) < one_4k_frame // 2  # four sampled frames at full size would be 4 x one_4k_frame
    assert tuple(clip.views.shape[-2:]) == (112, 112)
