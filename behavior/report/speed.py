"""How big a run's report.html gets and how fast a browser shows it, for a run of many test clips.

    python -m behavior.report.speed [--clips 1000] [--classes 10] [--run RUN_DIR]

Without ``--run`` a run folder is made: ``--clips`` test predictions over ``--classes`` classes (about a third
wrong), 40 epochs of history, the default recipe's untrained BehaviorNet as its checkpoint (the previews show its
attention) and a few generated clips the predictions point at. Printed: the seconds to write the page, its size, and
the seconds headless Chromium takes from navigation to the first paint after the load event (every inline image
decoded), best of three.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from behavior.live.speed import default_checkpoint
from behavior.report.headless import Browser
from behavior.report.run_report import write_run_report
from behavior.report.writer import write_history, write_report
from behavior.video.writer import write_video


def moving_block_clip(path: Path, seed: int, frames: int = 48, size: tuple[int, int] = (240, 320)) -> Path:
    rng = np.random.default_rng(seed)
    height, width = size
    video = np.repeat(rng.integers(40, 200, (1, height, width, 3), dtype=np.uint8), frames, axis=0)
    for t in range(frames):
        x = (t * 5 + seed * 17) % (width - 60)
        video[t, 80:160, x:x + 60] = (230, 200, 40)
    return write_video(path, video, fps=24.0)


def make_run(folder: Path, clips: int, classes: int) -> Path:
    """A run folder of ``clips`` test predictions, history and checkpoint, as a training run leaves it."""
    rng = np.random.default_rng(0)
    names = [f"class_{i}" for i in range(classes)]
    videos = [moving_block_clip(folder / "clips" / f"clip_{i}.mp4", i) for i in range(12)]
    truth = rng.integers(0, classes, clips)
    logits = rng.normal(0, 1, (clips, classes))
    logits[np.arange(clips), truth] += 2.0  # about two thirds right, like a useful but imperfect model
    run = folder / "run"
    write_report(run, [str(videos[i % len(videos)]) for i in range(clips)], truth.tolist(), logits, names)
    write_history(run, [{"epoch": e, "train_loss": 2 / e, "train_acc": 1 - 1 / (e + 1), "lr": 1e-3 / e,
                         "val_loss": 2.2 / e, "val_acc": 1 - 1.2 / (e + 1)} for e in range(1, 41)])
    default_checkpoint(run / "best.pt", classes)
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=1000, help="test clips of the made run (default 1000)")
    parser.add_argument("--classes", type=int, default=10, help="classes of the made run (default 10)")
    parser.add_argument("--run", type=Path, help="measure this run folder instead (its report.html is rewritten)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or make_run(Path(tmp), args.clips, args.classes)
        start = time.perf_counter()
        page = write_run_report(run)
        written = time.perf_counter() - start
        with Browser() as browser:
            views = [browser.view(page) for _ in range(3)]
        load = min(v.load_seconds for v in views)
        print(f"{run}: report.html written in {written:.1f}s, {page.stat().st_size / 2**20:.2f} MiB; "
              f"headless Chromium load and paint {load:.2f}s (best of 3); console errors: {len(views[0].errors)}")


if __name__ == "__main__":
    main()
