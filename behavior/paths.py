"""Where things are: the packaged configs, paths the user typed, and the folder a run was started from.

Relative paths (``data.root``, ``data.cache``, ``hydra.run.dir``, ``output``...) mean what they mean in the shell
the command ran in: they are taken relative to the working directory, never to where the package is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

PACKAGE = Path(__file__).resolve().parent
RUN_ROOTS = ("outputs", "multirun")  # where the entry points put their run folders by default


def conf_dir() -> Path:
    """The Hydra config folder: ``behavior/conf`` inside an installed wheel, ``conf/`` beside the package in a
    source checkout (where users read and copy it)."""
    for folder in (PACKAGE / "conf", PACKAGE.parent / "conf"):
        if (folder / "train.yaml").is_file():
            return folder
    raise FileNotFoundError(f"behavior's configuration (conf/train.yaml) is missing from {PACKAGE}: reinstall the "
                            "package")


def user_path(value: str | os.PathLike) -> Path:
    """A path as the user typed it: ``~`` expanded, relative to the working directory, made absolute."""
    return Path(os.path.abspath(Path(value).expanduser()))


def work_root(start: str | os.PathLike | None = None) -> Path:
    """The folder the commands were run from, searched upward from ``start`` (default: the cwd).

    A notebook runs one level down (``notebooks/``), so it looks for the nearest folder holding a source
    checkout's ``conf/train.yaml`` or a run folder root (``outputs/``); without one it is ``start`` itself."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "train.yaml").is_file() or any((folder / r).is_dir() for r in RUN_ROOTS):
            return folder
    return here


def run_origin(run_dir: str | os.PathLike) -> Path:
    """The working directory a run was started from, which its relative clip paths are relative to.

    Hydra records it in ``.hydra/hydra.yaml``; a run folder without it falls back to :func:`work_root`."""
    hydra_file = Path(run_dir) / ".hydra" / "hydra.yaml"
    try:
        cwd = yaml.safe_load(hydra_file.read_text(encoding="utf-8"))["hydra"]["runtime"]["cwd"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        cwd = None
    return Path(cwd) if cwd and Path(cwd).is_dir() else work_root(run_dir)
