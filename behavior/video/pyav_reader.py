"""PyAV backend: the reader (the scan every backend uses lives in behavior.video.pyav_scan)."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from behavior.video.base import _INHERITED, VideoReader, stack_frames
from behavior.video.errors import VideoDecodeError
from behavior.video.pyav_scan import Scan, open_container, scan_video, single_threaded, verify_pyav


class PyAVReader(VideoReader):
    """Decodes forward from the nearest keyframe and keeps only the requested frames."""

    backend = "pyav"
    scales_on_decode = True

    def __init__(self, path: str | os.PathLike, scan: Scan | None = None):
        scan = scan or scan_video(path)
        super().__init__(path, scan.meta)
        self.scan = scan
        self._fresh = False
        self._index_of = {p: i for i, p in enumerate(scan.pts)} if scan.pts is not None else None
        # Where the last read stopped: the decoder's frame iterator and the index of the next frame it yields.
        # A read that starts at or after it goes on from there instead of seeking back (a container without a
        # seek index would otherwise be decoded again from its first frame).
        self._cursor: tuple[Iterator, int, object] | None = None  # (+ the container it decodes)
        # One converter for every frame: to_ndarray(width=...) builds a new swscale context per frame, which
        # costs three times the conversion itself.
        self._reformatter: VideoReformatter | None = None

    def _drop_handle(self) -> None:
        self._cursor = None
        super()._drop_handle()

    def _forget_if_forked(self) -> None:
        if self._pid != os.getpid() and self._cursor is not None:
            # Letting go of the parent's suspended iterator would close it, touching the inherited decoder.
            _INHERITED.append(self._cursor)
            self._cursor = None
        if self._pid != os.getpid() and self._reformatter is not None:
            # swscale may run threads of its own, which a forked child does not have: park it like the decoder.
            _INHERITED.append(self._reformatter)
            self._reformatter = None
        super()._forget_if_forked()

    def __getstate__(self) -> dict:
        # A live decoder iterator and swscale context stay in their process.
        return {**super().__getstate__(), "_cursor": None, "_reformatter": None}

    def _resume(self, key: int, target: int) -> Iterator | None:
        """The open frame iterator when going on from it reaches ``target`` no later than seeking to ``key``."""
        if self._cursor is None:
            return None
        frames, next_index, container = self._cursor
        # Only this process's own open container: a forked worker parks the one it inherited.
        return frames if container is self._handle and key <= next_index <= target else None

    def verify(self, chunk: int = 16) -> int:
        # One sequential pass is far cheaper than the base class's chunked random access.
        self._forget_if_forked()
        self._drop_handle()
        return verify_pyav(self.path, self.scan)

    def _container(self, reopen: bool = False):
        if reopen or self._handle is None:
            self._drop_handle()
            self._handle = open_container(self.path)
            stream = single_threaded(self._handle.streams[self.scan.stream_index])
            if self.threads > 1 and stream.codec_context is not None:
                stream.codec_context.thread_count = self.threads
                # Slice threads: measured faster than frame threads when frames are skipped (read_only), and
                # harmless on a stream of one slice per frame.
                stream.thread_type = "SLICE"
            self._fresh = True
        return self._handle

    def _frames(self, container, skip: bool = False):
        """Decoded frames in presentation order; a packet that fails to decode is left out, and with ``skip`` (for
        a caller that names frames by pts) so is a non-reference frame outside ``planned``: nothing needs it, so
        the decoder does not even decode it."""
        stream = container.streams[self.scan.stream_index]
        self._fresh = False
        planned = self.planned if skip and self._index_of is not None and stream.codec_context is not None else None
        skipping = None  # unknown: an earlier pass over this container may have left skipping on
        for packet in container.demux(stream):
            if planned is not None and packet.pts is not None:
                skip = self._index_of.get(packet.pts) not in planned
                if skip != skipping:  # a packet's pts names the frame it holds, whenever the decoder returns it
                    stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                continue

    def _rgb(self, frame) -> np.ndarray:
        turns = self.scan.rotation
        height, width = self.frame_size
        w, h = (height, width) if turns % 2 else (width, height)
        if self.frame_size != (self.meta.height, self.meta.width):
            # Scale while converting to RGB, so no full-size RGB frame is made; swscale BILINEAR filters
            # by the scale factor, the closest match to the antialiased torchvision resize training used.
            rgb = self._convert(frame, w, h, "BILINEAR")
            return np.rot90(rgb, turns) if turns else rgb
        # w, h differ from the frame's on a mid-stream size change: keep the clip's size
        rgb = self._convert(frame, w, h, None)
        return np.rot90(rgb, turns) if turns else rgb

    def _convert(self, frame, width: int, height: int, interpolation: str | None) -> np.ndarray:
        if self._reformatter is None:
            self._reformatter = VideoReformatter()
        # One swscale thread: readers run in DataLoader workers (a core each already), and a thread pool alive in a
        # parent when it forks a worker can deadlock the worker.
        return self._reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                          interpolation=interpolation, threads=1).to_ndarray()

    def _read(self, indices: list[int]) -> torch.Tensor:
        wanted = sorted(set(indices))
        got: dict[int, np.ndarray] = {}
        if self._index_of is not None:
            try:
                self._read_by_pts(wanted, got)
            except _Resync:
                got.clear()
                self._read_in_order(wanted, got)
        else:
            self._read_in_order(wanted, got)
        missing = [i for i in wanted if i not in got]
        if missing and self.planned is not None and not self.planned.issuperset(missing):
            # A frame outside read_only's promise may have been skipped: read again decoding every frame.
            self.planned = None
            self._drop_handle()
            return self._read(indices)
        if missing:
            raise VideoDecodeError(self.path, f"corrupt: frame {missing[0]} does not decode "
                                              f"({len(missing)} of {len(wanted)} requested frames missing)")
        return stack_frames([got[i] for i in indices])

    def _keyframe_before(self, index: int) -> int:
        keys = self.scan.keyframes
        at = bisect.bisect_right(keys, index) - 1
        return keys[at] if at >= 0 else 0

    def _read_by_pts(self, wanted: list[int], got: dict[int, np.ndarray]) -> None:
        """Frames are identified by pts, so seeking is exact; a seek that overshoots falls back."""
        todo = 0
        container = self._container()
        while todo < len(wanted):
            target = wanted[todo]
            # Without a full index only Matroska/WebM (whose cues list the keyframes) is worth one seek, and only to
            # start: after that, decoding on from where the last read stopped is never slower.
            cues = self.seek_unindexed and self._cursor is None and "matroska" in container.format.name
            exact = self.scan.indexed
            key = self._keyframe_before(target) if exact or cues else 0
            frames = self._resume(key, target)
            if frames is None:
                if key > 0:
                    container.seek(self.scan.pts[key], stream=container.streams[self.scan.stream_index],
                                   backward=True)
                elif not self._fresh:
                    container = self._container(reopen=True)
                frames = self._frames(container, skip=True)
            self._cursor = None
            started, reseek = False, False
            for frame in frames:
                index = self._index_of.get(frame.pts)
                if index is None:
                    raise _Resync
                self._cursor = (frames, index + 1, self._handle)
                if index < key:  # leading frames of an open GOP, or an earlier keyframe than asked for
                    continue
                if not started:
                    started = True
                    if key > 0 and (index > target or (not exact and index != key)):
                        raise _Resync  # the seek landed past the frame we need (or, unindexed, past its keyframe)
                while todo < len(wanted) and wanted[todo] < index:
                    todo += 1  # that frame failed to decode; _read reports it missing
                if todo < len(wanted) and wanted[todo] == index:
                    got[index] = self._rgb(frame)
                    todo += 1
                if todo == len(wanted):
                    return
                if self.scan.indexed and self._keyframe_before(wanted[todo]) > index + 1:
                    reseek = True  # a later keyframe is closer than decoding through the gap
                    break
            else:
                self._cursor = None  # the stream ended: nothing to go on from
            if not reseek:
                return

    def _read_in_order(self, wanted: list[int], got: dict[int, np.ndarray]) -> None:
        """Fallback: the i-th frame out of the decoder is frame i."""
        frames = self._resume(0, wanted[0]) if self._index_of is None else None  # pts reads number frames otherwise
        start = self._cursor[1] if frames is not None else 0
        if frames is None:
            frames = self._frames(self._container(reopen=not self._fresh))
        self._cursor = None
        wanted_set, last = set(wanted), wanted[-1]
        for index, frame in enumerate(frames, start=start):
            self._cursor = (frames, index + 1, self._handle)
            if index in wanted_set:
                got[index] = self._rgb(frame)
            if index >= last:
                break
        else:
            self._cursor = None


class _Resync(Exception):
    """Frames could not be matched to indices by pts; decode from the start instead."""
