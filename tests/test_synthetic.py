"""The built-in synthetic dataset: rendering, determinism, on-disk generation and its once-only cache."""

from __future__ import annotations

import json
from dataclasses import replace

import av
import numpy as np
import pytest

from behavior.data import synthetic as S
from behavior.data import synthetic_motion as M
from behavior.data import synthetic_render as R
from behavior.data.prepare import resolve_records
from behavior.data.settings import SyntheticSource
from behavior.errors import ConfigError

TINY = S.SyntheticSpec(clips_per_class=2, num_frames=8, width=64, height=48, seed=3)


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _siblings(root):
    return sorted(p.name for p in root.parent.iterdir() if p.name != root.name)


@pytest.mark.parametrize("label", S.KNOWN_CLASSES)
def test_every_class_renders(label):
    video = S.render_clip(label, S.clip_rng(TINY, label, 0), TINY)
    assert video.shape == (8, 48, 64, 3) and video.dtype == np.uint8
    assert np.abs(np.diff(video.astype(np.int16), axis=0)).mean() > 0.5  # something moves
    assert video.std() > 10  # a textured scene, not a flat frame


def test_classes_and_spec_defaults():
    assert len(S.SYNTHETIC_CLASSES) >= 6 and len(set(S.SYNTHETIC_CLASSES)) == len(S.SYNTHETIC_CLASSES)
    spec = S.SyntheticSpec()
    assert spec.clips_per_class * len(spec.classes) >= 300 and spec.num_frames == 32
    assert spec.width % 2 == 0 and spec.height % 2 == 0
    with pytest.raises(ValueError):
        S.SyntheticSpec(width=63)
    with pytest.raises(ValueError):
        S.SyntheticSpec(classes=("walk", "swim"))
    with pytest.raises(ValueError):
        S.SyntheticSpec(classes=("walk", "walk"))
    # The order-only pair is opt-in: the default set (and what make train renders) is the six classes.
    assert spec.classes == S.SYNTHETIC_CLASSES == ("walk", "run", "jump", "wave_one", "wave_both", "bend")
    assert set(S.ORDER_CLASSES).isdisjoint(spec.classes) and S.KNOWN_CLASSES[:6] == S.SYNTHETIC_CLASSES


def test_clip_streams_of_the_default_classes_are_unchanged():
    # New classes are appended to KNOWN_CLASSES, so every existing clip keeps its random stream (and bytes).
    for index, label in enumerate(S.SYNTHETIC_CLASSES):
        expected = np.random.default_rng([TINY.seed, index, 1]).random(4)
        np.testing.assert_array_equal(S.clip_rng(TINY, label, 1).random(4), expected)


def test_rendering_is_deterministic_by_seed():
    for label in S.KNOWN_CLASSES:
        a = S.render_clip(label, S.clip_rng(TINY, label, 1), TINY)
        b = S.render_clip(label, S.clip_rng(TINY, label, 1), TINY)
        np.testing.assert_array_equal(a, b)
        other = replace(TINY, seed=4)
        assert not np.array_equal(a, S.render_clip(label, S.clip_rng(other, label, 1), other))
        assert not np.array_equal(a, S.render_clip(label, S.clip_rng(TINY, label, 0), TINY))


def test_walk_and_run_speeds_do_not_overlap():
    t = np.arange(32) / 25.0
    rng = np.random.default_rng(0)
    walk = [M.motion("walk", rng, t)[1] for _ in range(200)]
    run = [M.motion("run", rng, t)[1] for _ in range(200)]
    assert max(walk) < min(run)
    assert all(M.motion(c, rng, t)[1] == 0 for c in ("jump", "bend", "wave_one", "wave_both"))


def test_ensure_creates_decodable_tree_once(tmp_path, monkeypatch):
    root = tmp_path / "synth"
    assert S.ensure_synthetic(root, TINY, workers=1) == root
    for label in S.SYNTHETIC_CLASSES:
        files = sorted((root / label).glob("*.mp4"))
        assert [f.name for f in files] == [f"{label}_0001.mp4", f"{label}_0002.mp4"]
        for f in files:
            assert len(_decode(f)) == TINY.num_frames
    marker = json.loads((root / S.MARKER).read_text())
    assert marker["spec"]["seed"] == 3 and marker["num_clips"] == 12
    assert _siblings(root) == []  # no temp folder left behind

    calls = []
    monkeypatch.setattr(S, "generate_synthetic", lambda *a, **k: calls.append(a))
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*.mp4")}
    assert S.ensure_synthetic(root, TINY, workers=1) == root
    assert calls == [] and mtimes == {p: p.stat().st_mtime_ns for p in root.rglob("*.mp4")}


def test_changed_or_damaged_dataset_regenerates(tmp_path):
    root = tmp_path / "synth"
    S.ensure_synthetic(root, TINY, workers=1)
    before = _decode(root / "jump" / "jump_0001.mp4")
    reseeded = replace(TINY, seed=9)
    S.ensure_synthetic(root, reseeded, workers=1)
    assert S.is_complete(root, reseeded) and not S.is_complete(root, TINY)
    assert not np.array_equal(before, _decode(root / "jump" / "jump_0001.mp4"))
    (root / "bend" / "bend_0002.mp4").unlink()  # incomplete: regenerated
    S.ensure_synthetic(root, reseeded, workers=1)
    assert (root / "bend" / "bend_0002.mp4").is_file() and _siblings(root) == []


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    root = tmp_path / "synth"
    done = []

    def flaky(task):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(task)
        return real(task)

    real = S._write_clip
    monkeypatch.setattr(S, "_write_clip", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.ensure_synthetic(root, TINY, workers=1)
    assert not root.exists() and _siblings(root) == []


def test_refuses_to_replace_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        S.ensure_synthetic(root, TINY, workers=1)
    assert (root / "notes.txt").read_text() == "keep me"


def test_worker_pool_matches_serial(tmp_path):
    spec = replace(TINY, clips_per_class=1, classes=("walk", "run", "bend"))
    S.generate_synthetic(tmp_path / "serial", spec, workers=1, progress=False)
    S.generate_synthetic(tmp_path / "pool", spec, workers=2, progress=False)
    for label in spec.classes:
        name = f"{label}/{label}_0001.mp4"
        # Not byte-equal: numpy's SIMD reductions may round a rare pixel differently in another process, and
        # the encoder then spreads that one level. The class content must still be the same.
        serial, pool = _decode(tmp_path / "serial" / name).astype(int), _decode(tmp_path / "pool" / name).astype(int)
        # Seen: 0.74 levels mean on one CI run, i.e. a different rounding propagated through a P-frame chain; a
        # different clip would differ by tens of levels.
        assert serial.shape == pool.shape and np.abs(serial - pool).mean() < 2.0
        assert np.corrcoef(serial.ravel(), pool.ravel())[0, 1] > 0.98
        clip = S.render_clip(label, S.clip_rng(spec, label, 0), spec)
        # H.264 at the default CRF stays close to the rendered frames.
        assert np.abs(_decode(tmp_path / "pool" / name).astype(int) - clip).mean() < 12


def test_cli(tmp_path, capsys):
    root, sheet = tmp_path / "cli", tmp_path / "sheet.png"
    S.main(["--root", str(root), "--clips-per-class", "1", "--frames", "8", "--size", "64", "48",
            "--seed", "5", "--workers", "1", "--sheet", str(sheet)])
    assert S.is_complete(root, S.SyntheticSpec(clips_per_class=1, num_frames=8, width=64, height=48, seed=5))
    assert sheet.is_file() and "ready" in capsys.readouterr().out


# ---- the order-only pair: circle_cw / circle_ccw ---------------------------------------------------------


def _hand_on_screen(label: str, seed: int, t: np.ndarray) -> np.ndarray:
    """The circling hand's image position relative to its shoulder, [T, 2] (x right, y down), as render_clip
    projects it (circle clips are never mirrored)."""
    pose, _, yaw = M.motion(label, np.random.default_rng(seed), t)
    pix, _ = R.project(R.forward_kinematics(pose, len(t)), yaw, 1.0, 100.0, np.zeros((len(t), 2)))
    side = max(R.SIDES, key=lambda s: np.ptp(pix[f"hand_{s}"], axis=0).sum())
    return pix[f"hand_{side}"] - pix[f"shoulder_{side}"]


def test_circle_direction_on_screen():
    t = np.arange(32) / 25.0
    for seed in range(40):
        for label, sign in (("circle_cw", 1), ("circle_ccw", -1)):
            hand = _hand_on_screen(label, seed, t)
            step = np.diff(hand, axis=0)
            turn = step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0]  # > 0: clockwise with y pointing down
            assert np.all(np.sign(turn) == sign), (label, seed)
            assert np.ptp(hand, axis=0).max() > 15  # a visible circle for a 100-pixel body, not a twitch


@pytest.mark.parametrize("pair", [S.CIRCLE_CLASSES, S.SQUAT_CLASSES])
def test_second_of_each_pair_is_the_first_played_backwards(pair):
    # The same draws give the same pose but for the moving limbs, whose path is reversed: the two classes share
    # every distribution, and only the order of the frames tells them apart.
    t = np.arange(16) / 25.0
    for seed in range(10):
        first, _, yaw_first = M.motion(pair[0], np.random.default_rng(seed), t)
        second, _, yaw_second = M.motion(pair[1], np.random.default_rng(seed), t)
        assert yaw_first == yaw_second and first.keys() == second.keys()
        reversed_keys = []
        for key in first:
            a, b = (np.exp(1j * np.broadcast_to(pose[key], t.shape)) for pose in (first, second))  # angles mod 2 pi
            if not np.allclose(a, b, atol=1e-9):
                np.testing.assert_allclose(b, a[::-1], atol=1e-9)
                reversed_keys.append(key)
        assert reversed_keys


def test_squat_goes_down_and_stand_up_comes_up():
    t = np.arange(32) / 25.0
    for seed in range(10):
        heights = {}
        for label in S.SQUAT_CLASSES:
            pose, _, _ = M.motion(label, np.random.default_rng(seed), t)
            heights[label] = R.forward_kinematics(pose, len(t))["pelvis"][:, 1]
        down, up = heights["squat_down"], heights["stand_up"]
        assert down[0] - down[-1] > 0.15 and up[-1] - up[0] > 0.15  # in body heights
        np.testing.assert_allclose(up, down[::-1])


@pytest.mark.parametrize("pair", [S.CIRCLE_CLASSES, S.SQUAT_CLASSES])
def test_order_pair_frames_average_alike(pair):
    # What a mean over frames sees is the same for both classes: rendered from the same draws, a cw clip and a ccw
    # clip (a squat_down and a stand_up clip) differ frame by frame, yet their averages over time nearly match.
    spec = S.SyntheticSpec(num_frames=8, width=64, height=48)
    for seed in range(6):
        first = S.render_clip(pair[0], np.random.default_rng(seed), spec).astype(np.float64)
        second = S.render_clip(pair[1], np.random.default_rng(seed), spec).astype(np.float64)
        per_frame = np.abs(first - second).mean()
        assert per_frame > 0.1
        assert np.abs(first.mean(0) - second.mean(0)).mean() < 0.2 * per_frame


def test_class_list_is_part_of_the_set(tmp_path):
    root = tmp_path / "synth"
    pair = replace(TINY, classes=S.CIRCLE_CLASSES)
    S.ensure_synthetic(root, pair, workers=1)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["circle_ccw", "circle_cw"]
    assert S.is_complete(root, pair) and not S.is_complete(root, TINY)
    S.ensure_synthetic(root, TINY, workers=1)  # another class list: the folder is regenerated
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(S.SYNTHETIC_CLASSES)
    assert S.is_complete(root, TINY) and not S.is_complete(root, pair)


def _source(root, classes) -> SyntheticSource:
    return SyntheticSource.from_mapping({"root": str(root), "clips_per_class": 2, "seed": 3, "workers": 1,
                                         "classes": classes})


@pytest.mark.parametrize(("classes", "message"), [
    (["circle_cw"], r"data.synthetic.classes=\['circle_cw'\]: must be a list of at least 2 different classes from "
                    r"walk, run, jump, wave_one, wave_both, bend, circle_cw, circle_ccw, squat_down, stand_up, or null "
                    r"\(the default six\)$"),
    (["walk", "swim"], r"data.synthetic.classes=\['walk', 'swim'\]: unknown class swim; must be a list of "),
    (["walk", "walk"], r"data.synthetic.classes=\['walk', 'walk'\]: must be a list of at least 2 different "),
    ("walk", r"data.synthetic.classes=walk: must be a list of "),
])
def test_class_list_is_checked(classes, message):
    with pytest.raises(ConfigError, match=message):
        _source("x", classes)


def test_classes_are_selectable(tmp_path, monkeypatch):
    assert _source("x", None).classes is None and _source("x", ["walk", "bend"]).classes == ("walk", "bend")
    made = []
    monkeypatch.setattr(S, "ensure_synthetic", lambda root, spec, workers: made.append(spec))
    monkeypatch.setattr("behavior.data.prepare.load_records", lambda root, manifest: [])
    resolve_records(None, None, _source(tmp_path, ["circle_ccw", "circle_cw"]))
    resolve_records(None, None, _source(tmp_path, None))
    # In the one fixed order (a reordered list is the same set); null is exactly the default spec's list.
    assert [spec.classes for spec in made] == [S.CIRCLE_CLASSES, S.SYNTHETIC_CLASSES]
    assert made[1] == S.SyntheticSpec(clips_per_class=2, seed=3)


def test_circle_pair_refuses_mirrored_training():
    from behavior.recipe import compose_recipe

    circles = "data.synthetic.classes=[circle_cw,circle_ccw]"
    with pytest.raises(ConfigError, match=r"^transform.hflip=true: must be false with the synthetic circle_cw / "):
        compose_recipe([circles])
    assert compose_recipe([circles, "transform.hflip=false"]).data.synthetic.classes == S.CIRCLE_CLASSES
    compose_recipe(["data.synthetic.classes=[squat_down,stand_up]"])  # a mirrored squat is still a squat
    compose_recipe([circles, "data.root=clips"])  # the user's own clips: not the synthetic pair
