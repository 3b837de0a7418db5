"""How much the decoded-clip cache buys: one epoch over the training split with ``data.cache=null`` and warm.

Two figures, each measured both ways on the same clips, loader settings and seed:

- *data path*: iterating the training DataLoader alone (decode or cache read, sampling, augmentation,
  collation) with no model, which is what the cache replaces;
- *training epoch*: the same loader feeding forward, backward and optimizer steps of one model, which is what
  a user waits for. The model's own compute does not shrink, so this ratio is the smaller one.

The cold pass that fills the cache is timed too (decoding plus writing), so nothing is hidden.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from behavior.atomic import atomic_open
from behavior.config import device_of
from behavior.data.cache import ClipCache
from behavior.data.pipeline import ClipPipeline, input_channels
from behavior.data.prepare import PreparedData, clip_cache, prepare_data
from behavior.data.roi import RegionCache, find_regions
from behavior.engine.loop import amp_enabled, train_one_epoch
from behavior.engine.optim import build_loss, build_optimizer, build_scheduler
from behavior.engine.trainer import seed_everything
from behavior.models import build_model
from behavior.recipe import Recipe

SPEED_FILE = "cache_speed.json"  # in the bench folder


def _data_seconds(loader) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def _train_seconds(recipe: Recipe, data: PreparedData, loader) -> float:
    seed_everything(recipe.seed)  # both epochs start from the same weights
    device = device_of(recipe.trainer.device)
    model = build_model(recipe.model, len(data.class_names), recipe.flow_channels).to(device)
    optimizer = build_optimizer(model, recipe.optim)
    scheduler = build_scheduler(optimizer, recipe.optim, len(loader), 1)
    labels = [data.class_to_idx[r.label] for r in data.split.train]
    loss_fn = build_loss(recipe.optim, labels, len(data.class_names)).to(device)
    stats = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, device,
                            amp_enabled(recipe.trainer.amp, device), grad_clip=recipe.optim.grad_clip, progress=False)
    return stats.seconds


def measure_cache_speed(recipe: Recipe, model_name: str, split_seed: int) -> dict | None:
    """Seconds per training-split epoch with the cache off, filling, and warm; None when ``data.cache`` is off.

    The clips go through the same pipeline as a training run's (regions, decode timeout), with and without the
    cache."""
    backend = recipe.decode.backend
    cache = clip_cache(recipe.data, backend, recipe.transform, recipe.flow if recipe.model.uses_flow else None)
    if cache is None:
        return None
    data = prepare_data(recipe.data, backend, split_seed, progress=False)
    regions = find_regions(data.split.train, recipe.roi, backend, data.num_frames, progress=False,
                           cache=RegionCache(cache.root, backend)) if recipe.roi.active else {}
    pipeline = ClipPipeline(recipe.sampling, recipe.transform, backend, recipe.roi, recipe.data.decode_timeout,
                            num_frames=data.num_frames, regions=regions,
                            **input_channels(recipe.model.input, recipe.flow))
    trainer = recipe.trainer

    def loader(cache: ClipCache | None):
        return replace(pipeline, cache=cache).loader(data.split.train, data.class_to_idx, True, trainer.batch_size,
                                                     trainer.num_workers, recipe.seed)

    uncached, cached = loader(None), loader(cache)
    result = {"model": model_name, "clips": len(data.split.train), "cache": str(cache.root)}
    result["data_null_s"] = _data_seconds(uncached)
    result["data_fill_s"] = _data_seconds(cached)  # a no-op fill when a previous run warmed it already
    result["data_warm_s"] = _data_seconds(cached)
    if recipe.model.uses_flow:  # the same clips without flow: what computing the flow costs, cold
        result["data_rgb_null_s"] = _data_seconds(replace(pipeline, flow=None, rgb=True).loader(
            data.split.train, data.class_to_idx, True, trainer.batch_size, trainer.num_workers, recipe.seed))
    result["train_null_s"] = _train_seconds(recipe, data, uncached)
    result["train_warm_s"] = _train_seconds(recipe, data, cached)
    result["torch_threads"] = torch.get_num_threads()
    return result


def describe_cache_speed(s: Mapping) -> str:
    n = s["clips"]

    def pair(kind: str) -> str:
        null, warm = s[f"{kind}_null_s"], s[f"{kind}_warm_s"]
        return (f"data.cache=null {null:.1f}s ({n / null:.1f} clips/s), warm {warm:.1f}s ({n / warm:.1f} clips/s): "
                f"{null / warm:.1f}x faster")

    text = (f"cache speed over one epoch of the {n} training clips\n"
            f"  data path alone:         {pair('data')}\n"
            f"  training epoch ({s['model']}): {pair('train')}\n"
            f"  filling the cache took {s['data_fill_s']:.1f}s")
    if "data_rgb_null_s" in s:
        text += (f"\n  optical flow per clip: {flow_ms_per_clip(s):.0f} ms to compute (cold); cached: none computed, "
                 f"read with the frames ({1000 * s['data_warm_s'] / n:.0f} ms per clip for the whole warm data path)")
    return text


def flow_ms_per_clip(s: Mapping) -> float:
    """Milliseconds per clip that computing the flow adds to the cold data path (the same clips without flow)."""
    return 1000 * max(s["data_null_s"] - s["data_rgb_null_s"], 0.0) / s["clips"]


def cache_speed_markdown(s: Mapping) -> str:
    n = s["clips"]
    lines = ["| one epoch over the training split | data.cache=null | cache warm | speed-up |", "|---|---:|---:|---:|"]
    for kind, label in (("data", "data path alone (decode → batch)"), ("train", f"training epoch ({s['model']})")):
        null, warm = s[f"{kind}_null_s"], s[f"{kind}_warm_s"]
        lines.append(f"| {label}, {n} clips | {null:.1f} s ({n / null:.1f} clips/s) "
                     f"| {warm:.1f} s ({n / warm:.1f} clips/s) | {null / warm:.1f}× |")
    if "data_rgb_null_s" in s:
        lines.append(f"| optical flow per clip | {flow_ms_per_clip(s):.0f} ms computed | none computed (read with the "
                     f"frames) | |")
    return "\n".join(lines) + "\n"


def cache_speed(recipe: Recipe, model_name: str, split_seed: int, bench_dir: Path) -> dict | None:
    """Measure once per bench folder (kept in cache_speed.json, so a resumed bench does not measure again)."""
    saved = saved_cache_speed(bench_dir)
    if saved is not None:
        return saved
    result = measure_cache_speed(recipe, model_name, split_seed)
    if result is not None:
        with atomic_open(bench_dir / SPEED_FILE, "w", encoding="utf-8") as f:  # other shards may read it meanwhile
            f.write(json.dumps(result, indent=2) + "\n")
    return result


def saved_cache_speed(bench_dir: Path) -> dict | None:
    """The measurement kept in the bench folder, or None (not measured yet, or by another process not yet)."""
    file = bench_dir / SPEED_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
