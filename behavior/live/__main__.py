"""``python -m behavior.live checkpoint=PATH source=0|FILE|URL [output=annotated.mp4] [show=true]``."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from behavior.cli import entry_point
from behavior.live.session import LiveSettings, run


@entry_point("live")
def main(cfg: DictConfig) -> None:
    stats = run(LiveSettings.from_mapping(cfg))
    if stats.stopped.startswith("the source failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
