from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from behavior.config import load_option
from behavior.data.records import ClipRecord
from behavior.data.scan import find_videos, read_manifest, scan_folder
from behavior.data.settings import DataConfig
from behavior.data.splits import group_split, predefined_split, split_records, stratified_split
from behavior.errors import ConfigError, DataError


def data(**values) -> DataConfig:
    """conf/data/synthetic.yaml with ``values`` merged in (nested groups key by key), checked strictly."""
    merged = load_option("data", "synthetic")
    for key, value in values.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if nested else value
    return DataConfig.from_mapping(merged)


def records(n_per_class=20, classes=("a", "b", "c"), groups_per_class=5):
    return [ClipRecord(f"/d/{c}/{i}.mp4", c, f"{c}{i % groups_per_class}") for c in classes
            for i in range(n_per_class)]


def test_scan_folder_finds_classes_and_nested_clips(tmp_path):
    for rel in ["walk/a.mp4", "walk/sub/b.MP4", "run/c.avi", "run/notes.txt", ".hidden/d.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = scan_folder(tmp_path)
    assert [(Path(r.path).name, r.label) for r in found] == [("c.avi", "run"), ("a.mp4", "walk"), ("b.MP4", "walk")]


def test_scan_folder_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        scan_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no video clips"):
        scan_folder(tmp_path)


def test_find_videos_survives_symlink_loop(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.mp4").write_bytes(b"x")
    (tmp_path / "x" / "loop").symlink_to(tmp_path / "x")
    assert [p.name for p in find_videos(tmp_path)] == ["a.mp4"]


def test_manifest_paths_are_relative_to_its_folder(tmp_path):
    manifest = tmp_path / "m" / "list.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label,group\nfight/a.mp4,fight,s1\n/abs/b.mp4,calm,\n")
    recs = read_manifest(manifest)
    assert recs[0] == ClipRecord(str(tmp_path / "m" / "fight" / "a.mp4"), "fight", "s1")
    assert recs[1] == ClipRecord("/abs/b.mp4", "calm", None)


def test_manifest_missing_column_is_named(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("file,label\na.mp4,x\n")
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) \['path'\]"):
        read_manifest(manifest)


def test_stratified_split_is_deterministic_and_per_class():
    recs = records()
    a, b = stratified_split(recs, 0.2, 0.2, seed=3), stratified_split(recs, 0.2, 0.2, seed=3)
    assert a == b
    assert a != stratified_split(recs, 0.2, 0.2, seed=4)
    for part in (a.val, a.test):
        assert Counter(r.label for r in part) == {"a": 4, "b": 4, "c": 4}
    assert len(a.train) + len(a.val) + len(a.test) == len(recs)
    assert not {r.path for r in a.train} & {r.path for r in a.test}


def test_zero_test_fraction_gives_no_test_split():
    split = stratified_split(records(), 0.2, 0.0, seed=0)
    assert split.test == [] and len(split.val) == 12


def test_fraction_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.test_fraction"):
        stratified_split(records(), 0.1, 1.5, seed=0)
    with pytest.raises(ConfigError, match=r"^data\.split='?bogus'?: choose one of"):
        split_records(records(), "bogus", 0.1, 0.1, 0)


@pytest.mark.parametrize("seed", range(5))
def test_group_split_never_divides_a_group(seed):
    recs = records(n_per_class=30, groups_per_class=7)
    split = group_split(recs, 0.2, 0.2, seed)
    side_of = {}
    for name, part in split.parts().items():
        for r in part:
            assert side_of.setdefault(r.group, name) == name
    assert split.train and split.val and split.test
    assert 0.1 < len(split.test) / len(recs) < 0.35


def test_group_split_needs_groups():
    with pytest.raises(DataError, match="group"):
        group_split([ClipRecord("/a.mp4", "x")], 0.2, 0.2, 0)


def test_predefined_split_from_list_files(tmp_path):
    recs = [ClipRecord(str(tmp_path / f"{i}.mp4"), "a" if i % 2 else "b") for i in range(6)]
    (tmp_path / "train.txt").write_text("0.mp4\n1.mp4\n2.mp4\n3.mp4\n")
    (tmp_path / "test.txt").write_text("# held out\n4.mp4\n5.mp4\n")
    split = predefined_split(recs, {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")},
                             tmp_path)
    assert [Path(r.path).name for r in split.test] == ["4.mp4", "5.mp4"] and not split.val
    (tmp_path / "test.txt").write_text("nope.mp4\n")
    with pytest.raises(DataError, match="nope.mp4"):
        predefined_split(recs, {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}, tmp_path)


@pytest.mark.parametrize("values, message", [
    ({"split_files": {"train": "a.txt", "extra": "b.txt"}},
     "data.split_files.extra is not a known key; allowed keys of data.split_files: train, val, test"),
    ({"split_files": {"train": 3}}, "data.split_files.train=3: must be a path"),
    ({"split": "predefined"}, "data.split_files.train=null: data.split=predefined needs a train list"),
    ({"synthetic": {"workers": 0}}, "data.synthetic.workers=0: must be an integer >= 1"),
    ({"synthetic": {"colour": 1}}, "data.synthetic.colour is not a known key"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction=1.1: must be < 1"),
    ({"test_fraction": 1.5}, "data.test_fraction=1.5: must be a number >= 0 and <= 1"),
    ({"split": "bogus"}, "data.split=bogus: choose one of stratified, group, kfold, predefined"),
    ({"scan_workers": 1.5}, "data.scan_workers=1.5: must be an integer"),
    ({"decode_timeout": 0}, "data.decode_timeout=0: must be a number > 0"),
    ({"root": 5}, "data.root=5: must be a path"),
    ({"prescan": "sometimes"}, "data.prescan=sometimes: choose one of full, quick, off"),
    ({"colour": 1}, "data.colour is not a known key"),
])
def test_data_config_names_the_bad_key(values, message):
    with pytest.raises(ConfigError, match="^" + message.replace("+", r"\+").replace("(", r"\(")) as err:
        data(**values)
    assert "\n" not in str(err.value)


def test_data_config_defaults_and_null_timeout():
    assert DataConfig.preset("synthetic").decode_timeout == 120.0
    assert data() == DataConfig.preset("synthetic")
    assert data(decode_timeout=None, root="clips").decode_timeout is None


def test_data_config_needs_every_key():
    values = load_option("data", "synthetic")
    del values["decode_timeout"]
    with pytest.raises(ConfigError, match=r"^data\.decode_timeout is missing"):
        DataConfig.from_mapping(values)
    with pytest.raises(ConfigError, match=r"^data\.split_files\.val is missing"):
        DataConfig.preset("synthetic", split_files={"train": "a.txt", "test": None})
