"""Where a result came from: the checkpoint's sha256, the package version and the git commit of the code.

Shared by behavior.predict (the ``<output>.provenance.json`` sidecar) and the report writer (``metrics.json``'s
``provenance``). Everything here is best effort except the hash: no git, no repository or a slow one gives None.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import time
import warnings
from pathlib import Path

CHUNK = 1 << 20  # bytes read at a time: a checkpoint of any size is hashed in constant memory
GIT_TIMEOUT = 3.0  # seconds for each git call
SHORT = 12  # hex digits of a hash in messages

PACKAGE_DIR = Path(__file__).resolve().parent


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(sha256: str | None) -> str:
    return sha256[:SHORT] if sha256 else "unknown"


@functools.cache
def package_version() -> str | None:
    """``behavior.__version__``, else the installed distribution's version, else None."""
    import behavior

    version = getattr(behavior, "__version__", None)
    if version:
        return str(version)
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("behavior")
    except PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs
        return None
    return proc.stdout if proc.returncode == 0 else None


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the package was imported from; (None, None) outside one.

    A package installed into some other repository (a virtual environment inside a project) is not that
    repository's code, so the commit counts only when the checkout's top folder is the one holding the package."""
    out = _git("rev-parse", "--show-toplevel", "HEAD")
    lines = out.splitlines() if out else []
    if len(lines) != 2 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", lines[1]):
        return None, None
    try:
        if Path(lines[0]).resolve() != PACKAGE_DIR.parent:
            return None, None
    except OSError:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return lines[1], None if status is None else bool(status.strip())


def git_commit() -> str | None:
    return git_state()[0]


def code_provenance() -> dict:
    """The code that produced a result: package version, git commit and whether the checkout had changes."""
    commit, dirty = git_state()
    return {"version": package_version(), "git_commit": commit, "git_dirty": dirty}


def now() -> str:
    """Local time with its UTC offset, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def report_provenance(checkpoint: str | os.PathLike | None = None, checkpoint_sha256: str | None = None,
                      folder: str | os.PathLike | None = None) -> dict:
    """``metrics.json``'s provenance: the code, and the checkpoint (path and sha256) when one is involved.

    A checkpoint inside ``folder`` (a training run's best.pt) is named relative to it, so the record holds when
    the folder moves; another one by its absolute path. A checkpoint that cannot be read any more gets a null
    hash and a warning rather than costing the report."""
    record = code_provenance()
    path = sha = None
    if checkpoint is not None:
        absolute = Path(os.path.abspath(checkpoint))
        path = str(absolute)
        if folder is not None:
            try:
                path = absolute.relative_to(os.path.abspath(folder)).as_posix()
            except ValueError:
                pass
        sha = checkpoint_sha256
        if sha is None:
            try:
                sha = file_sha256(absolute)
            except OSError as err:
                warnings.warn(f"checkpoint {absolute}: cannot be read to hash it ({err.strerror or err}); "
                              f"its sha256 is left out of the report", stacklevel=2)
    return {**record, "checkpoint": path, "checkpoint_sha256": sha}
