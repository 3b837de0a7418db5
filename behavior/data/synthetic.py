"""Built-in synthetic behavior dataset: stick-figure actors in cluttered scenes, encoded as real .mp4 clips.

Layout: ``root/<class>/<class>_0001.mp4`` plus a completion marker ``root/.synthetic.json``. The class is
carried only by the motion pattern: position, scale, view, colours, background and distractors are drawn
from the same distributions for every class. Each clip's random stream is seeded by (seed, class, index),
so the dataset is identical whatever the number of workers or their scheduling.

CLI: ``python -m behavior.data.synthetic --root data/synthetic [--clips-per-class N --seed S]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from behavior.data import synthetic_render as R
from behavior.video.writer import write_video

SYNTHETIC_CLASSES: tuple[str, ...] = ("walk", "run", "jump", "wave_one", "wave_both", "bend")  # the default set
# A pair that differs only in temporal order (opt-in: SyntheticSpec(classes=...), data.synthetic.classes): one
# hand traces a circle clockwise or counter-clockwise on screen; the set of frames is alike, the order is not.
ORDER_CLASSES: tuple[str, ...] = ("circle_cw", "circle_ccw")
KNOWN_CLASSES: tuple[str, ...] = SYNTHETIC_CLASSES + ORDER_CLASSES  # order fixes each class's random stream
MARKER = ".synthetic.json"
# Bump whenever rendering changes, so that datasets made by an older generator are rebuilt.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SyntheticSpec:
    clips_per_class: int = 50
    num_frames: int = 32
    width: int = 128
    height: int = 128
    fps: float = 25.0
    seed: int = 0
    codec: str = "h264"
    quality: int | None = None  # encoder CRF / qscale; None = the writer's near-lossless default
    classes: tuple[str, ...] = SYNTHETIC_CLASSES

    def __post_init__(self):
        if self.width % 2 or self.height % 2:
            raise ValueError(f"SyntheticSpec: width and height must be even, got {self.width}x{self.height}")
        unknown = set(self.classes) - set(KNOWN_CLASSES)
        if unknown:
            raise ValueError(f"SyntheticSpec: unknown classes {sorted(unknown)}; known: {KNOWN_CLASSES}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"SyntheticSpec: classes repeat: {list(self.classes)}")


def _deg(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.deg2rad(rng.uniform(lo, hi)))


def _standing_legs(rng, pose: dict, t: np.ndarray) -> None:
    for name, s in R.SIDES.items():
        pose[f"thigh_{name}"] = s * _deg(rng, 0, 6) + 0.02 * np.sin(2.0 * t + s)
        pose[f"shank_{name}"] = pose[f"thigh_{name}"] - _deg(rng, 0, 6)
        pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = _deg(rng, 2, 9)


def _wave_arm(rng, pose: dict, name: str, p: np.ndarray) -> None:
    """Elbow above the shoulder, forearm sweeping side to side over the head (in the frontal plane)."""
    base = _deg(rng, 100, 145)
    pose[f"upper_{name}_abd"] = base + np.deg2rad(8) * np.sin(p)
    pose[f"fore_{name}_abd"] = base + _deg(rng, 25, 45) + _deg(rng, 30, 48) * np.sin(p + 0.5)
    pose[f"upper_{name}"] = pose[f"fore_{name}"] = _deg(rng, -15, 15)


def _hanging_arm(rng, pose: dict, name: str, t: np.ndarray) -> None:
    pose[f"upper_{name}_abd"] = _deg(rng, 5, 14) + 0.04 * np.sin(1.5 * t)
    pose[f"fore_{name}_abd"] = pose[f"upper_{name}_abd"] + _deg(rng, 0, 8)
    pose[f"upper_{name}"] = _deg(rng, -8, 8) + 0.05 * np.sin(1.3 * t + rng.uniform(0, 6))
    pose[f"fore_{name}"] = pose[f"upper_{name}"] + _deg(rng, 5, 20)


def _circling_arm(pose: dict, name: str, centre: tuple[float, float], radius: float, theta: np.ndarray) -> None:
    """The hand of arm ``name`` on a circle in the frontal plane: ``centre`` (distance, angle from straight down,
    outward positive) from the shoulder, at angle ``theta`` (0 = outward, pi/2 = down); the elbow solves the rest."""
    out = centre[0] * np.sin(centre[1]) + radius * np.cos(theta)  # outward from the shoulder
    down = centre[0] * np.cos(centre[1]) + radius * np.sin(theta)
    reach = np.hypot(out, down)
    bend = np.arccos(np.clip((R.L_UPPER**2 + reach**2 - R.L_FORE**2) / (2 * R.L_UPPER * reach), -1.0, 1.0))
    upper = np.arctan2(out, down) + bend  # the elbow above the shoulder-hand line
    elbow_out, elbow_down = R.L_UPPER * np.sin(upper), R.L_UPPER * np.cos(upper)
    pose[f"upper_{name}_abd"] = upper
    pose[f"fore_{name}_abd"] = np.arctan2(out - elbow_out, down - elbow_down)
    pose[f"upper_{name}"] = pose[f"fore_{name}"] = 0.0


def _motion(label: str, rng: np.random.Generator, t: np.ndarray) -> tuple[dict, float, float]:
    """Per-frame joint angles for ``label``; returns (pose, translation speed in body heights/s, yaw)."""
    phase = rng.uniform(0, 2 * np.pi)
    pose: dict[str, np.ndarray | float] = {}
    speed = 0.0
    if label in ("walk", "run"):
        run = label == "run"
        # Non-overlapping cadence and speed ranges, plus lean and bent arms, separate run from walk.
        freq = rng.uniform(1.35, 1.75) if run else rng.uniform(0.8, 1.05)
        speed = rng.uniform(0.8, 1.1) if run else rng.uniform(0.28, 0.45)
        amp, bias = (_deg(rng, 32, 42), _deg(rng, 8, 15)) if run else (_deg(rng, 18, 26), 0.0)
        knee_amp, knee0 = (_deg(rng, 60, 95), _deg(rng, 15, 25)) if run else (_deg(rng, 25, 40), _deg(rng, 2, 6))
        arm_amp = _deg(rng, 30, 45) if run else _deg(rng, 15, 28)
        elbow = _deg(rng, 75, 100) if run else _deg(rng, 8, 25)
        pose["lean"] = _deg(rng, 10, 18) if run else _deg(rng, -2, 5)
        for name, s in R.SIDES.items():
            p = 2 * np.pi * freq * t + phase + (np.pi if s > 0 else 0.0)
            pose[f"thigh_{name}"] = bias + amp * np.sin(p)
            # The knee folds while the leg swings forward (thigh velocity > 0), stays nearly straight in stance.
            pose[f"shank_{name}"] = pose[f"thigh_{name}"] - knee0 - knee_amp * np.maximum(np.cos(p), 0) ** 0.8
            pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = 0.03
            pose[f"upper_{name}"] = -arm_amp * np.sin(p) + (_deg(rng, 0, 10) if run else 0.0)
            pose[f"fore_{name}"] = pose[f"upper_{name}"] + elbow
            pose[f"upper_{name}_abd"] = pose[f"fore_{name}_abd"] = _deg(rng, 4, 12)
        if run:  # flight phase twice per stride
            pose["lift"] = rng.uniform(0.03, 0.06) * np.maximum(np.sin(4 * np.pi * freq * t + phase), 0)
        yaw = _deg(rng, -35, 35)
    elif label == "jump":
        freq, air_frac = rng.uniform(1.1, 1.6), rng.uniform(0.45, 0.6)
        u = (freq * t + phase / (2 * np.pi)) % 1.0
        air = np.where(u < air_frac, np.sin(np.pi * u / air_frac), 0.0)
        crouch = np.where(u >= air_frac, np.sin(np.pi * (u - air_frac) / (1 - air_frac)), 0.0)
        knee = np.deg2rad(4) + _deg(rng, 50, 75) * crouch + _deg(rng, 40, 80) * air  # legs tuck in the air
        raise_fwd, raise_side = _deg(rng, 40, 150), _deg(rng, 20, 110)
        pose["lean"] = _deg(rng, 15, 30) * crouch + np.deg2rad(4) * air
        pose["lift"] = rng.uniform(0.2, 0.32) * air
        for name in R.SIDES:
            pose[f"thigh_{name}"] = 0.5 * knee + np.deg2rad(15) * air
            pose[f"shank_{name}"] = pose[f"thigh_{name}"] - knee
            pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = 0.05
            pose[f"upper_{name}"] = -np.deg2rad(35) * crouch + raise_fwd * air
            pose[f"fore_{name}"] = pose[f"upper_{name}"] + np.deg2rad(15)
            pose[f"upper_{name}_abd"] = pose[f"fore_{name}_abd"] = 0.1 + raise_side * air
        yaw = _deg(rng, -50, 50)
    elif label == "bend":
        freq, depth = rng.uniform(0.7, 1.05), _deg(rng, 65, 100)
        b = (1 - np.cos(2 * np.pi * freq * t + phase)) / 2
        knee = _deg(rng, 0, 25) * b
        pose["lean"] = depth * b
        pose["hip_x"] = -0.1 * b * depth / (np.pi / 2)  # hips move back to balance the torso
        reach = rng.uniform(0.1, 0.5)
        for name in R.SIDES:
            pose[f"thigh_{name}"] = np.deg2rad(12) * b + 0.5 * knee
            pose[f"shank_{name}"] = np.deg2rad(12) * b - 0.5 * knee
            pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = 0.04
            pose[f"upper_{name}"] = reach * pose["lean"] + 0.05 * np.sin(3 * t)
            pose[f"fore_{name}"] = pose[f"upper_{name}"] + _deg(rng, 5, 20)
            pose[f"upper_{name}_abd"] = pose[f"fore_{name}_abd"] = _deg(rng, 3, 10)
        yaw = _deg(rng, -35, 35)
    elif label in ("wave_one", "wave_both"):
        freq = rng.uniform(1.6, 2.8)
        p = 2 * np.pi * freq * t + phase
        _standing_legs(rng, pose, t)
        pose["lean"] = _deg(rng, -3, 4) + 0.03 * np.sin(0.7 * p)
        waving = list(R.SIDES) if label == "wave_both" else [str(rng.choice(list(R.SIDES)))]
        mirror = rng.random() < 0.6  # both arms mirror each other, or sweep the same way
        for name in R.SIDES:
            if name in waving:
                offset = np.pi if (name == "r" and not mirror) else 0.0
                _wave_arm(rng, pose, name, p + offset + rng.uniform(-0.3, 0.3))
            else:
                _hanging_arm(rng, pose, name, t)
        yaw = np.pi / 2 + _deg(rng, -30, 30)
    elif label in ORDER_CLASSES:
        # Every draw is the same for both classes; circle_ccw plays the arm's path of circle_cw backwards (its
        # start shifted to where cw ends), so only the order of the frames tells them apart. Clockwise on screen
        # is an increasing angle for the right arm (render_clip keeps circle clips unmirrored).
        _standing_legs(rng, pose, t)
        pose["lean"] = _deg(rng, -3, 4)
        name = str(rng.choice(list(R.SIDES)))
        sweep = 2 * np.pi * rng.uniform(0.5, 1.0) * t  # turns/s: under half a turn between any two sampled frames
        if label == "circle_ccw":
            sweep = sweep[-1] - sweep
        centre = (rng.uniform(0.09, 0.12), _deg(rng, 75, 110))  # beside the shoulder; the hand stays within reach
        _circling_arm(pose, name, centre, rng.uniform(0.17, 0.2), phase + R.SIDES[name] * sweep)
        _hanging_arm(rng, pose, "l" if name == "r" else "r", t)
        yaw = np.pi / 2 + _deg(rng, -30, 30)
    else:
        raise ValueError(f"unknown synthetic class {label!r}; choose one of {KNOWN_CLASSES}")
    return pose, speed, yaw


def _actor_colours(rng: np.random.Generator, bg_luma: float) -> tuple[dict, np.ndarray | None]:
    """Body colours whose luminance is far from the background's around the actor, plus an outline."""
    bright = bg_luma < 128
    luma = rng.uniform(max(bg_luma + 70, 140), 240) if bright else rng.uniform(8, min(bg_luma - 70, 100))
    luma = float(np.clip(luma, 8, 250))
    torso = R.random_colour(rng, luma + rng.uniform(-15, 15))
    colours = {"torso": torso, "legs": R.random_colour(rng, luma + rng.uniform(-15, 15)),
               "arms": torso if rng.random() < 0.5 else R.random_colour(rng, luma + rng.uniform(-15, 15)),
               "head": R.random_colour(rng, luma + rng.uniform(-15, 15), sat=(0.1, 0.6))}
    outline = None
    if rng.random() < 1.0:
        outline = np.full(3, rng.uniform(0, 45) if bright else rng.uniform(210, 255), np.float32)
    return colours, outline


def render_clip(label: str, rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Render one clip of ``label`` as ``[T, H, W, 3]`` uint8 RGB frames."""
    h, w, n = spec.height, spec.width, spec.num_frames
    t = np.arange(n) / spec.fps
    pose, speed, yaw = _motion(label, rng, t)
    joints = R.forward_kinematics(pose, n)
    facing = 1.0 if rng.random() < 0.5 else -1.0
    if label in ORDER_CLASSES:
        facing = 1.0  # a mirror image would turn clockwise into counter-clockwise
    size = rng.uniform(0.5, 0.75) * h
    thickness = {"limb": rng.uniform(0.042, 0.056), "torso": rng.uniform(0.06, 0.08),
                 "head": R.R_HEAD * rng.uniform(0.9, 1.1)}
    drift = np.stack([facing * speed * t, np.zeros(n)], -1)
    # Project at unit scale with the ground point at 0 to measure the figure's extent over the clip.
    pix, _ = R.project(joints, yaw, facing, 1.0, drift)
    pts = np.concatenate(list(pix.values()))
    lo, hi = pts.min(0) - R.R_HEAD * 1.2, pts.max(0) + R.R_HEAD * 1.2
    size = min(size, (h - 4) / (hi[1] - lo[1]))  # tall poses (arms up, jumps) must fit vertically
    lo, hi = lo * size, hi * size
    oy = rng.uniform(2 - lo[1], max(2 - lo[1], h - 2 - hi[1]))
    ox_lo, ox_hi = 2 - lo[0], w - 2 - hi[0]
    # A fast runner may cross more than the frame; then centre the path so it enters and leaves.
    ox = rng.uniform(ox_lo, ox_hi) if ox_lo <= ox_hi else 0.5 * (ox_lo + ox_hi) + rng.uniform(-0.08, 0.08) * w
    pix, depth = R.project(joints, yaw, facing, size, np.array([ox, oy]) + drift * size)
    radii = {k: max(v * size, 1.2) for k, v in thickness.items()}
    radii["foot"] = 0.8 * radii["limb"]

    bg = R.make_background(rng, h, w)
    x0, x1 = int(np.clip(ox + lo[0], 0, w - 1)), int(np.clip(ox + hi[0], 1, w))
    y0, y1 = int(np.clip(oy + lo[1], 0, h - 1)), int(np.clip(oy + hi[1], 1, h))
    region = bg[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    colours, outline = _actor_colours(rng, float(region.reshape(-1, 3).mean(0) @ R.LUMA))
    shade = rng.uniform(0.65, 0.85)
    distractors = R.make_distractors(rng, h, w, t)
    noise_sigma = rng.uniform(1.0, 4.0) if rng.random() < 0.5 else 0.0
    gain = 1.0 + rng.uniform(-0.12, 0.12) * t / max(t[-1], 1e-6)

    canvas = R.Canvas(h, w)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        canvas.img[:] = bg
        R.draw_distractors(canvas, distractors, i, front=False)
        canvas.draw_figure(pix, depth, i, radii, colours, outline, shade)
        R.draw_distractors(canvas, distractors, i, front=True)
        frame = canvas.img * np.float32(gain[i])
        if noise_sigma:
            frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(noise_sigma)
        np.clip(frame, 0, 255, out=frame)
        out[i] = (frame + 0.5).astype(np.uint8)
    return out


def clip_rng(spec: SyntheticSpec, label: str, index: int) -> np.random.Generator:
    """The random stream of clip ``index`` (0-based) of ``label``; independent of worker scheduling."""
    return np.random.default_rng([spec.seed, KNOWN_CLASSES.index(label), index])


def clip_path(root: str | Path, label: str, index: int) -> Path:
    return Path(root) / label / f"{label}_{index + 1:04d}.mp4"


def _write_clip(task: tuple[str, str, int, SyntheticSpec]) -> str:
    root, label, index, spec = task
    frames = render_clip(label, clip_rng(spec, label, index), spec)
    return str(write_video(clip_path(root, label, index), frames, fps=spec.fps, codec=spec.codec,
                           quality=spec.quality))


def _marker_payload(spec: SyntheticSpec) -> dict:
    # Round-trip through JSON so tuples compare equal to the lists read back from disk.
    return json.loads(json.dumps({"generator": "behavior.data.synthetic", "version": GENERATOR_VERSION,
                                  "spec": asdict(spec), "num_clips": spec.clips_per_class * len(spec.classes)}))


def _expected_paths(root: Path, spec: SyntheticSpec) -> list[Path]:
    return [clip_path(root, c, i) for c in spec.classes for i in range(spec.clips_per_class)]


def is_complete(root: str | Path, spec: SyntheticSpec) -> bool:
    """Whether ``root`` holds a finished dataset generated from ``spec`` by this generator version."""
    root = Path(root)
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == _marker_payload(spec) and all(p.is_file() for p in _expected_paths(root, spec))


def generate_synthetic(root: str | Path, spec: SyntheticSpec = SyntheticSpec(), workers: int = 2,
                       progress: bool = True) -> Path:
    """Render and encode every clip of ``spec`` into ``root`` (in place), then write the completion marker."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)  # whatever was there is no longer a complete dataset
    tasks = [(str(root), c, i, spec) for c in spec.classes for i in range(spec.clips_per_class)]
    total, step = len(tasks), max(len(tasks) // 10, 1)

    def report(done: int) -> None:
        if progress and (done % step == 0 or done == total):
            print(f"\rsynthetic: {done}/{total} clips", end="\n" if done == total else "", flush=True)

    if workers <= 1 or total < 2:
        for done, task in enumerate(tasks, 1):
            _write_clip(task)
            report(done)
    else:
        # forkserver: safe even if the caller already runs threads (torch, data loaders), unlike fork.
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(min(workers, total)) as pool:
            for done, _ in enumerate(pool.imap_unordered(_write_clip, tasks, chunksize=2), 1):
                report(done)
    (root / MARKER).write_text(json.dumps(_marker_payload(spec), indent=1) + "\n")
    return root


def _looks_generated(root: Path) -> bool:
    """Only a marker and class folders of .mp4 files: safe to replace without losing anyone's data."""
    for entry in root.iterdir():
        if entry.name == MARKER:
            continue
        if not (entry.is_dir() and entry.name in KNOWN_CLASSES
                and all(f.suffix == ".mp4" for f in entry.iterdir())):
            return False
    return True


def _remove_stale_siblings(root: Path) -> None:
    """Delete temp folders left by earlier runs that were killed (their process is gone)."""
    for path in root.parent.glob(f".{glob.escape(root.name)}.*-*-*"):
        kind, pid = path.name[len(root.name) + 2:].split("-")[:2]
        if kind not in ("tmp", "old") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def ensure_synthetic(root: str | Path, spec: SyntheticSpec = SyntheticSpec(), workers: int = 2) -> Path:
    """Return ``root`` holding the dataset of ``spec``, generating it first if missing, incomplete or stale.

    Generation happens in a temporary sibling folder renamed into place at the end, so an interrupted run
    never leaves a half dataset that looks complete.
    """
    root = Path(root).expanduser().absolute()
    if is_complete(root, spec):
        return root
    if root.exists() and not (root.is_dir() and _looks_generated(root)):
        raise FileExistsError(f"{root} exists and is not a synthetic dataset; remove it or choose another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(root)
    n = spec.clips_per_class * len(spec.classes)
    print(f"synthetic: generating {n} clips ({len(spec.classes)} classes) into {root} ...", end="", flush=True)
    start, tag = time.perf_counter(), f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = root.parent / f".{root.name}.tmp-{tag}", root.parent / f".{root.name}.old-{tag}"
    try:
        generate_synthetic(tmp, spec, workers=workers, progress=False)
        if not is_complete(root, spec):  # else a concurrent process finished first; keep its copy
            if root.exists():
                root.rename(old)
            tmp.rename(root)
    except BaseException:
        print(" interrupted", flush=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    print(f" done in {time.perf_counter() - start:.1f}s", flush=True)
    return root


def contact_sheet(spec: SyntheticSpec = SyntheticSpec(), clips: int = 2, frames: int = 8) -> np.ndarray:
    """A grid image: one row per (class, clip), ``frames`` frames sampled across the clip."""
    rows = []
    for label in spec.classes:
        for i in range(clips):
            video = render_clip(label, clip_rng(spec, label, i), spec)
            idx = np.linspace(0, len(video) - 1, frames).round().astype(int)
            rows.append(np.concatenate([np.pad(f, ((1, 1), (1, 1), (0, 0))) for f in video[idx]], axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the built-in synthetic behavior dataset.")
    parser.add_argument("--root", default="data/synthetic", help="output folder")
    parser.add_argument("--clips-per-class", type=int, default=SyntheticSpec.clips_per_class)
    parser.add_argument("--frames", type=int, default=SyntheticSpec.num_frames)
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"),
                        default=(SyntheticSpec.width, SyntheticSpec.height))
    parser.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="regenerate even if the dataset is complete")
    parser.add_argument("--sheet", metavar="PNG", help="also save a contact sheet of every class here")
    args = parser.parse_args(argv)
    spec = SyntheticSpec(clips_per_class=args.clips_per_class, num_frames=args.frames, width=args.size[0],
                         height=args.size[1], seed=args.seed)
    root = Path(args.root)
    if args.force and root.is_dir() and _looks_generated(root):
        (root / MARKER).unlink(missing_ok=True)
    root = ensure_synthetic(root, spec, workers=args.workers)
    print(f"synthetic: {root} ready ({spec.clips_per_class} clips x {len(spec.classes)} classes)")
    if args.sheet:
        from PIL import Image

        Image.fromarray(contact_sheet(spec)).save(args.sheet)
        print(f"synthetic: contact sheet saved to {args.sheet}")


if __name__ == "__main__":
    main(sys.argv[1:])
