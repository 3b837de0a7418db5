"""Shared fixtures: tiny real clips made with PyAV inside the test's temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from behavior.video.writer import write_video

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def moving_square_clip(label_index: int, seed: int, num_frames: int = 12, size: int = 48) -> np.ndarray:
    """A bright square moving in a class-specific direction over a noisy background."""
    rng = np.random.default_rng(seed)
    frames = (rng.random((num_frames, size, size, 3)) * 60).astype(np.uint8)
    dx, dy = [(1, 0), (0, 1), (-1, 0), (0, -1)][label_index % 4]
    x, y = size // 2 - 6 - dx * 10, size // 2 - 6 - dy * 10
    for t in range(num_frames):
        cx, cy = x + dx * 2 * t, y + dy * 2 * t
        frames[t, max(cy, 0):cy + 12, max(cx, 0):cx + 12] = (230, 200, 40)
    return frames


def make_clip_tree(root: Path, classes=("left", "right", "up"), per_class: int = 6, num_frames: int = 12,
                   groups: bool = False) -> Path:
    """A folder-per-class dataset; with ``groups`` also a manifest ``root/clips.csv`` (two groups per class)."""
    rows = ["path,label,group"]
    for ci, name in enumerate(classes):
        for k in range(per_class):
            path = root / name / f"{name}_{k:02d}.mp4"
            write_video(path, moving_square_clip(ci, seed=ci * 100 + k, num_frames=num_frames), fps=12)
            rows.append(f"{name}/{path.name},{name},g{ci}_{k % 3}")
    if groups:
        (root / "clips.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def clip_tree(tmp_path: Path) -> Path:
    return make_clip_tree(tmp_path / "clips", groups=True)


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} is absent")
    return path


def pytest_collection_modifyitems(config, items):
    # The long fuzz run only when asked for by name (pytest -m fuzz_long), whatever other -m is given (-m "not slow").
    if "fuzz_long" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the long decode fuzz run: pytest -m fuzz_long")
    for item in items:
        if "fuzz_long" in item.keywords:
            item.add_marker(skip)
