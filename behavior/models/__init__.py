"""Models: a registry of video classifiers built from the `model` config group.

    model = build_model(recipe.model, num_classes)       # video models: [B, 3, T, H, W] -> logits [B, num_classes]
    model = build_model(ModelConfig.preset("behaviornet", widths=[8, 16]), 3)   # from conf/model/, in code
    maps = attention_maps(model)                         # last map of each SpatialAttention, [N, 1, h, w]

Registered: behaviornet (its ``backbone`` may be a torchvision image model: frame_backbones.py),
spatial_attention_net (BehaviorNet over the SpatialAttentionNet backbone), and the torchvision 3D-CNN baselines
r3d_18, mc3_18, r2plus1d_18, s3d. ``model.input`` picks the streams (rgb, flow, stats: motion_stats.py) and
``model.fusion`` how several are fused (fusion.py). Every model's layer layout (stem / backbone / head, and where
torchvision's keys sit) follows the contract in frame_backbones.py.
"""

from . import baselines as baselines  # noqa: F401  (imported for its registrations)
from .attention import SpatialAttention, attention_maps
from .behaviornet import BehaviorNet, spatial_attention_net
from .frame_backbones import TORCHVISION_BACKBONES, TorchvisionBackbone, layer_group, layer_groups
from .image import SpatialAttentionNet
from .registry import ModelConfig, OptionError, available_models, build_model, model_options, register_model
from .temporal import TemporalPool

__all__ = [
    "BehaviorNet",
    "ModelConfig",
    "OptionError",
    "SpatialAttention",
    "SpatialAttentionNet",
    "TORCHVISION_BACKBONES",
    "TemporalPool",
    "TorchvisionBackbone",
    "attention_maps",
    "available_models",
    "build_model",
    "layer_group",
    "layer_groups",
    "model_options",
    "register_model",
    "spatial_attention_net",
]
