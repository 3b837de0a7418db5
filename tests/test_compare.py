"""behavior.compare on run folders made with the report writer (no training): tables, config differences, page."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from behavior.compare import column_names, main
from behavior.report.writer import write_history, write_report
from tests.helpers import tiny_checkpoint, tiny_recipe

CLASSES = ["fight", "walk", "wave"]
CONFIG = {"model": {"name": "behaviornet", "attention": True, "widths": [8, 16]}, "optim": {"lr": 0.004},
          "trainer": {"epochs": 3, "progress": True}, "seed": 0}


def history(rise: float) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "val_acc": min(1.0, rise * e)} for e in (1, 2, 3)]


def make_run(folder: Path, correct: int, attention: bool = True, progress: bool = True,
             finished: bool = True) -> Path:
    """A run folder as behavior.train leaves it: .hydra/config.yaml, history.csv and (when finished) the report,
    with ``correct`` of 9 clips right."""
    config = {**CONFIG, "model": {**CONFIG["model"], "attention": attention},
              "trainer": {**CONFIG["trainer"], "progress": progress}}
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    write_history(folder, history(0.1 * correct / 3))
    if finished:
        y = np.repeat(np.arange(3), 3)
        pred = np.where(np.arange(9) < correct, y, (y + 1) % 3)
        write_report(folder, [f"clip{i}.mp4" for i in range(9)], y, np.eye(3)[pred], CLASSES,
                     extra={"best_epoch": 3, "epochs_run": 3})
    return folder


def compare(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def external_links(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*https?://""", page, flags=re.IGNORECASE)


def test_two_runs_show_both_metrics_and_only_the_keys_that_differ(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path / "attn", correct=8)
    b = make_run(tmp_path / "noattn", correct=5, attention=False, progress=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = compare(capsys, str(a), "noattn")  # a relative RUN_DIR too
    assert code == 0, err
    metrics, _, config = out.partition("config differences")
    assert re.search(r"^top1 .*\| 0\.8889\* .*\| 0\.5556 .*\| -0\.3333", metrics, flags=re.M), metrics
    assert "f1:fight" in metrics and "3/3" in metrics
    assert re.search(r"^model\.attention +\| true +\| false", config, flags=re.M), config
    # Unchanged keys are not listed, nor trainer.progress, which differs but changes nothing.
    for key in ("optim.lr", "model.widths", "trainer.epochs", "trainer.progress", "seed"):
        assert key not in config
    page_path = tmp_path / "compare.html"
    assert f"wrote {page_path.resolve()}" in out
    page = page_path.read_text(encoding="utf-8")
    assert "attn" in page and "noattn" in page and "model.attention" in page
    assert "<b>0.8889</b>" in page
    assert page.count('<img src="data:image/png;base64,') == 2  # the bar chart and the validation curves
    assert not external_links(page) and "<script" not in page

    code, out, _ = compare(capsys, str(a), str(b), "--all-keys", "--output", str(tmp_path / "all" / "c.html"))
    assert code == 0 and "trainer.progress" in out and "optim.lr" in out
    assert (tmp_path / "all" / "c.html").is_file()


def test_an_unfinished_run_is_shown_with_a_note(tmp_path, capsys):
    done = make_run(tmp_path / "done", correct=7)
    cut = make_run(tmp_path / "cut", correct=4, attention=False, finished=False)
    code, out, err = compare(capsys, str(done), str(cut), "--output", str(tmp_path / "c.html"))
    assert code == 0, err
    assert "cut: no metrics.json (unfinished run), 3 epochs in history.csv" in out
    assert re.search(r"^top1 .*\| 0\.7778 .*\|\s+\|", out, flags=re.M), out
    assert "model.attention" in out
    assert "no metrics.json (unfinished run)" in (tmp_path / "c.html").read_text(encoding="utf-8")


def test_a_folder_that_is_no_run_is_refused_in_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run", correct=7)
    (tmp_path / "empty").mkdir()
    output = tmp_path / "c.html"
    for args, named in (([str(run), str(tmp_path / "empty")], "empty"), ([str(run), str(tmp_path / "gone")], "gone"),
                        ([str(run)], "at least two")):
        code, out, err = compare(capsys, *args, "--output", str(output))
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and named in err, err
    assert not output.exists()


def test_a_bench_run_takes_its_config_from_the_checkpoint(tmp_path, capsys):
    # Bench runs: <bench>/runs/<model>_seed<k>, a report and checkpoints, no .hydra.
    folders = []
    for bench, attention in (("bench_a", "true"), ("bench_b", "false")):
        folder = tmp_path / bench / "runs" / "behaviornet_seed0"
        tiny_checkpoint(folder / "best.pt", CLASSES, recipe=tiny_recipe(f"model.attention={attention}"))
        write_report(folder, ["c0.mp4", "c1.mp4"], [0, 1], np.eye(3)[[0, 1]], CLASSES)
        folders.append(str(folder))
    code, out, err = compare(capsys, *folders, "--output", str(tmp_path / "c.html"))
    assert code == 0, err
    config = out.partition("config differences")[2]
    assert re.search(r"^model\.attention +\| true +\| false", config, flags=re.M), config
    assert len([line for line in config.splitlines() if "|" in line]) == 2  # the header and model.attention
    # The folder names collide; the bench folder tells them apart.
    assert "bench_a/runs/behaviornet_seed0" in out and "bench_b/runs/behaviornet_seed0" in out
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "best.pt" in page and not external_links(page)


@pytest.mark.parametrize("paths, names", [
    (["/x/a/run", "/x/b/run"], ["a/run", "b/run"]),
    (["/x/a/runs/m", "/x/b/runs/m", "/x/b/runs/n"], ["a/runs/m", "b/runs/m", "n"]),
])
def test_column_names_add_parents_only_where_names_collide(paths, names):
    assert column_names([Path(p) for p in paths]) == names
