"""The typed schema of the ``data`` and ``decode`` groups, checked before any clip is touched.

The readers (``prepare_data``, ``clip_cache``...) take the settings from the config mapping; this module only
guarantees that every key is known and every value has the right type and range, so a mistake costs one line
naming the key, not a traceback after the pre-scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from behavior.config import check_number, dataclass_from_mapping
from behavior.data.splits import SPLIT_METHODS
from behavior.errors import ConfigError

PRESCAN_MODES = ("full", "quick", "off")
SPLIT_PARTS = ("train", "val", "test")
SYNTHETIC_KEYS = ("root", "clips_per_class", "seed", "workers")


def _path_or_none(key: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}={value!r}: must be a path (a string) or null")


def _sub_mapping(key: str, value: object, allowed: tuple[str, ...]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}={value!r}: must be a mapping with keys {', '.join(allowed)}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ValueError(f"{key}.{unknown[0]} is not a known key; allowed keys: {', '.join(allowed)}")
    return dict(value)


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None
    manifest: str | None = None
    split: str = "stratified"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_files: dict | None = None
    prescan: str = "full"
    scan_workers: int = 2
    decode_timeout: float | None = 120.0
    cache: str | None = None
    cache_max_frames: int = 64
    synthetic: dict = field(default_factory=dict)

    def __post_init__(self):
        _path_or_none("data.root", self.root)
        _path_or_none("data.manifest", self.manifest)
        if self.split not in SPLIT_METHODS:
            raise ValueError(f"data.split={self.split!r}: choose one of {', '.join(SPLIT_METHODS)}")
        for key in ("val_fraction", "test_fraction"):
            check_number(f"data.{key}", getattr(self, key), 0.0, 1.0)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"data.val_fraction + data.test_fraction = {self.val_fraction + self.test_fraction:g}: "
                             "must be < 1")
        for part, path in _sub_mapping("data.split_files", self.split_files, SPLIT_PARTS).items():
            _path_or_none(f"data.split_files.{part}", path)
        if self.prescan not in PRESCAN_MODES:
            raise ValueError(f"data.prescan={self.prescan!r}: choose one of {', '.join(PRESCAN_MODES)}")
        check_number("data.scan_workers", self.scan_workers, 1, integer=True)
        if self.decode_timeout is not None:
            check_number("data.decode_timeout", self.decode_timeout, 0, above=True)
        _path_or_none("data.cache", self.cache)
        check_number("data.cache_max_frames", self.cache_max_frames, 1, integer=True)
        synthetic = _sub_mapping("data.synthetic", self.synthetic, SYNTHETIC_KEYS)
        _path_or_none("data.synthetic.root", synthetic.get("root"))
        for key, low in (("clips_per_class", 1), ("seed", 0), ("workers", 1)):
            if key in synthetic:
                check_number(f"data.synthetic.{key}", synthetic[key], low, integer=True)


def data_config(cfg: Mapping) -> DataConfig:
    values = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return dataclass_from_mapping(DataConfig, values, "data")


def check_keys(cfg: Mapping, group: str, allowed: tuple[str, ...]) -> None:
    """One line naming the first key of ``cfg`` outside ``allowed`` (added with ``+group.key=...``)."""
    unknown = sorted(str(k) for k in cfg if k not in allowed)
    if unknown:
        prefix = f"{group}." if group else ""
        raise ConfigError(f"{prefix}{unknown[0]} is not a known key; allowed keys{' of ' + group if group else ''}: "
                          f"{', '.join(allowed)}")
