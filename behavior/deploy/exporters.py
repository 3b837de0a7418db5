"""Turn a trained model into a file that runs without the training stack: ONNX (torch's dynamo exporter) or a
``torch.export`` ExportedProgram (``.pt2``), each with a dynamic batch and, where the graph allows, a dynamic number
of frames, and the record of :mod:`behavior.deploy.bundle` inside.

Exporters write to the path they are given; :mod:`behavior.export` gives them a temp file and renames it onto the
output only once the export matched the checkpoint, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from behavior.deploy.bundle import INPUT_NAME, METADATA_KEY, OUTPUT_NAME
from behavior.errors import BehaviorError
from behavior.models import SpatialAttention

OPSET = 18  # the ONNX opset written; ONNX Runtime 1.16 and later run it


class ExportError(BehaviorError):
    """The graph could not be exported; the message is the exporter's first line."""


@contextlib.contextmanager
def exportable(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with attention maps not recorded (a tensor stored on a module during tracing would
    be baked into the graph as a side effect); restored afterwards."""
    attention = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    recording, training = [m.record for m in attention], model.training
    for m in attention:
        m.record = False
    model.eval()
    try:
        yield model
    finally:
        for m, was in zip(attention, recording, strict=True):
            m.record = was
        model.train(training)


def _dims(frames: bool) -> tuple[dict, ...]:
    """The batch is always dynamic; with ``frames`` the clip length is left to the exporter (Dim.AUTO): dynamic
    unless the graph pins it, which the program's input shape then tells."""
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    return ({**dims, 2: torch.export.Dim.AUTO} if frames else dims),


def _quietly(fn: Callable[[], object]) -> object:
    """Run an exporter without its progress lines and warnings; its first error line becomes an ExportError."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception as err:  # the exporters raise many kinds (torch._dynamo, onnxscript, torch.export)
        text = str(err).strip()
        raise ExportError(text.splitlines()[0] if text else type(err).__name__) from err


def _with_frames(record: dict, dynamic: bool) -> str:
    return json.dumps({**record, "input": {**record["input"], "dynamic_frames": dynamic}})


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, record: dict, frames: bool) -> bool:
    """Write ``model`` as one self-contained ONNX file (weights inside), with a dynamic number of frames if
    ``frames`` and the graph allows; returns whether the frames are dynamic."""
    with exportable(model):
        program = _quietly(lambda: torch.onnx.export(
            model, (example,), None, dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=_dims(frames), optimize=True))
    dynamic = not isinstance(program.model.graph.inputs[0].shape[2], int)
    program.model.metadata_props[METADATA_KEY] = _with_frames(record, dynamic)
    _quietly(lambda: program.save(path, external_data=False))
    return dynamic


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path, record: dict, frames: bool) -> bool:
    """Write a ``torch.export`` ExportedProgram with the record as ``behavior.json`` (frames as in
    :func:`export_onnx`); returns whether the frames are dynamic."""
    with exportable(model):
        program = _quietly(lambda: torch.export.export(model, (example,), dynamic_shapes=_dims(frames)))
    name = program.graph_signature.user_inputs[0]
    shape = next(node for node in program.graph.nodes if node.name == name).meta["val"].shape
    dynamic = isinstance(shape[2], torch.SymInt)
    extra = {f"{METADATA_KEY}.json": _with_frames(record, dynamic)}
    _quietly(lambda: torch.export.save(program, path, extra_files=extra))
    return dynamic


EXPORTERS = {"onnx": export_onnx, "pt2": export_pt2}
