"""``python -m behavior.train``: train a behavior classifier and report per-class results on the test split."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from behavior.cli import entry_point
from behavior.config import device_of
from behavior.engine.distributed import collective, on_main, start
from behavior.engine.training import TrainPlan, plan_training, run_training
from behavior.recipe import Recipe


def prepare(cfg: DictConfig, run_dir: Path, run_dir_given: bool) -> TrainPlan:
    """Check the run; under torchrun rank 0 checks (one pre-scan, one run folder) and every rank gets its plan."""
    recipe = Recipe.from_config(cfg)
    ranks = start(device_of(recipe.trainer.device))
    with collective(ranks):
        plan = on_main(lambda: plan_training(recipe, run_dir, run_dir_given=run_dir_given))
    return replace(plan, ranks=ranks)


@entry_point("train", prepare=prepare, log=True)
def main(cfg: DictConfig, plan: TrainPlan) -> float:
    try:
        result = run_training(plan)
    except KeyboardInterrupt:
        print(interrupted_message(plan.run_dir), file=sys.stderr)
        sys.exit(130)
    return result["metrics"].get("top1", float("nan"))


def interrupted_message(run_dir: Path) -> str:
    if not (run_dir / "last.pt").is_file():
        return f"interrupted before the first epoch ended: no checkpoint in {run_dir}; nothing to resume"
    overrides = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "trainer.resume="))]
    command = shlex.join(["python", "-m", "behavior.train", *overrides, f"hydra.run.dir={run_dir}",
                          "trainer.resume=auto"])
    return f"interrupted: the checkpoints of the finished epochs are kept in {run_dir}; continue with:\n  {command}"


if __name__ == "__main__":
    main()
