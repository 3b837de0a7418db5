"""Shared bits of the entry points: one-line errors, device choice, run directory."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from behavior.errors import BehaviorError
from behavior.paths import conf_dir
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


def entry_point(config_name: str):
    """``@hydra.main`` over ``conf/<config_name>.yaml`` plus one-line errors, for ``python -m behavior.<stage>``.

    Hydra reports a bad command-line override (unknown key, missing option, syntax) in five lines with exit
    status 1; the overrides are composed once first so such a mistake is one ``error: ...`` line and status 2,
    like every other configuration error."""

    def decorate(task):
        hydra_main = hydra.main(config_path=str(conf_dir()), config_name=config_name,
                                version_base="1.3")(one_line_errors(task))

        @functools.wraps(task)
        def main(cfg_passthrough=None):
            if cfg_passthrough is None:
                message = override_error(config_name, sys.argv[1:])
                if message:
                    print(f"error: {message}", file=sys.stderr)
                    sys.exit(2)
            return hydra_main(cfg_passthrough)

        return main

    return decorate


def override_error(config_name: str, overrides: list[str]) -> str | None:
    """Why Hydra cannot compose ``config_name`` with ``overrides``, in one line, or None when it can.

    Command lines with flags (``--help``, ``--cfg``, ``-m`` sweeps) are left to Hydra itself."""
    if any(arg.startswith("-") for arg in overrides):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            compose(config_name=config_name, overrides=overrides)
        except MissingConfigException as err:
            option = err.missing_cfg_file or ""
            group, _, name = option.rpartition("/")
            if group and err.options:
                return f"{group}={name}: no such option in conf/{group}/; available: {', '.join(err.options)}"
            return first_line(err)
        except OverrideParseException as err:
            return f"cannot read the override {err.override!r}: {first_line(err)}"
        except (HydraException, OmegaConfBaseException) as err:
            key = getattr(err.__cause__, "full_key", None)
            if key:
                return unknown_key_message(config_name, str(key))
            return first_line(err) + (f" ({first_line(err.__cause__)})" if err.__cause__ else "")
    return None


def unknown_key_message(config_name: str, key: str) -> str:
    from hydra import compose

    parent, _, _ = key.rpartition(".")
    base = compose(config_name=config_name)
    node = OmegaConf.select(base, parent) if parent else base
    allowed = f"; allowed keys{' of ' + parent if parent else ''}: {', '.join(map(str, node.keys()))}" \
        if OmegaConf.is_dict(node) else ""
    return f"{key} is not a known key{allowed}"


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
