"""The region-of-interest stage: detectors, merging boxes over time, cropping, and its use in train/predict."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from behavior.data.dataset import ClipDataset
from behavior.data.detectors import Detection
from behavior.data.faces import face_clip
from behavior.data.pipeline import ClipPipeline
from behavior.data.records import ClipRecord
from behavior.data.roi import (
    WHOLE_FRAME,
    Region,
    RoiConfig,
    crop_frames,
    detection_indices,
    find_regions,
    grow_box,
    merge_detections,
    region_of_clip,
)
from behavior.data.sampling import SamplingConfig, sample_views
from behavior.data.transforms import TransformConfig, build_transform
from behavior.engine.inference import load_clip
from behavior.errors import ConfigError
from behavior.video import open_video
from behavior.video.writer import write_video

FACE = RoiConfig.preset("face")
SAMPLING = SamplingConfig.preset("tsn", num_frames=8, num_views=1)
TRANSFORM = TransformConfig.preset("default", size=64, crop_size=64)


def contains(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int], slack: int = 2) -> bool:
    return (outer[0] <= inner[0] + slack and outer[1] <= inner[1] + slack and outer[2] >= inner[2] - slack
            and outer[3] >= inner[3] - slack)


@pytest.fixture(scope="module")
def face_clips(tmp_path_factory):
    """Three clips of the astronaut's face moving and growing over a texture, and one of the texture alone."""
    folder = tmp_path_factory.mktemp("faces")
    clips = []
    for seed in range(3):
        frames, boxes = face_clip(num_frames=24, seed=seed)
        clips.append((str(write_video(folder / f"face_{seed}.mp4", frames, fps=12)), boxes))
    frames, _ = face_clip(num_frames=24, seed=7, face=False)
    empty = str(write_video(folder / "no_face.mp4", frames, fps=12))
    return clips, empty


def test_face_box_contains_the_face_in_the_sampled_frames(face_clips):
    clips, _ = face_clips
    inside = total = 0
    for path, boxes in clips:
        region = region_of_clip(path, FACE)
        assert region.found and region.hits >= 3, region
        box = region.pixels(320, 240)
        assert box[2] - box[0] <= 0.75 * 320, f"{box}: hardly a crop"
        for view in sample_views(24, SAMPLING):
            for i in view:
                inside += contains(box, boxes[i])
                total += 1
    assert inside >= 0.9 * total, f"face inside the region in {inside} of {total} sampled frames"


def test_the_model_input_is_the_cropped_region(face_clips):
    clips, _ = face_clips
    path, _ = clips[0]
    region = region_of_clip(path, FACE)
    transform = build_transform(TRANSFORM, train=False)
    with open_video(path) as reader:
        view = sample_views(len(reader), SAMPLING)[0]
        frames = reader.get_frames(view)
    left, top, right, bottom = region.pixels(320, 240)
    expected = transform(frames[:, top:bottom, left:right])
    assert not torch.equal(expected, transform(frames))

    pipeline = ClipPipeline(SAMPLING, TRANSFORM, "pyav", roi=FACE)
    clip = load_clip(path, pipeline, transform)  # predict's path: detection inside the worker
    assert clip.region == region and clip.warning == ""
    torch.testing.assert_close(clip.views[0], expected)

    dataset = ClipDataset([ClipRecord(path, "face")], {"face": 0}, SAMPLING, transform, train=False,
                          regions={path: region})  # train/evaluate's path: regions found up front
    torch.testing.assert_close(dataset[0][0][0], expected)


def test_a_clip_without_a_face_keeps_the_whole_frame_and_says_so(face_clips):
    _, empty = face_clips
    region = region_of_clip(empty, FACE)
    assert not region.found and region.checked == FACE.detect_frames
    assert region.note() == "roi: no face found in 5 frame(s); the whole frame was used"
    transform = build_transform(TRANSFORM, train=False)
    clip = load_clip(empty, ClipPipeline(SAMPLING, TRANSFORM, "pyav", roi=FACE), transform)
    assert "no face found" in clip.warning
    with open_video(empty) as reader:
        torch.testing.assert_close(clip.views[0], transform(reader.get_frames(sample_views(len(reader), SAMPLING)[0])))


def test_find_regions_survives_a_clip_it_cannot_read(face_clips, tmp_path, capsys):
    clips, empty = face_clips
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    records = [ClipRecord(clips[0][0], "a"), ClipRecord(empty, "b"), ClipRecord(str(broken), "b")]
    regions = find_regions(records, FACE, progress=False)
    assert [r.found for r in regions.values()] == [True, False, False]
    assert "broken.mp4: detection failed" in capsys.readouterr().err


def test_the_most_persistent_track_wins_and_moving_boxes_are_united():
    still = [Detection(0.1, 0.1, 0.2, 0.2, 50.0)]  # a confident false hit in one frame only
    walker = [[Detection(0.5 + 0.05 * t, 0.4, 0.6 + 0.05 * t, 0.6, 3.0)] for t in range(4)]
    per_frame = [still + walker[0], walker[1], walker[2], walker[3]]
    cfg = RoiConfig.preset("person", margin=0.0, square=False)
    region = merge_detections(per_frame, cfg, aspect=1.0)
    assert region.hits == 4 and region.checked == 4
    assert region.box == pytest.approx((0.5, 0.4, 0.75, 0.6))
    assert merge_detections([[], []], cfg, 1.0) == Region(None, 0, 2, "person")


def test_grow_box_margin_square_and_frame_edges():
    assert grow_box((0.4, 0.4, 0.6, 0.6), 0.5, False, 1.0) == pytest.approx((0.3, 0.3, 0.7, 0.7))
    # A tall person in a 16:9 frame: the square box is as wide in pixels as it is high.
    x0, y0, x1, y1 = grow_box((0.45, 0.2, 0.55, 0.8), 0.0, True, 16 / 9)
    assert (x1 - x0) * 16 == pytest.approx((y1 - y0) * 9)
    # At the edge the box shifts inwards instead of shrinking; it never leaves the frame.
    assert grow_box((0.0, 0.0, 0.2, 0.2), 0.5, False, 1.0) == pytest.approx((0.0, 0.0, 0.4, 0.4))
    assert grow_box((0.0, 0.0, 0.9, 0.9), 1.0, True, 1.0) == pytest.approx((0.0, 0.0, 1.0, 1.0))


def test_crop_and_pixels():
    frames = torch.arange(2 * 10 * 20 * 3, dtype=torch.int32).reshape(2, 10, 20, 3).to(torch.uint8)
    region = Region((0.25, 0.5, 0.75, 1.0), 1, 1, "face")
    assert region.pixels(20, 10) == (5, 5, 15, 10)
    assert crop_frames(frames, region).shape == (2, 5, 10, 3)
    assert crop_frames(frames, WHOLE_FRAME) is frames
    assert Region((0.5, 0.5, 0.5, 0.5)).pixels(20, 10) == (10, 5, 12, 7)  # never empty
    assert detection_indices(100, 5) == [10, 30, 50, 70, 90]
    assert detection_indices(3, 5) == [0, 1, 2]


@pytest.mark.parametrize(("values", "key"), [({"kind": "hand"}, "roi.kind"), ({"margin": -1}, "roi.margin"),
                                             ({"detect_frames": 0}, "roi.detect_frames"),
                                             ({"detect_size": 10}, "roi.detect_size"), ({"sqare": True}, "roi.sqare")])
def test_bad_roi_settings_name_the_key(values, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}[= ]"):  # <key>=<value>: ... or <key> is not known
        RoiConfig.preset("face", **values)


def test_person_detector_runs_on_a_frame_without_people():
    from behavior.data.detectors import detector_for

    frame = np.full((360, 640, 3), 128, np.uint8)
    assert detector_for("person", 640, 0.05)(frame) == []
    assert detector_for("person", 100, 0.05)(frame) == []  # smaller than the 64x128 window


def test_the_cache_stores_cropped_frames_and_keys_them_by_region(face_clips, tmp_path):
    from behavior.data.cache import CacheSettings, ClipCache

    path, _ = face_clips[0][0]
    region = region_of_clip(path, FACE)
    cache = ClipCache(tmp_path / "cache", CacheSettings(size=TRANSFORM.size))
    transform = build_transform(TRANSFORM, train=False)

    def item(cache_or_none):
        dataset = ClipDataset([ClipRecord(path, "face")], {"face": 0}, SAMPLING, transform, train=False,
                              cache=cache_or_none, regions={path: region})
        return dataset[0][0]

    direct = item(None)
    torch.testing.assert_close(item(cache), direct, atol=2 / 255 / 0.225, rtol=0)  # the miss: decoded and stored
    torch.testing.assert_close(item(cache), direct, atol=2 / 255 / 0.225, rtol=0)  # the hit: read back
    assert cache.hits == 1 and cache.misses == 1
    assert cache.entry(path, None, region) != cache.entry(path)  # whole-frame entries stay apart


def test_regions_are_found_once_per_clip_and_setting(face_clips, tmp_path, monkeypatch, capsys):
    from behavior.data import roi as roi_module
    from behavior.data.roi import RegionCache

    clips, empty = face_clips
    records = [ClipRecord(clips[0][0], "a"), ClipRecord(empty, "b")]
    first = find_regions(records, FACE, progress=False, cache=RegionCache(tmp_path, "pyav"))

    def no_detection(*args, **kwargs):
        raise AssertionError("detected again")

    monkeypatch.setattr(roi_module, "region_of_clip", no_detection)
    again = RegionCache(tmp_path, "pyav")
    assert find_regions(records, FACE, progress=False, cache=again) == first and again.hits == 2
    assert "detected again" not in capsys.readouterr().err
    wider = RoiConfig.preset("face", margin=0.5)  # another setting is another entry: detected anew
    find_regions(records[:1], wider, progress=False, cache=RegionCache(tmp_path, "pyav"))
    assert "detection failed (detected again)" in capsys.readouterr().err
