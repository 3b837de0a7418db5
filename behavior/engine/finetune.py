"""Fine-tuning from pretrained weights: what starts frozen (``model.freeze``), what learns slower
(``optim.backbone_lr_mult``), and the record of where the initial weights came from.

Only tensors that were loaded from the weights are ever frozen or slowed: a new head, an inserted attention block
or a temporal head has nothing to keep and learns at the full rate from the start. Which loaded tensors are the
stem, the backbone or the head, a model says itself (``behavior.models.frame_backbones.parameter_roles``).
"""

from __future__ import annotations

from torch import nn

from behavior.models import ModelConfig
from behavior.models.frame_backbones import parameter_roles
from behavior.models.pretrained import LoadReport, WeightsSource

FROZEN_ROLES = {"none": (), "stem": ("stem",), "backbone": ("stem", "backbone")}


def initial_weights_record(model: nn.Module, source: WeightsSource, report: LoadReport, cfg: ModelConfig,
                           backbone_lr_mult: float) -> dict:
    """What a checkpoint keeps of its start: the weights (name, file, sha256), the loading summary, and the
    names of the parameters frozen at first and of those trained at the slower rate (a resumed run needs them)."""
    roles, loaded = parameter_roles(model), set(report.loaded)
    kept = [name for name in roles if name in loaded and roles[name] != "head"]
    return {**source.describe(), "summary": report.summary(),
            "frozen": [name for name in kept if roles[name] in FROZEN_ROLES[cfg.freeze]],
            "slow": kept if backbone_lr_mult != 1.0 else []}


def weights_provenance(record: dict | None) -> dict | None:
    """The record as a report shows it: where the weights came from and what was loaded, without the name lists."""
    if not record:
        return None
    return {key: value for key, value in record.items() if key not in ("frozen", "slow")}


def describe_start(record: dict, unfreeze_after: int | None, backbone_lr_mult: float) -> str:
    line = f"initial weights {record['pretrained']}: {record['summary']}"
    if record["frozen"]:
        until = f"until epoch {unfreeze_after} ends" if unfreeze_after else "throughout"
        line += f"; {len(record['frozen'])} frozen {until}"
    if record["slow"]:
        line += f"; {len(record['slow'])} at {backbone_lr_mult:g} x lr"
    return line


def set_frozen(model: nn.Module, names: list[str] | tuple[str, ...], frozen: bool) -> None:
    wanted = set(names)
    for name, parameter in model.named_parameters():
        if name in wanted:
            parameter.requires_grad_(not frozen)
