"""``data.split=kfold``: stratified (and group-aware) folds, the validation carve, the checks, split.csv; and the
bench's ``bench.folds`` (its settings, the recipe of each fold, the tables; the run itself is in test_bench.py)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import replace

import pytest

from behavior.bench import BenchSettings, RunResult, fold_recipes, run_name, summarize, write_results
from behavior.data.records import ClipRecord
from behavior.data.settings import SplitFiles
from behavior.data.splits import fold_assignment, kfold_split, split_records, write_split
from behavior.errors import ConfigError, DataError
from behavior.recipe import compose_recipe
from tests.helpers import command_config
from tests.test_scan_splits import data, records


def ungrouped(n_per_class=20, classes=("a", "b", "c")):
    return [ClipRecord(r.path, r.label) for r in records(n_per_class, classes)]


def all_folds(recs, folds, seed=0, val_fraction=0.2):
    return [kfold_split(recs, folds, k, val_fraction, seed) for k in range(folds)]


@pytest.mark.parametrize("grouped", [False, True])
def test_folds_partition_the_clips(grouped):
    recs = records(n_per_class=20, groups_per_class=10) if grouped else ungrouped()
    splits = all_folds(recs, 4)
    tested = Counter(r.path for split in splits for r in split.test)
    assert set(tested) == {r.path for r in recs} and set(tested.values()) == {1}  # each clip in one test fold
    for k, split in enumerate(splits):
        parts = [{r.path for r in part} for part in (split.train, split.val, split.test)]
        assert sum(map(len, parts)) == len(recs) and set().union(*parts) == {r.path for r in recs}
        assert all(parts)  # train, validation and test all hold clips
        assert {split.fold_of[p] for p in parts[2]} == {k} and k not in {split.fold_of[p] for p in parts[0]}
    assert all(split.fold_of == splits[0].fold_of for split in splits)


def test_folds_are_stratified():
    for k, split in enumerate(all_folds(ungrouped(n_per_class=20), 4)):
        assert Counter(r.label for r in split.test) == {"a": 5, "b": 5, "c": 5}, k
        # validation: data.val_fraction of each class's 15 remaining clips
        assert Counter(r.label for r in split.val) == {"a": 3, "b": 3, "c": 3}, k
    uneven = ungrouped(n_per_class=10, classes=("a",)) + ungrouped(n_per_class=30, classes=("b",))
    for split in all_folds(uneven, 5):
        assert Counter(r.label for r in split.test) == {"a": 2, "b": 6}


@pytest.mark.parametrize("seed", range(4))
def test_groups_never_straddle_train_val_test(seed):
    recs = records(n_per_class=24, groups_per_class=8)
    for split in all_folds(recs, 3, seed=seed):
        side_of = {}
        for name, part in split.parts().items():
            for r in part:
                assert side_of.setdefault(r.group, name) == name, (r.group, name)
        assert {r.label for r in split.test} == {"a", "b", "c"} and split.val
    fold_of = fold_assignment(recs, 3, seed)
    assert all(len({fold_of[r.path] for r in recs if r.group == g}) == 1 for g in {r.group for r in recs})


def test_folds_are_deterministic_for_a_seed():
    recs = ungrouped()
    assert all_folds(recs, 5, seed=3) == all_folds(list(reversed(recs)), 5, seed=3)  # input order does not matter
    assert all_folds(recs, 5, seed=3) != all_folds(recs, 5, seed=4)
    grouped = records(n_per_class=20, groups_per_class=10)
    assert fold_assignment(grouped, 4, 1) == fold_assignment(grouped[::-1], 4, 1)
    assert split_records(recs, "kfold", 0.2, 0.0, 3, folds=5, fold=2) == kfold_split(recs, 5, 2, 0.2, 3)


@pytest.mark.parametrize("recs, message", [
    (ungrouped(n_per_class=4, classes=("a",)) + ungrouped(n_per_class=9, classes=("b",)),
     "data.folds=5: class 'a' has only 4 clip(s); every class needs at least 5"),
    (records(n_per_class=10, groups_per_class=2),  # 6 groups in all, 2 per class
     "data.folds=5: class 'a' is in only 2 group(s)"),
    ([ClipRecord(f"/d/{c}/{i}.mp4", c, f"g{i % 4}") for c in "ab" for i in range(8)],
     "data.folds=5: only 4 group(s) in the set"),
    (records(n_per_class=10) + [ClipRecord("/d/x.mp4", "a")],
     "data.split=kfold: 30 clips have a group and 1 have none (first: /d/x.mp4)"),
])
def test_a_set_too_small_for_the_folds_is_one_line(recs, message):
    with pytest.raises(DataError) as err:
        kfold_split(recs, 5, 0, 0.2, 0)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("values, message", [
    ({"split": "kfold"}, "data.test_fraction=0.15: unused with data.split=kfold, set it to 0"),
    ({"folds": 1}, "data.folds=1: must be an integer >= 2"),
    ({"folds": 2.5}, "data.folds=2.5: must be an integer >= 2"),
    ({"fold": 5}, r"data.fold=5: must be an integer in \[0, 4\] \(0-based; data.folds=5\)"),
    ({"fold": -1, "folds": 3}, r"data.fold=-1: must be an integer in \[0, 2\]"),
    ({"fold": "1"}, "data.fold=1: must be an integer"),
    ({"split": "kfold", "test_fraction": 0.0, "val_fraction": 1.0}, r"data.val_fraction \+ data.test_fraction=1"),
])
def test_kfold_settings_name_the_key(values, message):
    with pytest.raises(ConfigError, match="^" + message) as err:
        data(**values)
    assert "\n" not in str(err.value)


def test_kfold_settings_defaults():
    config = data(split="kfold", test_fraction=0.0, fold=4)
    assert (config.folds, config.fold, config.split) == (5, 4, "kfold")
    assert (data().folds, data().fold) == (5, 0)  # conf/data/synthetic.yaml, inherited by the other presets


def test_split_csv_records_the_fold(tmp_path):
    split = kfold_split(ungrouped(), 3, 1, 0.2, 0)
    write_split(tmp_path / "split.csv", split)
    with open(tmp_path / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "group", "split", "fold"] and len(rows) == 60
    assert {r["fold"] for r in rows if r["split"] == "test"} == {"1"}
    assert Counter(r["fold"] for r in rows) == {"0": 20, "1": 20, "2": 20}
    write_split(tmp_path / "plain.csv", split_records(ungrouped(), "stratified", 0.2, 0.2, 0))
    assert (tmp_path / "plain.csv").read_text().splitlines()[0] == "path,label,group,split"  # other splits unchanged


def bench_settings(**values) -> BenchSettings:
    return BenchSettings.from_mapping(command_config("bench", bench=values)["bench"])


def test_bench_folds_setting():
    assert bench_settings().folds is None  # conf/bench.yaml: one split, as before
    assert bench_settings(folds=3).folds == 3
    for bad in (1, 2.5, "two"):
        with pytest.raises(ConfigError, match=rf"^bench\.folds={bad}: must be an integer >= 2 or null$"):
            bench_settings(folds=bad)


def test_bench_fold_recipes():
    recipe = compose_recipe(["data=surveillance_fight"], config_name="bench")
    assert fold_recipes(recipe, None) == {None: recipe}
    folds = fold_recipes(recipe, 3)
    assert list(folds) == [0, 1, 2]
    for f, fold_recipe in folds.items():  # only the data group changes, and the same way for every model and seed
        data = fold_recipe.data
        assert (data.split, data.folds, data.fold, data.test_fraction) == ("kfold", 3, f, 0.0)
        assert data.val_fraction == recipe.data.val_fraction and data.manifest == recipe.data.manifest
        assert replace(fold_recipe, data=recipe.data) == recipe
    assert run_name("tiny", 1, None) == "tiny_seed1" and run_name("tiny", 1, 2) == "tiny_seed1_fold2"
    predefined = replace(recipe, data=replace(recipe.data, split="predefined", split_files=SplitFiles("a", None, None)))
    with pytest.raises(ConfigError, match=r"^bench\.folds=3: needs data\.split=stratified, group or kfold"):
        fold_recipes(predefined, 3)
    kfold = replace(recipe, data=replace(recipe.data, split="kfold", test_fraction=0.0, folds=5))
    with pytest.raises(ConfigError, match=r"^bench\.folds=3: disagrees with data\.folds=5"):
        fold_recipes(kfold, 3)
    assert fold_recipes(kfold, 5)[4].data.fold == 4


def test_bench_tables_count_the_runs(tmp_path):
    def run(seed, fold, top1):
        metrics = {"top1": top1, "mean_class_accuracy": top1, "macro_f1": top1}
        return RunResult("m", seed, fold, metrics, 1000, 10.0, 20.0, 5.0)

    row = summarize("m", [run(0, 0, 0.5), run(0, 1, 0.7), run(1, 0, 0.6), run(1, 1, 0.6)], 0.1)
    assert (row["seeds"], row["folds"], row["runs"]) == (2, 2, 4) and row["top1_mean"] == pytest.approx(0.6)
    write_results(tmp_path, [row])
    with open(tmp_path / "results.csv", newline="") as f:
        assert next(csv.reader(f))[:5] == ["model", "seeds", "folds", "runs", "top1_mean"]
    md = (tmp_path / "results.md").read_text()
    assert "| model | seeds | folds | runs | top-1 (%) |" in md and "| m | 2 | 2 | 4 | 60.0 ± 8.2 |" in md
    plain = summarize("m", [run(0, None, 0.5), run(1, None, 0.7)], 0.1)  # without folds: the columns of before
    assert "folds" not in plain and plain["seeds"] == 2
    write_results(tmp_path, [plain])
    assert "| model | seeds | top-1 (%) |" in (tmp_path / "results.md").read_text()
