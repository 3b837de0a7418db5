"""roi=face through the real entry points: train lists each clip's region, the checkpoint keeps the settings,
evaluate and predict crop the way training did and say when a clip had no face."""

from __future__ import annotations

import pytest
import torch

from behavior.data.faces import face_clip
from behavior.predict.batch import run as predict
from behavior.video.writer import write_video
from tests.helpers import TINY, run_module
from tests.test_pipeline import read_csv
from tests.test_predict import predict_cfg

pytestmark = pytest.mark.slow  # trains or runs the commands in subprocesses


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roi_run")
    root = tmp / "clips"
    for k in range(4):
        write_video(root / "slow" / f"slow_{k}.mp4", face_clip(16, seed=k, travel=0.1)[0], fps=12)
        write_video(root / "fast" / f"fast_{k}.mp4", face_clip(16, seed=10 + k, travel=0.3)[0], fps=12)
    write_video(root / "fast" / "nobody.mp4", face_clip(16, seed=20, face=False)[0], fps=12)
    run = tmp / "run"
    proc = run_module("behavior.train", f"data.root={root}", f"hydra.run.dir={run}", "trainer.epochs=1", "roi=face",
                      *TINY, "data.val_fraction=0.2", "data.test_fraction=0.2")
    return root, run, proc


def test_train_lists_every_region_and_stores_the_settings(face_run):
    root, run, proc = face_run
    rows = {row["path"].rsplit("/", 1)[1]: row for row in read_csv(run / "roi.csv")}
    assert len(rows) == 9
    assert rows["nobody.mp4"]["found"] == "false" and rows["nobody.mp4"]["x0"] == ""
    assert all(row["found"] == "true" for name, row in rows.items() if name != "nobody.mp4")
    assert "roi=face: a region in 8 of 9 clips; 1 without one use the whole frame" in proc.stdout
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert state["recipe"]["roi"]["kind"] == "face" and state["recipe"]["roi"]["margin"] == 0.25


def test_evaluate_and_predict_crop_like_training(face_run, tmp_path):
    root, run, _ = face_run
    report = tmp_path / "eval"
    run_module("behavior.evaluate", f"checkpoint={run / 'best.pt'}", f"data.root={root}",
               f"hydra.run.dir={report}", "num_workers=0", "progress=false")
    def boxes(rows):  # clip name -> (found, box) as roi.csv writes it
        return {row["path"].rsplit("/", 1)[1]: (row["found"], row["x0"], row["y0"], row["x1"], row["y1"])
                for row in rows}

    trained = boxes(read_csv(run / "roi.csv"))
    assert boxes(read_csv(report / "roi.csv")) == trained and len(trained) == 9

    output = tmp_path / "predictions.csv"
    predict(predict_cfg(checkpoint=str(run / "best.pt"), input=str(root), output=str(output)))
    rows = {row["path"].rsplit("/", 1)[1]: row for row in read_csv(output)}
    assert rows["nobody.mp4"]["roi_box"] == ""
    assert "roi: no face found in 5 frame(s); the whole frame was used" in rows["nobody.mp4"]["warning"]
    # Every clip cropped to the box training used for it (found by the same detector with the stored settings).
    for name, (found, *box) in trained.items():
        assert rows[name]["roi_box"] == (" ".join(box) if found == "true" else "")
    assert rows["slow_0.mp4"]["warning"] == ""


def test_window_mode_crops_each_video_to_its_region(face_run, tmp_path):
    root, run, _ = face_run
    output = tmp_path / "timelines.csv"
    predict(predict_cfg(checkpoint=str(run / "best.pt"), input=str(root / "slow"), output=str(output),
                        predict={"window": 0.5}))
    rows = read_csv(output)
    assert len(rows) == 4 and all(row["status"] == "ok" and len(row["roi_box"].split()) == 4 for row in rows)
