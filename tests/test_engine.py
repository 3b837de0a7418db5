from __future__ import annotations

import pytest
import torch
from torch import nn

from behavior.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from behavior.engine.loop import mixup, train_one_epoch
from behavior.engine.optim import build_loss, build_optimizer, build_scheduler, class_weights, optim_config
from behavior.engine.trainer import restore
from behavior.errors import ConfigError, DivergedError
from behavior.models import build_model

OPTIM = {"name": "adamw", "lr": 0.01, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1,
         "min_lr_ratio": 0.01, "label_smoothing": 0.1, "class_weighted": False}


def state(**extra):
    return {"model_state": nn.Linear(2, 3).state_dict(), "model_config": {"name": "x"}, "class_names": ["a", "b"],
            "epoch": 1, **extra}


def test_checkpoint_round_trip_and_no_temp_files_left(tmp_path):
    path = save_checkpoint(tmp_path / "ck" / "last.pt", state(history=[{"epoch": 1, "loss": 0.5}]))
    loaded = load_checkpoint(path)
    assert loaded["class_names"] == ["a", "b"] and loaded["history"][0]["loss"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torn = tmp_path / "torn.pt"
    save_checkpoint(torn, state())
    torn.write_bytes(torn.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(torn)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a behavior checkpoint"):
        load_checkpoint(other)


class _CreatesFile:
    """Unpickling this calls open(path, "w"): a stand-in for code a hostile checkpoint would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_refuses_pickled_code(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save(state(payload=_CreatesFile(marker)), evil)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(evil)
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
    with pytest.raises(ConfigError, match="optim.lr"):
        build_optimizer(nn.Linear(2, 2), {**OPTIM, "lr": -1})
    with pytest.raises(ConfigError, match="optim.schedule"):
        build_scheduler(build_optimizer(nn.Linear(2, 2), OPTIM), {**OPTIM, "schedule": "steps"}, 1, 1)


def test_class_weights_favour_rare_classes():
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights[1] > weights[0] and weights.mean() == pytest.approx(1.0)
    loss = build_loss({**OPTIM, "class_weighted": True}, [0, 0, 0, 1], 2)
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
    assert optim_config({"mixup_alpha": 0.2}).mixup_alpha == 0.2 and optim_config({}).mixup_alpha == 0.0
    for bad in (-1, "x", True):
        with pytest.raises(ConfigError, match="optim.mixup_alpha"):
            optim_config({"mixup_alpha": bad})


def test_one_epoch_trains_with_mixup():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 3))
    data = [(torch.randn(4, 3, 2, 4, 4), torch.tensor([0, 1, 2, 0]), None) for _ in range(3)]
    optimizer = build_optimizer(model, OPTIM)
    scheduler = build_scheduler(optimizer, OPTIM, len(data), 1)
    stats = train_one_epoch(model, data, optimizer, scheduler, build_loss(OPTIM, [0, 1, 2], 3), torch.device("cpu"),
                            progress=False, mixup_alpha=0.2, num_classes=3)
    assert stats.clips == 12 and stats.loss > 0


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
    config = {"name": "behaviornet", "widths": [8, 16]}
    model = build_model(config, 3)
    optimizer = build_optimizer(model, OPTIM)
    scheduler = build_scheduler(optimizer, OPTIM, 1, 1)
    path = save_checkpoint(tmp_path / "last.pt", {
        "model_state": model.state_dict(), "model_config": config, "class_names": ["a", "b", "c"], "epoch": 1,
        "optimizer_state": optimizer.state_dict(), "scheduler_state": scheduler.state_dict(),
        "fit_state": {"epoch": 1, "best_score": 0.5, "best_epoch": 1, "epochs_without_improvement": 0,
                      "history": []}})
    assert restore(path, model, optimizer, scheduler, None, config, ["a", "b", "c"]).epoch == 1
    with pytest.raises(CheckpointError, match=r"classes \['a', 'b', 'c'\] in the checkpoint, \['a', 'b'\] here"):
        restore(path, build_model(config, 2), optimizer, scheduler, None, config, ["a", "b"])
    other = {"name": "behaviornet", "widths": [8, 32]}
    with pytest.raises(CheckpointError, match=r"model.widths \[8, 16\] in the checkpoint, \[8, 32\] here"):
        restore(path, build_model(other, 3), optimizer, scheduler, None, other, ["a", "b", "c"])
