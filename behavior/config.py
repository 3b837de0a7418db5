"""Config helpers shared by the stages: validated dataclasses built from Hydra/OmegaConf mappings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TypeVar

from behavior.errors import ConfigError

T = TypeVar("T")


def dataclass_from_mapping(cls: type[T], cfg: Mapping, group: str) -> T:
    """``cls(**cfg)`` where missing keys take their defaults and an unknown key is a one-line ``ConfigError``
    naming ``<group>.<key>``; value checks are the dataclass's own (``__post_init__``)."""
    keys = tuple(f.name for f in fields(cls))
    values = dict(cfg.items())
    unknown = sorted(str(k) for k in values if k not in keys)
    if unknown:
        raise ConfigError(f"{group}.{unknown[0]} is not a known key; allowed keys: {', '.join(keys)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # the dataclass's own checks already name the key
        raise ConfigError(str(err).splitlines()[0]) from None


def check_number(key: str, value: object, minimum: float | None = None, maximum: float | None = None,
                 integer: bool = False, above: bool = False) -> None:
    """Raise ``ValueError("<key>=...: must be ...")`` unless ``value`` is a number (an integer with ``integer``) at
    least ``minimum`` (greater than it with ``above``) and at most ``maximum``."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if above else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{key}={value!r}: must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}")


def require_number(key: str, value: object, **bounds) -> None:
    """:func:`check_number` for a setting read outside a dataclass: a ``ConfigError`` (one line, exit 2)."""
    try:
        check_number(key, value, **bounds)
    except ValueError as err:
        raise ConfigError(str(err)) from None
