"""The package as a user installs it: a wheel, not editable, in a fresh venv, run from an unrelated folder."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "behavior", "conf")


def run(args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env={**env, "OMP_NUM_THREADS": "2"}, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the project's wheel; its other packages come from the test's own environment (a .pth
    line), so nothing is downloaded and the install takes seconds."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist",
         source], tmp)
    (wheel,) = (tmp / "dist").glob("behavior-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    site = Path(run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    tmp).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test_environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
         wheel], tmp)
    return venv


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "behavior").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow  # builds and installs a wheel, trains
def test_the_installed_package_trains_and_predicts_from_any_folder(installed, tmp_path):
    bin_dir = installed / "bin"
    where = run([bin_dir / "python", "-c", "import behavior.paths as p; print(p.__file__); print(p.conf_dir())"],
                tmp_path).stdout.split()
    site = Path(where[0]).parents[1]
    assert str(site).startswith(str(installed)) and Path(where[1]) == site / "behavior" / "conf"
    before = files_under(site / "behavior")

    work = tmp_path / "work"
    work.mkdir()
    proc = run([bin_dir / "behavior-train", "trainer.epochs=1", "data.synthetic.clips_per_class=4",
                "transform=small", "sampling.num_frames=4", "trainer.num_workers=0"], work)
    assert "wall time" in proc.stdout
    (run_dir,) = (work / "outputs" / "train").iterdir()
    assert (run_dir / "best.pt").is_file() and (run_dir / "metrics.json").is_file()
    assert (work / "data" / "synthetic").is_dir() and (work / "data" / "cache").is_dir()

    clips = next(p for p in (work / "data" / "synthetic").iterdir() if p.is_dir())
    run([bin_dir / "behavior-predict", f"checkpoint={run_dir / 'best.pt'}", f"input={clips}", "output=preds.csv",
         "num_workers=0"], work)
    rows = (work / "preds.csv").read_text().splitlines()
    assert len(rows) == 1 + len(list(clips.glob("*.mp4"))) and all(",ok," in row for row in rows[1:])

    proc = run([bin_dir / "python", "-m", "behavior.train", "--cfg", "job"], work)
    assert "backend: pyav" in proc.stdout
    assert files_under(site / "behavior") == before, "a run wrote into the installed package"


def test_console_scripts_point_at_entry_points():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, _, func = target.partition(":")
        tree = ast.parse((REPO / Path(*module.split("."))).with_suffix(".py").read_text())
        assert any(isinstance(node, ast.FunctionDef) and node.name == func for node in tree.body), target


# Modules run with `python -m` that have no main() for a console script to call.
WITHOUT_SCRIPT = {"behavior.data.faces"}


def test_every_python_m_command_has_a_console_script():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    targets = {target.partition(":")[0] for target in scripts.values()}
    commands = {".".join(path.relative_to(REPO).with_suffix("").parts) for path in (REPO / "behavior").rglob("*.py")
                if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")}
    missing = sorted(commands - WITHOUT_SCRIPT - targets)
    assert not missing, f"add [project.scripts] for {missing}"
    assert WITHOUT_SCRIPT <= commands  # an exception that is no longer a command is dropped from the list
