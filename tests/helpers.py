"""Shared test helpers: the tiny training settings, running a command, tiny checkpoints, command settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from behavior.config import compose_config, plain
from behavior.engine.checkpoint import write_checkpoint
from behavior.models import ModelConfig, build_model
from behavior.recipe import Recipe, compose_recipe
from tests.conftest import REPO, make_clip_tree

# A model and input small enough that a training run over a dozen clips takes seconds.
TINY_MODEL = ["model.widths=[8,16]", "sampling.num_frames=4", "transform.size=40", "transform.crop_size=32"]
TINY = [*TINY_MODEL, "trainer.batch_size=4", "trainer.eval_batch_size=4", "trainer.num_workers=0",
        "trainer.progress=false", "data.val_fraction=0.25", "data.test_fraction=0.25", "data.scan_workers=1"]


def run_module(module: str, *overrides: str, check: bool = True, cwd: Path = REPO,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <module> <overrides>`` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    if module == "behavior.train" and not any(o.startswith("data.cache=") for o in overrides):
        # The default cache lives in the working directory; temp clips would pile up entries there run after run.
        overrides = (*overrides, "data.cache=null")
    proc = subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


class CreatesFile:
    """Unpickling this calls open(path, "w"): a stand-in for code a hostile checkpoint or weights file would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def free_port() -> int:
    """A TCP port nobody listens on now: each torchrun job in the tests gets its own rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(module: str, *args: str, processes: int = 2) -> list[str]:
    """``torchrun --nproc_per_node=<processes> -m <module> <args>`` with the venv's torchrun, on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            f"--master-port={free_port()}", "-m", module, *args]


def torchrun_env(**extra: str) -> dict[str, str]:
    """This checkout's code in every rank, one torch thread each (two ranks share two cores), output unbuffered."""
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def run_main(module: str, *overrides: str) -> tuple[int, str, str]:
    """``python -m <module> <overrides>`` in this process (a subprocess costs ~6 s of imports): its exit status
    and what it printed. Output is captured here, so call it outside pytest's own capture (``capsys.disabled``
    is not needed: sys.stdout/stderr are swapped for the call)."""
    import contextlib
    import importlib
    import io

    entry = module if module in ("behavior.train", "behavior.evaluate", "behavior.bench", "behavior.export") \
        else module + ".__main__"
    main = importlib.import_module(entry).main
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [module, *overrides]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def tiny_recipe(*overrides: str) -> Recipe:
    """The train recipe with the tiny model and input, plus ``overrides`` (command-line syntax)."""
    return compose_recipe([*TINY_MODEL, *overrides])


def model_config(name: str, **options) -> ModelConfig:
    """A ModelConfig of a model registered by a test: RGB, from scratch, with ``options``."""
    return ModelConfig(name, "rgb", "late", None, False, "none", None, options)


def tiny_checkpoint(path: Path, class_names: list[str], recipe: Recipe | None = None,
                    model: torch.nn.Module | None = None, seed: int = 0) -> Path:
    """An untrained model saved the way behavior.train saves one (``recipe`` default: :func:`tiny_recipe`)."""
    recipe = recipe or tiny_recipe()
    if model is None:
        torch.manual_seed(seed)
        model = build_model(recipe.model, len(class_names))
    return write_checkpoint(path, recipe, class_names, model.state_dict(), epoch=1)


def command_config(config_name: str, **values) -> dict:
    """A command's config as Hydra composes it (conf/<config_name>.yaml), with ``values`` merged in, for
    ``<Settings>.from_mapping`` in this process."""
    cfg = compose_config(config_name)
    OmegaConf.set_struct(cfg, False)  # keys a command's defaults list leaves out (live's roi) may be given too
    return plain(OmegaConf.merge(cfg, values))


def train_tiny_run(folder: Path) -> Path:
    """A finished one-epoch run of the tiny model on 6 generated clips per class: ``folder/run``."""
    root = make_clip_tree(folder / "clips", per_class=6)
    run = folder / "run"
    run_module("behavior.train", f"data.root={root}", f"hydra.run.dir={run}", "trainer.epochs=1", *TINY)
    return run
