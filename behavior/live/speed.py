"""How fast live mode runs: the real-time factor on a 640x360, 25 fps source at the default model size.

    python -m behavior.live.speed [--seconds 20] [--source FILE] [--rois none person] [--detect-every N]
                                  [--repeat 3] [--no-output]

The source is a file, read as fast as live mode can take it, so the figure is the headroom a camera of that
size and rate would have: a factor of 3 means a 25 fps camera leaves the machine two thirds idle. Without
``--source``, 640x360 frames are made from the surveillance_fight clips beside the project (real people, so
``roi=person`` has someone to find) or, when they are absent, from generated frames. The model is the
default recipe (conf/model/behaviornet.yaml, conf/sampling/tsn.yaml, conf/transform/default.yaml) with random
weights: speed does not depend on what it learned. The annotated video is written unless ``--no-output``.
"""

from __future__ import annotations

import argparse
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

WIDTH, HEIGHT, FPS = 640, 360, 25.0
SURVEILLANCE = Path("../shared/datasets/surveillance_fight")  # like conf/data: relative to the working directory


def _fit(frame: np.ndarray) -> np.ndarray:
    """Scale to cover 640x360 and centre-crop: every source frame becomes exactly one benchmark frame."""
    cv2 = load_cv2()
    height, width = frame.shape[:2]
    scale = max(WIDTH / width, HEIGHT / height)
    resized = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    top, left = (resized.shape[0] - HEIGHT) // 2, (resized.shape[1] - WIDTH) // 2
    return resized[top:top + HEIGHT, left:left + WIDTH]


def make_source(path: Path, seconds: float) -> str:
    """Write the 640x360 25 fps benchmark source; returns what it was made from."""
    needed = round(seconds * FPS)
    clips = sorted(SURVEILLANCE.glob("*/*.mp4")) if SURVEILLANCE.is_dir() else []
    with VideoWriter(path, WIDTH, HEIGHT, FPS, quality=20) as writer:
        if clips:
            for clip in clips:
                with open_video(str(clip)) as reader:
                    count = min(len(reader), needed - writer.frames)
                    for start in range(0, count, 32):
                        for frame in reader.get_frames(list(range(start, min(count, start + 32)))).numpy():
                            writer.write(_fit(frame))
                if writer.frames >= needed:
                    used = clips.index(clip) + 1
                    return f"{used} surveillance_fight clips (people fighting or walking), cut to 640x360"
        rng = np.random.default_rng(0)
        background = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        while writer.frames < needed:
            frame, x = background.copy(), (writer.frames * 7) % (WIDTH - 80)
            frame[140:300, x:x + 80] = (230, 200, 40)  # a moving block over noise: every frame differs
            writer.write(frame)
    return "generated frames (no surveillance_fight clips found)"


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
            print(f"source: {make_source(Path(source), args.seconds)}; {args.seconds:g}s at 640x360, 25 fps")
        checkpoint = folder / "default.pt"
        default_checkpoint(checkpoint)
        with open_video(source) as reader:
            fps = reader.meta.fps
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
    print(f"\nlive mode, default BehaviorNet (112x112, 8 frames), stride 8, window 2 s, a roi detection every {every} "
          f"frames, {'no output' if args.no_output else 'annotated mp4 written'}; torch threads "
          f"{torch.get_num_threads()}")
    print(f"median of {args.repeat} run(s) (range of the real-time factor in brackets)")
    print("| roi | frames | wall (s) | frames/s | real-time factor | latency mean (ms) | latency p95 (ms) |")
    print("|---|---|---|---|---|---|---|")
    for roi, frames, wall, rate, factor, low, high, mean, p95 in rows:
        print(f"| {roi} | {frames} | {wall:.1f} | {rate:.1f} | {factor:.2f}x ({low:.2f}-{high:.2f}) | {mean:.0f} "
              f"| {p95:.0f} |")


if __name__ == "__main__":
    main()
