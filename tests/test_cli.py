"""The command line as a user meets it (issue 14): --help per command, paths typed as they are."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_clip_tree
from tests.helpers import TINY, run_main, run_module


@pytest.mark.parametrize("module, config", [("behavior.train", "train"), ("behavior.evaluate", "evaluate"),
                                            ("behavior.predict", "predict"), ("behavior.live", "live"),
                                            ("behavior.bench", "bench")])
def test_help_lists_only_what_the_command_accepts(module, config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(module, "--help")
    assert code == 0 and out.startswith(f"usage: python -m {module}")
    assert "checkpoint=null" in out or config in ("train", "bench")
    if config in ("evaluate", "predict", "live"):
        assert "model:" not in out and "transform:" not in out  # groups it would reject
    else:
        assert "trainer.epochs=" in out and "r3d_18" in out
    assert not list(tmp_path.iterdir())  # --help writes nothing


@pytest.mark.slow  # a training run in a subprocess
def test_paths_with_accents_brackets_and_spaces_are_typed_as_they_are(tmp_path):
    root = make_clip_tree(tmp_path / "café [1] clips", classes=("left", "right"), per_class=3)
    run = tmp_path / "runs [a]" / "ré"
    # the argument list a shell hands over: the quoting happens in the command (one subprocess keeps it honest)
    run_module("behavior.train", f"data.root={root}", f"hydra.run.dir={run}", "trainer.epochs=1", *TINY)
    output = tmp_path / "préd #1.csv"
    code, _, err = run_main("behavior.predict", f"checkpoint={run / 'best.pt'}", f"input={root / 'left'}",
                            f"output={output}", "num_workers=0", "progress=false")
    assert code == 0, err
    assert output.is_file() and str(root / "left") in output.read_text(encoding="utf-8")
    assert json.loads((run / "metrics.json").read_text())["num_clips"] >= 2
