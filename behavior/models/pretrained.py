"""Start a model from pretrained weights: ``model.pretrained`` names them, :func:`load_pretrained` puts them in.

    model.pretrained = null                              from scratch (the default)
                     | ResNet18_Weights.IMAGENET1K_V1    torchvision weights (any <Model>_Weights.<NAME> or .DEFAULT)
                     | path/to/weights.pth               a state dict file (tensors only)
                     | outputs/train/<run>/best.pt       another run of this project, to fine-tune on new classes

Weights are read with ``torch.load(weights_only=True)``: tensors and plain containers, never code. torchvision
weights come through torchvision's weights API and torch's cache (``$TORCH_HOME/hub/checkpoints/``); a file missing
there is downloaded, and where that cannot happen (no network, ``BEHAVIOR_OFFLINE=1``) the run stops before any
work, naming the file the cache needs and the URL to fetch it from elsewhere. Never a silent fall-back to random
weights: when no tensor fits, that is an error too.

The loading rule: tensors are matched by name and shape. torchvision's names are found under the
``torchvision_prefix`` of each module built on a torchvision model (``behavior.models.frame_backbones``, the 3D
baselines); a run's checkpoint matches name for name. A head sized for another class count does not fit by shape
and stays new. One line says what happened: ``loaded 118/122 tensors; new: head.fc.weight, ...; skipped (shape):
...``. ``model.pretrained_strict=true`` turns any skipped or unused tensor into an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from behavior.errors import ConfigError
from behavior.paths import user_path
from behavior.provenance import file_sha256

TORCHVISION_NAME = re.compile(r"^[A-Za-z0-9]+(_[A-Za-z0-9]+)*_Weights\.[A-Za-z0-9_]+$")
SHOWN = 6  # tensor names listed per kind in the summary line before "... (N more)"


@dataclass(frozen=True)
class WeightsSource:
    """Where ``model.pretrained`` points: ``kind`` torchvision | checkpoint | state_dict; ``file`` the file on disk
    (for torchvision, where torch's cache keeps it, present or not)."""

    value: str
    kind: str
    file: Path
    url: str | None = None
    model_name: str | None = None  # torchvision: the builder the weights belong to (resnet18, r3d_18, ...)

    def describe(self) -> dict:
        """Provenance for a checkpoint and the report: what was asked for, the file and its sha256."""
        return {"pretrained": self.value, "kind": self.kind, "file": str(self.file), "url": self.url,
                "sha256": file_sha256(self.file) if self.file.is_file() else None}


def _fail(value: str, why: str) -> ConfigError:
    return ConfigError(f"model.pretrained={value}: {why}")


def weights_source(value: str | None) -> WeightsSource | None:
    """Where ``model.pretrained`` points, checked without reading the weights (None: from scratch)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(str(value), "must be null, torchvision weights (e.g. ResNet18_Weights.IMAGENET1K_V1) or a file")
    if TORCHVISION_NAME.match(value) and not Path(value).exists():
        weights = torchvision_weights(value)
        name = os.path.basename(weights.url)
        return WeightsSource(value, "torchvision", Path(torch.hub.get_dir()) / "checkpoints" / name, weights.url,
                             torchvision_model_of(weights))
    path = user_path(value)
    if path.is_dir():
        hint = f" (a run's checkpoint: {path / 'best.pt'})" if (path / "best.pt").is_file() else ""
        raise _fail(value, f"is a folder, not a weights file{hint}")
    if not path.is_file():
        raise _fail(value, "file not found (give a .pt/.pth state dict, a run's best.pt or torchvision weights such "
                           "as ResNet18_Weights.IMAGENET1K_V1)")
    kind = "checkpoint" if "recipe" in read_weights(WeightsSource(value, "state_dict", path)) else "state_dict"
    return WeightsSource(value, kind, path)


def torchvision_weights(value: str):
    from torchvision.models import get_weight

    try:
        return get_weight(value)
    except (KeyError, ValueError, AttributeError):
        enum, _, member = value.partition(".")
        raise _fail(value, f"torchvision has no such weights ({enum} has no {member}, or there is no {enum}); "
                           "names look like ResNet18_Weights.IMAGENET1K_V1 or R2Plus1D_18_Weights.DEFAULT") from None


def torchvision_model_of(weights) -> str | None:
    """The torchvision builder name whose weights enum ``weights`` belongs to (resnet18 for ResNet18_Weights)."""
    from torchvision.models import get_model_weights, list_models

    for name in list_models():
        try:
            if get_model_weights(name) is type(weights):
                return name
        except (ValueError, KeyError):
            continue
    return None


def fetch(source: WeightsSource) -> Path:
    """The weights file on disk: torchvision weights missing from torch's cache are downloaded into it, unless
    that cannot be done here (then a one-line error saying what to copy where)."""
    if source.kind != "torchvision" or source.file.is_file():
        return source.file
    where = source.file.parent
    why = "BEHAVIOR_OFFLINE=1" if os.environ.get("BEHAVIOR_OFFLINE") else None
    if why is None:
        where.mkdir(parents=True, exist_ok=True)
        partial = source.file.with_name(source.file.name + ".partial")
        try:
            torch.hub.download_url_to_file(source.url, str(partial), progress=False)
            os.replace(partial, source.file)
            return source.file
        except Exception as err:  # urllib's URLError, a timeout, a refused connection: all mean "not from here"
            partial.unlink(missing_ok=True)
            why = str(getattr(err, "reason", None) or err).splitlines()[0] or type(err).__name__
    raise _fail(source.value, f"{source.file.name} is not in torch's cache {where} and cannot be downloaded "
                              f"here ({why}); fetch {source.url} on a machine with network and copy it into {where}/")


def read_weights(source: WeightsSource) -> Mapping:
    """The file's contents, loaded safely (tensors and plain containers only).

    A file torch.save wrote (a zip archive) is memory-mapped: the checks before a run (which kind of file, its
    normalisation, whether it fits) read only the small pickled index, and the tensors' bytes are read once, when
    they are copied into the model."""
    with open(source.file, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    try:
        return torch.load(source.file, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as err:  # UnpicklingError (code, or not a pickle), RuntimeError, EOFError (cut short)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in first or "Weights only load failed" in first:
            first = "it holds more than tensors and plain containers"  # never advise weights_only=False
        raise _fail(source.value, f"cannot be loaded safely as weights ({first})") from None


def state_dict_of(source: WeightsSource) -> dict[str, torch.Tensor]:
    """The tensors ``source`` holds, by name: a run's ``model_state``, or a state dict (also the common
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers)."""
    content = read_weights(source)
    if isinstance(content, Mapping):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    tensors = {k: v for k, v in content.items() if isinstance(v, torch.Tensor)} if isinstance(content, Mapping) \
        else {}
    if not tensors:
        raise _fail(source.value, "not a state dict (no named tensors in it)")
    return tensors


def normalization_of(value: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input mean/std the weights were trained with, when they say (torchvision metadata, a run's recipe)."""
    source = weights_source(value)
    if source is None:
        return None
    if source.kind == "torchvision":
        preset = torchvision_weights(source.value).transforms()
        return tuple(preset.mean), tuple(preset.std)
    if source.kind == "checkpoint":
        transform = read_weights(source)["recipe"].get("transform", {})
        if transform.get("mean") is not None and transform.get("std") is not None:
            return tuple(transform["mean"]), tuple(transform["std"])
    return None


def _renamed(model: nn.Module, source: WeightsSource, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Source tensors under the model's names: torchvision's names moved under each torchvision-built module's
    prefix (checking the weights are that network's); a run's checkpoint as it is, or through its RGB stream
    (:func:`_across_streams`)."""
    targets = [(name, module) for name, module in model.named_modules() if hasattr(module, "torchvision_prefix")]
    if source.kind == "checkpoint" or not targets:
        return _across_streams(model, tensors)
    if source.kind == "torchvision":
        built = sorted({module.torchvision_name for _, module in targets})
        targets = [(name, m) for name, m in targets if m.torchvision_name == source.model_name]
        if not targets:
            raise _fail(source.value, f"weights of {source.model_name}, but the model is built on {', '.join(built)} "
                                      f"(use that network's weights, or model.backbone={source.model_name})")
    own = set(model.state_dict())
    if source.kind == "state_dict" and set(tensors) & own:
        return tensors  # a state dict saved from this very model
    renamed = {}
    for name, module in targets:
        prefix = (name + "." if name else "") + module.torchvision_prefix
        renamed.update({prefix + key: value for key, value in tensors.items()})
    return renamed


def _across_streams(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A run of another input: a two-stream run (``rgb.``, ``flow.``... names) starts a one-stream RGB model from its
    RGB stream, and a one-stream run starts the RGB stream of a two-stream model. Names that match already win."""
    own = set(model.state_dict())
    if set(tensors) & own:
        return tensors
    if any(name.startswith("rgb.") for name in own):
        return {"rgb." + name: value for name, value in tensors.items()}
    return {name[len("rgb."):]: value for name, value in tensors.items() if name.startswith("rgb.")} or tensors


@dataclass(frozen=True)
class LoadReport:
    loaded: list[str]
    new: list[str]
    skipped: list[str]  # in both, but of another shape
    unused: list[str]  # in the weights only
    total: int

    def summary(self) -> str:
        def listed(names: list[str]) -> str:
            more = f" ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else ""
            return ", ".join(names[:SHOWN]) + more

        parts = [f"loaded {len(self.loaded)}/{self.total} tensors"]
        parts += [f"{kind}: {listed(names)}" for kind, names in
                  (("new", self.new), ("skipped (shape)", self.skipped)) if names]
        if self.unused:
            parts.append(f"unused from the weights: {len(self.unused)}")
        return "; ".join(parts)


def load_pretrained(model: nn.Module, source: WeightsSource, strict: bool = False) -> LoadReport:
    """Copy the tensors of ``source`` that fit ``model`` by name and shape; the rest of the model keeps its
    initialisation. An error when nothing fits, and with ``strict`` when anything is skipped or unused."""
    tensors = _renamed(model, source, state_dict_of(source))
    own = model.state_dict()
    fits = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    report = LoadReport(loaded=sorted(fits), new=[k for k in own if k not in fits],
                        skipped=[k for k in own if k in tensors and k not in fits],
                        unused=sorted(k for k in tensors if k not in own), total=len(own))
    if not fits:
        raise _fail(source.value, f"no tensor of it fits this model by name and shape ({len(tensors)} in the file, "
                                  f"e.g. {next(iter(tensors))}; the model has e.g. {next(iter(own))})")
    if strict and (report.skipped or report.unused):
        raise _fail(source.value, f"model.pretrained_strict=true and not every tensor fits: {report.summary()}")
    with torch.no_grad():
        for key, value in fits.items():
            own[key].copy_(value)
    return report
