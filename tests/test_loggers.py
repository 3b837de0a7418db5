"""trainer.logger: a tiny training run logged to TensorBoard and MLflow, read back with each tool's own reader; the
refusals before training; a logger failing mid-run; a bench's runs filed together."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from behavior.engine import loggers
from behavior.engine.checkpoint import upgraded_recipe
from behavior.engine.training import train_run
from behavior.errors import ConfigError
from behavior.recipe import Recipe
from tests.conftest import make_clip_tree
from tests.helpers import TINY, run_main, tiny_recipe

SETTINGS = [*(o for o in TINY if not o.startswith("model.")), "trainer.epochs=2", "data.cache=null"]
EPOCH_TAGS = ("train/loss", "train/acc", "lr", "val/loss", "val/acc", "train/clips_per_s")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_clip_tree(tmp_path_factory.mktemp("loggers") / "clips", per_class=4)


@pytest.fixture
def file_store(monkeypatch):
    # MlflowLogger sets it for a local store; the reader in the test needs it too (and must not leak it).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


@pytest.fixture(scope="module")
def logged(clips, tmp_path_factory):
    """One run logged to both tools at once."""
    tmp = tmp_path_factory.mktemp("both")
    uri = (tmp / "mlruns").as_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        result = train_run(tiny_recipe(f"data.root={clips}", *SETTINGS, "trainer.logger=[tensorboard,mlflow]",
                                       f"trainer.mlflow_uri={uri}"), tmp / "run")
    return tmp / "run", uri, result


def tensorboard_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return client, client.search_runs([found.experiment_id])


@pytest.mark.slow
def test_tensorboard_has_the_curves_the_test_metrics_and_the_confusion_matrix(logged):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, _, result = logged
    events = tensorboard_events(run_dir / "tensorboard")
    tags = events.Tags()
    for tag in EPOCH_TAGS:
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert events.Scalars("train/loss")[1].value == pytest.approx(result["history"][1]["train_loss"])
    for name in ("top1", "mean_class_accuracy", "macro_f1"):
        assert events.Scalars(f"test/{name}")[0].value == pytest.approx(result["metrics"][name])
    image = events.Images("test/confusion_matrix")[0]
    assert image.width > 100 and image.height > 100
    assert "config" in " ".join(tags["tensors"])  # the recipe as text
    # The HPARAMS tab's records, in the run's own folder (not a second run beside it)
    hparams = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.name"].string_value == "behaviornet"
    assert start.hparams["trainer.epochs"].number_value == 2
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert "test/top1" in [m.name.tag for m in experiment.metric_infos]
    assert [p.name for p in (run_dir / "tensorboard").iterdir() if p.is_dir()] == []


@pytest.mark.slow
def test_mlflow_has_the_run_its_params_metrics_and_files(logged, file_store):
    run_dir, uri, result = logged
    client, runs = mlflow_runs(uri, "behavior")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.tags["run_dir"] == str(run_dir)
    assert run.data.params["model.name"] == "behaviornet" and run.data.params["model.widths"] == "[8, 16]"
    assert run.data.params["trainer.logger"] == '["tensorboard", "mlflow"]'
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert run.data.metrics["test_top1"] == pytest.approx(result["metrics"]["top1"])
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "history.csv", "metrics.json"} <= files


def test_an_unknown_logger_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"^trainer\.logger=wandb: choose one of none, tensorboard, mlflow$"):
        tiny_recipe("trainer.logger=wandb")
    with pytest.raises(ConfigError, match=r"^trainer\.logger=wandb: "):
        tiny_recipe("trainer.logger=[tensorboard,wandb]")
    assert tiny_recipe("trainer.logger=[none]").trainer.logger == ()
    assert tiny_recipe("trainer.logger=mlflow").trainer.logger == ("mlflow",)


def test_a_checkpoint_without_the_logger_keys_still_reads():
    recipe = tiny_recipe("trainer.logger=tensorboard").to_dict()
    assert recipe["trainer"]["logger"] == ["tensorboard"]
    for key in ("logger", "mlflow_uri"):
        del recipe["trainer"][key]
    assert Recipe.from_config(upgraded_recipe(recipe)).trainer.logger == ()


def test_a_missing_package_stops_the_run_before_it_starts(clips, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code, out, err = run_main("behavior.train", f"data.root={clips}", f"hydra.run.dir={tmp_path / 'run'}",
                              *SETTINGS, "trainer.logger=[tensorboard,mlflow]")
    assert code == 2
    assert err.strip().splitlines()[-1] == ("error: trainer.logger=mlflow: needs the mlflow-skinny package "
                                            "(pip install 'behavior[mlflow]')")
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_a_logger_that_fails_mid_run_is_dropped_and_training_finishes(clips, tmp_path, monkeypatch, capsys):
    def disk_full(self, row):
        if row["epoch"] == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(loggers.TensorBoardLogger, "epoch", disk_full)
    result = train_run(tiny_recipe(f"data.root={clips}", *SETTINGS, "trainer.logger=tensorboard"), tmp_path / "run")
    assert result["metrics"]["top1"] >= 0 and (tmp_path / "run" / "metrics.json").is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: trainer.logger=tensorboard failed (epoch 2: OSError: [Errno 28] No space left on "
                        "device); training goes on without it"]
    assert "test/top1" not in tensorboard_events(tmp_path / "run" / "tensorboard").Tags()["scalars"]


def test_a_failed_run_is_marked_failed(tmp_path, file_store):
    uri = (tmp_path / "mlruns").as_uri()
    with pytest.raises(RuntimeError), loggers.open_loggers(["mlflow"], tmp_path / "run", mlflow_uri=uri) as log:
        log.start({"model": {"name": "x"}})
        log.epoch({"epoch": 1, "train_loss": 1.5, "lr": 0.1})
        raise RuntimeError("the loss diverged")
    client, runs = mlflow_runs(uri, "behavior")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert [m.value for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [1.5]


def test_long_and_nested_settings_fit_mlflow(tmp_path, file_store):
    uri = (tmp_path / "mlruns").as_uri()
    config = {"data": {"root": "x" * 7000, "synthetic": {"classes": None}}, "model": {"options": {}}, "seed": 0}
    with loggers.open_loggers(["mlflow"], tmp_path / "run", run_name="named", mlflow_uri=uri) as log:
        log.start(config)
    _, runs = mlflow_runs(uri, "behavior")
    params = runs[0].data.params
    assert len(params["data.root"]) == 6000 and params["data.synthetic.classes"] == "null"
    assert params["model.options"] == "{}" and params["seed"] == "0" and runs[0].info.run_name == "named"


@pytest.mark.slow
def test_a_bench_files_its_runs_in_one_experiment(clips, tmp_path, file_store):
    bench = tmp_path / "mybench"
    uri = (tmp_path / "mlruns").as_uri()
    code, out, err = run_main(
        "behavior.bench", f"data.root={clips}", f"hydra.run.dir={bench}", *SETTINGS, "trainer.epochs=1",
        "bench.models=[tiny]", "bench.seeds=[0,1]", "bench.cache_speed=false",
        "+bench.variants.tiny={base:behaviornet,overrides:{widths:[8,16]}}", "trainer.logger=mlflow",
        f"trainer.mlflow_uri={uri}")
    assert code == 0, err[-2000:]
    _, runs = mlflow_runs(uri, "bench:mybench")
    assert sorted(r.info.run_name for r in runs) == ["tiny_seed0", "tiny_seed1"]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_a_resumed_run_appends_to_its_tensorboard_folder(clips, tmp_path):
    run_dir = tmp_path / "run"
    first = [*SETTINGS, "trainer.epochs=1", "trainer.logger=tensorboard"]
    train_run(tiny_recipe(f"data.root={clips}", *first), run_dir)
    train_run(tiny_recipe(f"data.root={clips}", *first, "trainer.epochs=2", "trainer.resume=auto"), run_dir)
    assert [e.step for e in tensorboard_events(run_dir / "tensorboard").Scalars("train/loss")] == [1, 2]
