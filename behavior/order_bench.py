"""Which temporal pool can tell a clip from the same clip played backwards? A small in-process benchmark.

Tiny BehaviorNets (frames only, no frame differences) are trained on one of the synthetic order-only pairs,
``squat_down`` / ``stand_up`` or ``circle_cw`` / ``circle_ccw``, whose clips share every distribution and differ
only in the order of their frames, then tested on held-out clips, once per temporal pool and seed.

The frames are fed less the clip's mean frame: the static, cluttered background cancels, so a small network finds
the actor without a motion cue, and the input stays blind to order (the mean frame is the same in any order).
Frame differences (``model.frame_diff``) would also find the actor, but each pairs a frame with the one before,
which tells even a mean-pooled model which way things move.

    python -m behavior.order_bench --pair squat --pools mean,max,attention,tconv,gru,transformer --seeds 0,1,2

Everything is seeded; ``tests/test_temporal_order.py`` runs a smaller version of it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from behavior.data.synthetic import CIRCLE_CLASSES, SQUAT_CLASSES, SyntheticSpec, clip_rng, render_clip
from behavior.models import ModelConfig, build_model

PAIRS = {"squat": SQUAT_CLASSES, "circle": CIRCLE_CLASSES}
TEST_OFFSET = 100_000  # test clips come from other random streams than any training clip


@dataclass(frozen=True)
class OrderBench:
    """One benchmark setting: the pair, how many clips, their size, the tiny model and its training."""

    pair: str = "squat"
    train_clips: int = 200  # per class
    test_clips: int = 20  # per class
    size: int = 48  # frames are size x size
    frames: int = 8  # every second frame of a 2 * frames clip at 12.5 fps: about 1.3 s
    widths: tuple[int, ...] = (8, 16)
    epochs: int = 15
    batch_size: int = 8
    lr: float = 4e-3
    data_seed: int = 0


def render_pair(bench: OrderBench, first: int, count: int) -> tuple[Tensor, Tensor]:
    """Clips ``first .. first + count - 1`` of each class of the pair: uint8 [N, 3, T, H, W] and labels [N]."""
    spec = SyntheticSpec(num_frames=2 * bench.frames, width=bench.size, height=bench.size, fps=12.5,
                         seed=bench.data_seed, classes=PAIRS[bench.pair])
    clips, labels = [], []
    for label, name in enumerate(spec.classes):
        for index in range(first, first + count):
            clips.append(render_clip(name, clip_rng(spec, name, index), spec)[::2])
            labels.append(label)
    return torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous(), torch.tensor(labels)


def centred(clips: Tensor) -> Tensor:
    """Each frame less the clip's mean frame (float, [0, 1] scale divided by 0.1): blind to the frames' order."""
    x = clips.float() / 255.0
    return (x - x.mean(dim=2, keepdim=True)) / 0.1


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Correct / total as an exact ratio (a float32 mean made 38 of 40 read 0.94999999, under 0.95)."""
    model.eval()
    with torch.no_grad():
        return int((model(x).argmax(dim=1) == y).sum()) / len(y)


def train_pool(pool: str, bench: OrderBench, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
               seed: int) -> dict:
    """Train one tiny BehaviorNet with ``pool`` on ``train``; its accuracies, and the first epoch at which
    the test accuracy reached 0.95 (None: never)."""
    torch.manual_seed(seed)
    options = {"widths": list(bench.widths), "temporal_pool": pool, "frame_diff": False}
    model = build_model(ModelConfig.preset("behaviornet", **options), 2)
    x, y = centred(train[0]), train[1]
    x_test, y_test = centred(test[0]), test[1]
    steps = bench.epochs * -(-len(y) // bench.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=bench.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, bench.lr, total_steps=steps)
    order = torch.Generator().manual_seed(seed)
    reached, start = None, time.perf_counter()
    for epoch in range(1, bench.epochs + 1):
        model.train()
        for batch in torch.randperm(len(y), generator=order).split(bench.batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if reached is None and accuracy(model, x_test, y_test) >= 0.95:
            reached = epoch
    return {"pool": pool, "seed": seed, "test_acc": accuracy(model, x_test, y_test),
            "train_acc": accuracy(model, x, y), "epoch_095": reached, "seconds": time.perf_counter() - start}


def run(bench: OrderBench, pools: list[str], seeds: list[int], log=None) -> list[dict]:
    """Every pool with every seed on one rendered set; ``log(row)`` after each run."""
    train = render_pair(bench, 0, bench.train_clips)
    test = render_pair(bench, TEST_OFFSET, bench.test_clips)
    rows = []
    for pool in pools:
        for seed in seeds:
            rows.append(train_pool(pool, bench, train, test, seed))
            if log is not None:
                log(rows[-1])
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per pool, test accuracy mean +- std over seeds, the range, and epochs to reach 0.95."""
    lines = ["| temporal_pool | seeds | test top-1 | min - max | epochs to 0.95 | s per run |",
             "|---|---:|---:|---:|---:|---:|"]
    for pool in dict.fromkeys(r["pool"] for r in rows):
        mine = [r for r in rows if r["pool"] == pool]
        acc = np.array([r["test_acc"] for r in mine])
        reached = [str(r["epoch_095"]) if r["epoch_095"] else "-" for r in mine]
        spread = f" ± {acc.std():.3f}" if len(mine) > 1 else ""  # one seed has no spread
        lines.append(f"| {pool} | {len(mine)} | {acc.mean():.3f}{spread} | {acc.min():.3f} - "
                     f"{acc.max():.3f} | {', '.join(reached)} | {np.mean([r['seconds'] for r in mine]):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    default = OrderBench()
    parser = argparse.ArgumentParser(description="Temporal pools on a synthetic order-only class pair.")
    parser.add_argument("--pair", choices=sorted(PAIRS), default=default.pair)
    parser.add_argument("--pools", default="mean,max,attention,tconv,gru,transformer")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train-clips", type=int, default=default.train_clips, help="per class")
    parser.add_argument("--test-clips", type=int, default=default.test_clips, help="per class")
    parser.add_argument("--size", type=int, default=default.size)
    parser.add_argument("--epochs", type=int, default=default.epochs)
    args = parser.parse_args(argv)
    bench = replace(default, pair=args.pair, train_clips=args.train_clips, test_clips=args.test_clips,
                    size=args.size, epochs=args.epochs)
    def log(row: dict) -> None:
        print(f"{row['pool']:>11} seed {row['seed']}: test top-1 {row['test_acc']:.3f}, train {row['train_acc']:.3f}, "
              f"0.95 at epoch {row['epoch_095'] or '-'}, {row['seconds']:.1f}s", flush=True)

    rows = run(bench, args.pools.split(","), [int(s) for s in args.seeds.split(",")], log)
    print(f"{bench.pair}: {', '.join(PAIRS[bench.pair])}; {bench.train_clips} + {bench.test_clips} clips per class, "
          f"{bench.frames} frames of {bench.size}x{bench.size}, {bench.epochs} epochs, torch threads "
          f"{torch.get_num_threads()}")
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
