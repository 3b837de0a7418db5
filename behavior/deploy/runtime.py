"""Run an exported model where a checkpoint would go: ``load_any_model(path)`` takes a ``.pt`` checkpoint, an ONNX
file (ONNX Runtime: the CPU provider, CUDA's when the device is a GPU and ONNX Runtime has it) or a ``.pt2``
ExportedProgram, and returns a module ``[B, C, T, S, S] -> logits`` with the Checkpoint its metadata describes.
"""

from __future__ import annotations

import contextlib
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from behavior.deploy.bundle import FORMATS, INPUT_NAME, METADATA_KEY, OUTPUT_NAME, checkpoint_of
from behavior.engine.checkpoint import Checkpoint, CheckpointError, load_model


def export_format(path: str | Path) -> str | None:
    """``onnx`` or ``pt2`` by the file's suffix, None for a checkpoint."""
    suffix = Path(path).suffix.lower()
    return next((name for name, ending in FORMATS.items() if ending == suffix), None)


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session behind the module interface predict and live call (no gradients, float32 in/out)."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        feed = {INPUT_NAME: video.detach().to("cpu", torch.float32).contiguous().numpy()}
        logits = self.session.run([OUTPUT_NAME], feed)[0]
        return torch.from_numpy(logits).to(video.device)


def _providers(device: torch.device) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        print("warning: this onnxruntime has no CUDA provider; the ONNX model runs on the CPU "
              "(pip install onnxruntime-gpu for the GPU)", file=sys.stderr)
    return ["CPUExecutionProvider"]


def load_onnx(path: Path, device: torch.device, key: str) -> tuple[nn.Module, Checkpoint]:
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(f"{key}={path}: an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=_providers(device))
    except Exception as err:  # ONNX Runtime raises its own Fail/InvalidProtobuf/InvalidGraph types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{key}={path}: not a readable ONNX model ({first})") from None
    checkpoint = checkpoint_of(path, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), key)
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise CheckpointError(f"{key}={path}: takes {names[0]} and gives {names[1]}, not [{INPUT_NAME!r}] -> "
                              f"[{OUTPUT_NAME!r}] as behavior.export writes")
    return OnnxRuntimeModel(session), checkpoint


@contextlib.contextmanager
def _tensors_only() -> Iterator[None]:
    # torch.export.load retries a failed weights-only load with full unpickling, which can run code hidden in the
    # file; a behavior export holds tensors only, so every load inside it stays weights-only.
    plain_load = torch.load

    def weights_only_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return plain_load(*args, **kwargs)

    torch.load = weights_only_load
    try:
        yield
    finally:
        torch.load = plain_load


def load_pt2(path: Path, device: torch.device, key: str) -> tuple[nn.Module, Checkpoint]:
    extra = {f"{METADATA_KEY}.json": ""}
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{key}={path}: not a torch.export archive (.pt2 written by behavior.export)")
    try:
        with _tensors_only():
            program = torch.export.load(path, extra_files=extra)
    except Exception as err:  # a damaged archive raises from zipfile, the serializer or torch.load
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{key}={path}: not a loadable torch.export archive ({first})") from None
    checkpoint = checkpoint_of(path, extra[f"{METADATA_KEY}.json"] or None, key)
    return program.module().to(device), checkpoint


def load_any_model(path: str | Path, device: torch.device, key: str = "checkpoint") -> tuple[nn.Module, Checkpoint]:
    """The model behind ``path`` (a checkpoint or an export) on ``device``, and its Checkpoint."""
    path = Path(path)
    kind = export_format(path)
    if kind is None:
        return load_model(path, device, key)
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: file not found")
    return (load_onnx if kind == "onnx" else load_pt2)(path, device, key)
