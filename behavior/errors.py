"""Errors that stop a run with one line naming the config key or file at fault."""

from __future__ import annotations


class BehaviorError(Exception):
    """Base of the user-facing errors: the entry points print ``str(err)`` on one line and exit 2."""


class ConfigError(BehaviorError, ValueError):
    """A config value is missing, of the wrong type or out of range; the message names the key."""


class DataError(BehaviorError):
    """The dataset cannot be used as configured (no clips, unknown class, bad manifest row...)."""


class DivergedError(BehaviorError):
    """The training loss stopped being a finite number; checkpoints of the epochs before stay as they were."""
