"""``python -m behavior.predict checkpoint=PATH input=DIR_OR_FILE output=FILE`` (console script: behavior-predict)."""

from __future__ import annotations

from omegaconf import DictConfig

from behavior.cli import entry_point
from behavior.predict.batch import PredictSettings, run


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    run(PredictSettings.from_mapping(cfg))


if __name__ == "__main__":
    main()
