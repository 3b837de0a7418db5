"""A DataLoader whose workers may not hang: a batch that takes too long stops the run with the clip named.

The pre-scan already decodes every clip once in a killable process, so a clip that hangs its decoder is normally
listed in ``bad_clips.csv`` before training starts. This covers what the pre-scan cannot: ``data.prescan=quick``
or ``off``, and decoders that hang on the sampled frames only. Each worker decodes a whole batch, so the wait for
one batch is bounded by ``clip_timeout x batch_size``; when it runs out, every clip of the split is decoded once
more in a guarded process (``map_with_timeout``) to name the culprit. With ``num_workers=0`` clips are decoded in
the main process and only the pre-scan's bound applies.
"""

from __future__ import annotations

from torch.utils.data import DataLoader

from behavior.video.errors import VideoDecodeError
from behavior.video.guard import DecodeTimeout, map_with_timeout

_TIMED_OUT = object()


class TimedLoader(DataLoader):
    def __init__(self, dataset, *, batch_size: int, num_workers: int, clip_timeout: float | None, **kwargs):
        self.clip_timeout = clip_timeout
        if clip_timeout is not None and num_workers > 0:
            kwargs["timeout"] = clip_timeout * batch_size
        super().__init__(dataset, batch_size=batch_size, num_workers=num_workers, **kwargs)

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as err:
                if "DataLoader timed out" not in str(err) or self.clip_timeout is None:
                    raise
                batch = _TIMED_OUT
            if batch is _TIMED_OUT:
                del batches  # its workers are shut down (the stuck one terminated) before the guarded re-decode
                raise hanging_clip_error(self.dataset, self.clip_timeout)
            yield batch


def hanging_clip_error(dataset, timeout: float) -> VideoDecodeError:
    """The error naming the first clip of ``dataset`` that still cannot be loaded within ``timeout`` seconds."""
    paths = [record.path for record in dataset.records]
    for index, ok, value in map_with_timeout(dataset.__getitem__, range(len(dataset)), timeout,
                                             name=lambda i: paths[i]):
        if not ok:
            if isinstance(value, DecodeTimeout):
                reason = f"decoding took over {timeout:g}s in a DataLoader worker (data.decode_timeout)"
            else:
                reason = value.reason if isinstance(value, VideoDecodeError) else f"{type(value).__name__}: {value}"
            return VideoDecodeError(paths[index], f"{reason}; remove or re-encode the clip (a training run keeps its "
                                                  "finished epochs in last.pt: trainer.resume=auto continues)")
    return VideoDecodeError(f"{len(paths)} clips", f"a DataLoader worker waited over {timeout:g}s per clip for one "
                                                  "batch, yet every clip loads in time when retried (a training "
                                                  "run continues with trainer.resume=auto)")
