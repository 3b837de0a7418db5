"""behavior.export: every model family exports to ONNX and torch.export with its scores matching eager PyTorch, the
export alone classifies in predict like the checkpoint, and bad input is one line that writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from behavior.deploy.bundle import input_shape
from behavior.deploy.runtime import load_any_model
from behavior.engine.checkpoint import CheckpointError, load_model
from behavior.export import ExportSettings, export
from behavior.models import build_model
from behavior.predict.batch import run as predict
from behavior.recipe import compose_recipe
from behavior.video.writer import write_video
from tests.conftest import moving_square_clip
from tests.helpers import TINY_MODEL, command_config, run_main, tiny_checkpoint
from tests.test_predict import CLASSES, mixed, predict_cfg, read_rows  # noqa: F401 (mixed: a fixture)

CPU = torch.device("cpu")
TOLERANCE = 1e-4
TINY_INPUT = [o for o in TINY_MODEL if not o.startswith("model.")]
# One tiny instance per family: BehaviorNet with and without attention and with every temporal pool, its torchvision
# frame backbones, SpatialAttentionNet, the flow / stats inputs and both fusions, and the torchvision 3D networks
# (fixed architectures: only their input is small).
FAMILIES = {
    "behaviornet": [],
    "no_attention": ["model.attention=false"],
    **{f"pool_{pool}": [f"model.temporal_pool={pool}"] for pool in ("max", "attention", "tconv", "gru", "transformer")},
    "temporal_shift": ["model.temporal_shift=true"],
    "spatial_attention_net": ["model=spatial_attention_net", "model.widths=[8,16]"],
    "flow": ["model.input=flow"],
    "rgb_flow_joint": ["model.input=rgb+flow", "model.fusion=joint"],
    "rgb_stats": ["model.input=rgb+stats"],
    "resnet18_frames": ["model=behaviornet_resnet18"],
    "mobilenet_frames": ["model=behaviornet_mobilenet"],
    "r3d_18": ["model=r3d_18"],
    "mc3_18": ["model=mc3_18"],
    "r2plus1d_18": ["model=r2plus1d_18"],
    "s3d": ["model=s3d", "sampling.num_frames=8"],
}


def family_checkpoint(folder, overrides: list[str]):
    other_model = any(o.startswith("model=") for o in overrides)  # its own layer widths (or none to set)
    recipe = compose_recipe([*(TINY_INPUT if other_model else TINY_MODEL), *overrides])
    torch.manual_seed(0)
    model = build_model(recipe.model, len(CLASSES), recipe.flow_channels)
    return tiny_checkpoint(folder / "model.pt", CLASSES, recipe, model=model)


def settings(checkpoint, export_format: str = "onnx", output=None, tolerance: float = TOLERANCE) -> ExportSettings:
    return ExportSettings.from_mapping(command_config("export", checkpoint=str(checkpoint), format=export_format,
                                                      output=None if output is None else str(output),
                                                      tolerance=tolerance))


def max_score_difference(checkpoint, exported_path, frames: int | None = None) -> float:
    model, saved = load_model(checkpoint, CPU)
    exported, described = load_any_model(exported_path, CPU)
    assert described.class_names == saved.class_names and described.recipe == saved.recipe
    clip = torch.randn(input_shape(saved, batch=2, frames=frames), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (model(clip).softmax(-1) - exported(clip).softmax(-1)).abs().max().item()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_model_family_exports_to_onnx_with_the_eager_scores(family, tmp_path):
    checkpoint = family_checkpoint(tmp_path, FAMILIES[family])
    output = export(settings(checkpoint))
    assert output == tmp_path / "model.onnx"
    assert max_score_difference(checkpoint, output) <= TOLERANCE


@pytest.mark.parametrize("family", ["behaviornet", "pool_gru", "rgb_flow_joint"])
def test_torch_export_programs_give_the_eager_scores(family, tmp_path, capsys):
    checkpoint = family_checkpoint(tmp_path, FAMILIES[family])
    output = export(settings(checkpoint, "pt2"))
    assert output.suffix == ".pt2" and max_score_difference(checkpoint, output) <= TOLERANCE
    said = capsys.readouterr().out
    # A GRU's clip length is fixed by the graph torch.export keeps; the export says so rather than fail later.
    assert ("4 frames fixed by the model" in said) == (family == "pool_gru"), said


def test_the_export_command_says_what_it_wrote_and_how_close_it_is(tmp_path):
    checkpoint = family_checkpoint(tmp_path, [])
    code, out, err = run_main("behavior.export", f"checkpoint={checkpoint}", f"output={tmp_path / 'm.onnx'}")
    assert code == 0, err
    assert "exported" in out and "ONNX opset 18; dynamic batch and frames" in out
    assert "largest score difference from the checkpoint on 3 generated clip batches" in out
    assert max_score_difference(checkpoint, tmp_path / "m.onnx", frames=9) <= TOLERANCE  # any clip length
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "model.pt"]  # no temp file left


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    checkpoint = tiny_checkpoint(folder / "tiny.pt", CLASSES)
    return checkpoint, export(settings(checkpoint)), export(settings(checkpoint, "pt2"))


@pytest.mark.parametrize("which", ["onnx", "pt2"])
def test_predict_with_the_export_gives_the_checkpoints_rows(exported, mixed, which, tmp_path):  # noqa: F811
    checkpoint, onnx_file, pt2_file = exported
    clips, expected = mixed
    rows = {}
    for name, model in (("pt", checkpoint), (which, onnx_file if which == "onnx" else pt2_file)):
        predict(predict_cfg(checkpoint=str(model), input=str(clips), output=str(tmp_path / f"{name}.csv")))
        rows[name] = read_rows(tmp_path / f"{name}.csv")
    assert len(rows["pt"]) == len(expected)  # one row per file, good and broken
    assert [(r["path"], r["status"], r["label"], r["error"]) for r in rows[which]] == \
        [(r["path"], r["status"], r["label"], r["error"]) for r in rows["pt"]]
    for ours, theirs in zip(rows[which], rows["pt"], strict=True):
        if ours["status"] == "ok":
            assert abs(float(ours["score"]) - float(theirs["score"])) <= TOLERANCE
    record = json.loads((tmp_path / f"{which}.csv.provenance.json").read_text())
    assert record["checkpoint"]["path"].endswith(f"tiny.{which}")


def test_bad_exports_are_one_line(exported, tmp_path):
    checkpoint, onnx_file, _ = exported
    foreign = tmp_path / "foreign.onnx"
    stripped = _without_metadata(onnx_file, foreign)
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(onnx_file.read_bytes()[:2000])
    for path, said in ((stripped, "has no behavior metadata (not written by python -m behavior.export)"),
                       (damaged, "not a readable ONNX model"), (tmp_path / "none.onnx", "file not found")):
        with pytest.raises(CheckpointError, match="^checkpoint=.*" + said.replace("(", r"\(").replace(")", r"\)")):
            load_any_model(path, CPU)
    bad_pt2 = tmp_path / "bad.pt2"
    bad_pt2.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a torch.export archive"):
        load_any_model(bad_pt2, CPU)
    # Through the command: one line, exit 2, no output file.
    clip = write_video(tmp_path / "clip.mp4", moving_square_clip(0, seed=0), fps=12)
    code, _, err = run_main("behavior.predict", f"checkpoint={stripped}", f"input={clip}",
                            f"output={tmp_path / 'p.csv'}", "progress=false")
    assert code == 2 and err.strip().splitlines() == [f"error: checkpoint={stripped}: has no behavior metadata "
                                                      "(not written by python -m behavior.export); export a "
                                                      "training run's best.pt with behavior.export"]
    assert not (tmp_path / "p.csv").exists()


def _without_metadata(source, target):
    import onnx

    model = onnx.load(str(source))
    del model.metadata_props[:]
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("overrides, said", [
    (["format=tflite"], "format=tflite: choose one of onnx, pt2"),
    (["output=model.pt2"], "output=model.pt2: name a .onnx file for format=onnx"),
    (["tolerance=0"], "tolerance=0: must be a number > 0"),
])
def test_bad_settings_are_one_line_and_write_nothing(exported, tmp_path, overrides, said):
    checkpoint, _, _ = exported
    code, out, err = run_main("behavior.export", f"checkpoint={checkpoint}", *overrides)
    assert code == 2 and err.startswith(f"error: {said}") and len(err.strip().splitlines()) == 1 and not out


def test_an_existing_output_is_never_overwritten_and_a_failed_check_writes_nothing(exported, tmp_path):
    checkpoint, onnx_file, _ = exported
    taken = shutil.copy(checkpoint, tmp_path / "taken.onnx")
    before = taken.read_bytes()
    code, _, err = run_main("behavior.export", f"checkpoint={checkpoint}", f"output={taken}")
    assert code == 2 and "exists already; it is never overwritten" in err and taken.read_bytes() == before
    code, _, err = run_main("behavior.export", f"checkpoint={onnx_file}")
    assert code == 2 and "is an export already" in err
    strict = tmp_path / "strict.onnx"
    code, _, err = run_main("behavior.export", f"checkpoint={checkpoint}", f"output={strict}", "tolerance=1e-30")
    assert code == 2 and "differ from the checkpoint's by up to" in err and "nothing written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


def test_live_mode_with_the_export_gives_the_checkpoints_labels(exported, tmp_path, capsys):
    from behavior.live.session import run as live
    from tests.test_live import live_cfg

    checkpoint, onnx_file, _ = exported
    source = write_video(tmp_path / "source.mp4", moving_square_clip(1, seed=4, num_frames=30), fps=15)
    labels = {}
    for model in (checkpoint, onnx_file):
        labels[model.suffix] = live(live_cfg(checkpoint=str(model), source=str(source), stride=5)).labels
    assert len(labels[".pt"]) == 6
    assert [(i, label) for i, label, _ in labels[".onnx"]] == [(i, label) for i, label, _ in labels[".pt"]]
    assert all(abs(a[2] - b[2]) <= TOLERANCE for a, b in zip(labels[".onnx"], labels[".pt"], strict=True))
    assert "this model gives no attention maps (an exported model" in capsys.readouterr().err


class Payload:
    """Stands for code hidden in a file: unpickling it would call __reduce__'s function."""

    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pt2_is_read_with_tensors_only():
    import io
    import pickle

    from behavior.deploy.runtime import _tensors_only

    buffer, plain_load = io.BytesIO(), torch.load
    torch.save({"w": torch.zeros(2), "hidden": Payload()}, buffer)
    # torch.export.load retries a refused weights-only load with weights_only=False; inside, that retry is refused too.
    with _tensors_only(), pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert torch.load is plain_load  # given back


def test_the_deploy_speed_benchmark_prints_each_model_and_its_test_accuracy(exported, mixed, tmp_path,  # noqa: F811
                                                                            capsys):
    from behavior.deploy.speed import main

    checkpoint, _, _ = exported
    clips, expected = mixed
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "best.pt")
    good = [clips / name for name, status in expected.items() if status.startswith("ok")][:3]
    (run / "split.csv").write_text("path,label,group,split\n" + "".join(
        f"{path},{CLASSES[0]},,{'test' if i else 'train'}\n" for i, path in enumerate(good)))
    main([str(run), "--input", str(clips), "--repeat", "1", "--workers", "0"])
    out = capsys.readouterr().out
    assert "2 test clips" in out
    for name in ("checkpoint (eager PyTorch)", "ONNX Runtime", "torch.export"):
        assert f"| {name} |" in out
