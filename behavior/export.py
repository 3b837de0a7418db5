"""``python -m behavior.export checkpoint=PATH format=onnx|pt2 output=PATH``: a trained model as one deployable file.

The export is written to a temp file beside ``output``, loaded back the way predict loads it, and compared with the
checkpoint on generated clips (a batch of one and of three; two clip lengths when the frames are dynamic). Only an
export within ``tolerance`` is linked into place, and never over an existing file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from behavior import provenance
from behavior.cli import entry_point
from behavior.config import Settings, check_choice, check_number, check_text, fail
from behavior.deploy.bundle import FORMATS, input_shape, record_of
from behavior.deploy.exporters import EXPORTERS, OPSET, ExportError
from behavior.deploy.runtime import export_format, load_any_model
from behavior.engine.checkpoint import load_model
from behavior.errors import ConfigError

CPU = torch.device("cpu")


@dataclass(frozen=True)
class ExportSettings(Settings):
    """conf/export.yaml, checked before the checkpoint is read."""

    GROUP = ""
    checkpoint: str
    format: str
    output: str | None  # null = beside the checkpoint
    tolerance: float

    def __post_init__(self) -> None:
        check_text("checkpoint", self.checkpoint, what="the checkpoint to export (checkpoint=PATH/best.pt)")
        check_choice("format", self.format, tuple(FORMATS))
        check_text("output", self.output, none_ok=True, what=f"the file to write (output=model{FORMATS[self.format]})")
        check_number("tolerance", self.tolerance, 0, above=True)
        if export_format(self.checkpoint) is not None:
            raise fail("checkpoint", self.checkpoint, "is an export already; give the training run's .pt checkpoint")
        suffix = FORMATS[self.format]
        if self.output is not None and Path(self.output).suffix.lower() != suffix:
            raise fail("output", self.output, f"name a {suffix} file for format={self.format} (predict and live "
                                              "tell the kind of model by its suffix)")

    @property
    def output_path(self) -> Path:
        return Path(self.output) if self.output is not None else Path(self.checkpoint).with_suffix(FORMATS[self.format])


def score_difference(model: torch.nn.Module, exported: torch.nn.Module, shapes: list[tuple[int, ...]]) -> float:
    """The largest absolute difference of the class scores (softmax of the logits) over generated clips."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.no_grad():
        for shape in shapes:
            clip = torch.randn(shape, generator=generator)
            expected, got = model(clip).softmax(-1), exported(clip).softmax(-1)
            worst = max(worst, (expected - got).abs().max().item())
    return worst


def runs_on(exported: torch.nn.Module, shape: tuple[int, ...]) -> bool:
    try:
        with torch.no_grad():
            exported(torch.zeros(shape))
        return True
    except Exception:  # noqa: BLE001 - ONNX Runtime and torch's shape guards raise their own kinds
        return False


def export_checked(cfg: ExportSettings, model: torch.nn.Module, checkpoint, record: dict,
                   temp: Path) -> tuple[bool, list[tuple[int, ...]], float]:
    """Export into ``temp`` and compare it with ``model``: whether the frames are dynamic, the clip batch shapes
    compared, and the largest score difference.

    An export whose frames came out dynamic but that refuses another clip length (a guard the exporter kept) is
    made again with the frames fixed."""
    exporter = EXPORTERS[cfg.format]
    longer = input_shape(checkpoint, 2, 2 * checkpoint.recipe.sampling.num_frames)
    for frames in (True, False):
        dynamic = exporter(model, torch.zeros(input_shape(checkpoint, batch=2)), temp, record, frames)
        exported, _ = load_any_model(temp, CPU, key="output")
        if not dynamic or runs_on(exported, longer):
            break
    shapes = [input_shape(checkpoint, 1), input_shape(checkpoint, 3), *([longer] if dynamic else [])]
    return dynamic, shapes, score_difference(model, exported, shapes)


def export(cfg: ExportSettings) -> Path:
    output = cfg.output_path
    if output.exists():
        raise ConfigError(f"output={output}: exists already; it is never overwritten (remove it, or give another "
                          "output)")
    model, checkpoint = load_model(cfg.checkpoint, CPU)  # before anything is written: a bad checkpoint is refused
    record = record_of(checkpoint, provenance.file_sha256(cfg.checkpoint), cfg.format,
                       OPSET if cfg.format == "onnx" else None)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=output.suffix, dir=output.parent)
    os.close(fd)
    temp = Path(name)
    try:
        dynamic, shapes, difference = export_checked(cfg, model, checkpoint, record, temp)
        if difference > cfg.tolerance:
            raise ExportError(f"output={output}: the export's scores differ from the checkpoint's by up to "
                              f"{difference:.2e} (tolerance={cfg.tolerance:g}); nothing written")
        os.link(temp, output)  # fails rather than replace a file that appeared meanwhile
    except ExportError as err:
        message = str(err)
        raise ExportError(message if message.startswith("output=") else
                          f"format={cfg.format}: {Path(cfg.checkpoint).name} cannot be exported ({message})") from None
    finally:
        temp.unlink(missing_ok=True)
    os.chmod(output, 0o644)
    what = "ONNX opset " + str(OPSET) if cfg.format == "onnx" else "torch.export program"
    frames = checkpoint.recipe.sampling.num_frames
    axes = "batch and frames" if dynamic else f"batch; {frames} frames fixed by the model"
    print(f"exported {cfg.checkpoint} -> {output} ({what}; dynamic {axes}; {output.stat().st_size / 2**20:.1f} MiB)")
    print(f"largest score difference from the checkpoint on {len(shapes)} generated clip batches: {difference:.1e} "
          f"(tolerance {cfg.tolerance:g})")
    return output


@entry_point("export")
def main(cfg: DictConfig) -> None:
    export(ExportSettings.from_mapping(cfg))


if __name__ == "__main__":
    main()
