"""Pictures of clips for inspecting a run: frame strips of mistakes and spatial-attention heatmaps.

Frames are decoded with the run's own backend and, for attention, go through the run's own eval
sampling and transform, so what is shown is what the model saw. Figures use matplotlib's object API
(no pyplot), which works headless and still renders inline in Jupyter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure

from behavior.data.pipeline import ClipPipeline
from behavior.data.sampling import SamplingConfig, sample_indices
from behavior.data.transforms import build_transform, denormalize
from behavior.models import SpatialAttention
from behavior.paths import work_root
from behavior.report.inspect import RunResults, load_run, misclassified, new_figure
from behavior.video import open_video

GAP = 2  # white pixels between frames of a strip


def resolve_clip(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A clip path from a run's CSV files as a usable path: relative paths are relative to the folder the run
    was started from (``root``, e.g. ``RunResults.root``), while a notebook runs from notebooks/."""
    clip = Path(path)
    if clip.is_absolute() or clip.exists():
        return clip
    return Path(root or work_root()) / clip


def even_indices(num_frames_in_clip: int, num_frames: int) -> list[int]:
    """``num_frames`` evenly spread frame indices (segment centres), fewer when the clip is shorter."""
    count = min(num_frames, num_frames_in_clip)
    spread = SamplingConfig(mode="uniform", num_frames=count, frame_interval=1, pad="loop", num_views=1)
    return sample_indices(num_frames_in_clip, spread, train=False)


def resize_frames(frames: torch.Tensor, height: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] scaled to the given height, keeping the aspect ratio."""
    t, h, w, _ = frames.shape
    width = max(1, round(w * height / h))
    scaled = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear",
                           antialias=True, align_corners=False)
    return scaled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def hstack_frames(frames: np.ndarray | torch.Tensor, gap: int = GAP) -> np.ndarray:
    """uint8 [T, H, W, 3] side by side into one [H, T*W + (T-1)*gap, 3] image, white between frames."""
    frames = np.asarray(frames)
    t, h, w, _ = frames.shape
    strip = np.full((h, t * w + (t - 1) * gap, 3), 255, dtype=np.uint8)
    for i in range(t):
        strip[:, i * (w + gap): i * (w + gap) + w] = frames[i]
    return strip


def frame_strip(path: str | os.PathLike, num_frames: int = 8, backend: str = "pyav", height: int | None = None,
                gap: int = GAP, root: str | os.PathLike | None = None) -> np.ndarray:
    """uint8 [H, W', 3]: ``num_frames`` evenly sampled frames of a clip side by side.

    ``height`` rescales the frames (large clips make huge strips otherwise); relative paths are
    resolved as in :func:`resolve_clip`. Decode errors propagate as VideoDecodeError.
    """
    return hstack_frames(even_frames(path, num_frames, backend, height, root), gap)


def even_frames(path: str | os.PathLike, num_frames: int = 8, backend: str = "pyav", height: int | None = None,
                root: str | os.PathLike | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: ``num_frames`` evenly sampled frames of a clip, scaled to ``height`` if given."""
    with open_video(resolve_clip(path, root), backend=backend) as reader:
        frames = reader.get_frames(even_indices(len(reader), num_frames))
    return (frames if height is None else resize_frames(frames, height)).numpy()


def _message_axes(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray", wrap=True)
    ax.set_axis_off()
    return fig


def plot_misclassified(run: RunResults, n: int = 6, num_frames: int = 8, height: int | None = 112) -> Figure:
    """The ``n`` most confident mistakes, one row each: a frame strip titled with true and predicted class.

    A clip that no longer decodes (moved, deleted) gets its error written in its row instead of
    stopping the figure.
    """
    rows = misclassified(run, n)
    if not rows:
        return _message_axes(new_figure(6.0, 1.0), f"no misclassified clips on the {run.metrics.get('split', '')} "
                                                   f"split ({len(run.predictions)} clips)")
    fig = new_figure(12.0, 1.9 * len(rows))
    for i, row in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        title = f"{Path(row['path']).name}: true {row['true']}, predicted {row['pred']} ({row['score']:.2f})"
        try:
            ax.imshow(frame_strip(row["path"], num_frames, run.backend, height, root=run.root))
        except Exception as err:  # noqa: BLE001 - any decode failure is shown, not raised
            ax.text(0.5, 0.5, f"cannot show {row['path']}: {err}", ha="center", va="center",
                    transform=ax.transAxes, color="firebrick", fontsize=8)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_axis_off()
    fig.tight_layout()
    return fig


@dataclass
class Overlay:
    """One clip as the model saw it, with its attention maps.

    ``frames``: uint8 [T, S, S, 3] after the eval transform, denormalized. ``maps``: one float array
    [T, S, S] per chosen attention module, the raw gate values in (0, 1) upsampled to the frame size.
    ``blended``: uint8 [T, S, S, 3] heatmaps over the frames, one per map.
    """

    path: str
    true: str | None
    pred: str
    score: float
    frames: np.ndarray
    maps: list[np.ndarray] = field(default_factory=list)
    stage_names: list[str] = field(default_factory=list)
    blended: list[np.ndarray] = field(default_factory=list)


def heatmap_blend(frames: np.ndarray, heat: np.ndarray, alpha: float = 0.45, cmap: str = "jet",
                  normalize: bool = True) -> np.ndarray:
    """Colour ``heat`` [T, H, W] with ``cmap`` and blend it over uint8 ``frames`` [T, H, W, 3].

    ``normalize`` stretches the heat to [0, 1] over the whole clip (not per frame, so frames stay
    comparable): gates of a briefly trained model often span a narrow band around 0.5, which an
    absolute scale would paint one flat colour.
    """
    heat = np.asarray(heat, dtype=np.float64)
    if normalize:
        low, high = heat.min(), heat.max()
        heat = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    colours = colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    mixed = (1.0 - alpha) * np.asarray(frames, dtype=np.float64) + alpha * colours
    return mixed.round().clip(0, 255).astype(np.uint8)


def _attention_modules(model: torch.nn.Module) -> list[tuple[str, SpatialAttention]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SpatialAttention)]


def _pick(count: int, stages: str | int | Sequence[int]) -> list[int]:
    if stages == "all":
        return list(range(count))
    if stages == "last":
        return [count - 1] if count else []
    chosen = [stages] if isinstance(stages, int) else list(stages)
    for s in chosen:
        if not -count <= s < count:
            raise ValueError(f"attention stage {s} out of range: the model has {count} attention module(s)")
    return [s % count for s in chosen]


@torch.no_grad()
def clip_attention(model: torch.nn.Module, path: str | os.PathLike, pipeline: ClipPipeline,
                   stages: str | int | Sequence[int] = "last",
                   device: str | torch.device = "cpu") -> tuple[np.ndarray, list[np.ndarray], list[str], np.ndarray]:
    """Run one clip (eval sampling, one view) through ``model`` as its clip ``pipeline`` feeds it (RGB, flow or
    both: a two-stream model's attention modules are listed RGB stream first); return the denormalized frames
    [T, S, S, 3], the chosen attention maps upsampled to [T, S, S], their module names, and the class
    probabilities."""
    from behavior.engine.inference import views_of

    transform = pipeline.transform
    with open_video(path, backend=pipeline.backend) as reader:
        frames = reader.get_frames(sample_indices(len(reader), pipeline.sampling, train=False))
        clip, _ = views_of(reader, pipeline.with_views(1), pipeline.clip_transform(train=False))
    video = build_transform(transform, train=False)(frames)  # [3, T, S, S]: what is shown
    modules = _attention_modules(model)
    for _, module in modules:
        module.record = True
    probs = model(clip.to(device)).float().softmax(-1)[0].cpu().numpy()
    t, size = video.shape[1], video.shape[-2:]
    maps, names = [], []
    for i in _pick(len(modules), stages):
        name, module = modules[i]
        gate = module.last_map.float().cpu()  # [T, 1, h, w]: a batch of one clip, frames folded in
        if gate.shape[0] != t:
            raise ValueError(f"{name}: attention map has {gate.shape[0]} entries for {t} frames; only per-frame "
                             "models (BehaviorNet) can be overlaid")
        up = F.interpolate(gate, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        maps.append(up.numpy())
        names.append(f"{name} ({gate.shape[-2]}x{gate.shape[-1]})")
    return denormalize(video, transform).numpy(), maps, names, probs


def _default_clips(run: RunResults, n: int) -> list[str]:
    # One clip per true class in turn, so the figure shows several behaviours rather than n of one.
    by_class: dict[str, list[str]] = {}
    for row in run.predictions:
        by_class.setdefault(str(row["true"]), []).append(row["path"])
    picked, depth = [], 0
    while len(picked) < n and any(depth < len(v) for v in by_class.values()):
        picked += [paths[depth] for paths in by_class.values() if depth < len(paths)]
        depth += 1
    return picked[:n]


def run_model(run: RunResults, checkpoint: str | None = None,
              device: str = "cpu") -> tuple[torch.nn.Module, list[str], ClipPipeline]:
    """The model a run reported on (``checkpoint`` in its folder; default: the one metrics.json names, else
    best.pt), its class names and its eval clip pipeline (one view)."""
    from behavior.engine.checkpoint import load_model  # imports every model: only when needed
    from behavior.engine.inference import pipeline_of

    named = str(run.metrics.get("checkpoint") or "best.pt")
    weights = run.run_dir / (checkpoint or Path(named).name)
    if not weights.is_file() and run.metrics.get("checkpoint"):
        # An evaluate run holds no checkpoint of its own; its metrics.json names the one it evaluated.
        weights = resolve_clip(run.metrics["checkpoint"], run.root)
    model, saved = load_model(weights, torch.device(device))
    return model, saved.class_names, pipeline_of(saved, num_views=1)


def clip_overlay(model: torch.nn.Module, class_names: Sequence[str], pipeline: ClipPipeline, path: str,
                 true: str | None = None, root: str | os.PathLike | None = None,
                 stages: str | int | Sequence[int] = "last", alpha: float = 0.45, device: str = "cpu") -> Overlay:
    """One clip's :class:`Overlay`: its frames as the model saw them, the chosen attention maps and the blends."""
    frames, maps, stage_names, probs = clip_attention(model, resolve_clip(path, root), pipeline, stages, device)
    best = int(probs.argmax())
    return Overlay(str(path), true, class_names[best], float(probs[best]), frames, maps, stage_names,
                   [heatmap_blend(frames, m, alpha) for m in maps])


def attention_overlays(run: RunResults | str | os.PathLike | None, clip_paths: Sequence[str] | None = None,
                       n: int = 3, stages: str | int | Sequence[int] = "last", checkpoint: str | None = None,
                       alpha: float = 0.45, device: str = "cpu") -> list[Overlay]:
    """Spatial attention of the run's checkpoint over a few clips.

    Loads the run's checkpoint (:func:`run_model`), feeds each clip through the run's eval sampling and
    transform (one view), takes the gates of the chosen SpatialAttention modules (``"last"``, ``"all"``, an index
    or a list), upsamples them to the frame size and blends them as heatmaps over the frames. ``clip_paths``
    defaults to ``n`` clips of the run's predictions, one per true class in turn. A model without
    SpatialAttention modules gives overlays with no maps (the figure says so) rather than an error.
    """
    run = run if isinstance(run, RunResults) else load_run(run)
    model, names, pipeline = run_model(run, checkpoint, device)
    truth = {row["path"]: str(row["true"]) for row in run.predictions}
    return [clip_overlay(model, names, pipeline, path, truth.get(str(path)), run.root, stages, alpha, device)
            for path in (clip_paths if clip_paths is not None else _default_clips(run, n))]


def plot_attention_overlays(overlays: Sequence[Overlay], cell: float = 1.3) -> Figure:
    """For each clip, a row of its frames and one row of heatmap overlays per attention module.

    Heat is stretched per clip and module (red = most attended); the raw gate range is in the row label.
    """
    if not overlays:
        return _message_axes(new_figure(6.0, 1.0), "no clips to show")
    if not any(o.maps for o in overlays):
        return _message_axes(new_figure(6.0, 1.0), "this model has no SpatialAttention modules "
                                                   "(model.attention=false or a 3D-CNN baseline)")
    rows = [r for o in overlays for r in [(o, None), *((o, k) for k in range(len(o.maps)))]]
    cols = max(o.frames.shape[0] for o in overlays)
    # Fixed inches for the row labels and the clip titles, so the frames keep their size whatever the count.
    label_w, title_h = 1.3, 0.3
    width, height = label_w + cell * cols, cell * len(rows) + title_h * len(overlays) + 0.1
    fig = new_figure(width, height)
    grid = fig.add_gridspec(len(rows), cols, left=label_w / width, right=0.995, bottom=0.05 / height,
                            top=1 - title_h / height, wspace=0.04, hspace=title_h / cell)
    for r, (o, k) in enumerate(rows):
        images = o.frames if k is None else o.blended[k]
        for t in range(images.shape[0]):
            ax = fig.add_subplot(grid[r, t])
            ax.imshow(images[t])
            ax.set_xticks([])
            ax.set_yticks([])
            if t == 0 and k is None:
                truth = f"true {o.true}, " if o.true is not None else ""
                ax.set_title(f"{Path(o.path).name}: {truth}predicted {o.pred} ({o.score:.2f})", fontsize=9, loc="left")
                ax.set_ylabel("frames", fontsize=8)
            elif t == 0:
                stage = o.stage_names[k].removeprefix("backbone.")
                ax.set_ylabel(f"{stage}\ngate {o.maps[k].min():.2f}-{o.maps[k].max():.2f}", fontsize=7)
    return fig
