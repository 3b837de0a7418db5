"""``python -m behavior.train``: train a behavior classifier and report per-class results on the test split."""

from __future__ import annotations

from omegaconf import DictConfig

from behavior.cli import entry_point, hydra_run_dir
from behavior.engine.training import train_run
from behavior.recipe import Recipe


@entry_point("train")
def main(cfg: DictConfig) -> float:
    result = train_run(Recipe.from_config(cfg), hydra_run_dir())
    return result["metrics"].get("top1", float("nan"))


if __name__ == "__main__":
    main()
