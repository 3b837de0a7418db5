"""The typed settings of the ``data`` group, checked before any clip is touched.

:class:`DataConfig` is what train and bench read (where the clips are, how they are split, pre-scanned and
cached); :class:`EvaluateData` is the smaller ``data`` group of ``behavior.evaluate``, whose split and classes
come from the checkpoint. Defaults live in ``conf/data/*.yaml`` and ``conf/evaluate.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from behavior.config import Settings, check_choice, check_number, check_text, fail, is_number
from behavior.data.splits import SPLIT_METHODS

PRESCAN_MODES = ("full", "quick", "off")


@dataclass(frozen=True)
class SplitFiles(Settings):
    """``data.split=predefined``: one clip path per line, relative to the root / manifest folder."""

    GROUP = "data.split_files"
    train: str | None
    val: str | None
    test: str | None

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            check_text(f"data.split_files.{part}", getattr(self, part), none_ok=True)


@dataclass(frozen=True)
class SyntheticSource(Settings):
    """The built-in generated set, used when neither ``data.root`` nor ``data.manifest`` is set."""

    GROUP = "data.synthetic"
    root: str
    clips_per_class: int
    seed: int
    workers: int
    classes: tuple[str, ...] | None  # None: the default six (behavior.data.synthetic.SYNTHETIC_CLASSES)

    def __post_init__(self) -> None:
        check_text("data.synthetic.root", self.root)
        for key, low in (("clips_per_class", 1), ("seed", 0), ("workers", 1)):
            check_number(f"data.synthetic.{key}", getattr(self, key), low, integer=True)
        object.__setattr__(self, "classes", _check_classes(self.classes))


def _check_classes(value: object) -> tuple[str, ...] | None:
    """``data.synthetic.classes``: null, or a list of at least 2 different known class names."""
    if value is None:
        return None
    from behavior.data.synthetic_motion import KNOWN_CLASSES

    allowed = f"a list of at least 2 different classes from {', '.join(KNOWN_CLASSES)}, or null (the default six)"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) < 2 \
            or len(set(map(str, value))) != len(value):
        raise fail("data.synthetic.classes", value, f"must be {allowed}")
    unknown = [name for name in value if name not in KNOWN_CLASSES]
    if unknown:
        raise fail("data.synthetic.classes", value, f"unknown class {unknown[0]}; must be {allowed}")
    return tuple(value)


@dataclass(frozen=True)
class ClipSource(Settings):
    """Where the clips are and how they are read: the keys the ``data`` groups of train and evaluate share."""

    GROUP = "data"
    PRESCAN_MODES = PRESCAN_MODES
    root: str | None
    manifest: str | None
    prescan: str
    decode_timeout: float | None  # seconds one clip may take to decode (pre-scan, loader workers); None = no limit
    cache: str | None
    cache_max_frames: int

    def __post_init__(self) -> None:
        check_text("data.root", self.root, none_ok=True)
        check_text("data.manifest", self.manifest, none_ok=True)
        check_choice("data.prescan", self.prescan, self.PRESCAN_MODES)
        check_number("data.decode_timeout", self.decode_timeout, 0, above=True, none_ok=True)
        check_text("data.cache", self.cache, none_ok=True)
        check_number("data.cache_max_frames", self.cache_max_frames, 1, integer=True)


@dataclass(frozen=True)
class DataConfig(ClipSource):
    """The ``data`` group of train and bench: the clips (or the built-in synthetic set), the split, the pre-scan."""

    split: str
    val_fraction: float
    test_fraction: float  # every split but kfold, whose test part is a fold
    folds: int  # kfold only: K
    fold: int  # kfold only: the fold (0-based) that is the test part
    split_files: SplitFiles
    scan_workers: int
    synthetic: SyntheticSource

    def __post_init__(self):
        super().__post_init__()
        check_choice("data.split", self.split, SPLIT_METHODS)
        for key in ("val_fraction", "test_fraction"):
            check_number(f"data.{key}", getattr(self, key), 0.0, 1.0)
        check_number("data.folds", self.folds, 2, integer=True)
        if not is_number(self.fold, integer=True) or not 0 <= self.fold < self.folds:
            raise fail("data.fold", self.fold, f"must be an integer in [0, {self.folds - 1}] (0-based; "
                                               f"data.folds={self.folds})")
        if self.split == "kfold" and self.test_fraction != 0:
            raise fail("data.test_fraction", self.test_fraction, "unused with data.split=kfold, set it to 0 (the "
                                                                 "test part is fold data.fold of data.folds; "
                                                                 "data.val_fraction of the other folds validates)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise fail("data.val_fraction + data.test_fraction", round(self.val_fraction + self.test_fraction, 6),
                       "must be < 1 (the training split needs clips)")
        object.__setattr__(self, "split_files", _nested(SplitFiles, self.split_files))
        if self.split == "predefined" and not self.split_files.train:
            raise fail("data.split_files.train", None, "data.split=predefined needs a train list (and val/test)")
        check_number("data.scan_workers", self.scan_workers, 1, integer=True)
        object.__setattr__(self, "synthetic", _nested(SyntheticSource, self.synthetic))


@dataclass(frozen=True)
class EvaluateData(ClipSource):
    """The ``data`` group of ``behavior.evaluate``: the clips to evaluate, and how to read them."""

    PRESCAN_MODES = ("full", "quick")

    def __post_init__(self):
        super().__post_init__()
        if not self.root and not self.manifest:
            raise fail("data.root", None, "give the clips to evaluate (data.root=DIR or data.manifest=FILE)")


def _nested(cls: type[Settings], value: object) -> Settings:
    return value if isinstance(value, cls) else cls.from_mapping(value)
