"""The one way a clip becomes model input: decoder + frame counts + region + sampling + transform (+ cache, timeout).

Built once per command (from the recipe in train and bench, from the checkpoint in evaluate, predict and live)
and handed to every stage that reads clips, so a setting cannot be forgotten on one path: the training and
validation loaders, the final report, the cache-speed measurement and batch-classify all read clips through
the same object. Picklable, so DataLoader workers receive it whole.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch.utils.data import DistributedSampler

from behavior.data.cache import ClipCache
from behavior.data.dataset import ClipDataset
from behavior.data.flow import FlowConfig
from behavior.data.records import ClipRecord
from behavior.data.roi import Region, RoiConfig
from behavior.data.sampling import SamplingConfig
from behavior.data.timed_loader import TimedLoader
from behavior.data.transforms import TransformConfig, build_transform, geometric_resize


@dataclass(frozen=True)
class ClipPipeline:
    sampling: SamplingConfig
    transform: TransformConfig
    backend: str
    roi: RoiConfig | None = None  # how regions are found; None: whole frames
    timeout: float | None = None  # seconds one clip may take to decode in a worker; None = no limit
    max_short_side: int | None = None  # shrink big frames while decoding (batch-classify); None = full size
    cache: ClipCache | None = None  # decoded-clip cache (train, evaluate); None = decode every time
    num_frames: Mapping[str, int] = field(default_factory=dict)  # frame counts from the pre-scan, by path
    regions: Mapping[str, Region] = field(default_factory=dict)  # each clip's region, once found
    flow: FlowConfig | None = None  # optical flow channels after the RGB ones; None: RGB only
    rgb: bool = True  # false: flow channels only (model.input=flow, stats or flow+stats)

    @property
    def resize(self):
        """The transform's geometric resize alone: flow is computed on frames of the size the network sees."""
        return geometric_resize(self.transform.resize, self.transform.size)

    def clip_transform(self, train: bool):
        """The transform of this pipeline's clips: RGB and/or flow channels (see build_transform)."""
        return build_transform(self.transform, train, self.flow.channels if self.flow else 0, self.rgb)

    def with_views(self, num_views: int | None) -> ClipPipeline:
        """The same pipeline averaging ``num_views`` temporal views per clip (None keeps the current number)."""
        return self if num_views is None else replace(self, sampling=replace(self.sampling, num_views=num_views))

    def loader(self, records: Sequence[ClipRecord], class_to_idx: Mapping[str, int], train: bool, batch_size: int,
               num_workers: int, seed: int, pin_memory: bool = False, ranks: tuple[int, int] = (0, 1)) -> TimedLoader:
        """Batches of ``(video, label, index)``: a training loader shuffles and augments, an evaluation loader
        gives every view of every clip in order. Workers are bounded by ``timeout`` per clip of a batch.

        ``ranks`` = (rank, world size) of a torchrun job: a training loader then takes this rank's share of each
        epoch's shuffle (a DistributedSampler: every rank the same number of batches, for DDP's step in step)."""
        dataset = ClipDataset(records, dict(class_to_idx), self.sampling, self.clip_transform(train), train,
                              self.backend, dict(self.num_frames), seed, self.cache, self.regions, self.flow, self.rgb,
                              self.resize)
        rank, size = ranks
        sampler = DistributedSampler(dataset, size, rank, shuffle=True, seed=seed) if train and size > 1 else None
        per_rank = len(sampler) if sampler is not None else len(dataset)
        return TimedLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                           num_workers=num_workers, drop_last=train and per_rank > batch_size, pin_memory=pin_memory,
                           worker_init_fn=one_thread if num_workers > 0 else None,
                           generator=torch.Generator().manual_seed(seed), clip_timeout=self.timeout)


def one_thread(_: int) -> None:
    # Each loader worker decodes one clip at a time; torch threads in workers would only fight the model for cores.
    torch.set_num_threads(1)
    die_with_parent()


def die_with_parent() -> None:
    """Have the kernel kill this (worker) process when its parent dies. A run killed with -9 would otherwise leave
    its workers decoding for seconds, until DataLoader's watchdog notices, holding the lock on the run's output."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def input_channels(model_input: str, flow: FlowConfig) -> dict:
    """The ``flow`` and ``rgb`` fields of a pipeline feeding a model with ``model.input`` ("+"-joined streams: rgb
    takes the frames, flow and stats the optical flow)."""
    streams = model_input.split("+")
    return {"flow": flow if streams != ["rgb"] else None, "rgb": "rgb" in streams}
