"""The clip record: the one small value used everywhere a clip is named."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipRecord:
    """A clip on disk with its class name and, optionally, the group it belongs to (actor, source)."""

    path: str
    label: str
    group: str | None = None
