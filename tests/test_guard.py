"""Decoding bounded in time: a hung or crashing decoder costs its clip, never the run."""

from __future__ import annotations

import os
import time

import pytest

from behavior.data import dataset as dataset_module
from behavior.data import prescan as prescan_module
from behavior.data.pipeline import ClipPipeline
from behavior.data.prescan import prescan
from behavior.data.records import ClipRecord
from behavior.data.sampling import SamplingConfig
from behavior.data.transforms import TransformConfig
from behavior.errors import ConfigError
from behavior.video import VideoDecodeError
from behavior.video.guard import DecodeTimeout, map_with_timeout
from tests.conftest import make_clip_tree
from tests.helpers import tiny_recipe

# The fake decoder sleeps this long; a bounded wait ends in seconds, so a margin of minutes survives a loaded CI
# machine and still tells a fired guard from a hang.
HUNG = 3600


def _job(item: str) -> str:
    if item == "hang":
        time.sleep(HUNG)
    if item == "crash":
        os._exit(139)  # what a segfault in native decoder code looks like from outside
    if item == "bad":
        raise VideoDecodeError(item, "not a video")
    return item.upper()


def test_hung_and_crashing_jobs_are_abandoned_and_the_rest_finish():
    items = ["a", "hang", "b", "crash", "c", "bad", "d"]
    start = time.monotonic()
    results = {items[i]: (ok, value) for i, ok, value in map_with_timeout(_job, items, timeout=1.0, workers=2)}
    assert time.monotonic() - start < HUNG / 30  # the guard fired: far from the hour-long hang, on any load
    assert {k: v for k, (ok, v) in results.items() if ok} == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert isinstance(results["hang"][1], DecodeTimeout) and "timed out after 1s" in str(results["hang"][1])
    assert str(results["hang"][1]).startswith("hang:")
    assert isinstance(results["crash"][1], VideoDecodeError) and "crashed" in results["crash"][1].reason
    assert isinstance(results["bad"][1], VideoDecodeError) and results["bad"][1].reason == "not a video"


def test_no_items_start_no_workers():
    assert list(map_with_timeout(_job, [], timeout=1.0)) == []


@pytest.mark.slow
def test_prescan_lists_a_clip_that_hangs_the_decoder(tmp_path, monkeypatch):
    root = make_clip_tree(tmp_path / "clips", classes=("a", "b"), per_class=2)
    records = [ClipRecord(str(p), p.parent.name) for p in sorted(root.rglob("*.mp4"))]
    stuck = records[1].path
    real_probe = prescan_module.probe_video

    def probe(path, backend="pyav", verify=False):  # a decoder that never returns on one file
        if path == stuck:
            time.sleep(HUNG)
        return real_probe(path, backend=backend, verify=verify)

    monkeypatch.setattr(prescan_module, "probe_video", probe)  # forked workers inherit the patch
    start = time.monotonic()
    scan = prescan(records, timeout=2.0, progress=False)
    assert time.monotonic() - start < HUNG / 30  # the guard fired: far from the hour-long hang, on any load
    assert [b.path for b in scan.bad] == [stuck] and "timed out after 2s" in scan.bad[0].reason
    assert [r.path for r in scan.good] == [r.path for r in records if r.path != stuck]
    assert all(scan.num_frames[r.path] == 12 for r in scan.good)


def pipeline(timeout: float | None = None) -> ClipPipeline:
    return ClipPipeline(SamplingConfig.preset("tsn", num_frames=4),
                        TransformConfig.preset("default", size=32, crop_size=32), "pyav", timeout=timeout)


def test_decode_timeout_config():
    assert tiny_recipe().data.decode_timeout == 120 and tiny_recipe("data.decode_timeout=null").data.decode_timeout \
        is None
    for bad in ("0", "-5", "soon", "true"):
        with pytest.raises(ConfigError, match=r"^data\.decode_timeout=.*: must be a number > 0 or null$"):
            tiny_recipe(f"data.decode_timeout={bad}")


@pytest.mark.slow
def test_a_clip_that_hangs_a_dataloader_worker_stops_the_epoch_naming_it(tmp_path, monkeypatch):
    # data.prescan=quick/off never decodes frames up front, so the bound must hold inside the loader too.
    root = make_clip_tree(tmp_path / "clips", classes=("a", "b"), per_class=2)
    records = [ClipRecord(str(p), p.parent.name) for p in sorted(root.rglob("*.mp4"))]
    stuck = records[2].path
    real_open = dataset_module.open_video

    def open_video(path, *args, **kwargs):
        if str(path) == stuck:
            time.sleep(HUNG)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "open_video", open_video)  # forked loader workers inherit the patch
    loader = pipeline(timeout=1.5).loader(records, {"a": 0, "b": 1}, train=False, batch_size=2, num_workers=1, seed=0)
    start = time.monotonic()
    with pytest.raises(VideoDecodeError) as caught:
        for _ in loader:
            pass
    assert time.monotonic() - start < HUNG / 30  # the guard fired: far from the hour-long hang, on any load
    assert caught.value.path == stuck and "took over 1.5s in a DataLoader worker" in caught.value.reason
    assert len(str(caught.value).splitlines()) == 1


def test_the_loader_without_a_timeout_is_a_plain_dataloader(tmp_path):
    root = make_clip_tree(tmp_path / "clips", classes=("a", "b"), per_class=1)
    records = [ClipRecord(str(p), p.parent.name) for p in sorted(root.rglob("*.mp4"))]
    loader = pipeline().loader(records, {"a": 0, "b": 1}, train=False, batch_size=2, num_workers=1, seed=0)
    assert loader.timeout == 0 and sum(len(batch[0]) for batch in loader) == 2
