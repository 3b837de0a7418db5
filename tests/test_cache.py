"""Decoded-clip cache: hits skip decoding, changes invalidate, concurrent writers and torn files are safe."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import behavior.data.cache as cache_module
from behavior.data.cache import CacheSettings, ClipCache, load_entry, pool_indices
from behavior.data.dataset import ClipDataset
from behavior.data.prepare import clip_cache
from behavior.data.sampling import SamplingConfig
from behavior.data.scan import scan_folder
from behavior.data.settings import DataConfig
from behavior.data.transforms import TransformConfig, build_transform
from behavior.errors import ConfigError
from behavior.video.writer import write_video
from tests.conftest import moving_square_clip

SETTINGS = CacheSettings(size=40, max_frames=64)


@pytest.fixture
def clip(tmp_path: Path) -> str:
    path = tmp_path / "clip.mp4"
    write_video(path, moving_square_clip(0, seed=1, num_frames=12), fps=12)
    return str(path)


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = cache_module.open_video

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "open_video", counting)
    return calls


def test_second_read_is_a_memory_mapped_hit(tmp_path, clip, count_decodes):
    cache = ClipCache(tmp_path / "cache", SETTINGS)
    first = cache.get(clip)
    assert first.dtype == np.uint8 and first.shape == (12, 40, 40, 3)
    file = cache.entry(clip)
    assert file.is_file() and file.with_suffix(".json").is_file()
    assert file.parent.name == file.stem[:2]
    stamp = file.stat().st_mtime_ns
    second = ClipCache(tmp_path / "cache", SETTINGS).get(clip)
    assert isinstance(second, np.memmap) and np.array_equal(first, second)
    assert len(count_decodes) == 1 and file.stat().st_mtime_ns == stamp
    assert not list(file.parent.glob("*.tmp"))


def test_changed_clip_or_setting_makes_a_new_entry(tmp_path, clip, count_decodes):
    cache = ClipCache(tmp_path / "cache", SETTINGS)
    before, old_file = np.array(cache.get(clip)), cache.entry(clip)
    write_video(clip, moving_square_clip(1, seed=7, num_frames=10), fps=12)
    os.utime(clip, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    after = cache.get(clip)
    assert cache.entry(clip) != old_file and len(count_decodes) == 2
    assert after.shape[0] == 10 and not np.array_equal(before[:10], after)
    bigger = ClipCache(tmp_path / "cache", CacheSettings(size=48)).get(clip)
    assert bigger.shape == (10, 48, 48, 3) and len(count_decodes) == 3
    letterbox = ClipCache(tmp_path / "cache", CacheSettings(resize="letterbox", size=40))
    assert letterbox.entry(clip) != cache.entry(clip)


def test_long_clips_keep_an_evenly_spaced_pool(tmp_path, clip):
    assert pool_indices(12, 64) == list(range(12))
    assert pool_indices(100, 4) == [12, 37, 62, 87]
    pool = ClipCache(tmp_path / "cache", CacheSettings(size=40, max_frames=5)).get(clip)
    assert pool.shape[0] == 5


@pytest.mark.parametrize("damage", ["truncate", "garbage", "append", "empty"])
def test_torn_or_corrupt_entry_is_rebuilt(tmp_path, clip, count_decodes, damage):
    cache = ClipCache(tmp_path / "cache", SETTINGS)
    good = np.array(cache.get(clip))
    file = cache.entry(clip)
    data = file.read_bytes()
    broken = {"truncate": data[:len(data) // 2], "garbage": b"\x00" * len(data), "append": data + b"junk",
              "empty": b""}[damage]
    file.write_bytes(broken)
    assert load_entry(file) is None
    assert np.array_equal(cache.get(clip), good) and len(count_decodes) == 2
    assert load_entry(file) is not None


def _fill(root: str, clip: str, barrier, results) -> None:
    barrier.wait()
    frames = ClipCache(root, SETTINGS).get(clip)
    results.put(np.array(frames).tobytes())


def test_concurrent_writers_leave_one_valid_file(tmp_path, clip):
    ctx = multiprocessing.get_context("fork")
    workers = 4
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(str(tmp_path / "cache"), clip, barrier, results))
             for _ in range(workers)]
    for p in procs:
        p.start()
    outputs = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    cache = ClipCache(tmp_path / "cache", SETTINGS)
    stored = load_entry(cache.entry(clip))
    assert stored is not None and all(out == np.array(stored).tobytes() for out in outputs)
    assert not list(cache.entry(clip).parent.glob("*.tmp"))


def test_unwritable_cache_warns_once_and_still_returns_frames(tmp_path, clip, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    cache = ClipCache(blocker / "cache", SETTINGS)
    assert cache.get(clip).shape == (12, 40, 40, 3)
    assert cache.get(clip).shape == (12, 40, 40, 3)
    assert capsys.readouterr().err.count("not writable") == 1


def _dataset(root, train: bool, cache: ClipCache | None, views: int = 1) -> ClipDataset:
    records = scan_folder(root)
    classes = {name: i for i, name in enumerate(sorted({r.label for r in records}))}
    transform = build_transform(TransformConfig.preset("default", size=40, crop_size=32), train)
    return ClipDataset(records, classes, SamplingConfig.preset("tsn", num_frames=4, num_views=views), transform, train,
                       cache=cache)


@pytest.mark.parametrize("train, views", [(True, 1), (False, 2)])
def test_cached_items_equal_direct_decoding(clip_tree, tmp_path, train, views):
    direct = _dataset(clip_tree, train, None, views)
    cache = ClipCache(tmp_path / "cache", CacheSettings(size=40))
    cached = _dataset(clip_tree, train, cache, views)
    for index in (0, 5):
        for _ in range(2):  # the miss (decoded now) and the hit (memory-mapped) must both match
            assert torch.equal(cached[index][0], direct[index][0])
    assert cache.hits == 2 and cache.misses == 2


def test_config_turns_the_cache_on_and_off(tmp_path):
    transform = TransformConfig.preset("default", size=40, crop_size=32)
    assert clip_cache(DataConfig.preset("synthetic", cache=None), "pyav", transform) is None
    cache = clip_cache(DataConfig.preset("synthetic", cache=str(tmp_path / "c"), cache_max_frames=8), "pyav", transform)
    assert cache.root == tmp_path / "c" and cache.settings == CacheSettings("pyav", "short_side", 40, 8)
    relative = clip_cache(DataConfig.preset("synthetic", cache="data/cache"), "pyav", transform)
    assert relative.root.is_absolute() and relative.root.parts[-2:] == ("data", "cache")
    with pytest.raises(ConfigError, match=r"^data\.cache_max_frames=0: must be an integer >= 1$"):
        DataConfig.preset("synthetic", cache="x", cache_max_frames=0)
