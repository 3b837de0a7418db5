from __future__ import annotations

import io
import os
from dataclasses import replace

import pytest
import torch
from torch import nn

from behavior.engine.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from behavior.engine.loop import mixup, train_one_epoch
from behavior.engine.optim import OptimConfig, build_loss, build_optimizer, build_scheduler, class_weights
from behavior.engine.trainer import restore
from behavior.errors import ConfigError, DivergedError
from behavior.models import ModelConfig, build_model
from tests.helpers import CreatesFile, tiny_recipe

OPTIM = OptimConfig.preset("adamw", lr=0.01, weight_decay=0.05, schedule="cosine", warmup_epochs=1,
                           min_lr_ratio=0.01, label_smoothing=0.1, class_weighted=False)


def state(**extra):
    """What a checkpoint file holds, as a plain dict (for files written without write_checkpoint)."""
    return {"model_state": nn.Linear(2, 3).state_dict(), "recipe": tiny_recipe().to_dict(), "class_names": ["a", "b"],
            "epoch": 1, **extra}


def test_checkpoint_round_trip_and_no_temp_files_left(tmp_path):
    recipe = tiny_recipe()
    path = write_checkpoint(tmp_path / "ck" / "last.pt", recipe, ["a", "b"], nn.Linear(2, 3).state_dict(), 1,
                            history=[{"epoch": 1, "loss": 0.5}])
    loaded = read_checkpoint(path)
    assert loaded.class_names == ["a", "b"] and loaded.epoch == 1 and loaded.state["history"][0]["loss"] == 0.5
    assert loaded.recipe == recipe and loaded.path == path
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match=r"^checkpoint=.*missing\.pt: file not found"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"^trainer\.resume=.*: is a folder"):
        read_checkpoint(tmp_path, key="trainer.resume")
    torn = tmp_path / "torn.pt"
    torch.save(state(), torn)
    torn.write_bytes(torn.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        read_checkpoint(torn)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a behavior checkpoint"):
        read_checkpoint(other)
    video = tmp_path / "clip.mp4"  # a file of another kind altogether: no advice about torch.load's options
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    with pytest.raises(CheckpointError, match=r"clip\.mp4: not a behavior checkpoint \(not a file written by "
                                              r"torch\.save\)") as err:
        read_checkpoint(video)
    assert "weights_only" not in str(err.value)
    bad_recipe = tmp_path / "bad_recipe.pt"
    recipe = state()["recipe"]
    torch.save(state(recipe={**recipe, "model": {**recipe["model"], "widths": []}}), bad_recipe)
    with pytest.raises(CheckpointError, match=r"its recipe does not check \(model\.widths=\[\]: "):
        read_checkpoint(bad_recipe)


def test_checkpoint_refuses_pickled_code(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save(state(payload=CreatesFile(marker)), evil)
    with pytest.raises(CheckpointError, match="cannot be loaded safely") as err:
        read_checkpoint(evil)
    assert "weights_only" not in str(err.value)
    assert not marker.exists()


def test_cosine_schedule_warms_up_then_decays():
    model = nn.Linear(4, 2)
    opt = build_optimizer(model, OPTIM)
    sched = build_scheduler(opt, OPTIM, steps_per_epoch=10, epochs=5)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[10] and max(lrs) == pytest.approx(0.01)
    assert lrs[-1] < 0.001 and lrs[-1] >= 0.01 * 0.01


def test_biases_are_not_decayed():
    opt = build_optimizer(nn.Linear(4, 2), OPTIM)
    decays = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 0.05, 1: 0.0}


def test_optim_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^optim\.lr=-1: must be a number > 0$"):
        OptimConfig.preset("adamw", lr=-1)
    with pytest.raises(ConfigError, match=r"^optim\.schedule=steps: choose one of cosine, onecycle, constant$"):
        OptimConfig.preset("adamw", schedule="steps")
    with pytest.raises(ConfigError, match=r"^optim\.momentum is not a known key; allowed keys of optim: name, lr"):
        OptimConfig.preset("adamw", momentum=0.9)


def test_class_weights_favour_rare_classes():
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights[1] > weights[0] and weights.mean() == pytest.approx(1.0)
    loss = build_loss(replace(OPTIM, class_weighted=True), [0, 0, 0, 1], 2)
    assert torch.allclose(loss.weight, weights)


def test_mixup_blends_clips_and_labels_with_one_weight():
    torch.manual_seed(0)
    video, target = torch.randn(6, 3, 2, 4, 4), torch.arange(6)  # one class per clip: partners are readable
    mixed, soft = mixup(video, target, 0.4, num_classes=6)
    assert mixed.shape == video.shape and soft.shape == (6, 6)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    lam = soft[0, 0]
    for i in range(6):
        partner = int(soft[i].argmin()) if soft[i, i] == 1 else int((soft[i] * (torch.arange(6) != i)).argmax())
        weight = soft[i, i] if soft[i, i] < 1 else torch.tensor(1.0)
        assert torch.allclose(mixed[i], weight * video[i] + (1 - weight) * video[partner], atol=1e-5)
        assert soft[i, i] == 1 or torch.isclose(soft[i, i], lam)
    loss = build_loss(OPTIM, [0, 1, 2], 6)(torch.randn(6, 6), soft)  # the loss takes soft targets
    assert torch.isfinite(loss)


def test_mixup_alpha_must_be_a_non_negative_number():
    assert OptimConfig.preset("adamw", mixup_alpha=0.2).mixup_alpha == 0.2
    assert OptimConfig.preset("adamw").mixup_alpha == 0.0
    for bad in (-1, "x", True):
        with pytest.raises(ConfigError, match=r"^optim\.mixup_alpha=.*: must be a number >= 0$"):
            OptimConfig.preset("adamw", mixup_alpha=bad)


def test_one_epoch_trains_with_mixup_on_blended_clips_and_soft_labels():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 3))
    data = [(torch.randn(4, 3, 2, 4, 4), torch.tensor([0, 1, 2, 0]), None) for _ in range(3)]
    optimizer = build_optimizer(model, OPTIM)
    scheduler = build_scheduler(optimizer, OPTIM, len(data), 1)
    inputs, targets = [], []
    model.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach().clone()))
    loss = build_loss(OPTIM, [0, 1, 2], 3)
    loss.register_forward_hook(lambda module, args, out: targets.append(args[1].detach().clone()))
    torch.manual_seed(0)
    stats = train_one_epoch(model, data, optimizer, scheduler, loss, torch.device("cpu"),
                            progress=False, mixup_alpha=0.2, num_classes=3)
    assert stats.clips == 12 and stats.loss > 0
    # The model saw blends of the batch's clips, and the loss took soft labels (rows sum to 1) mixing two classes.
    assert len(inputs) == len(targets) == 3
    assert all(wanted.shape == (4, 3) and torch.allclose(wanted.sum(1), torch.ones(4)) for wanted in targets)
    assert any(not torch.equal(seen, video) for (video, _, _), seen in zip(data, inputs, strict=True))
    assert any(((wanted > 0).sum(1) > 1).any() for wanted in targets)


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 3))
    data = [(torch.full((4, 3, 2, 4, 4), float("nan")), torch.tensor([0, 1, 2, 0]), None)]
    optimizer = build_optimizer(model, OPTIM)
    scheduler = build_scheduler(optimizer, OPTIM, len(data), 1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(DivergedError, match="training diverged.*optim.lr"):
        train_one_epoch(model, data, optimizer, scheduler, build_loss(OPTIM, [0, 1, 2], 3), torch.device("cpu"),
                        progress=False, desc="epoch 3/10")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # no step was taken


def test_resume_refuses_another_model_or_class_list_and_says_what_differs(tmp_path):
    recipe = tiny_recipe()
    config = recipe.model
    assert config == ModelConfig.preset("behaviornet", widths=[8, 16])
    model = build_model(config, 3)
    optimizer = build_optimizer(model, OPTIM)
    scheduler = build_scheduler(optimizer, OPTIM, 1, 1)
    path = write_checkpoint(
        tmp_path / "last.pt", recipe, ["a", "b", "c"], model.state_dict(), 1,
        optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(), scaler_state=None,
        fit_state={"epoch": 1, "best_score": 0.5, "best_epoch": 1, "epochs_without_improvement": 0, "history": []},
        rng_state=torch.get_rng_state(), cuda_rng_state=None)
    assert restore(path, model, optimizer, scheduler, None, config, ["a", "b", "c"]).epoch == 1
    with pytest.raises(CheckpointError, match=r"classes \['a', 'b', 'c'\] in the checkpoint, \['a', 'b'\] here"):
        restore(path, build_model(config, 2), optimizer, scheduler, None, config, ["a", "b"])
    other = ModelConfig.preset("behaviornet", widths=[8, 32])
    with pytest.raises(CheckpointError, match=r"model.widths \[8, 16\] in the checkpoint, \[8, 32\] here"):
        restore(path, build_model(other, 3), optimizer, scheduler, None, other, ["a", "b", "c"])


def test_a_checkpoint_of_an_earlier_version_still_reads(tmp_path):
    old = state()
    for key in ("fusion", "pretrained", "pretrained_strict", "freeze", "unfreeze_after"):
        old["recipe"]["model"].pop(key)
    old["recipe"]["optim"].pop("backbone_lr_mult")
    torch.save(old, tmp_path / "old.pt")
    recipe = read_checkpoint(tmp_path / "old.pt").recipe
    assert recipe.model.fusion == "late" and recipe.model.pretrained is None and recipe.optim.backbone_lr_mult == 1.0


def _plain_save(path, recipe, class_names, model_state, epoch, **training):
    """The mutant: write_checkpoint without behavior.atomic, torch.save straight onto the path."""
    torch.save({**training, "recipe": recipe.to_dict(), "class_names": list(class_names), "model_state": model_state,
                "epoch": epoch}, path)


@pytest.mark.parametrize("writer, atomic", [(write_checkpoint, True), (_plain_save, False)],
                         ids=["write_checkpoint", "mutant-plain-torch-save"])
def test_a_write_cut_off_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch, writer, atomic):
    """A kill or a full disk in the middle of a save: the file on disk is still the previous checkpoint. The mutant
    row shows the check tells an atomic write from a plain one (a plain save leaves half a file)."""
    recipe, path = tiny_recipe(), tmp_path / "last.pt"
    write_checkpoint(path, recipe, ["a", "b"], nn.Linear(2, 3).state_dict(), 1)
    before = path.read_bytes()
    real_save = torch.save

    def cut_off(obj, f, *args, **kwargs):
        whole = io.BytesIO()
        real_save(obj, whole, *args, **kwargs)
        half = whole.getvalue()[: len(whole.getvalue()) // 2]
        if isinstance(f, str | os.PathLike):
            with open(f, "wb") as fh:
                fh.write(half)
        else:
            f.write(half)
            f.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", cut_off)
    with pytest.raises(OSError, match="No space left"):
        writer(path, recipe, ["a", "b"], nn.Linear(2, 3).state_dict(), 2)
    monkeypatch.undo()
    assert (path.read_bytes() == before) is atomic
    if atomic:
        assert read_checkpoint(path).epoch == 1 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
