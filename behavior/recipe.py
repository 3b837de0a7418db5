"""The training recipe: every group of a train (or bench) config, checked once into frozen settings.

    command line -> Hydra composes -> Recipe.from_config (the one check) -> stages take the parts they need

Nothing below the entry points reads raw config: a stage takes ``recipe.data``, ``recipe.sampling``... A
checkpoint stores ``recipe.to_dict()`` (``behavior.engine.checkpoint``), so evaluate, predict and live rebuild
exactly what training used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from behavior.config import check_keys, check_number, compose_config, fail, plain
from behavior.data.flow import FlowConfig
from behavior.data.roi import RoiConfig
from behavior.data.sampling import SamplingConfig
from behavior.data.settings import DataConfig
from behavior.data.synthetic_motion import CIRCLE_CLASSES
from behavior.data.transforms import TransformConfig
from behavior.engine.optim import OptimConfig
from behavior.engine.trainer import TrainerConfig
from behavior.models import ModelConfig
from behavior.models.pretrained import normalization_of
from behavior.video import DecodeConfig


@dataclass(frozen=True)
class Recipe:
    """What a training run is made of, stage by stage (data -> decode -> sampling -> roi -> transform -> model ->
    optim/trainer), plus the seed."""

    data: DataConfig
    decode: DecodeConfig
    sampling: SamplingConfig
    roi: RoiConfig
    transform: TransformConfig
    model: ModelConfig
    optim: OptimConfig
    trainer: TrainerConfig
    flow: FlowConfig  # used when model.input is flow or rgb+flow
    seed: int

    def __post_init__(self) -> None:
        check_number("seed", self.seed, integer=True)
        synthetic = not self.data.root and not self.data.manifest
        if synthetic and self.transform.hflip and set(self.data.synthetic.classes or ()) & set(CIRCLE_CLASSES):
            raise fail("transform.hflip", True, "must be false with the synthetic circle_cw / circle_ccw classes "
                                                "(a mirror image turns clockwise into counter-clockwise)")

    @property
    def flow_channels(self) -> int | None:
        """Flow channels the model takes (None for an RGB model)."""
        return self.flow.channels if self.model.uses_flow else None

    @classmethod
    def from_config(cls, cfg: Mapping, extra_keys: tuple[str, ...] = ()) -> Recipe:
        """Check a composed train config (top-level keys, then each group in pipeline order) into a Recipe;
        ``extra_keys`` are further top-level keys the caller reads itself (bench's ``bench``)."""
        values = plain(cfg)
        check_keys(values, "", [*(f.name for f in fields(cls)), *extra_keys])
        values["transform"] = with_weights_normalization(values["transform"], values["model"])
        return cls(**{name: settings.from_mapping(values[name]) for name, settings in GROUPS.items()},
                   seed=values["seed"])

    def to_dict(self) -> dict:
        """The recipe as the YAML it came from: plain dicts per group (the model group flat, as in conf/model)."""
        return {f.name: (getattr(self, f.name).to_dict() if f.name in GROUPS else getattr(self, f.name))
                for f in fields(self)}


def with_weights_normalization(transform: Mapping, model: Mapping) -> Mapping:
    """``transform.mean``/``std`` left null take the values the pretrained weights were trained with (torchvision's
    metadata, the source run's recipe); the transform stage fills in what is still null."""
    if not isinstance(transform, Mapping) or not isinstance(model, Mapping) or (
            transform.get("mean") is not None and transform.get("std") is not None):
        return transform
    normalization = normalization_of(model.get("pretrained"))
    if normalization is None:
        return transform
    mean, std = normalization
    return {**transform, "mean": list(mean) if transform.get("mean") is None else transform["mean"],
            "std": list(std) if transform.get("std") is None else transform["std"]}


GROUPS = {"data": DataConfig, "decode": DecodeConfig, "sampling": SamplingConfig, "roi": RoiConfig,
          "transform": TransformConfig, "model": ModelConfig, "optim": OptimConfig, "trainer": TrainerConfig,
          "flow": FlowConfig}


def compose_recipe(overrides: Sequence[str] = (), config_name: str = "train") -> Recipe:
    """The recipe ``python -m behavior.train <overrides>`` would run, for code and notebooks:
    ``compose_recipe(["model=r3d_18", "transform=small"])``."""
    cfg = compose_config(config_name, overrides)
    return Recipe.from_config(cfg, extra_keys=tuple(k for k in cfg if k not in GROUPS and k != "seed"))
