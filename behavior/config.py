"""The settings vocabulary: typed, frozen settings built from config mappings, checked once, in one message format.

Every check raises ``ConfigError("<key>=<value>: <what is allowed>")``; the entry points print it as one
``error: ...`` line with exit status 2. Defaults live in the YAML files under ``conf/`` only: a settings class
has no field defaults, and :meth:`Settings.preset` builds one from a ``conf/<group>/<name>.yaml`` option (plus
overrides) for code and tests that are not started from the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, ClassVar, Self

from omegaconf import OmegaConf

from behavior.errors import ConfigError


def _shown(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, tuple):
        value = list(value)
    return str(value) if isinstance(value, int | float | str | os.PathLike) else repr(value)


def fail(key: str, value: object, allowed: str) -> ConfigError:
    """The one message format: ``<key>=<value>: <what is allowed>``."""
    return ConfigError(f"{key}={_shown(value)}: {allowed}")


def is_number(value: object, integer: bool = False) -> bool:
    import numpy as np

    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    return isinstance(value, kinds) and not isinstance(value, bool | np.bool_)


def check_number(key: str, value: object, minimum: float | None = None, maximum: float | None = None,
                 integer: bool = False, above: bool = False, none_ok: bool = False) -> Any:
    """``value`` as int/float when it is a number (an integer with ``integer``) at least ``minimum`` (greater with
    ``above``) and at most ``maximum``; None passes with ``none_ok``."""
    if value is None and none_ok:
        return None
    ok = is_number(value, integer)
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
        raise fail(key, value, f"must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}"
                               f"{' or null' if none_ok else ''}")
    return int(value) if integer else (float(value) if not isinstance(value, int) else value)


def check_choice(key: str, value: object, choices: Sequence) -> Any:
    if value not in tuple(choices):
        raise fail(key, value, f"choose one of {', '.join(_shown(c) for c in choices)}")
    return value


def check_bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise fail(key, value, "must be true or false")
    return value


def check_text(key: str, value: object, none_ok: bool = False, what: str = "a path") -> str | None:
    if value is None and none_ok:
        return None
    if not isinstance(value, str) or not value:
        raise fail(key, value, f"must be {what}{' or null' if none_ok else ''}")
    return value


def check_numbers(key: str, value: object, length: int, minimum: float | None = None,
                  maximum: float | None = None) -> tuple[float, ...]:
    """A list of ``length`` numbers within the bounds, as a tuple of floats."""
    if (isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != length
            or not all(is_number(v) for v in value)
            or (minimum is not None and min(value) < minimum) or (maximum is not None and max(value) > maximum)):
        bounds = "" if minimum is None else f" in [{minimum:g}, {maximum:g}]" if maximum is not None else \
            f" >= {minimum:g}"
        raise fail(key, list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value,
                   f"must be a list of {length} numbers{bounds}")
    return tuple(float(v) for v in value)


def plain(value: Any) -> Any:
    """Config values as plain dicts, lists and scalars (OmegaConf containers resolved)."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def check_keys(values: Mapping, group: str, allowed: Sequence[str], required: bool = True) -> None:
    """One line naming the first key of ``values`` outside ``allowed`` (or, with ``required``, missing)."""
    prefix = f"{group}." if group else ""
    unknown = sorted(str(k) for k in values if k not in allowed)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]} is not a known key; allowed keys{' of ' + group if group else ''}: "
                          f"{', '.join(allowed)}")
    missing = [k for k in allowed if k not in values] if required else []
    if missing:
        raise ConfigError(f"{prefix}{missing[0]} is missing (every key of {group or 'the config'} is set in conf/; "
                          "a settings mapping made in code must give it too)")


class Settings:
    """Base of the frozen settings dataclasses: built from a config mapping, checked in ``__post_init__``."""

    GROUP: ClassVar[str]  # the config group (conf/<GROUP>/) and the key prefix of its messages

    @classmethod
    def from_mapping(cls, values: Mapping | None, group: str | None = None) -> Self:
        """``cls(**values)``: every field must be given and nothing else (a misspelt key is one line naming it)."""
        group = cls.GROUP if group is None else group
        values = plain(values)
        if not isinstance(values, Mapping):
            raise fail(group, values, f"must be a mapping with keys {', '.join(f.name for f in fields(cls))}")
        check_keys(values, group, [f.name for f in fields(cls) if f.init])
        return cls(**values)

    @classmethod
    def preset(cls, name: str, **overrides) -> Self:
        """The ``conf/<GROUP>/<name>.yaml`` option with ``overrides``: what ``<GROUP>=<name>`` gives on the
        command line."""
        return cls.from_mapping({**load_option(cls.GROUP, name), **overrides})

    def to_dict(self) -> dict:
        return as_plain_dict(self)


def as_plain_dict(settings: object) -> dict:
    """A settings dataclass (nested ones included) as plain dicts and lists, ready for YAML, JSON or a checkpoint."""
    out = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if is_dataclass(value):
            value = as_plain_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = plain(dict(value))
        out[f.name] = value
    return out


def compose_config(config_name: str, overrides: Sequence[str] = ()):
    """What Hydra composes for ``python -m behavior.<config_name> <overrides>`` (without the ``hydra`` node)."""
    from hydra import compose, initialize_config_dir

    from behavior.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    return cfg


def load_option(group: str, name: str) -> dict:
    """``conf/<group>/<name>.yaml`` as a dict, with the options it builds on (its ``defaults`` list) merged first."""
    from behavior.paths import conf_dir

    path = conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        raise ConfigError(f"{group}={name}: no such option in conf/{group}/; available: {', '.join(options)}")
    node = OmegaConf.load(path)
    merged = OmegaConf.create()
    base = [entry for entry in node.pop("defaults", []) if entry != "_self_"]
    for entry in base:
        merged = OmegaConf.merge(merged, load_option(group, str(entry)))
    return plain(OmegaConf.merge(merged, node))


def check_device(key: str, value: object) -> str:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``, available on this machine."""
    import torch

    if value == "auto":
        return value
    try:
        device = torch.device(value) if isinstance(value, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise fail(key, value, "use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise fail(key, value, "CUDA is not available on this machine (use auto or cpu)")
    return value


def device_of(name: str):
    """The torch device a checked device setting names."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
