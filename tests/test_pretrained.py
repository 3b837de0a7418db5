"""model.pretrained: torchvision weights through torch's cache (offline), weights files, fine-tuning a run."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models import video

from behavior.engine.training import initial_weights, plan_training, run_training, train_run
from behavior.errors import ConfigError
from behavior.models import ModelConfig, build_model
from behavior.models.pretrained import fetch, load_pretrained, weights_source
from behavior.recipe import compose_recipe
from tests.conftest import make_clip_tree
from tests.helpers import TINY, CreatesFile, run_main, tiny_checkpoint, tiny_recipe

R3D_FILE = "r3d_18-b3b3357e.pth"  # os.path.basename(R3D_18_Weights.KINETICS400_V1.url)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache, and no download: any fetch that is not served from the cache fails."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("BEHAVIOR_OFFLINE", "1")
    return home / "hub" / "checkpoints"


def cached_r3d(cache: Path) -> dict[str, torch.Tensor]:
    """torchvision's r3d_18 with random values, saved under the file name torchvision's weights API expects."""
    torch.manual_seed(1)
    state = video.r3d_18(weights=None).state_dict()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / R3D_FILE)
    return state


def test_kinetics_weights_load_from_the_cache(torch_home):
    state = cached_r3d(torch_home)
    recipe = compose_recipe(["model=r3d_18", "model.pretrained=R3D_18_Weights.KINETICS400_V1"])
    source = weights_source(recipe.model.pretrained)
    assert source.kind == "torchvision" and source.file == torch_home / R3D_FILE and fetch(source) == source.file
    model = build_model(recipe.model, 3)
    report = load_pretrained(model, source)
    assert report.new == ["fc.weight", "fc.bias"] and report.skipped == ["fc.weight", "fc.bias"]
    assert report.summary().startswith(f"loaded {len(state) - 2}/{len(state)} tensors; new: fc.weight, fc.bias")
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    # the input is normalised as the weights were trained (torchvision's metadata), unless set on the command line
    assert recipe.transform.mean == pytest.approx((0.43216, 0.394666, 0.37645))
    assert compose_recipe(["model=r3d_18", "model.pretrained=R3D_18_Weights.KINETICS400_V1",
                           "transform.mean=[0.5,0.5,0.5]"]).transform.mean == (0.5, 0.5, 0.5)
    assert compose_recipe(["model=r3d_18"]).transform.mean == (0.45, 0.45, 0.45)


def test_imagenet_weights_load_into_the_attention_backbone(torch_home):
    from torchvision.models import resnet18

    torch.manual_seed(2)
    state = resnet18(weights=None).state_dict()
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / "resnet18-f37072fd.pth")  # ResNet18_Weights.IMAGENET1K_V1's file name
    recipe = compose_recipe(["model=behaviornet_resnet18", "model.pretrained=ResNet18_Weights.IMAGENET1K_V1"])
    assert recipe.transform.mean == pytest.approx((0.485, 0.456, 0.406))  # ImageNet's, from the weights' metadata
    model = build_model(recipe.model, 5)
    report = load_pretrained(model, weights_source(recipe.model.pretrained))
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert all(torch.equal(own["backbone.net." + k], v) for k, v in backbone.items())
    assert len(report.loaded) == len(backbone) and report.unused == ["backbone.net.fc.bias", "backbone.net.fc.weight"]
    assert all(k.startswith(("backbone.attention.", "head.")) for k in report.new)
    # weights of another network are refused by name, not loaded half-way
    cached_r3d(torch_home)
    with pytest.raises(ConfigError, match=r"weights of r3d_18, but the model is built on resnet18"):
        load_pretrained(model, weights_source("R3D_18_Weights.KINETICS400_V1"))


def test_offline_without_the_file_is_one_line_naming_it_and_its_url(torch_home, monkeypatch):
    source = weights_source("R3D_18_Weights.KINETICS400_V1")
    with pytest.raises(ConfigError, match=rf"^model\.pretrained=R3D_18_Weights\.KINETICS400_V1: {R3D_FILE} is not in "
                                          r"torch's cache .* \(BEHAVIOR_OFFLINE=1\); fetch https://download\.pytorch"
                                          rf"\.org/models/{R3D_FILE} on a machine with network and copy it into "):
        fetch(source)
    monkeypatch.delenv("BEHAVIOR_OFFLINE")

    def no_network(url, dst, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ConfigError, match=r"cannot be downloaded here \(\[Errno -3\] Temporary failure"):
        fetch(source)
    assert not list(torch_home.glob("*"))  # no partial file left in the cache


def test_unknown_weights_and_missing_files_are_one_line(torch_home, tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.pretrained=ResNet18_Weights\.NOPE: torchvision has no such"):
        weights_source("ResNet18_Weights.NOPE")
    with pytest.raises(ConfigError, match=r"^model\.pretrained=.*nope\.pth: file not found"):
        weights_source(str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match=r"^model\.pretrained=.*: is a folder"):
        weights_source(str(tmp_path))
    cached_r3d(torch_home)
    recipe = tiny_recipe("model.pretrained=R3D_18_Weights.KINETICS400_V1")  # behaviornet's own resnet
    with pytest.raises(ConfigError, match="no tensor of it fits this model"):
        load_pretrained(build_model(recipe.model, 3), weights_source(recipe.model.pretrained))


def test_wrong_files_are_one_line_errors_and_code_never_runs(tmp_path):
    model = build_model(tiny_recipe().model, 3)
    not_a_state_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_state_dict)
    with pytest.raises(ConfigError, match=r"list\.pt: not a state dict"):
        load_pretrained(model, weights_source(str(not_a_state_dict)))
    wrong_shapes = tmp_path / "shapes.pth"
    grown = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in model.state_dict().items() if v.ndim}
    torch.save(grown, wrong_shapes)
    for strict in (False, True):
        with pytest.raises(ConfigError, match=r"shapes\.pth: no tensor of it fits"):
            load_pretrained(model, weights_source(str(wrong_shapes)), strict=strict)
    one_off = tmp_path / "one_off.pth"
    state = dict(model.state_dict())
    state["head.weight"] = torch.zeros(7, 7)
    torch.save(state, one_off)
    assert "skipped (shape): head.weight" in load_pretrained(model, weights_source(str(one_off))).summary()
    with pytest.raises(ConfigError, match=r"pretrained_strict=true and not every tensor fits: .*skipped \(shape\)"):
        load_pretrained(model, weights_source(str(one_off)), strict=True)
    marker, evil = tmp_path / "marker", tmp_path / "evil.pth"
    torch.save({"conv.weight": CreatesFile(marker)}, evil)
    with pytest.raises(ConfigError, match=r"evil\.pth: cannot be loaded safely as weights"):
        weights_source(str(evil))
    assert not marker.exists()


def test_freezing_needs_pretrained_weights():
    with pytest.raises(ConfigError, match=r"^model\.freeze=backbone: .*set model\.pretrained"):
        tiny_recipe("model.freeze=backbone")
    with pytest.raises(ConfigError, match=r"^model\.unfreeze_after=2: needs model\.freeze"):
        ModelConfig.preset("behaviornet", pretrained="x.pt", unfreeze_after=2)


@pytest.mark.slow
def test_fine_tuning_a_run_on_a_new_class_list(tmp_path, capsys):
    four = make_clip_tree(tmp_path / "four", classes=("left", "right", "up", "down"), per_class=4)
    two = make_clip_tree(tmp_path / "two", classes=("cw", "ccw"), per_class=6)
    settings = [*TINY[len(TINY) - 7:], "trainer.epochs=2", "data.cache=null"]
    first = tmp_path / "first"
    train_run(tiny_recipe(f"data.root={four}", *settings), first)
    source = first / "best.pt"
    recipe = tiny_recipe(f"data.root={two}", f"model.pretrained={source}", "model.freeze=backbone",
                         "model.unfreeze_after=1", "optim.backbone_lr_mult=0.1", *settings)
    plan = plan_training(recipe, tmp_path / "second")
    model = build_model(recipe.model, 2)
    record = initial_weights(plan, model)
    line = capsys.readouterr().out
    trained = torch.load(source, weights_only=True)["model_state"]
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in trained.items() if not k.startswith("head."))
    assert f"initial weights {source}: loaded {len(own) - 2}/{len(own)} tensors; new: head.weight, head.bias" \
        in line
    assert record["kind"] == "checkpoint" and record["sha256"] and record["frozen"] and record["slow"]
    assert not any(name.startswith("head.") for name in record["frozen"])
    result = run_training(plan)
    assert result["metrics"]["num_clips"] > 0
    assert result["metrics"]["initial_weights"]["pretrained"] == str(source)
    saved = torch.load(tmp_path / "second" / "last.pt", weights_only=True)
    assert saved["initial_weights"]["frozen"] == record["frozen"]
    assert "the " + str(len(record["frozen"])) + " frozen pretrained tensors train from now on" in \
        capsys.readouterr().out
    # evaluate says where the model started from, and so does its report
    code, out, err = run_main("behavior.evaluate", f"checkpoint={tmp_path / 'second' / 'best.pt'}", f"data.root={two}",
                              f"hydra.run.dir={tmp_path / 'eval'}", "num_workers=0", "progress=false")
    assert code == 0, err
    assert f"the model was trained from {source} (checkpoint, sha256 {record['sha256'][:12]})" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["initial_weights"]["sha256"] == record["sha256"]


def test_a_bench_variant_with_weights_gets_their_normalisation():
    from behavior.bench import run_recipe
    from behavior.config import compose_config, plain

    recipe = compose_recipe(["model=r3d_18"])
    composed = plain(compose_config("bench", ["model=r3d_18"]).transform)
    variant = ModelConfig.preset("r3d_18", pretrained="R3D_18_Weights.KINETICS400_V1")
    assert run_recipe(recipe, variant, 0, composed).transform.mean == pytest.approx((0.43216, 0.394666, 0.37645))
    assert run_recipe(recipe, ModelConfig.preset("r3d_18"), 0, composed).transform.mean == (0.45, 0.45, 0.45)


def test_a_two_stream_run_starts_a_one_stream_model_and_back(tmp_path):
    fused = tiny_recipe("model.input=rgb+flow")
    source = tiny_checkpoint(tmp_path / "fused.pt", ["a", "b", "c"], fused,
                             build_model(fused.model, 3, fused.flow_channels))
    rgb_state = {k[len("rgb."):]: v for k, v in torch.load(source, weights_only=True)["model_state"].items()
                 if k.startswith("rgb.")}
    single = build_model(tiny_recipe().model, 2)
    report = load_pretrained(single, weights_source(str(source)))
    assert report.new == ["head.weight", "head.bias"]  # the RGB stream's body, a head for 2 classes
    assert all(torch.equal(single.state_dict()[k], v) for k, v in rgb_state.items() if not k.startswith("head."))
    back = tiny_checkpoint(tmp_path / "single.pt", ["a", "b"], tiny_recipe(), single)
    again = build_model(fused.model, 2, fused.flow_channels)
    loaded = load_pretrained(again, weights_source(str(back))).loaded
    assert loaded and all(name.startswith("rgb.") for name in loaded)
