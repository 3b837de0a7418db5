"""The PyAV scan that every backend uses to validate a clip and measure it honestly (and its salvage of damaged
clips), plus the container helpers the PyAV reader shares."""

from __future__ import annotations

import bisect
import functools
import os
import re
from dataclasses import dataclass, field

import av

from behavior.video.base import VideoMeta, judge_decode
from behavior.video.errors import VideoDecodeError

# Boxes that can open an ISO-BMFF (mp4/mov) file: such a file that FFmpeg cannot open lost its index.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")


@dataclass(frozen=True)
class Scan:
    """What one demux pass (plus decoding the first frame) learns about a clip."""

    meta: VideoMeta
    stream_index: int
    rotation: int  # quarter turns for np.rot90 that give display orientation
    pts: list[int] | None  # pts of frame i (presentation order); None when pts are missing or repeated
    keyframes: list[int] = field(default_factory=list)  # frame indices of keyframes, ascending
    indexed: bool = False  # container index lists every packet, so seeking lands exactly
    promised: int | None = None  # frame count implied by the header duration, when there is one
    leading: bool = False  # open GOPs: frames shown before a keyframe but stored after it


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, "permission denied")


def _looks_like_mp4(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return head[4:8] in _MP4_BOXES


def _ffmpeg_message(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def open_container(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        if _looks_like_mp4(path):
            raise VideoDecodeError(path, "truncated: mp4 index (moov atom) is missing or cut off") from exc
        raise VideoDecodeError(path, f"not a video ({_ffmpeg_message(exc)})") from exc


def single_threaded(stream):
    """Decode without FFmpeg worker threads.

    Readers mostly run in DataLoader workers (one process per core already), and a forked worker that
    frees a codec context with a thread pool inherited from its parent deadlocks in FFmpeg.
    """
    if stream.codec_context is not None:
        stream.codec_context.thread_count = 1
    return stream


def pick_stream(path: str, container) -> av.video.stream.VideoStream:
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt == "image2":
        raise VideoDecodeError(path, f"not a video (still image, format {fmt})")
    attached = int(av.stream.Disposition.attached_pic)
    # Cover art in audio files shows up as a one-frame "video" stream; it is not a clip.
    videos = [s for s in container.streams.video if not int(s.disposition) & attached]
    if not videos:
        raise VideoDecodeError(path, "no video stream")
    try:
        best = container.streams.best("video")
    except Exception:
        best = None
    # The same stream decord and torchcodec pick (FFmpeg's best stream), so all backends agree.
    return single_threaded(best if best in videos else videos[0])


def _fps(stream, count: int, seconds: float | None) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return count / seconds if seconds else 0.0


def _header_seconds(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag or "")
    if m:
        return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    if len(container.streams) == 1 and container.duration:
        return container.duration / av.time_base
    return None


def rotation_turns(frame) -> int:
    return int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4


def scan_video(path: str | os.PathLike) -> Scan:
    """Validate ``path`` and measure it: demux every packet (no decode) and decode only the first frame."""
    path = os.fspath(path)
    check_file(path)
    stat = os.stat(path)
    # Datasets reopen the same clips every epoch; a changed file gets a new key (errors are not cached).
    return _cached_scan(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2048)
def _cached_scan(path: str, mtime_ns: int, size: int) -> Scan:
    container = open_container(path)
    try:
        return _scan(path, container)
    except VideoDecodeError:
        raise
    except Exception as exc:
        raise VideoDecodeError(path, f"not a video ({type(exc).__name__}: {_ffmpeg_message(exc)})") from exc
    finally:
        container.close()


def _scan(path: str, container) -> Scan:
    stream = pick_stream(path, container)
    pts, keys, total, first, first_err, demux_err, last_corrupt = [], [], 0, None, None, None, False
    last_key, leading = None, False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the final flush packet, or an empty sample the index still lists
                total += packet.dts is not None
                continue
            total += 1
            if packet.is_discard:  # edit-list preroll: the decoder drops these frames
                continue
            pts.append(packet.pts if packet.pts is not None else packet.dts)
            if packet.is_keyframe:
                keys.append(pts[-1])
                last_key = pts[-1]
            elif None not in (last_key, pts[-1]) and pts[-1] < last_key:
                leading = True
            last_corrupt = packet.is_corrupt
            if first is None and len(pts) <= 64:  # tolerate a few undecodable leading packets
                try:
                    first = next(iter(packet.decode()), None)
                except av.error.DecoderNotFoundError as exc:
                    first_err = exc
                    break
                except av.error.FFmpegError as exc:
                    first_err = exc
    except av.error.DecoderNotFoundError as exc:
        first_err = exc
    except (av.error.FFmpegError, OSError) as exc:
        demux_err = exc
    count = len(pts)
    if count == 0:
        if _looks_like_mp4(path):
            raise VideoDecodeError(path, "truncated: mp4 holds no complete video frame")
        raise VideoDecodeError(path, "not a video (video stream holds no frames)")
    if isinstance(first_err, av.error.DecoderNotFoundError):
        name = stream.codec_context.name if stream.codec_context else "unknown"
        raise VideoDecodeError(path, f"unsupported codec (no FFmpeg decoder for {name})")
    if first is None:
        try:  # decoders with delay (B-frames, frame threads) release the first frame only when flushed
            first = next(iter(stream.codec_context.decode(None)), None)
        except av.error.FFmpegError as exc:
            first_err = first_err or exc
    if first is None:
        detail = f": {_ffmpeg_message(first_err)}" if first_err else ""
        raise VideoDecodeError(path, f"not a video (no frame decodes{detail})")
    indexed_count = len(stream.index_entries)
    if demux_err is not None:
        raise VideoDecodeError(path, f"truncated: stream breaks off after {count} frames "
                                     f"({_ffmpeg_message(demux_err)})")
    if indexed_count > total:
        raise VideoDecodeError(path, f"truncated: container indexes {indexed_count} frames "
                                     f"but only {total} are in the file")
    if last_corrupt:
        raise VideoDecodeError(path, f"truncated: data of frame {count - 1} is cut off")
    seconds = _header_seconds(container, stream)
    fps = _fps(stream, count, seconds)
    turns = rotation_turns(first)
    width, height = (first.height, first.width) if turns % 2 else (first.width, first.height)
    codec = stream.codec_context.name if stream.codec_context else "unknown"
    meta = VideoMeta(path=path, num_frames=count, fps=fps, width=width, height=height, codec=codec)
    order = sorted(pts) if None not in pts else None
    # AVI stores no presentation times: FFmpeg numbers its packets in decode order, so with B-frames a
    # decoded frame's pts names the wrong frame. Such clips are read in decoder output order instead.
    if order is not None and (len(set(order)) != count or container.format.name == "avi"):
        order = None
    keyframes = [] if order is None else [bisect.bisect_left(order, k) for k in keys]
    promised = None
    # A header duration only says something about truncation when the container has no full index
    # (mp4/avi index every frame and are checked above); mkv/webm/ts rely on it.
    if seconds and fps > 0 and indexed_count < total:
        promised = int(round(seconds * fps))
    return Scan(meta=meta, stream_index=stream.index, rotation=turns, pts=order,
                keyframes=sorted(set(keyframes)), indexed=indexed_count >= total, promised=promised,
                leading=leading)


def verify_pyav(path: str | os.PathLike, scan: Scan) -> int:
    path = os.fspath(path)
    decoded, failed, message = 0, [], ""
    with open_container(path) as container:
        stream = single_threaded(container.streams[scan.stream_index])
        ordinal = 0
        for packet in container.demux(stream):
            if packet.size and packet.is_discard:
                continue
            try:
                decoded += len(packet.decode())
            except av.error.FFmpegError as exc:
                if not failed or failed[-1] != ordinal:
                    failed.append(ordinal)
                message = message or _ffmpeg_message(exc)
            ordinal = min(ordinal + (packet.size > 0), scan.meta.num_frames - 1)
    return judge_decode(path, scan.meta, scan.promised, decoded, failed, message)


def scan_leading_frames(path: str | os.PathLike) -> Scan:
    """Measure a damaged clip by what decodes: frames in order from the start up to the first that fails.

    For a clip that ``scan_video`` or a read rejects as truncated or corrupt. One full decode pass; only
    frames the decoder has already released count, so the prefix has no gaps. ``promised`` is the frame
    count the container states (or its duration implies), when it gives one. Raises VideoDecodeError when
    not even the first frame decodes.
    """
    path = os.fspath(path)
    check_file(path)
    container = open_container(path)
    try:
        stream = pick_stream(path, container)
        pts, keys, first = [], [], None
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:  # its data is cut off: what it decodes to would be garbage
                    break
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    break
                for frame in frames:
                    first = first if first is not None else frame
                    if frame.key_frame:
                        keys.append(len(pts))
                    pts.append(frame.pts)
        except (av.error.FFmpegError, OSError):
            pass
        if first is None:
            raise VideoDecodeError(path, "not even the first frame decodes")
        seconds = _header_seconds(container, stream)
        fps = _fps(stream, len(pts), seconds)
        promised = stream.frames or (int(round(seconds * fps)) if seconds and fps > 0 else None)
        turns = rotation_turns(first)
        width, height = (first.height, first.width) if turns % 2 else (first.width, first.height)
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        stream_index = stream.index
    finally:
        container.close()
    order = pts if None not in pts and pts == sorted(set(pts)) else None
    meta = VideoMeta(path=path, num_frames=len(pts), fps=fps, width=width, height=height, codec=codec)
    # Not indexed: reads decode from the start, which stays exact whatever the damage did to the index.
    return Scan(meta=meta, stream_index=stream_index, rotation=turns, pts=order, keyframes=keys, indexed=False,
                promised=promised or None)
