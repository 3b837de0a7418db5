"""What changes what is learned is said before training (issue 14): dataset warnings, early split errors, resume."""

from __future__ import annotations

import shutil

import pytest

from behavior.data.prepare import prepare_data
from behavior.engine.training import resume_path
from behavior.errors import ConfigError, DataError
from behavior.train import interrupted_message
from tests.conftest import make_clip_tree
from tests.helpers import tiny_recipe


def prepared(capsys, root, *overrides):
    recipe = tiny_recipe(f"data.root={root}", "data.cache=null", "data.scan_workers=1", *overrides)
    data = prepare_data(recipe.data, "pyav", 0, progress=False)
    return data, capsys.readouterr().out


def test_dataset_problems_are_reported_in_one_block_before_training(tmp_path, capsys):
    root = make_clip_tree(tmp_path / "clips", classes=("left", "right"), per_class=4)
    (root / "broken").mkdir()
    for i in range(3):
        (root / "broken" / f"b{i}.mp4").write_bytes(b"not a video")
    (root / "empty").mkdir()
    (root / "solo").mkdir()
    shutil.copy(root / "left" / "left_00.mp4", root / "solo" / "only.mp4")
    data, out = prepared(capsys, root, "data.val_fraction=0.25", "data.test_fraction=0.25")
    assert data.class_names == ["left", "right", "solo"]  # a class with no readable clip is left out
    block = out[out.index("dataset check"):]
    assert "class 'broken': none of its 3 clip(s) is readable: left out" in block
    assert "class folder 'empty' holds no video clips" in block
    assert "class 'solo' has 1 readable clip(s): none in val or test" in block


def test_an_empty_validation_split_is_said(tmp_path, capsys):
    root = make_clip_tree(tmp_path / "clips", classes=("left", "right"), per_class=3)
    _, out = prepared(capsys, root, "data.val_fraction=0", "data.test_fraction=0.3")
    assert "the validation split is empty" in out
    _, out = prepared(capsys, root, "data.val_fraction=0.3", "data.test_fraction=0.3")
    assert "dataset check" not in out


def test_fewer_than_two_readable_classes_is_an_error(tmp_path, capsys):
    root = make_clip_tree(tmp_path / "clips", classes=("left",), per_class=3)
    (root / "broken").mkdir()
    (root / "broken" / "b.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match=r"need at least 2 classes with readable clips.*\['broken'\]"):
        prepared(capsys, root)


@pytest.mark.parametrize("overrides, message", [(["data.split=group"], "data.split=group needs a group"),
                                                (["data.split=predefined"], "data.split_files.train")])
def test_a_split_that_cannot_be_made_stops_before_the_pre_scan(tmp_path, capsys, monkeypatch, overrides, message):
    root = make_clip_tree(tmp_path / "clips", classes=("left", "right"), per_class=3)

    def no_scan(*args, **kwargs):
        raise AssertionError("the pre-scan ran")

    monkeypatch.setattr("behavior.data.prepare.prescan", no_scan)
    with pytest.raises((ConfigError, DataError), match=message):
        prepared(capsys, root, *overrides)


def test_split_paths_are_absolute(tmp_path, capsys, monkeypatch):
    make_clip_tree(tmp_path / "clips", classes=("left", "right"), per_class=3)
    monkeypatch.chdir(tmp_path)
    data, _ = prepared(capsys, "clips")
    assert all(r.path.startswith(str(tmp_path)) for r in data.split.train + data.split.val + data.split.test)


def test_resume_settings_are_checked_before_the_data(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match=r"^trainer\.resume=auto continues the run in hydra\.run\.dir"):
        resume_path("auto", run, run_dir_given=False)
    assert resume_path("auto", run) is None and "nothing to continue" in capsys.readouterr().out
    (run / "last.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^trainer\.resume=.*run: is a folder, not a checkpoint file \(its last"):
        resume_path(str(run), tmp_path / "new")
    with pytest.raises(ConfigError, match=r"^trainer\.resume=.*nope\.pt: file not found"):
        resume_path(str(tmp_path / "nope.pt"), tmp_path / "new")


def test_ctrl_c_says_what_is_kept_and_how_to_continue(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["behavior.train", "data.root=my clips", f"hydra.run.dir={tmp_path}"])
    assert "before the first epoch ended: no checkpoint" in interrupted_message(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"")
    message = interrupted_message(tmp_path)
    assert "continue with:" in message and "'data.root=my clips'" in message
    assert message.rstrip().endswith(f"hydra.run.dir={tmp_path} trainer.resume=auto")


def test_each_path_key_says_what_it_must_be(tmp_path, capsys):
    from behavior.predict.batch import find_inputs
    from behavior.video.stream import open_source

    root = make_clip_tree(tmp_path / "clips", classes=("left", "right"), per_class=2)
    clip = next(root.rglob("*.mp4"))
    with pytest.raises(ConfigError, match=r"^data\.root=.*_\d+\.mp4: is a file, not a folder"):
        prepared(capsys, clip)
    with pytest.raises(ConfigError, match=r"^data\.cache=.*: is a file; give a folder"):
        prepared(capsys, root, f"data.cache={clip}")
    with pytest.raises(DataError, match=r"^source=.*clips: is a folder; give a video file"):
        open_source(str(root))
    with pytest.raises(DataError, match=r"^input=.*nope: not found"):
        find_inputs(tmp_path / "nope", (".mp4",))
