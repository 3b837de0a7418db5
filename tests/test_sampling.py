from pathlib import Path

import numpy as np
import pytest

from behavior.config import load_option
from behavior.data.sampling import SamplingConfig, sample_indices, sample_views

CONF = Path(__file__).resolve().parents[1] / "conf" / "sampling"
MODES = ("tsn", "uniform", "dense")


def sampling(**overrides) -> SamplingConfig:
    """conf/sampling/tsn.yaml (the former dataclass defaults) with ``overrides``."""
    return SamplingConfig.preset("tsn", **overrides)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def is_non_decreasing(xs: list[int]) -> bool:
    return all(a <= b for a, b in zip(xs, xs[1:], strict=False))


# --- shared contract -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 16, 33, 100, 301])
@pytest.mark.parametrize("t", [1, 4, 8])
@pytest.mark.parametrize("pad", ["loop", "repeat_last"])
def test_length_and_range(mode, n, t, pad):
    cfg = sampling(mode=mode, num_frames=t, frame_interval=3, pad=pad, num_views=3)
    outs = [sample_indices(n, cfg, train=False), sample_indices(n, cfg, train=True, rng=rng(n))]
    outs += sample_views(n, cfg)
    for idx in outs:
        assert len(idx) == t
        assert all(isinstance(i, int) and 0 <= i < n for i in idx)
        if pad == "repeat_last":
            assert is_non_decreasing(idx)


@pytest.mark.parametrize("mode", MODES)
def test_one_frame_clip_is_all_zeros(mode):
    for pad in ("loop", "repeat_last"):
        cfg = sampling(mode=mode, num_frames=8, frame_interval=2, pad=pad)
        assert sample_indices(1, cfg, train=False) == [0] * 8
        assert sample_indices(1, cfg, train=True, rng=rng()) == [0] * 8


@pytest.mark.parametrize("mode", ["tsn", "uniform"])
def test_clip_length_equals_t_uses_every_frame(mode):
    cfg = sampling(mode=mode, num_frames=8)
    assert sample_indices(8, cfg, train=False) == list(range(8))
    for seed in range(5):
        assert sample_indices(8, cfg, train=True, rng=rng(seed)) == list(range(8))


def test_dense_clip_length_equals_span_uses_every_strided_frame():
    cfg = sampling(mode="dense", num_frames=4, frame_interval=3)
    assert sample_indices(10, cfg, train=False) == [0, 3, 6, 9]
    assert sample_indices(10, cfg, train=True, rng=rng()) == [0, 3, 6, 9]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_clip_length_raises(mode, bad):
    cfg = sampling(mode=mode)
    with pytest.raises(ValueError, match="num_frames_in_clip"):
        sample_indices(bad, cfg, train=False)
    with pytest.raises(ValueError, match="num_frames_in_clip"):
        sample_views(bad, cfg)


def test_train_requires_rng():
    with pytest.raises(ValueError, match="rng"):
        sample_indices(50, sampling(), train=True)


@pytest.mark.parametrize("mode", MODES)
def test_eval_is_deterministic_and_ignores_rng(mode):
    cfg = sampling(mode=mode, frame_interval=2)
    first = sample_indices(97, cfg, train=False)
    assert sample_indices(97, cfg, train=False, rng=rng(1)) == first
    assert sample_indices(97, cfg, train=False, rng=rng(2)) == first
    assert is_non_decreasing(first)


@pytest.mark.parametrize("mode", MODES)
def test_train_is_reproducible_from_seed_and_varies(mode):
    cfg = sampling(mode=mode, frame_interval=2)
    assert sample_indices(200, cfg, True, rng(7)) == sample_indices(200, cfg, True, rng(7))
    draws = {tuple(sample_indices(200, cfg, True, rng(s))) for s in range(20)}
    assert len(draws) > 1


def test_t_equals_one():
    assert sample_indices(10, sampling(mode="tsn", num_frames=1), train=False) == [5]
    assert sample_indices(10, sampling(mode="uniform", num_frames=1), train=False) == [5]
    assert sample_indices(10, sampling(mode="dense", num_frames=1), train=False) == [5]
    for seed in range(10):
        (i,) = sample_indices(10, sampling(mode="tsn", num_frames=1), True, rng(seed))
        assert 0 <= i < 10


# --- padding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tsn", "uniform"])
def test_short_clip_padding(mode):
    loop = sampling(mode=mode, num_frames=8, pad="loop")
    last = sampling(mode=mode, num_frames=8, pad="repeat_last")
    assert sample_indices(3, loop, train=False) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert sample_indices(3, last, train=False) == [0, 1, 2, 2, 2, 2, 2, 2]
    assert sample_indices(3, loop, train=True, rng=rng()) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert sample_indices(3, last, train=True, rng=rng()) == [0, 1, 2, 2, 2, 2, 2, 2]


def test_dense_short_clip_padding_keeps_stride():
    loop = sampling(mode="dense", num_frames=5, frame_interval=2, pad="loop")
    last = sampling(mode="dense", num_frames=5, frame_interval=2, pad="repeat_last")
    assert sample_indices(5, loop, train=False) == [0, 2, 4, 0, 2]
    assert sample_indices(5, last, train=False) == [0, 2, 4, 4, 4]
    assert sample_indices(3, sampling(mode="dense", num_frames=6, pad="loop"), False) == [0, 1, 2] * 2


# --- mode semantics --------------------------------------------------------------------------


def test_tsn_eval_takes_segment_centres():
    cfg = sampling(mode="tsn", num_frames=4)
    assert sample_indices(40, cfg, train=False) == [5, 15, 25, 35]


@pytest.mark.parametrize("n", [8, 9, 13, 40, 101])
def test_tsn_train_draws_within_each_segment(n):
    t = 8
    cfg = sampling(mode="tsn", num_frames=t)
    bounds = [(i * n // t, (i + 1) * n // t) for i in range(t)]
    seen = [set() for _ in range(t)]
    for seed in range(60):
        idx = sample_indices(n, cfg, train=True, rng=rng(seed))
        for k, (i, (lo, hi)) in enumerate(zip(idx, bounds, strict=True)):
            assert lo <= i < hi
            seen[k].add(i)
    # Randomness actually reaches across the segment when it holds several frames.
    if n >= 3 * t:
        assert all(len(s) > 1 for s in seen)


def test_uniform_train_keeps_even_spacing_with_random_phase():
    cfg = sampling(mode="uniform", num_frames=8)
    starts = set()
    for seed in range(30):
        idx = sample_indices(80, cfg, train=True, rng=rng(seed))
        assert np.diff(idx).tolist() == [10] * 7
        assert 0 <= idx[0] < 10
        starts.add(idx[0])
    assert len(starts) > 3
    assert sample_indices(80, cfg, train=False) == [5, 15, 25, 35, 45, 55, 65, 75]


def test_dense_eval_is_centred_and_train_start_random():
    cfg = sampling(mode="dense", num_frames=4, frame_interval=2)  # span 7
    assert sample_indices(17, cfg, train=False) == [5, 7, 9, 11]  # starts 0..10, centre 5
    starts = set()
    for seed in range(50):
        idx = sample_indices(17, cfg, train=True, rng=rng(seed))
        assert np.diff(idx).tolist() == [2, 2, 2]
        assert 0 <= idx[0] <= 10
        starts.add(idx[0])
    assert len(starts) > 5


# --- views -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 5, 64, 250])
def test_single_view_equals_eval_sample(mode, n):
    cfg = sampling(mode=mode, frame_interval=2, num_views=1)
    assert sample_views(n, cfg) == [sample_indices(n, cfg, train=False)]


@pytest.mark.parametrize("mode", MODES)
def test_views_count_distinct_and_spread(mode):
    cfg = sampling(mode=mode, num_frames=8, frame_interval=2, num_views=4)
    views = sample_views(200, cfg)
    assert len(views) == 4
    assert len({tuple(v) for v in views}) == 4
    assert all(is_non_decreasing(v) for v in views)
    firsts = [v[0] for v in views]
    assert firsts == sorted(firsts)
    assert sample_views(200, cfg) == views


def test_tsn_views_use_different_offsets_within_each_segment():
    cfg = sampling(mode="tsn", num_frames=4, num_views=2)
    assert sample_views(40, cfg) == [[2, 12, 22, 32], [7, 17, 27, 37]]


def test_dense_views_spread_start_positions_over_the_clip():
    cfg = sampling(mode="dense", num_frames=8, frame_interval=2, num_views=3)  # span 15
    views = sample_views(115, cfg)  # 101 possible starts: 0..100
    starts = [v[0] for v in views]
    assert starts == [16, 50, 84]
    assert views[-1][-1] < 115


def test_views_on_short_clip_are_identical():
    cfg = sampling(mode="tsn", num_frames=8, num_views=3)
    assert sample_views(4, cfg) == [[0, 1, 2, 3, 0, 1, 2, 3]] * 3


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_yaml_group_files_load_and_are_complete(mode):
    omegaconf = pytest.importorskip("omegaconf")
    raw = omegaconf.OmegaConf.load(CONF / f"{mode}.yaml")
    cfg = SamplingConfig.from_mapping(raw)
    assert cfg == SamplingConfig.preset(mode)
    assert cfg.mode == mode
    assert cfg.num_frames == 8
    assert set(raw.keys()) == set(SamplingConfig.__dataclass_fields__)


def test_config_from_mapping_is_complete_and_plain():
    assert SamplingConfig.from_mapping(load_option("sampling", "tsn")) == sampling()
    cfg = SamplingConfig.from_mapping({"mode": "dense", "num_frames": np.int64(16), "frame_interval": 4,
                                       "pad": "loop", "num_views": 1})
    assert cfg == sampling(mode="dense", num_frames=16, frame_interval=4)
    assert type(cfg.num_frames) is int
    with pytest.raises(ValueError, match=r"^sampling\.num_frames is missing"):
        SamplingConfig.from_mapping({"mode": "tsn", "frame_interval": 1, "pad": "loop", "num_views": 1})


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"mode": "random"}, r"^sampling\.mode=random: choose one of tsn, uniform, dense$"),
        ({"pad": "zeros"}, r"^sampling\.pad=zeros: choose one of loop, repeat_last$"),
        ({"num_frames": 0}, r"^sampling\.num_frames=0: must be an integer >= 1$"),
        ({"num_frames": 2.5}, r"^sampling\.num_frames=2\.5: "),
        ({"num_frames": True}, r"^sampling\.num_frames=true: "),
        ({"frame_interval": -1}, r"^sampling\.frame_interval=-1: "),
        ({"num_views": "3"}, r"^sampling\.num_views=3: "),
        ({"clip_len": 8}, r"^sampling\.clip_len is not a known key; allowed keys of sampling: mode, num_frames"),
    ],
)
def test_config_validation_errors(raw, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        sampling(**raw)
    assert "\n" not in str(err.value)


def test_direct_construction_is_validated():
    with pytest.raises(ValueError, match=r"^sampling\.mode=TSN: "):
        SamplingConfig(mode="TSN", num_frames=8, frame_interval=1, pad="loop", num_views=1)
