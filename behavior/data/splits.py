"""Train / validation / test splits: stratified, by group, one fold of K, or from list files; deterministic by seed."""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from behavior.config import fail
from behavior.data.records import ClipRecord
from behavior.errors import DataError

SPLIT_METHODS = ("stratified", "group", "kfold", "predefined")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Split:
    train: list[ClipRecord] = field(default_factory=list)
    val: list[ClipRecord] = field(default_factory=list)
    test: list[ClipRecord] = field(default_factory=list)
    fold_of: dict[str, int] = field(default_factory=dict)  # data.split=kfold: clip path -> the fold testing it

    def parts(self) -> dict[str, list[ClipRecord]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise fail(key, value, "must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise fail("data.val_fraction + data.test_fraction", val_fraction + test_fraction, "must be < 1")


def _take(n: int, fraction: float) -> int:
    """Clips of one class to hold out: at least one whenever a fraction is asked and the class can spare it."""
    if fraction <= 0 or n < 2:
        return 0
    return max(1, round(n * fraction))


def stratified_split(records, val_fraction: float, test_fraction: float, seed: int) -> Split:
    _check_fractions(val_fraction, test_fraction)
    by_class = defaultdict(list)
    for r in records:
        by_class[r.label].append(r)
    split = Split()
    rng = random.Random(seed)
    for label in sorted(by_class):
        clips = sorted(by_class[label], key=lambda r: r.path)
        rng.shuffle(clips)
        n_test = _take(len(clips), test_fraction)
        n_val = min(_take(len(clips), val_fraction), max(0, len(clips) - n_test - 1))
        split.test += clips[:n_test]
        split.val += clips[n_test:n_test + n_val]
        split.train += clips[n_test + n_val:]
    return split


def group_split(records, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Whole groups go to one side; greedy assignment keeps each side's class mix near its target share."""
    _check_fractions(val_fraction, test_fraction)
    missing = [r.path for r in records if not r.group]
    if missing:
        raise DataError(f"data.split=group needs a group for every clip; {len(missing)} have none "
                        f"(first: {missing[0]}); add a 'group' column to data.manifest")
    groups = defaultdict(list)
    for r in records:
        groups[r.group].append(r)
    shares = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    class_totals = Counter(r.label for r in records)
    counts = {name: Counter() for name in SPLIT_NAMES}
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    # Largest groups first: they are the hardest to place without overshooting a side.
    names.sort(key=lambda g: -len(groups[g]))
    split = Split()
    for g in names:
        group_counts = Counter(r.label for r in groups[g])
        # The side still furthest below its target share, counted over this group's classes.
        side = max((s for s in SPLIT_NAMES if shares[s] > 0),
                   key=lambda s: sum(shares[s] * class_totals[c] - counts[s][c] for c in group_counts))
        counts[side].update(group_counts)
        getattr(split, side).extend(sorted(groups[g], key=lambda r: r.path))
    if not split.train:
        raise DataError(f"data.split=group: only {len(groups)} group(s); none left for training")
    return split


def fold_assignment(records, folds: int, seed: int) -> dict[str, int]:
    """Each clip's test fold (0 .. ``folds`` - 1): stratified by class (scikit-learn's StratifiedKFold), and, when
    every clip has a group, group-aware (StratifiedGroupKFold: a group's clips share one fold). Deterministic for
    ``seed`` whatever the order of ``records``."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    records = sorted(records, key=lambda r: r.path)
    ungrouped = [r.path for r in records if not r.group]
    grouped = len(ungrouped) < len(records)
    if grouped and ungrouped:
        raise DataError(f"data.split=kfold: {len(records) - len(ungrouped)} clips have a group and {len(ungrouped)} "
                        f"have none (first: {ungrouped[0]}); give every clip a group (group-aware folds) or none")
    labels = [r.label for r in records]
    for label, count in sorted(Counter(labels).items(), key=lambda item: (item[1], item[0])):
        if count < folds:
            raise DataError(f"data.folds={folds}: class {label!r} has only {count} clip(s); every class needs at "
                            f"least {folds} (one per test fold): lower data.folds")
    if grouped:
        groups_of = defaultdict(set)
        for r in records:
            groups_of[r.label].add(r.group)
        total = len({r.group for r in records})
        if total < folds:
            raise DataError(f"data.folds={folds}: only {total} group(s) in the set; group-aware folds need at least "
                            f"{folds}: lower data.folds")
        for label, groups in sorted(groups_of.items(), key=lambda item: (len(item[1]), item[0])):
            if len(groups) < folds:
                raise DataError(f"data.folds={folds}: class {label!r} is in only {len(groups)} group(s); group-aware "
                                f"folds need every class in at least {folds}: lower data.folds")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    groups = [r.group for r in records] if grouped else None
    fold_of = {}
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(records)), labels, groups)):
        fold_of.update((records[i].path, k) for i in test)
    empty = sorted(set(range(folds)) - set(fold_of.values()))
    if empty:
        raise DataError(f"data.folds={folds}: fold {empty[0]} got no clips; lower data.folds")
    return fold_of


def kfold_split(records, folds: int, fold: int, val_fraction: float, seed: int) -> Split:
    """Fold ``fold`` of :func:`fold_assignment` is the test part; validation is ``val_fraction`` of the other
    folds, drawn per class (whole groups when the clips have groups), the rest is training. ``folds`` and ``fold``
    are checked where the settings are (:class:`behavior.data.settings.DataConfig`)."""
    fold_of = fold_assignment(records, folds, seed)
    records = sorted(records, key=lambda r: r.path)
    rest = [r for r in records if fold_of[r.path] != fold]
    inner = (group_split if records[0].group else stratified_split)(rest, val_fraction, 0.0, seed)
    return Split(inner.train, inner.val, [r for r in records if fold_of[r.path] == fold], fold_of)


def _read_list(path: Path, key: str) -> list[str]:
    if not path.is_file():
        raise fail(key, path, "file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln.split(",")[0].strip() for ln in lines if ln and not ln.startswith("#")]


def predefined_split(records, split_files, base: Path) -> Split:
    """List files (one clip path per line, relative to the dataset root or manifest folder) per side."""
    if not split_files or not split_files.get("train"):
        raise fail("data.split_files.train", None, "data.split=predefined needs list files "
                                                   "(data.split_files.train=FILE, optional .val and .test)")
    by_path = {str(Path(r.path).resolve()): r for r in records}
    split = Split()
    for name in SPLIT_NAMES:
        file = split_files.get(name)
        if not file:
            continue
        for entry in _read_list(Path(file), f"data.split_files.{name}"):
            p = Path(entry)
            resolved = str((p if p.is_absolute() else base / p).resolve())
            if resolved not in by_path:
                raise DataError(f"{file}: clip {entry!r} is not in the dataset")
            getattr(split, name).append(by_path[resolved])
    return split


def split_records(records, method: str, val_fraction: float, test_fraction: float, seed: int,
                  split_files=None, base: Path | None = None, folds: int = 0, fold: int = 0) -> Split:
    """The split ``method`` names; ``folds`` and ``fold`` are used by ``kfold`` only, ``test_fraction`` by all but
    ``kfold`` (whose test part is a fold)."""
    if method == "stratified":
        return stratified_split(records, val_fraction, test_fraction, seed)
    if method == "group":
        return group_split(records, val_fraction, test_fraction, seed)
    if method == "kfold":
        return kfold_split(records, folds, fold, val_fraction, seed)
    if method == "predefined":
        return predefined_split(records, split_files, base or Path("."))
    raise fail("data.split", method, f"choose one of {', '.join(SPLIT_METHODS)}")


def write_split(path: Path, split: Split) -> None:
    """One row per clip: path, label, group, split; with a kfold split also ``fold``, the fold whose test part the
    clip is in (the rows of this run's test split carry ``data.fold``)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "split", *(["fold"] if split.fold_of else [])])
        for name, recs in split.parts().items():
            for r in recs:
                fold = [split.fold_of[r.path]] if split.fold_of else []
                w.writerow([r.path, r.label, r.group or "", name, *fold])
