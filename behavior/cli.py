"""Shared bits of the entry points: one-line errors, device choice, run directory."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

from behavior.errors import BehaviorError, ConfigError
from behavior.video import DecoderUnavailableError, VideoDecodeError

USER_ERRORS = (BehaviorError, VideoDecodeError, DecoderUnavailableError)


def one_line_errors(main):
    """Turn the project's own errors into ``error: ...`` on stderr and exit status 2, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: checkpoints written so far are kept", file=sys.stderr)
            sys.exit(130)

    return wrapper


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: CUDA is not available on this machine (use auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name!r}: use auto, cpu, cuda or cuda:N") from None


def hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
