"""Frame-index samplers: which frames of a decoded clip become the T frames fed to the model.

Three modes, each a pure function of (clip length, config, train flag, rng):

* ``tsn``     - split the clip into T equal segments; training picks a random frame in each
                segment, evaluation the centre frame of each segment.
* ``uniform`` - T strictly evenly spaced frames over the whole clip. Evaluation takes the
                segment centres (the same frames as TSN evaluation). Training keeps the exact
                spacing and shifts the whole grid by ONE random phase shared by all frames, so
                the model sees evenly spaced frames at train and test time, unlike TSN whose
                per-segment draws make the spacing irregular.
* ``dense``   - ``num_frames`` consecutive frames ``frame_interval`` apart; training picks a
                random start, evaluation the centred start.

Evaluation with several views (:func:`sample_views`) splits the range of possible positions
into ``num_views`` equal bins and takes the centre of each bin: TSN/uniform use view-specific
offsets inside every segment, dense uses evenly spread start positions. With one view the
single bin centre is exactly the evaluation sample of :func:`sample_indices`.

Clips too short for the request are filled by ``pad``: ``loop`` cycles the frames that were
taken (0,1,2,0,1,2,...), ``repeat_last`` holds the last one (0,1,2,2,2,...).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from behavior.config import Settings, check_choice, check_number

MODES = ("tsn", "uniform", "dense")
PADS = ("loop", "repeat_last")


@dataclass(frozen=True)
class SamplingConfig(Settings):
    """How frames are chosen from a clip (the ``sampling`` group); checked on construction."""

    GROUP = "sampling"
    mode: str
    num_frames: int
    frame_interval: int
    pad: str
    num_views: int

    def __post_init__(self) -> None:
        check_choice("sampling.mode", self.mode, MODES)
        check_choice("sampling.pad", self.pad, PADS)
        for name in ("num_frames", "frame_interval", "num_views"):
            # numpy integers are accepted but stored as int so configs compare and hash plainly.
            object.__setattr__(self, name, check_number(f"sampling.{name}", getattr(self, name), 1, integer=True))

    @property
    def span(self) -> int:
        """Frames covered by one dense clip: first to last sampled frame inclusive."""
        return (self.num_frames - 1) * self.frame_interval + 1


def _clip_length(num_frames_in_clip: int) -> int:
    try:
        n = operator.index(num_frames_in_clip)
    except TypeError:
        raise ValueError(f"num_frames_in_clip must be an integer; got {num_frames_in_clip!r}") from None
    if n <= 0:
        raise ValueError(f"num_frames_in_clip must be >= 1; got {n}")
    return n


def _pad(taken: list[int], total: int, pad: str) -> list[int]:
    """Extend the frames actually available to exactly ``total`` indices."""
    if len(taken) >= total:
        return taken[:total]
    if pad == "loop":
        return [taken[i % len(taken)] for i in range(total)]
    return taken + [taken[-1]] * (total - len(taken))


def _segment_bounds(n: int, t: int) -> list[tuple[int, int]]:
    # Integer bounds so every segment is non-empty when n >= t and segments tile [0, n) exactly.
    return [(i * n // t, (i + 1) * n // t) for i in range(t)]


def _tsn(n: int, cfg: SamplingConfig, view: int, views: int, rng: np.random.Generator | None) -> list[int]:
    t = cfg.num_frames
    if n < t:
        return _pad(list(range(n)), t, cfg.pad)
    bounds = _segment_bounds(n, t)
    if rng is not None:
        return [int(rng.integers(start, end)) for start, end in bounds]
    # Centre of bin `view` of `views` equal bins inside each segment; views=1 -> segment centre.
    return [start + ((2 * view + 1) * (end - start)) // (2 * views) for start, end in bounds]


def _uniform(
    n: int, cfg: SamplingConfig, view: int, views: int, rng: np.random.Generator | None
) -> list[int]:
    t = cfg.num_frames
    if n < t:
        return _pad(list(range(n)), t, cfg.pad)
    if rng is not None:
        # Phase drawn in steps of 1/n of a stride so the grid is exact integer arithmetic:
        # floor((i + o/n) * n / t) == (i*n + o) // t, which never reaches n.
        o = int(rng.integers(0, n))
        return [(i * n + o) // t for i in range(t)]
    # Exact integer form of floor((i + (2*view+1)/(2*views)) * n / t).
    return [((2 * i * views + 2 * view + 1) * n) // (2 * views * t) for i in range(t)]


def _dense(n: int, cfg: SamplingConfig, view: int, views: int, rng: np.random.Generator | None) -> list[int]:
    span, step = cfg.span, cfg.frame_interval
    if n < span:
        # Keep the requested frame spacing on what exists, then fill.
        return _pad(list(range(0, n, step)), cfg.num_frames, cfg.pad)
    last_start = n - span
    if rng is not None:
        start = int(rng.integers(0, last_start + 1))
    else:
        start = ((2 * view + 1) * (last_start + 1)) // (2 * views)
    return [start + k * step for k in range(cfg.num_frames)]


_SAMPLERS = {"tsn": _tsn, "uniform": _uniform, "dense": _dense}


def sample_indices(
    num_frames_in_clip: int,
    cfg: SamplingConfig,
    train: bool,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Exactly ``cfg.num_frames`` frame indices in ``[0, num_frames_in_clip)``.

    ``train=True`` draws from ``rng`` (required, so every random choice is reproducible from a
    seed the caller controls, including in DataLoader workers); ``train=False`` is deterministic
    and ignores ``rng``.
    """
    n = _clip_length(num_frames_in_clip)
    if train and rng is None:
        raise ValueError("sample_indices(train=True) needs rng: pass a numpy.random.Generator")
    return _SAMPLERS[cfg.mode](n, cfg, 0, 1, rng if train else None)


def sample_views(num_frames_in_clip: int, cfg: SamplingConfig) -> list[list[int]]:
    """``cfg.num_views`` deterministic evaluation views whose predictions are meant to be averaged.

    Views are spread by taking the centres of ``num_views`` equal bins of the possible positions
    (within each segment for TSN/uniform, over the start positions for dense). Clips too short
    to offer a choice yield identical views.
    """
    n = _clip_length(num_frames_in_clip)
    sampler = _SAMPLERS[cfg.mode]
    return [sampler(n, cfg, v, cfg.num_views, None) for v in range(cfg.num_views)]
