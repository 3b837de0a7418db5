"""Checkpoints: written atomically, loaded without unpickling arbitrary objects, and carrying their recipe.

One pair of functions writes and reads what a checkpoint means: :func:`write_checkpoint` stores the weights,
the class names and the whole training recipe (``Recipe.to_dict()``); :func:`read_checkpoint` checks them back
into a :class:`Checkpoint`, so evaluate, predict, live and export rebuild the clip pipeline training used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from behavior.atomic import atomic_open
from behavior.errors import BehaviorError, ConfigError
from behavior.models import build_model

if TYPE_CHECKING:
    from behavior.recipe import Recipe


class CheckpointError(BehaviorError):
    """A checkpoint is missing, torn, or not one of ours."""


REQUIRED_KEYS = ("model_state", "recipe", "class_names", "epoch")


@dataclass
class Checkpoint:
    path: Path
    recipe: Recipe
    class_names: list[str]
    epoch: int
    state: dict[str, Any]  # everything stored: weights, optimizer and scheduler state, RNG, fit state...


def write_checkpoint(path: str | Path, recipe: Recipe, class_names: list[str], model_state: dict, epoch: int,
                     **training: Any) -> Path:
    """Write to a temp file in the same folder, fsync, then rename: a kill leaves the old or the new file.
    ``training`` holds what a resumed run needs besides the weights (optimizer state, RNG state...)."""
    state = {**training, "recipe": recipe.to_dict(), "class_names": list(class_names), "model_state": model_state,
             "epoch": epoch}
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return Path(path)


def read_checkpoint(path: str | Path, key: str = "checkpoint") -> Checkpoint:
    """Load with ``weights_only=True`` (tensors and plain containers only, never code) and check the recipe it
    carries; ``key`` is the setting that named the file, for the error message."""
    from behavior.recipe import Recipe  # the recipe's groups include engine settings that import this module

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{key}={path}: is a folder; give a checkpoint file (e.g. {path / 'best.pt'})")
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive; anything else was never saved by behavior.train
        raise CheckpointError(f"{key}={path}: not a behavior checkpoint (not a file written by torch.save); give "
                              "a training run's best.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in first_line or "Weights only load failed" in first_line:
            first_line = "it holds more than tensors and plain containers"  # never advise weights_only=False
        raise CheckpointError(f"{key}={path}: not a behavior checkpoint: it cannot be loaded safely ({first_line})") \
            from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{key}={path}: not a behavior checkpoint of this version (needs keys "
                              f"{', '.join(REQUIRED_KEYS)}); retrain it with behavior.train")
    try:
        recipe = Recipe.from_config(upgraded_recipe(state["recipe"]))
    except ConfigError as err:
        raise CheckpointError(f"{key}={path}: its recipe does not check ({err}); it was written by another "
                              "version of behavior") from None
    return Checkpoint(path, recipe, list(state["class_names"]), int(state["epoch"]), state)


# Keys added to the recipe since checkpoints were first written, with the value that means "as before": a
# checkpoint of an earlier version reads as what it was trained with.
ADDED_KEYS = {"model": {"fusion": "late", "pretrained": None, "pretrained_strict": False, "freeze": "none",
                        "unfreeze_after": None},
              "optim": {"backbone_lr_mult": 1.0}, "trainer": {"sync_bn": False, "logger": "none", "mlflow_uri": None}}


def upgraded_recipe(recipe: Any) -> Any:
    if not isinstance(recipe, dict):
        return recipe
    return {**recipe, **{group: {**added, **recipe[group]} for group, added in ADDED_KEYS.items()
                         if isinstance(recipe.get(group), dict)}}


def load_model(path: str | Path, device: torch.device, key: str = "checkpoint") -> tuple[torch.nn.Module, Checkpoint]:
    """Rebuild the network a checkpoint was trained with and load its weights, in eval mode on ``device``."""
    checkpoint = read_checkpoint(path, key)
    model = build_model(checkpoint.recipe.model, len(checkpoint.class_names), checkpoint.recipe.flow_channels)
    try:
        model.load_state_dict(checkpoint.state["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"{key}={path}: weights do not match its model config "
                              f"({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), checkpoint
