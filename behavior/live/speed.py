"""How fast live mode runs: the real-time factor on a generated source (640x360, 25 fps unless told) at the default
model size.

    python -m behavior.live.speed [--seconds 20] [--size 1920x1080 --fps 30] [--source FILE]
                                  [--rois none person] [--detect-every N] [--repeat 3] [--no-output]

The source is a file, read as fast as live mode can take it, so the figure is the headroom a camera of that
size and rate would have: a factor of 3 means a 25 fps camera leaves the machine two thirds idle. Without
``--source``, frames of ``--size`` are made from the surveillance_fight clips beside the project (real people,
so ``roi=person`` has someone to find; scaled to cover the size, then centre-cropped) or, when they are absent,
from generated frames. The model is the
default recipe (conf/model/behaviornet.yaml, conf/sampling/tsn.yaml, conf/transform/default.yaml) with random
weights: speed does not depend on what it learned. The annotated video is written unless ``--no-output``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from behavior.config import compose_config
from behavior.engine.checkpoint import write_checkpoint
from behavior.live.session import LiveSettings, LiveStats, run
from behavior.models import build_model
from behavior.recipe import compose_recipe
from behavior.video import open_video
from behavior.video.opencv import load_cv2
from behavior.video.writer import VideoWriter

WIDTH, HEIGHT, FPS = 640, 360, 25.0  # the default generated source
SURVEILLANCE = Path("../shared/datasets/surveillance_fight")  # like conf/data: relative to the working directory


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height and centre-crop: every source frame becomes exactly one benchmark frame."""
    cv2 = load_cv2()
    rows, cols = frame.shape[:2]
    scale = max(width / cols, height / rows)
    # Area averaging shrinks without aliasing; enlarging (the 480x360 clips to 1080p) wants linear interpolation.
    resized = cv2.resize(frame, (round(cols * scale), round(rows * scale)),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return resized[top:top + height, left:left + width]


def make_source(path: Path, seconds: float, width: int = WIDTH, height: int = HEIGHT, fps: float = FPS) -> str:
    """Write the benchmark source (640x360 25 fps unless told); returns what it was made from."""
    needed = round(seconds * fps)
    clips = sorted(SURVEILLANCE.glob("*/*.mp4")) if SURVEILLANCE.is_dir() else []
    with VideoWriter(path, width, height, fps, quality=20) as writer:
        if clips:
            for clip in clips:
                with open_video(str(clip)) as reader:
                    count = min(len(reader), needed - writer.frames)
                    for start in range(0, count, 32):
                        for frame in reader.get_frames(list(range(start, min(count, start + 32)))).numpy():
                            writer.write(_fit(frame, width, height))
                if writer.frames >= needed:
                    used = clips.index(clip) + 1
                    return f"{used} surveillance_fight clips (people fighting or walking), cut to {width}x{height}"
        rng = np.random.default_rng(0)
        background = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        block_w, block_h = max(8, width // 8), max(8, height * 4 // 9)
        while writer.frames < needed:
            frame, x = background.copy(), (writer.frames * 7) % (width - block_w)
            top = (height - block_h) // 2
            frame[top:top + block_h, x:x + block_w] = (230, 200, 40)  # a moving block over noise: every frame differs
            writer.write(frame)
    return "generated frames (no surveillance_fight clips found)"


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) < 16 or int(height) < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT, e.g. 1920x1080")
    return int(width), int(height)


def default_checkpoint(path: Path, num_classes: int = 5) -> None:
    """An untrained default BehaviorNet: the speed does not depend on what the weights learned."""
    recipe = compose_recipe()
    torch.manual_seed(0)
    write_checkpoint(path, recipe, [f"class_{i}" for i in range(num_classes)],
                     build_model(recipe.model, num_classes).state_dict(), epoch=0)


def measure(checkpoint: Path, source: str, roi: str, output: Path | None, detect_every: int | None) -> LiveStats:
    overrides = [f"checkpoint={checkpoint}", f"source={source}", f"roi={roi}",
                 *([f"output={output}"] if output else []), *([f"detect_every={detect_every}"] if detect_every else [])]
    return run(LiveSettings.from_mapping(compose_config("live", overrides)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the generated source (default 20)")
    parser.add_argument("--size", type=_size, default=(WIDTH, HEIGHT),
                        help=f"frame size of the generated source, WIDTHxHEIGHT (default {WIDTH}x{HEIGHT})")
    parser.add_argument("--fps", type=float, default=FPS, help=f"frame rate of the generated source (default {FPS:g})")
    parser.add_argument("--source", help="a video file to use instead (its own size and rate are kept)")
    parser.add_argument("--rois", nargs="+", default=["none", "person"], help="conf/roi options to measure")
    parser.add_argument("--detect-every", type=int, help="frames between detections (default: conf/live.yaml's)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per roi; the median is reported (default 3)")
    parser.add_argument("--no-output", action="store_true", help="do not write the annotated video")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = args.source
        if source is None:
            source = str(folder / "source.mp4")
            width, height = args.size
            made = make_source(Path(source), args.seconds, width, height, args.fps)
            print(f"source: {made}; {args.seconds:g}s at {width}x{height}, {args.fps:g} fps")
        checkpoint = folder / "default.pt"
        default_checkpoint(checkpoint)
        with open_video(source) as reader:
            fps, size = reader.meta.fps, f"{reader.meta.width}x{reader.meta.height}"
        rows = []
        for roi in args.rois:
            runs = []
            for attempt in range(args.repeat):
                print(f"\n--- roi={roi} ({attempt + 1}/{args.repeat}) ---", flush=True)
                output = None if args.no_output else folder / f"annotated_{roi}_{attempt}.mp4"
                runs.append(measure(checkpoint, source, roi, output, args.detect_every))
            # The median run by wall time: a shared 2-core machine varies by 10-20 % from run to run.
            stats = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
            ms = np.asarray(stats.latencies or [float("nan")]) * 1000
            factors = sorted(r.frames / fps / r.seconds for r in runs)
            rows.append((roi, stats.frames, stats.seconds, stats.frames / stats.seconds,
                         stats.frames / fps / stats.seconds, factors[0], factors[-1], float(ms.mean()),
                         float(np.percentile(ms, 95))))
    every = args.detect_every or compose_config("live").detect_every
    print(f"\nlive mode on a {size}, {fps:g} fps source, default BehaviorNet (112x112, 8 frames), stride 8, window "
          f"2 s, a roi detection every {every} frames, {'no output' if args.no_output else 'annotated mp4 written'}; "
          f"torch threads {max(1, (os.cpu_count() or 2) - 1)} (threads=auto: all cores but one)")
    print(f"median of {args.repeat} run(s) (range of the real-time factor in brackets)")
    print("| roi | frames | wall (s) | frames/s | real-time factor | latency mean (ms) | latency p95 (ms) |")
    print("|---|---|---|---|---|---|---|")
    for roi, frames, wall, rate, factor, low, high, mean, p95 in rows:
        print(f"| {roi} | {frames} | {wall:.1f} | {rate:.1f} | {factor:.2f}x ({low:.2f}-{high:.2f}) | {mean:.0f} "
              f"| {p95:.0f} |")


if __name__ == "__main__":
    main()
