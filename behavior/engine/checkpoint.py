"""Checkpoints: written atomically, loaded without unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from behavior.atomic import atomic_open
from behavior.errors import BehaviorError
from behavior.models import build_model


class CheckpointError(BehaviorError):
    """A checkpoint is missing, torn, or not one of ours."""


REQUIRED_KEYS = ("model_state", "model_config", "class_names", "epoch")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write to a temp file in the same folder, fsync, then rename: a kill leaves the old or the new file."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path}: cannot be loaded safely ({first_line})") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint {path}: not a behavior checkpoint (needs keys {', '.join(REQUIRED_KEYS)})")
    return state


def load_model(path: str | Path, device: torch.device):
    """Rebuild the network a checkpoint was trained with and load its weights."""
    state = load_checkpoint(path)
    model = build_model(state["model_config"], len(state["class_names"]))
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: weights do not match its model config "
                              f"({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), state
