"""Built-in synthetic behavior dataset: stick-figure actors in cluttered scenes, encoded as real .mp4 clips.

Layout: ``root/<class>/<class>_0001.mp4`` plus a completion marker ``root/.synthetic.json``. The class is
carried only by the motion pattern: position, scale, view, colours, background and distractors are drawn
from the same distributions for every class. Each clip's random stream is seeded by (seed, class, index),
so the dataset is identical whatever the number of workers or their scheduling.

Besides the default six classes, two opt-in pairs differ only in the order of their frames (``SyntheticSpec(
classes=...)``, ``data.synthetic.classes``): ``squat_down`` / ``stand_up`` and ``circle_cw`` / ``circle_ccw`` (one
hand circling clockwise or counter-clockwise on screen). The second of each pair is the first played backwards, from
the same draws, so a model that pools its frames without their order cannot tell them apart.

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
from behavior.data.synthetic_motion import CIRCLE_CLASSES, KNOWN_CLASSES, SYNTHETIC_CLASSES, motion
from behavior.data.synthetic_motion import ORDER_CLASSES as ORDER_CLASSES  # re-exported with the others
from behavior.data.synthetic_motion import SQUAT_CLASSES as SQUAT_CLASSES
from behavior.video.writer import write_video

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
    pose, speed, yaw = motion(label, rng, t)
    joints = R.forward_kinematics(pose, n)
    facing = 1.0 if rng.random() < 0.5 else -1.0
    if label in CIRCLE_CLASSES:
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
