"""Model registry (name -> builder) and `build_model`, which turns a config mapping into a model.

Builders are plain functions `fn(num_classes, **options) -> nn.Module`; their keyword parameters are the
model's options, so the registry can reject a misspelled config key before anything is constructed.
The option checkers below are shared by the model modules so every bad value fails the same way:
a one-line `ValueError` that names the key and the allowed values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from behavior.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]

_MODELS: dict[str, ModelBuilder] = {}


class OptionError(ConfigError):
    """A bad model option. `key` is kept apart from the text so `build_model` can re-key it `model.<key>`."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


def register_model(name: str | ModelBuilder | None = None):
    """Register a builder under `name` (default: the function's name). Use as `@register_model` or
    `@register_model("name")`. The builder must take `num_classes` plus keyword options."""

    def decorator(fn: ModelBuilder) -> ModelBuilder:
        key = name if isinstance(name, str) else fn.__name__
        if "num_classes" not in inspect.signature(fn).parameters:
            raise TypeError(f"model builder {fn.__qualname__} must take a num_classes argument")
        old = _MODELS.get(key)
        # A reload of the defining module re-registers the same function; only a clash is an error.
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"model {key!r} is already registered by {old.__module__}.{old.__qualname__}")
        _MODELS[key] = fn
        return fn

    if callable(name):
        return decorator(name)
    return decorator


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> dict[str, Any]:
    """The options model `name` takes, with their defaults (handy for docs and config checks)."""
    builder = _get(name)
    return {
        key: param.default
        for key, param in inspect.signature(builder).parameters.items()
        if key != "num_classes" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }


def build_model(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """Build the model named by `cfg["name"]` with the rest of `cfg` as its options.

    `cfg` may be a dict or an OmegaConf DictConfig (e.g. the `model` group of the Hydra config).
    Video models take float input [B, 3, T, H, W] and return logits [B, num_classes].
    """
    options = _plain(cfg)
    if not isinstance(options, dict):
        raise ConfigError(f"model config must be a mapping with a 'name' key, got {type(cfg).__name__}")
    if "name" not in options:
        raise ConfigError(f"model config has no 'name'; available models: {', '.join(available_models())}")
    name = options.pop("name")
    builder = _get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: got {num_classes!r}; allowed: an integer >= 1")
    allowed = model_options(name)
    for key in options:
        if key not in allowed:
            choices = ", ".join(sorted(allowed)) or "none"
            raise OptionError(f"model.{key}", f"not an option of model {name!r}; allowed options: {choices}")
    try:
        return builder(num_classes=num_classes, **options)
    except OptionError as err:
        raise OptionError(f"model.{err.key}", err.detail) from None


def _get(name: Any) -> ModelBuilder:
    if not isinstance(name, str) or name not in _MODELS:
        raise ConfigError(f"model={name}: unknown model; available models: {', '.join(available_models())}")
    return _MODELS[name]


def _plain(value: Any) -> Any:
    """Config values as plain dicts/lists, so builders never see OmegaConf containers."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ---- option checkers shared by the model modules -------------------------------------------------------


def check_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(key, f"got {value!r}; allowed: an integer >= {minimum}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(key, f"got {value!r}; allowed: true, false")
    return value


def check_prob(key: str, value: Any) -> float:
    """A probability for dropout: 0 <= p < 1 (p = 1 would zero every feature)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise OptionError(key, f"got {value!r}; allowed: a number in [0, 1)")
    return float(value)


def check_choice(key: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise OptionError(key, f"got {value!r}; allowed: {', '.join(repr(c) for c in choices)}")
    return value


def check_int_list(
    key: str, value: Any, minimum: int = 1, *, length: int | None = None, allow_empty: bool = False
) -> tuple[int, ...]:
    """A list of integers >= minimum; an int is accepted where `length` says how far to repeat it."""
    if length is not None and isinstance(value, int) and not isinstance(value, bool):
        value = [value] * length
    what = f"a list of integers >= {minimum}" + (f" with {length} entries (or one integer)" if length else "")
    if not isinstance(value, list | tuple) or (not value and not allow_empty):
        raise OptionError(key, f"got {value!r}; allowed: {what}")
    if length is not None and len(value) != length:
        raise OptionError(key, f"got {list(value)!r}; allowed: {what}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise OptionError(key, f"got {list(value)!r}; allowed: {what}")
    return tuple(value)
