"""Model registry (name -> builder), the ``model`` group's settings, and :func:`build_model`.

Builders are plain functions ``fn(num_classes, **options) -> nn.Module`` whose keyword parameters are the
model's options, without defaults: the options' defaults are written once, in ``conf/model/<name>.yaml``
(:meth:`ModelConfig.preset` reads them for code that is not started from the command line). The option checkers
below are shared by the model modules so every bad value fails the same way: one line,
``model.<key>=<value>: <what is allowed>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from behavior.config import Settings, fail, plain
from behavior.errors import ConfigError

from .fusion import FUSIONS, STREAMS, Fusion
from .motion_stats import MotionStats

ModelBuilder = Callable[..., nn.Module]
# model.input: "+"-joined streams in STREAMS order: rgb (the model on frames), flow (the model on optical flow),
# stats (motion statistics of the flow -> a tiny MLP)
INPUTS = tuple("+".join(s for i, s in enumerate(STREAMS) if mask >> i & 1) for mask in (1, 2, 4, 3, 5, 6, 7))

_MODELS: dict[str, ModelBuilder] = {}
FREEZE = ("none", "stem", "backbone")
# Keys of every conf/model option besides `name`; the rest are the builder's own options.
COMMON_KEYS = ("input", "fusion", "pretrained", "pretrained_strict", "freeze", "unfreeze_after")


class OptionError(ConfigError):
    """A bad model option. ``key`` is kept apart from the text so :func:`build_model` can re-key it
    ``model.<key>``."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={_shown(value)}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def _shown(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(list(value) if isinstance(value, tuple) else value)


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


def model_options(name: str) -> tuple[str, ...]:
    """The names of the options model ``name`` takes (its builder's keyword parameters)."""
    return tuple(key for key, param in inspect.signature(_get(name)).parameters.items()
                 if key != "num_classes" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY))


@dataclass(frozen=True)
class ModelConfig(Settings):
    """The ``model`` group: a registered model's name, its input (the streams: rgb, flow, stats or a "+" of them),
    how several streams are fused (late | joint) and its options (the rest of the group's keys).

    Checked whole on construction: the name is registered, the model takes that input, every option is given and
    known, and a two-class model builds with these options, so a bad value stops a command before any clip is
    read. The flow stream reuses the RGB model's options with the flow channels as ``in_channels`` (and no frame
    differences: flow is motion already), so only models with an ``in_channels`` option take flow."""

    GROUP = "model"
    name: str
    input: str
    fusion: str
    pretrained: str | None  # where the initial weights come from (models/pretrained.py); checked by training
    pretrained_strict: bool
    freeze: str  # none | stem | backbone: parameters not trained at first
    unfreeze_after: int | None  # epochs after which the frozen parameters train too; null = never
    options: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            raise fail("model.pretrained", self.pretrained, "must be null, torchvision weights (e.g. "
                                                            "ResNet18_Weights.IMAGENET1K_V1) or a weights file")
        if not isinstance(self.pretrained_strict, bool):
            raise fail("model.pretrained_strict", self.pretrained_strict, "must be true or false")
        if self.freeze not in FREEZE:
            raise fail("model.freeze", self.freeze, f"choose one of {', '.join(FREEZE)}")
        if self.unfreeze_after is not None and (isinstance(self.unfreeze_after, bool)
                                                or not isinstance(self.unfreeze_after, int) or self.unfreeze_after < 1):
            raise fail("model.unfreeze_after", self.unfreeze_after, "must be an integer >= 1 (epochs) or null")
        if self.freeze != "none" and self.pretrained is None:
            raise fail("model.freeze", self.freeze, "keeps pretrained tensors as they are: set model.pretrained too")
        if self.unfreeze_after is not None and self.freeze == "none":
            raise fail("model.unfreeze_after", self.unfreeze_after, "needs model.freeze=stem|backbone")
        if self.input not in INPUTS:
            raise fail("model.input", self.input, f"choose one of {', '.join(INPUTS)}")
        if "flow" in self.streams and "in_channels" not in model_options(self.name):
            raise fail("model.input", self.input, f"model {self.name!r} takes RGB clips only (use rgb or rgb+stats, "
                                                  "or a model with an in_channels option such as behaviornet)")
        if self.fusion not in FUSIONS:
            raise fail("model.fusion", self.fusion, f"choose one of {', '.join(FUSIONS)}")
        options = plain(dict(self.options))
        object.__setattr__(self, "options", options)
        allowed = model_options(self.name)
        for key in options:
            if key not in allowed:
                raise ConfigError(f"model.{key} is not an option of model {self.name!r}; allowed options: "
                                  f"{', '.join(allowed) or 'none'}")
        missing = [key for key in allowed if key not in options]
        if missing:
            raise ConfigError(f"model.{missing[0]} is missing: model {self.name!r} needs every option "
                              f"({', '.join(allowed)}); ModelConfig.preset({self.name!r}, ...) fills them from "
                              f"conf/model/{self.name}.yaml")
        build_model(self, 2, flow_channels=2)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.input.split("+"))

    @property
    def uses_flow(self) -> bool:
        """Whether the clips carry flow channels (for the flow stream or the motion statistics)."""
        return self.input != "rgb"

    @classmethod
    def from_mapping(cls, values: Mapping | None, group: str | None = None) -> ModelConfig:
        values = plain(values)
        if not isinstance(values, Mapping) or "name" not in values:
            raise fail("model", values, f"must be a mapping with a 'name' key; available models: "
                                        f"{', '.join(available_models())}")
        options = dict(values)
        _get(options["name"])
        for key in COMMON_KEYS:
            if key not in options:
                raise ConfigError(f"model.{key} is missing (every conf/model option sets it)")
        return cls(options.pop("name"), **{key: options.pop(key) for key in COMMON_KEYS}, options=options)

    def to_dict(self) -> dict:
        """The group as it reads in YAML: ``name``, the keys every model has, and the options side by side."""
        return {"name": self.name, **{key: getattr(self, key) for key in COMMON_KEYS}, **self.options}


def build_model(cfg: ModelConfig, num_classes: int, flow_channels: int | None = None) -> nn.Module:
    """The model ``cfg`` names, with its options. Video models take float clips [B, C, T, H, W] and return logits
    [B, num_classes]: C = 3 for RGB, ``flow_channels`` (2 per flow field: ``FlowConfig.channels``) for flow or
    stats, both (RGB first) when the input has rgb and another stream."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: must be an integer >= 1")
    if cfg.uses_flow and not flow_channels:
        raise ValueError(f"model.input={cfg.input} needs the number of flow channels (flow_channels)")
    builder = _get(cfg.name)
    flow_options = {**cfg.options, "in_channels": flow_channels}
    if "frame_diff" in flow_options:
        flow_options["frame_diff"] = False
    # The joint head and the motion statistics share the model's dropout (0 for models without one).
    dropout = cfg.options.get("dropout", 0.0)
    try:
        streams = {"rgb": lambda: builder(num_classes=num_classes, **cfg.options),
                   "flow": lambda: builder(num_classes=num_classes, **flow_options),
                   "stats": lambda: MotionStats(num_classes, flow_channels, dropout)}
        built = {name: streams[name]() for name in cfg.streams}
    except OptionError as err:
        raise OptionError(f"model.{err.key}", err.value, err.allowed) from None
    if len(built) == 1:
        return next(iter(built.values()))
    if cfg.fusion == "joint" and not all(hasattr(module, "clip_features") for module in built.values()):
        raise fail("model.fusion", "joint", f"model {cfg.name!r} has no clip features to join; use late")
    return Fusion(built, cfg.fusion, num_classes, dropout)


def _get(name: Any) -> ModelBuilder:
    if not isinstance(name, str) or name not in _MODELS:
        raise ConfigError(f"model={name}: unknown model; available models: {', '.join(available_models())}")
    return _MODELS[name]


# ---- option checkers shared by the model modules -------------------------------------------------------


def check_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(key, value, f"must be an integer >= {minimum}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(key, value, "must be true or false")
    return value


def check_prob(key: str, value: Any) -> float:
    """A probability for dropout: 0 <= p < 1 (p = 1 would zero every feature)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise OptionError(key, value, "must be a number in [0, 1)")
    return float(value)


def check_choice(key: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise OptionError(key, value, f"choose one of {', '.join(choices)}")
    return value


def check_int_list(
    key: str, value: Any, minimum: int = 1, *, length: int | None = None, allow_empty: bool = False
) -> tuple[int, ...]:
    """A list of integers >= minimum; an int is accepted where `length` says how far to repeat it."""
    if length is not None and isinstance(value, int) and not isinstance(value, bool):
        value = [value] * length
    what = f"must be a list of integers >= {minimum}" + (f" with {length} entries (or one integer)" if length else "")
    if (not isinstance(value, list | tuple) or (not value and not allow_empty)
            or (length is not None and len(value) != length)
            or any(isinstance(item, bool) or not isinstance(item, int) or item < minimum for item in value)):
        raise OptionError(key, value, what)
    return tuple(value)
