"""Find clips: a folder-per-class tree or a CSV manifest, turned into clip records."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from behavior.config import fail
from behavior.data.records import ClipRecord
from behavior.errors import DataError
from behavior.paths import user_path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def is_video_file(path: Path, extensions=VIDEO_EXTENSIONS) -> bool:
    return path.suffix.lower() in extensions and not path.name.startswith(".")


def find_videos(folder: Path, extensions=VIDEO_EXTENSIONS, errors: list[OSError] | None = None) -> list[Path]:
    """Every video file below ``folder``, sorted; symlinked folders are followed once (no loops).

    Folders that cannot be listed are skipped; pass ``errors`` to collect why (one OSError per folder).
    """
    found, seen = [], set()
    on_error = errors.append if errors is not None else None
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=on_error):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or the same folder reached twice
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if is_video_file(Path(f), extensions)]
    return sorted(found)


def scan_folder(root: str | Path, extensions=VIDEO_EXTENSIONS) -> list[ClipRecord]:
    """One class per sub-folder of ``root``; clips may sit in nested folders inside a class folder."""
    root = Path(root)
    if not root.is_dir():
        raise fail("data.root", root, "is a file, not a folder of class sub-folders" if root.exists()
                   else "folder not found")
    records = []
    for class_dir in class_folders(root):
        records += [ClipRecord(str(p), class_dir.name) for p in find_videos(class_dir, extensions)]
    if not records:
        raise DataError(f"data.root: no video clips in class sub-folders of {root} "
                        f"(expected {root}/<class>/<clip>{extensions[0]})")
    return records


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def empty_class_folders(root: Path, extensions=VIDEO_EXTENSIONS) -> list[str]:
    """Names of the sub-folders of ``root`` without a video clip: :func:`scan_folder` makes no class of them."""
    return [p.name for p in class_folders(root) if not find_videos(p, extensions)]


def read_manifest(manifest: str | Path) -> list[ClipRecord]:
    """A CSV with columns ``path,label[,group]``; paths are relative to the manifest's folder."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise fail("data.manifest", manifest, "is a folder, not a CSV file" if manifest.exists() else "file not found")
    base = manifest.parent
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = {"path", "label"} - set(columns)
        if missing:
            raise DataError(f"{manifest}: missing column(s) {sorted(missing)}; expected header path,label[,group]")
        records = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row["path"] or not row["label"]:
                raise DataError(f"{manifest}:{line}: empty path or label")
            path = Path(row["path"])
            path = path if path.is_absolute() else base / path
            records.append(ClipRecord(str(path), row["label"], row.get("group") or None))
    if not records:
        raise DataError(f"{manifest}: no rows")
    return records


def load_records(root: str | None, manifest: str | None) -> list[ClipRecord]:
    if root and manifest:
        raise fail("data.manifest", manifest, f"data.root={root} is set too; give one of them")
    # Absolute paths, so every record of a run (split.csv, predictions.csv) names its clip the same way
    # wherever it is read from, as predict's files do.
    if manifest:
        return read_manifest(user_path(manifest))
    if root:
        return scan_folder(user_path(root))
    raise fail("data.root", None, "no dataset given (set data.root=DIR or data.manifest=FILE)")
