"""Exceptions of the decode stage: a bad clip versus a backend that cannot load."""

from __future__ import annotations

import os


def _one_line(text: str) -> str:
    # Reasons often quote FFmpeg or decord messages, which may span lines; logs and error tables
    # (dataset pre-scan) need one line per clip.
    return " ".join(str(text).split())


class VideoDecodeError(Exception):
    """A clip that cannot be read: missing, empty, not a video, no video stream, truncated, corrupt...

    ``str(err)`` is ``"{path}: {reason}"`` on one line; ``err.path`` and ``err.reason`` hold the parts.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = _one_line(reason)
        super().__init__(self.path, self.reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def __reduce__(self):
        # DataLoader workers send exceptions back through pickle; keep both fields.
        return (type(self), (self.path, self.reason))


class DecoderUnavailableError(RuntimeError):
    """A decode backend cannot be loaded; the message says what to install."""

    def __init__(self, backend: str, message: str):
        self.backend = backend
        super().__init__(_one_line(message))

    def __reduce__(self):
        return (type(self), (self.backend, str(self)))
