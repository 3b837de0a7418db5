"""A map-style dataset: clip record -> sampled frame indices -> decoded uint8 frames -> model tensor."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from behavior.data.cache import ClipCache
from behavior.data.flow import FlowConfig, frames_needed, with_flow
from behavior.data.records import ClipRecord
from behavior.data.roi import WHOLE_FRAME, Region, crop_frames
from behavior.data.sampling import SamplingConfig, sample_indices, sample_views
from behavior.video import open_video


class ClipDataset(Dataset):
    """Yields ``(video, label, index)``; ``video`` is ``[3, T, S, S]``, or ``[V, 3, T, S, S]`` with V eval views.

    Randomness comes from (seed, epoch, index) alone, so a run is repeatable whatever the number of
    DataLoader workers; call :meth:`set_epoch` before each training epoch.

    With a ``cache`` the frames come from the clip's cached pool (see ``behavior.data.cache``) and the
    sampler runs over the pool; without one each item decodes only the frames it samples.

    ``regions`` (from ``behavior.data.roi.find_regions``) crops each clip's frames to its region before the
    transform; a clip without an entry keeps the whole frame.

    With ``flow`` each sampled frame also gets its optical-flow stack (``behavior.data.flow``), computed on the
    frames resized by the transform's own geometric resize (``resize``) and appended after the RGB channels (or
    alone, without ``rgb``). With a cache built with the same flow settings, the flow comes from its pool.
    """

    def __init__(self, records: Sequence[ClipRecord], class_to_idx: dict[str, int], sampling: SamplingConfig,
                 transform: Callable[[torch.Tensor], torch.Tensor], train: bool, backend: str = "pyav",
                 num_frames: dict[str, int] | None = None, seed: int = 0, cache: ClipCache | None = None,
                 regions: Mapping[str, Region] | None = None, flow: FlowConfig | None = None, rgb: bool = True,
                 resize: Callable | None = None):
        self.records = list(records)
        self.class_to_idx = class_to_idx
        self.sampling = sampling
        self.transform = transform
        self.train = train
        self.backend = backend
        self.num_frames = num_frames or {}
        self.seed = seed
        self.cache = cache
        self.regions = dict(regions or {})
        self.flow = flow
        self.rgb, self.resize = rgb, resize
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def label_of(self, index: int) -> int:
        return self.class_to_idx.get(self.records[index].label, -1)

    def __getitem__(self, index: int):
        record = self.records[index]
        item_seed = [self.seed, self.epoch, index]
        region = self.regions.get(record.path, WHOLE_FRAME)
        if self.cache is not None:  # the cache stores the frames already cropped (and with flow, their flow)
            pool = self.cache.get(record.path, self.num_frames.get(record.path), region)
            views = self._views(len(pool), item_seed)
            wanted = sorted({i for view in views for i in view})
            frames = torch.from_numpy(np.ascontiguousarray(pool[wanted]))  # copies out of the memory map
            if self.flow is not None and not self.rgb:
                frames = frames[..., 3:]
        elif self.flow is not None:
            views, frames, position = self._with_flow(record, region, item_seed)
        else:
            with open_video(record.path, backend=self.backend) as reader:
                total = min(self.num_frames.get(record.path, reader.meta.num_frames), reader.meta.num_frames)
                views = self._views(total, item_seed)
                # One decode pass for all views: frames shared between views are read once.
                wanted = sorted({i for view in views for i in view})
                frames = crop_frames(reader.get_frames(wanted), region)
        if self.cache is not None or self.flow is None:
            position = {frame_index: k for k, frame_index in enumerate(wanted)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence(item_seed).generate_state(1)[0]))
            clips = [self.transform(frames[[position[i] for i in view]]) for view in views]
        video = clips[0] if self.train else torch.stack(clips)
        return video, self.label_of(index), index

    def _with_flow(self, record: ClipRecord, region: Region, item_seed: list[int]):
        """Views, the sampled frames' channels (RGB and flow) and their rows, for a flow input."""
        with open_video(record.path, backend=self.backend) as reader:
            total = min(self.num_frames.get(record.path, reader.meta.num_frames), reader.meta.num_frames)
            views = self._views(total, item_seed)
            sampled = sorted({i for view in views for i in view})
            decode = sorted(set(sampled) | set(frames_needed(sampled, total, self.flow.stack)))
            frames = crop_frames(reader.get_frames(decode), region)
        position = {index: k for k, index in enumerate(decode)}
        channels, rows = with_flow(frames, position, sampled, total, self.flow, self.rgb, self.resize)
        return views, channels, rows

    def _views(self, total: int, item_seed: list[int]) -> list[list[int]]:
        if self.train:
            return [sample_indices(total, self.sampling, train=True, rng=np.random.default_rng(item_seed))]
        return sample_views(total, self.sampling)
