"""report.html: written by a training run, opened in a real headless Chromium, looked at pixel by pixel; a folder
with files missing still gets a page; the bench page; the DevTools driver really sees console errors."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from behavior.report.__main__ import main as report_main
from behavior.report.bench_report import write_bench_report
from behavior.report.headless import Browser, find_browser
from behavior.report.html import image, page, write_page
from behavior.report.run_report import REPORT_FILE, write_run_report
from tests.helpers import train_tiny_run

pytestmark = pytest.mark.slow

# The README's set-up installs Chromium (make test); CI must not pass by skipping the browser checks.
needs_browser = pytest.mark.skipif(find_browser() is None and not os.environ.get("CI"),
                                   reason="no Chromium (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def browser():
    with Browser() as opened:
        yield opened


def pixels_in(shot: bytes, box: dict) -> np.ndarray:
    picture = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(np.int16)
    x, y = int(box["x"]), int(box["y"])
    return picture[y:y + int(box["height"]), x:x + int(box["width"])]


def rendered(shot: bytes, box: dict) -> bool:
    """Drawn and not blank: the box is inside the screenshot and its pixels are not one flat colour."""
    area = pixels_in(shot, box)
    return area.size > 0 and area.reshape(-1, 3).std(axis=0).max() > 10


@needs_browser
def test_a_training_run_writes_a_report_that_renders_in_a_browser(run_dir, browser):
    report = run_dir / REPORT_FILE
    assert report.is_file()
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    view = browser.view(report)
    assert view.errors == []
    boxes = {}
    for box in view.boxes:
        boxes.setdefault(box["box"], []).append(box)
    assert {"confusion", "preview", "per-class", "curves"} <= set(boxes)
    assert all(b["decoded"] for found in boxes.values() for b in found)
    assert rendered(view.screenshot, boxes["confusion"][0])
    assert any(rendered(view.screenshot, b) for b in boxes["preview"])
    assert "attention" in text  # BehaviorNet has spatial attention: its heatmaps sit beside the frames


@needs_browser
def test_a_run_folder_with_files_missing_still_gets_a_page_that_says_so(run_dir, tmp_path, browser):
    broken = tmp_path / "interrupted"
    shutil.copytree(run_dir, broken)
    for name in ("metrics.json", "predictions.csv", "best.pt", REPORT_FILE):
        (broken / name).unlink()
    assert report_main([str(broken)]) == 0
    text = (broken / REPORT_FILE).read_text(encoding="utf-8")
    assert "Missing from this run folder" in text and "metrics.json" in text and "predictions.csv" in text
    view = browser.view(broken / REPORT_FILE)
    assert view.errors == []
    assert {b["box"] for b in view.boxes} >= {"confusion", "curves"}


def test_without_a_checkpoint_the_previews_show_the_frames_alone(run_dir, tmp_path):
    folder = tmp_path / "no_weights"
    shutil.copytree(run_dir, folder)
    for name in ("best.pt", "last.pt"):
        (folder / name).unlink()
    text = write_run_report(folder, previews=2).read_text(encoding="utf-8")
    assert "attention not shown" in text and "frames only" in text
    assert text.count('data-box="preview"') == 2 and "cannot show this clip" not in text


def test_a_clip_that_moved_costs_its_preview_not_the_page(run_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    lines = (moved / "predictions.csv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    # Every clip now points nowhere, and every prediction is made wrong so each gets a preview.
    wrong = []
    for row in rows:
        path, true, pred, *rest = row.split(",")
        wrong.append(",".join([str(tmp_path / "gone" / Path(path).name), true, true + "x" if pred == true else pred,
                               *rest]))
    (moved / "predictions.csv").write_text("\n".join([header, *wrong]) + "\n", encoding="utf-8")
    text = write_run_report(moved, previews=2).read_text(encoding="utf-8")
    assert text.count("cannot show this clip") == 2 and "Confusion matrix" in text


def test_report_command_refuses_a_folder_that_is_not_there(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err


@needs_browser
def test_the_bench_page_compares_models_and_links_each_run(run_dir, tmp_path, browser):
    bench = tmp_path / "bench"
    shutil.copytree(run_dir, bench / "runs" / "behaviornet_seed0")
    (bench / "runs" / "flow_seed0").mkdir()
    (bench / "results.csv").write_text(
        "model,seeds,top1_mean,top1_std,mean_class_accuracy_mean,mean_class_accuracy_std,macro_f1_mean,macro_f1_std,"
        "parameters,gflops_per_clip,train_clips_per_s,inference_clips_per_s,wall_s\n"
        "behaviornet,1,0.5,0,0.5,0,0.4,0,1000,0.1,10,20,30\nflow,1,0.25,0,0.3,0,0.2,0,900,0.1,10,20,30\n",
        encoding="utf-8")
    text = write_bench_report(bench).read_text(encoding="utf-8")
    assert "50.0" in text and "flow_seed0" in text and "not finished" in text
    assert 'href="runs/behaviornet_seed0/report.html"' in text
    view = browser.view(bench / REPORT_FILE)
    assert view.errors == [] and rendered(view.screenshot, next(b for b in view.boxes if b["box"] == "comparison"))


@needs_browser
def test_the_browser_driver_sees_console_errors_and_blank_boxes(tmp_path, browser):
    white = io.BytesIO()
    Image.new("RGB", (60, 40), "white").save(white, format="PNG")
    body = image(white.getvalue(), "blank", box="blank") + "<script>console.error('broken page')</script>"
    view = browser.view(write_page(tmp_path / "bad.html", page("bad", "", [("", body)])))
    assert any("broken page" in e for e in view.errors)
    assert not rendered(view.screenshot, view.boxes[0])


def test_a_page_that_cannot_be_made_costs_a_warning_not_the_run(run_dir, tmp_path, monkeypatch, capsys):
    from behavior.report import run_report

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(run_report, "write_run_report", broken)
    assert run_report.report_quietly(folder) is None
    assert "report.html not written: No space left on device" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
