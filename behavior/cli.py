"""Shared bits of the entry points: one-line errors, device choice, run directory."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from behavior.engine.distributed import stop, world
from behavior.errors import BehaviorError
from behavior.paths import conf_dir, user_path
from behavior.runlog import capture_output, tee_output
from behavior.usage import command_help, override_hint, quote_overrides, single_quoted
from behavior.video import DecoderUnavailableError, VideoDecodeError

USER_ERRORS = (BehaviorError, VideoDecodeError, DecoderUnavailableError)


def one_line_errors(main):
    """Turn the project's own errors into ``error: ...`` on stderr and exit status 2, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            # Under torchrun an error rank 0 found stops every rank (distributed.on_main): rank 0 says it, once.
            if world().main or not getattr(err, "from_rank_0", False):
                print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def entry_point(config_name: str, prepare: Callable[[DictConfig, Path, bool], Any] | None = None,
                log: bool = False, quiet_ranks: bool = True):
    """``@hydra.main`` over ``conf/<config_name>.yaml`` plus one-line errors, for ``python -m behavior.<stage>``.

    A refused command leaves no trace: Hydra creates the run folder and writes ``.hydra/`` before the task runs,
    so everything that can be checked without writing is checked first. The overrides are composed once (a bad
    override is one ``error: ...`` line and status 2, not Hydra's five lines and status 1), then
    ``prepare(cfg, run_dir, run_dir_given)`` checks the settings, paths, data and run folder and returns the plan
    the task carries out: ``task(cfg, plan)``. A plan may move the run to ``plan.run_dir`` (evaluate next to a
    training run). With ``log`` what the command prints also goes to ``<run folder>/<config_name>.log``.
    ``-m`` sweeps and Hydra's own flags skip the early checks; the task then prepares inside each run folder.
    Under torchrun the ranks but 0 print nothing and write no Hydra records (``quiet_ranks``; a bench, whose ranks
    run jobs of their own, keeps them talking)."""

    def decorate(task):
        @functools.wraps(task)
        def main() -> Any:
            args = quote_overrides(sys.argv[1:])
            if any(arg in ("-h", "--help") for arg in args):
                print(command_help(config_name))
                sys.exit(0)
            plan, early = None, ""
            if not any(arg.startswith("-") for arg in args):
                message = override_error(config_name, args)
                if message:
                    print(f"error: {message}", file=sys.stderr)
                    sys.exit(2)
                if prepare is not None:
                    cfg, run_dir, given = composed_run(config_name, args)
                    with capture_output() as printed:
                        plan = one_line_errors(prepare)(cfg, run_dir, given)
                    early = printed.getvalue()
                    chosen = Path(getattr(plan, "run_dir", run_dir))
                    # The folder the checks were made for, whatever the clock says when Hydra resolves ${now:...}.
                    args = [a for a in args if not a.startswith("hydra.run.dir=")]
                    args.append(f"hydra.run.dir={single_quoted(str(chosen))}")
            quiet = quiet_ranks and not world().main  # torchrun's other ranks: rank 0 prints and keeps the records
            if quiet:
                args += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
            sys.argv = [sys.argv[0], *args]

            def run(cfg: DictConfig) -> Any:
                def carry_out() -> Any:
                    if prepare is None:
                        return task(cfg)
                    return task(cfg, plan if plan is not None else prepare(cfg, hydra_run_dir(), True))

                try:
                    if quiet:
                        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                            return one_line_errors(carry_out)()
                    if not log:
                        return one_line_errors(carry_out)()
                    with tee_output(hydra_run_dir() / f"{config_name}.log", early):
                        return one_line_errors(carry_out)()
                finally:
                    stop()

            run.__wrapped__ = task  # Hydra names the job after the task's module (or file, run as __main__)
            return hydra.main(config_path=str(conf_dir()), config_name=config_name, version_base="1.3")(run)()

        return main

    return decorate


def composed_run(config_name: str, overrides: list[str]) -> tuple[DictConfig, Path, bool]:
    """The config Hydra will hand the task, the run folder it will create, and whether ``hydra.run.dir`` was
    given on the command line."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    run_dir = user_path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    given = any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir, given


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
            hint = override_hint(err.override or "")
            return f"cannot read the override {err.override!r}: {first_line(err)}" + (f"; {hint}" if hint else "")
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
