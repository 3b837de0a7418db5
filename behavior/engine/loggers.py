"""Training curves in the tracking tools users already have (``trainer.logger``): TensorBoard and MLflow.

    _carry_out -> open_loggers(...) -> start(recipe) -> epoch(row) per epoch -> finish(test metrics) -> close

Only the main rank logs. The tools' packages are optional extras, imported here only when chosen, so a run with
``trainer.logger=none`` imports nothing new. Once started, a logger that fails (disk full, server gone) is dropped
with one warning line: the training run is worth more than its curves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from behavior.errors import BehaviorError, ConfigError

LOGGERS = ("none", "tensorboard", "mlflow")
# tool: (module it needs, the package that brings it, the extra of behavior that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard", "tensorboard"),
            "mlflow": ("mlflow", "mlflow-skinny", "mlflow")}
TEST_METRICS = ("top1", "top5", "mean_class_accuracy", "macro_f1")
DEFAULT_EXPERIMENT = "behavior"  # MLflow experiment of a plain training run; a bench's runs go to its own
MLFLOW_PARAM_LENGTH, MLFLOW_KEY_LENGTH, MLFLOW_BATCH = 6000, 250, 100  # the limits MLflow's API enforces


def require_packages(names: Sequence[str]) -> None:
    """One line naming the first chosen logger whose package is not installed: before any clip is read."""
    for name in names:
        module, package, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"trainer.logger={name}: needs the {package} package "
                              f"(pip install 'behavior[{extra}]')")


def flat_config(config: Mapping, prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested settings as dotted keys (``model.name``) with scalar values; lists and null as their JSON text."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, name + "."))
        elif isinstance(value, str | int | float | bool):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def numbers(row: Mapping) -> dict[str, float]:
    """The numeric entries of an epoch row or metrics dict (bools and nested records left out)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class RunLogger:
    """One tool's record of a training run. The base logs nothing: trainer.logger=none."""

    name = "none"

    def start(self, config: dict) -> None:
        """The run begins (or resumes); ``config`` is the recipe as plain dicts."""

    def epoch(self, row: dict) -> None:
        """One finished epoch: ``epoch``, ``train_loss``, ``train_acc``, ``lr``, ``val_loss``, ``val_acc``..."""

    def finish(self, metrics: dict, confusion_png: Path | None) -> None:
        """The final report's metrics (empty when there was no split to report on) and its confusion matrix."""

    def close(self, error: BaseException | None = None) -> None:
        """The run is over: ``error`` is what stopped it, None when it ended normally."""


class TensorBoardLogger(RunLogger):
    """Event files in ``<run dir>/tensorboard``; a resumed run appends there, its steps going on from the epoch it
    resumed after."""

    name = "tensorboard"

    def __init__(self, run_dir: Path):
        self.folder = run_dir / "tensorboard"
        self.writer = None

    def start(self, config: dict) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(self.folder))
        text = yaml.safe_dump(config, sort_keys=False)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))  # a code block
        # The HPARAMS tab: the settings of this run, and the scalars it compares runs by (written by finish;
        # add_hparams would put them in a folder of their own, a second run in TensorBoard's list).
        tags = [f"test/{m}" for m in TEST_METRICS] + ["val/acc"]
        for summary in hparams(flat_config(config), dict.fromkeys(tags, 0.0)):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def epoch(self, row: dict) -> None:
        step = row["epoch"]
        for key, value in numbers(row).items():
            if key != "epoch":
                self.writer.add_scalar(re.sub(r"^(train|val)_", r"\1/", key), value, step)
        self.writer.flush()  # a killed run keeps its curves up to the last epoch (SummaryWriter waits 2 minutes)

    def finish(self, metrics: dict, confusion_png: Path | None) -> None:
        split, step = metrics.get("split", "test"), metrics.get("epochs_run", 0)
        for key in TEST_METRICS:
            if key in metrics:
                self.writer.add_scalar(f"{split}/{key}", float(metrics[key]), step)
        if confusion_png is not None and confusion_png.is_file():
            from matplotlib.image import imread

            image = imread(confusion_png)[..., :3]  # RGBA floats in [0, 1]
            self.writer.add_image(f"{split}/confusion_matrix", image, step, dataformats="HWC")
        self.writer.flush()

    def close(self, error: BaseException | None = None) -> None:
        if self.writer is not None:
            self.writer.close()


class MlflowLogger(RunLogger):
    """One MLflow run per training run (a resumed run starts a new MLflow run, named like the first: simpler than
    keeping the run id in the run folder, and the history up to the resumed epoch is in its history.csv)."""

    name = "mlflow"

    def __init__(self, run_dir: Path, run_name: str, experiment: str, uri: str | None):
        from behavior.paths import work_root

        self.run_dir, self.run_name, self.experiment = run_dir, run_name, experiment
        self.uri = uri or (work_root() / "mlruns").as_uri()
        self.client, self.run_id = None, None

    def start(self, config: dict) -> None:
        if self.uri.startswith("file:") or "://" not in self.uri:
            # MLflow 3 refuses its file store unless asked for it (it wants a database); a local mlruns/ that needs
            # no server or database is what plain runs get. A database or server is one trainer.mlflow_uri away.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        run = self.client.create_run(experiment_id, run_name=self.run_name,
                                     tags={"run_dir": str(self.run_dir)})
        self.run_id = run.info.run_id
        params = [Param(re.sub(r"[^\w\-. :/]", "_", k)[:MLFLOW_KEY_LENGTH], str(v)[:MLFLOW_PARAM_LENGTH])
                  for k, v in flat_config(config).items()]
        for i in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MLFLOW_BATCH])

    def epoch(self, row: dict) -> None:
        self._metrics({k: v for k, v in numbers(row).items() if k != "epoch"}, row["epoch"])

    def finish(self, metrics: dict, confusion_png: Path | None) -> None:
        split = metrics.get("split", "test")
        self._metrics({f"{split}_{k}": float(metrics[k]) for k in TEST_METRICS if k in metrics},
                      metrics.get("epochs_run", 0))
        for path in (confusion_png, self.run_dir / "history.csv", self.run_dir / "metrics.json"):
            if path is not None and path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in values.items() if math.isfinite(v)]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def close(self, error: BaseException | None = None) -> None:
        if self.run_id is None:
            return
        status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self.client.set_terminated(self.run_id, status)


class FanOut(RunLogger):
    """Every chosen logger, each dropped with a warning line the first time it fails after its start. A context
    manager: leaving it closes every logger with the error that ended the run, if any."""

    def __init__(self, loggers: Sequence[RunLogger]):
        self.loggers = list(loggers)

    def start(self, config: dict) -> None:
        for log in self.loggers:  # nothing trained yet: a tool that cannot start stops the run, in one line
            try:
                log.start(config)
            except Exception as err:
                raise BehaviorError(f"trainer.logger={log.name}: cannot start logging ({first_line(err)})") from None

    def _each(self, what: str, call) -> None:
        for log in list(self.loggers):
            try:
                call(log)
            except Exception as err:
                print(f"warning: trainer.logger={log.name} failed ({what}: {first_line(err)}); training goes on "
                      "without it", file=sys.stderr, flush=True)
                self.loggers.remove(log)
                try:
                    log.close(err)
                except Exception:  # it is broken already; the warning said so
                    pass

    def epoch(self, row: dict) -> None:
        self._each(f"epoch {row.get('epoch')}", lambda log: log.epoch(row))

    def finish(self, metrics: dict, confusion_png: Path | None) -> None:
        self._each("final metrics", lambda log: log.finish(metrics, confusion_png))

    def close(self, error: BaseException | None = None) -> None:
        self._each("closing", lambda log: log.close(error))
        self.loggers = []

    def __enter__(self) -> FanOut:
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.close(error)


def open_loggers(names: Sequence[str], run_dir: Path, run_name: str | None = None, group: str | None = None,
                 mlflow_uri: str | None = None) -> FanOut:
    """The loggers ``trainer.logger`` names (none: a FanOut of nothing), not started yet. ``run_name`` defaults to
    the run folder's name; ``group``: the runs this one belongs with (a bench's), the MLflow experiment
    (TensorBoard groups by folder)."""
    made: list[RunLogger] = []
    for name in names:
        if name == "tensorboard":
            made.append(TensorBoardLogger(run_dir))
        elif name == "mlflow":
            made.append(MlflowLogger(run_dir, run_name or run_dir.name, group or DEFAULT_EXPERIMENT, mlflow_uri))
    return FanOut(made)
