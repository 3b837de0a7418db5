"""Decode stage: metadata, cross-backend frame agreement, index handling and bad-file errors."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from behavior.video import (
    BACKENDS,
    DecoderUnavailableError,
    VideoDecodeError,
    VideoMeta,
    VideoReader,
    decord_reader,
    open_video,
    probe_video,
    torchcodec_reader,
)
from behavior.video.writer import remux, write_video

REPO = Path(__file__).resolve().parents[1]
T, H, W = 12, 64, 96
CODECS = ("h264", "hevc", "mpeg4", "mjpeg")


def make_frames(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Smooth gradients with soft moving blobs: realistic to compress, distinct from frame to frame."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        blob = np.exp(-(((x - 8 - 5 * i) % w) ** 2 + (y - h / 3) ** 2) / 40.0)
        blob2 = np.exp(-((x - w / 2) ** 2 + ((y - 4 - 3 * i) % h) ** 2) / 60.0)
        frames[i, ..., 0] = np.clip(200 * x / w + 55 * blob, 0, 255)
        frames[i, ..., 1] = np.clip(200 * y / h + 55 * blob2, 0, 255)
        frames[i, ..., 2] = np.clip(128 + 100 * np.sin((x + y) / 15.0 + i / 3.0), 0, 255)
    return frames


def write_gop_clip(path: Path, frames: np.ndarray, encoder: str, params: str, rotation: int = 0) -> Path:
    """A clip with several GOPs (write_video has no GOP option), so seeking paths are exercised."""
    key = "x265-params" if encoder == "libx265" else "x264-params"
    extra = ":log-level=error" if encoder == "libx265" else ""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "16", "preset": "veryfast", key: params + extra}
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decode_all_pyav(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def max_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return make_frames()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, source) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {c: write_video(root / f"{c}.{'avi' if c == 'mjpeg' else 'mp4'}", source, codec=c) for c in CODECS}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clips) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected start of the reason)."""
    root = tmp_path_factory.mktemp("bad")
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    audio = root / "audio_only.mp4"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = clips["h264"].read_bytes()
    half = root / "half.mp4"  # moov is written last, so the index is gone
    half.write_bytes(data[: len(data) // 2])
    faststart = root / "faststart.mp4"  # index first: it promises frames whose data is cut off
    remux(clips["h264"], faststart, {"movflags": "faststart"})
    cut = root / "cut_index_first.mp4"
    cut.write_bytes(faststart.read_bytes()[: int(faststart.stat().st_size * 0.6)])
    return {
        "missing": (root / "nope.mp4", "file not found"),
        "empty": (empty, "empty file"),
        "text": (text, "not a video"),
        "audio_only": (audio, "no video stream"),
        "truncated_half": (half, "truncated"),
        "truncated_index_first": (cut, "truncated"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec", CODECS)
def test_metadata(clips, codec, backend):
    meta = probe_video(clips[codec], backend)
    assert meta == VideoMeta(str(clips[codec]), T, 25.0, W, H, codec)
    assert meta.duration == pytest.approx(T / 25.0)
    with open_video(clips[codec], backend) as reader:
        assert isinstance(reader, VideoReader) and reader.meta == meta and len(reader) == T
    assert probe_video(clips[codec], backend, verify=True).num_frames == T


@pytest.mark.parametrize("codec", CODECS)
def test_backends_agree_frame_by_frame(clips, source, codec):
    everything = list(range(T))
    decoded = {}
    for backend in BACKENDS:
        with open_video(clips[codec], backend) as reader:
            frames = reader.get_frames(everything)
        assert frames.dtype == torch.uint8 and tuple(frames.shape) == (T, H, W, 3)
        decoded[backend] = frames.numpy()
    # The reference itself is sane: close to what was encoded (lossy codecs, so only on average).
    assert np.abs(decoded["pyav"].astype(np.int16) - source).mean() < 3.0
    for backend in BACKENDS[1:]:
        for i in everything:
            assert max_diff(decoded[backend][i], decoded["pyav"][i]) <= 2, (codec, backend, i)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsorted_and_duplicate_indices(clips, backend):
    with open_video(clips["h264"], backend) as reader:
        full = reader.get_frames(range(T)).numpy()
        indices = [7, 2, 2, 11, 0, 7]
        picked = reader.get_frames(np.array(indices)).numpy()
        assert reader.get_frames([]).shape == (0, H, W, 3)
    assert max_diff(picked, full[indices]) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_out_of_range(clips, backend):
    with open_video(clips["h264"], backend) as reader:
        for bad in (T, -1):
            with pytest.raises(VideoDecodeError) as err:
                reader.get_frames([0, bad])
            assert err.value.reason == f"frame index {bad} out of range (clip has {T} frames)"


@pytest.fixture(scope="module")
def gop_clips(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    root = tmp_path_factory.mktemp("gop")
    frames = make_frames(t=60)
    specs = {
        "h264_closed": ("libx264", "keyint=10:min-keyint=10:bframes=3:scenecut=0"),
        "h264_open": ("libx264", "keyint=10:min-keyint=10:bframes=3:scenecut=0:open-gop=1"),
        "hevc_open": ("libx265", "keyint=10:min-keyint=10:bframes=3:scenecut=0"),  # x265 is open-GOP by default
    }
    out = {}
    for name, (encoder, params) in specs.items():
        path = write_gop_clip(root / f"{name}.mp4", frames, encoder, params)
        out[name] = (path, decode_all_pyav(path))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264_closed", "h264_open", "hevc_open"])
def test_sparse_indices_across_gops(gop_clips, name, backend):
    """Seeking must land on the exact frame, also with open GOPs (decord's own seeking gets these wrong)."""
    path, reference = gop_clips[name]
    rng = np.random.default_rng(7)
    with open_video(path, backend) as reader:
        assert reader.meta.num_frames == 60
        for _ in range(3):
            indices = rng.integers(0, 60, 6).tolist() + [59, 31, 31]
            assert max_diff(reader.get_frames(indices), reference[indices]) == 0, indices


def test_odd_widths_and_rotation(tmp_path):
    """decord pads rows of some widths (e.g. 72) and all backends apply the display rotation."""
    frames = make_frames(t=6, h=130, w=72)
    plain = write_video(tmp_path / "w72.mp4", frames)
    rotated = write_gop_clip(tmp_path / "rot.mp4", frames, "libx264", "keyint=4", rotation=90)
    reference, stored = decode_all_pyav(plain), decode_all_pyav(rotated)  # PyAV itself ignores rotation
    for backend in BACKENDS:
        with open_video(plain, backend) as reader:
            assert max_diff(reader.get_frames(range(6)), reference) <= 2, backend
        with open_video(rotated, backend) as reader:
            assert (reader.meta.width, reader.meta.height) == (130, 72)
            got = reader.get_frames([0, 5]).numpy()
        assert max_diff(got, np.rot90(stored[[0, 5]], 1, axes=(1, 2))) <= 2, backend


def test_frames_shrunk_on_decode_agree_across_backends(tmp_path):
    """max_short_side: PyAV and decord scale each frame while decoding, torchcodec one frame at a time after; an odd
    width and a display rotation give all three the same picture."""
    frames = make_frames(t=6, h=130, w=72)
    plain = write_video(tmp_path / "w72.mp4", frames)
    rotated = write_gop_clip(tmp_path / "rot.mp4", frames, "libx264", "keyint=4", rotation=90)
    for path, size in ((plain, (87, 48)), (rotated, (48, 87))):
        got = {}
        for backend in BACKENDS:
            with open_video(path, backend, max_short_side=48) as reader:
                got[backend] = reader.get_frames([5, 0, 0]).numpy().astype(int)
            assert got[backend].shape == (3, *size, 3), backend
        for backend in ("decord", "torchcodec"):
            assert np.abs(got[backend] - got["pyav"]).mean() < 4, (path.name, backend)
        assert (got["pyav"][1] == got["pyav"][2]).all()


def _patch_mp4_sample_count(path: Path, extra: int) -> None:
    """Make the stts box claim ``extra`` more frames than the file holds (a lying header)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"stts")
    count = struct.unpack(">I", data[at + 12:at + 16])[0]
    data[at + 12:at + 16] = struct.pack(">I", count + extra)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_honest_frame_count(tmp_path, source, backend):
    lying = write_video(tmp_path / "lying.mp4", source)
    _patch_mp4_sample_count(lying, 88)
    no_count = write_video(tmp_path / "no_count.mkv", source)  # Matroska stores no frame count
    with av.open(str(lying)) as container:
        assert container.streams.video[0].frames == T + 88
    with av.open(str(no_count)) as container:
        assert container.streams.video[0].frames == 0
    for path in (lying, no_count):
        assert probe_video(path, backend).num_frames == T
        assert probe_video(path, backend, verify=True).num_frames == T
        with open_video(path, backend) as reader:
            assert reader.get_frames([T - 1]).shape == (1, H, W, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["missing", "empty", "text", "audio_only", "truncated_half",
                                  "truncated_index_first"])
def test_bad_files_raise_video_decode_error(bad_files, case, backend):
    path, reason = bad_files[case]
    for attempt in (lambda: open_video(path, backend).get_frames([0]),
                    lambda: probe_video(path, backend, verify=True)):
        with pytest.raises(VideoDecodeError) as err:
            attempt()
        assert err.value.reason.startswith(reason), err.value.reason
        assert err.value.path == str(path)
        assert str(err.value) == f"{path}: {err.value.reason}" and "\n" not in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_detects_stream_cut_short(tmp_path, backend):
    """A Matroska file cut mid-way still demuxes cleanly; its header duration gives it away."""
    full = write_video(tmp_path / "long.mkv", make_frames(t=48))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert probe_video(cut, backend).num_frames < 48  # cheap probe: honest count of what is there
    with pytest.raises(VideoDecodeError, match="truncated"):
        probe_video(cut, backend, verify=True)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"decode\.backend.*pyav, decord, torchcodec"):
        open_video("whatever.mp4", backend="opencv")


def test_decoder_unavailable_messages(monkeypatch, clips):
    monkeypatch.setitem(sys.modules, "decord", None)
    with pytest.raises(DecoderUnavailableError, match="pip install decord"):
        open_video(clips["h264"], "decord")
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    with pytest.raises(DecoderUnavailableError, match="pip install torchcodec"):
        probe_video(clips["h264"], "torchcodec")
    monkeypatch.delitem(sys.modules, "torchcodec.decoders")

    def no_ffmpeg(name):  # what torchcodec raises on import when libavcodec & co. are missing
        raise RuntimeError("Could not load libtorchcodec. Likely causes: FFmpeg is not properly installed")

    monkeypatch.setattr(torchcodec_reader, "_import", no_ffmpeg)
    with pytest.raises(DecoderUnavailableError) as err:
        open_video(clips["h264"], "torchcodec")
    assert "apt-get install -y ffmpeg" in str(err.value) and "pip install torchcodec" in str(err.value)

    def broken_decord(name):
        raise OSError("libavcodec.so.58: cannot open shared object file")

    monkeypatch.setattr(decord_reader, "_import", broken_decord)
    with pytest.raises(DecoderUnavailableError, match="pip install --force-reinstall decord"):
        open_video(clips["h264"], "decord")


@pytest.mark.slow
def test_import_without_optional_backends(clips):
    code = (
        "import sys; sys.modules['decord'] = None; sys.modules['torchcodec'] = None\n"
        "from behavior.video import open_video, backend_available\n"
        f"assert open_video({str(clips['h264'])!r}).get_frames([0]).shape == (1, {H}, {W}, 3)\n"
        "assert not backend_available('decord') and not backend_available('torchcodec')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reader_and_error_pickle(clips, backend):
    reader = open_video(clips["mpeg4"], backend)
    first = reader.get_frames([3])
    clone = pickle.loads(pickle.dumps(reader))  # decoder handle is dropped and reopened on use
    assert max_diff(clone.get_frames([3]), first) == 0
    err = pickle.loads(pickle.dumps(VideoDecodeError("a.mp4", "empty file")))
    assert (err.path, err.reason, str(err)) == ("a.mp4", "empty file", "a.mp4: empty file")


class _FramesOf(torch.utils.data.Dataset):
    def __init__(self, reader: VideoReader):
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.reader.get_frames([i])[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reader_in_forked_dataloader_workers(clips, backend):
    """Workers forked after the parent decoded must not share its decoder (and its file offset)."""
    with open_video(clips["h264"], backend) as reader:
        expected = reader.get_frames(range(T))
        loader = torch.utils.data.DataLoader(_FramesOf(reader), batch_size=3, num_workers=2,
                                             multiprocessing_context="fork", timeout=60)
        assert max_diff(torch.cat(list(loader)), expected) == 0


def _shared_datasets() -> Path | None:
    for root in (Path("/work/shared/datasets"), REPO.parent / "shared" / "datasets"):
        if (root / "basketball").is_dir():
            return root
    return None


def test_shared_basketball_clips_agree():
    root = _shared_datasets()
    if root is None:
        pytest.skip("shared datasets folder (../shared/datasets) is absent")
    by_codec: dict[str, list[Path]] = {}
    for path in sorted((root / "basketball").glob("*/*.mp4")):
        codec = probe_video(path).codec
        if len(by_codec.setdefault(codec, [])) < 3:
            by_codec[codec].append(path)
        if sum(map(len, by_codec.values())) >= 6 and len(by_codec) >= 2:
            break
    assert "hevc" in by_codec
    for paths in by_codec.values():
        for path in paths:
            count = probe_video(path, verify=True).num_frames
            reference = open_video(path).get_frames(range(count)).numpy()
            for backend in BACKENDS[1:]:
                assert probe_video(path, backend).num_frames == count
                with open_video(path, backend) as reader:
                    assert max_diff(reader.get_frames(range(count)), reference) <= 2, (path, backend)
