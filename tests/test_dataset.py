from __future__ import annotations

import torch

from behavior.data.dataset import ClipDataset
from behavior.data.prescan import prescan
from behavior.data.sampling import SamplingConfig, sample_views
from behavior.data.scan import scan_folder
from behavior.data.transforms import TransformConfig, build_transform
from behavior.video import open_video

TRANSFORM = TransformConfig.preset("default", size=40, crop_size=32)


def dataset(root, train: bool, views: int = 1, seed: int = 0) -> ClipDataset:
    records = scan_folder(root)
    classes = {name: i for i, name in enumerate(sorted({r.label for r in records}))}
    sampling = SamplingConfig.preset("tsn", num_frames=4, num_views=views)
    return ClipDataset(records, classes, sampling, build_transform(TRANSFORM, train), train, seed=seed)


def test_training_items_repeat_by_seed_epoch_and_index(clip_tree):
    ds = dataset(clip_tree, train=True)
    video, label, index = ds[3]
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32 and index == 3
    assert label == ds.class_to_idx[ds.records[3].label]
    assert torch.equal(ds[3][0], video)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], video)
    assert not torch.equal(dataset(clip_tree, train=True, seed=1)[3][0], video)


def test_training_items_leave_the_global_rng_alone(clip_tree):
    ds = dataset(clip_tree, train=True)
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    ds[0]
    assert torch.equal(torch.rand(1), expected)


def test_evaluation_items_hold_every_view(clip_tree):
    ds = dataset(clip_tree, train=False, views=3)
    video, _, _ = ds[0]
    assert video.shape == (3, 3, 4, 32, 32)
    assert torch.equal(ds[0][0], video)
    # Each view is the evaluation transform of its own frames (views spread over the clip, not one view repeated).
    views = sample_views(12, ds.sampling)
    assert len({tuple(view) for view in views}) == 3
    with open_video(ds.records[0].path) as reader:
        frames = reader.get_frames(list(range(12)))
    for view, got in zip(views, video, strict=True):
        assert torch.equal(got, build_transform(TRANSFORM, False)(frames[view]))


def test_prescan_counts_frames_and_sets_bad_clips_aside(clip_tree):
    (clip_tree / "left" / "broken.mp4").write_bytes(b"\x00" * 100)
    result = prescan(scan_folder(clip_tree), progress=False)
    assert [b.path.endswith("broken.mp4") for b in result.bad] == [True]
    assert len(result.good) == 18 and set(result.num_frames.values()) == {12}
