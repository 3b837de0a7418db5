"""What an exported model carries besides its graph: the checkpoint's recipe and class names, so the file alone
is enough to decode, sample, crop and transform clips the way training did.

The record is one JSON object: in an ONNX file's metadata (``metadata_props["behavior"]``), in a ``.pt2`` archive
as the extra file ``behavior.json``. Reading it back gives a :class:`~behavior.engine.checkpoint.Checkpoint` (with
no weights in ``state``), so predict and live build their clip pipeline from an export exactly as from a ``.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path

from behavior import provenance
from behavior.engine.checkpoint import Checkpoint, CheckpointError, upgraded_recipe
from behavior.errors import ConfigError
from behavior.recipe import Recipe

METADATA_KEY = "behavior"  # ONNX metadata_props key; the .pt2 extra file is f"{METADATA_KEY}.json"
FORMAT = 1
FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}  # format -> file suffix
INPUT_NAME, OUTPUT_NAME = "video", "logits"


def input_shape(checkpoint: Checkpoint, batch: int = 1, frames: int | None = None) -> tuple[int, ...]:
    """``[B, C, T, S, S]`` of the clips the model takes: RGB channels first, then flow channels when it uses flow."""
    recipe = checkpoint.recipe
    streams = recipe.model.streams
    channels = (3 if "rgb" in streams else 0) + (recipe.flow.channels if recipe.model.uses_flow else 0)
    size = recipe.transform.crop_size
    return batch, channels, frames or recipe.sampling.num_frames, size, size


def record_of(checkpoint: Checkpoint, sha256: str, export_format: str, opset: int | None) -> dict:
    """The record an exporter stores (it adds ``input.dynamic_frames``: whether the graph takes any clip length)."""
    return {"format": FORMAT, "export": export_format, "opset": opset,
            "class_names": list(checkpoint.class_names), "recipe": checkpoint.recipe.to_dict(),
            "epoch": checkpoint.epoch, "input": {"name": INPUT_NAME, "shape": list(input_shape(checkpoint)),
                                                 "dynamic_batch": True},
            "source": {"checkpoint": str(checkpoint.path), "sha256": sha256},
            **provenance.code_provenance()}


def checkpoint_of(path: Path, text: str | None, key: str) -> Checkpoint:
    """The Checkpoint an export's metadata describes; one-line errors for a file without (or with broken) metadata."""
    if text is None:
        raise CheckpointError(f"{key}={path}: has no behavior metadata (not written by python -m behavior.export); "
                              "export a training run's best.pt with behavior.export")
    try:
        record = json.loads(text)
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format') if isinstance(record, dict) else '?'}")
        recipe = Recipe.from_config(upgraded_recipe(record["recipe"]))
        names = [str(name) for name in record["class_names"]]
    except (ValueError, KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{key}={path}: its behavior metadata does not check ({err}); it was written by "
                              "another version of behavior.export") from None
    return Checkpoint(path, recipe, names, int(record.get("epoch", 0)), {"export": record})
