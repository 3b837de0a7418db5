"""decord backend, fenced in: decord only sees clips that PyAV has already validated and measured.

decord can hang or crash (not raise) on damaged files and may disagree with the real frame count, so
the PyAV scan runs first, decord is opened lazily, and it is never asked for a frame beyond the
honest count or beyond what it reports itself.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import torch

from behavior.video.base import VideoReader, judge_decode
from behavior.video.errors import DecoderUnavailableError, VideoDecodeError
from behavior.video.pyav_scan import Scan, scan_video

_INSTALL = "pip install decord"
_quieted = False


def _import(name: str):
    return importlib.import_module(name)


def load_decord():
    """The decord module, or DecoderUnavailableError saying what to install."""
    global _quieted
    try:
        decord = _import("decord")
    except ImportError as exc:
        raise DecoderUnavailableError(
            "decord", f"decode.backend=decord needs the decord package, which is not installed ({exc}): "
                      f"{_INSTALL} (no wheels for some platforms such as macOS arm64; use "
                      f"decode.backend=pyav there)") from exc
    except Exception as exc:
        raise DecoderUnavailableError(
            "decord", f"decord is installed but fails to load ({type(exc).__name__}: {exc}); reinstall it: "
                      f"pip install --force-reinstall decord") from exc
    if not _quieted:
        # decord's bundled FFmpeg logs every damaged packet to stderr; errors still reach us as exceptions.
        try:
            decord.logging.set_level(decord.logging.QUIET)
        except Exception:
            pass
        _quieted = True
    return decord


def _to_numpy(batch) -> np.ndarray:
    # The result type follows decord's process-wide bridge setting, which other code may have changed.
    if isinstance(batch, torch.Tensor):
        return batch.cpu().numpy()
    if hasattr(batch, "asnumpy"):
        return batch.asnumpy()
    return np.asarray(batch)


class DecordReader(VideoReader):
    backend = "decord"
    scales_on_decode = True  # with limit_short_side, decord's own filter graph scales each frame as it decodes

    def __init__(self, path: str | os.PathLike, scan: Scan | None = None):
        self._decord = load_decord()
        scan = scan or scan_video(path)
        super().__init__(path, scan.meta)
        self.scan = scan
        self._count = scan.meta.num_frames
        self._padded = False

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_decord"] = None  # modules do not pickle; reloaded on first use in the worker
        return state

    def limit_short_side(self, limit: int | None) -> VideoReader:
        size = self.frame_size
        super().limit_short_side(limit)
        if self.frame_size != size:
            self._drop_handle()  # decord scales while decoding: an open reader decodes at the old size
        return self

    def _reader(self):
        if self._handle is None:
            decord = self._decord or load_decord()
            self._decord = decord
            # Sizes after the display rotation, as decord takes them; -1 (the clip's own) unless limit_short_side.
            height, width = self.frame_size if self.frame_size != (self.meta.height, self.meta.width) else (-1, -1)
            # One decoder thread: readers usually run inside DataLoader workers, one per core already.
            reader = decord.VideoReader(self.path, ctx=decord.cpu(0), width=width, height=height, num_threads=1)
            self._count = min(self.meta.num_frames, len(reader))
            # For some frame widths (e.g. 48, 72) decord hands out RGB rows padded to a wider line and a
            # bogus [H, W, 4] shape; get_batch then fails its size check. Look at one frame to know.
            shape = tuple(reader.next().shape)
            self._padded = shape != (*self.frame_size, 3)
            reader.seek(0)
            self._handle = reader
        return self._handle

    def _read(self, indices: list[int]) -> torch.Tensor:
        reader = self._reader()
        wanted = sorted(set(indices))
        if wanted[-1] >= self._count:
            raise VideoDecodeError(self.path, f"frame index {wanted[-1]} out of range for decord "
                                              f"(decord finds {self._count} of {self.meta.num_frames} frames)")
        if self.scan.leading or self.scan.pts is None or self._padded:
            frames = self._read_from_start(reader, wanted)
        else:
            # Plain ints, ascending and unique: decord's index handling predates numpy 2, and ascending
            # order lets it decode forward instead of seeking back for every frame.
            batch = reader.get_batch([int(i) for i in wanted])
            self._drop_lookahead(reader)  # at once: decord's thread goes on decoding until told to stop
            frames = _to_numpy(batch)
        if frames.ndim != 4 or frames.shape[0] != len(wanted):
            raise VideoDecodeError(self.path, f"decord returned {frames.shape} for {len(wanted)} frames")
        position = {index: k for k, index in enumerate(wanted)}
        out = frames[[position[i] for i in indices]]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.uint8))

    @staticmethod
    def _drop_lookahead(reader) -> None:
        """Stop decord decoding past the frames just read.

        Its reader feeds packets to a decoder thread without waiting, so it runs ahead of what was asked for, by an
        amount that depends on timing; the thread turns those packets into full-size RGB frames while the caller
        works on the last batch, and FFmpeg's frame pool keeps their buffers until the reader is freed. Read in
        chunks, a long clip piled up a third of its frames (130 MB for a 1800-frame 256x256 clip, gigabytes at
        1080p). A seek stops the thread and empties the queue; the next read seeks to its frames (from their
        keyframe) by itself.
        """
        reader.seek(0)

    def verify(self, chunk: int = 16) -> int:
        self._forget_if_forked()
        reader = self._reader()
        # One forward pass: the base class's chunked reads would each seek again (see _drop_lookahead), and with
        # leading frames restart from frame 0. Read without pauses, decord's decoder thread never gets far ahead.
        try:
            reader.seek(0)
            for _ in range(self.meta.num_frames):
                reader.next()
            self._drop_lookahead(reader)
        except Exception:
            self._drop_handle()
            return super().verify(chunk)  # slow, but only for broken clips: finds which frames fail
        return judge_decode(self.path, self.meta, self.scan.promised, self.meta.num_frames, [])

    def _unpad(self, frame: np.ndarray) -> np.ndarray:
        height, width = self.frame_size
        if frame.shape == (height, width, 3):
            return frame
        rows = frame.reshape(height, -1) if frame.size % height == 0 else None
        if rows is None or rows.shape[1] < width * 3:
            raise VideoDecodeError(self.path, f"decord returned a {frame.shape} frame, "
                                              f"expected {(height, width, 3)}")
        return rows[:, : width * 3].reshape(height, width, 3)

    def _read_from_start(self, reader, wanted: list[int]) -> np.ndarray:
        """Decode forward from frame 0 with ``next()``, decord's only exact path on open-GOP streams.

        With leading frames (open-GOP H.264, x265's default HEVC) decord's seeking, ``get_batch`` and
        ``skip_frames`` count packets instead of frames and return the wrong pictures.
        """
        reader.seek(0)
        keep, frames = set(wanted), []
        for index in range(wanted[-1] + 1):
            frame = reader.next()
            if index in keep:
                frames.append(self._unpad(_to_numpy(frame)))
        self._drop_lookahead(reader)
        return np.stack(frames)
