"""``python -m behavior.report FOLDER...``: (re)write report.html in run folders and bench folders from the files
they hold — after an interrupted run, or for a folder made before reports existed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from behavior.report.bench_report import is_bench_folder, write_bench_report
from behavior.report.run_report import PREVIEWS, write_run_report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m behavior.report", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="run folders (outputs/train/<date_time>) or bench folders")
    parser.add_argument("--previews", type=int, default=PREVIEWS,
                        help=f"misclassified clips shown as animations (default {PREVIEWS})")
    args = parser.parse_args(argv)
    missing = [f for f in args.folders if not Path(f).is_dir()]
    if missing:
        print(f"error: {missing[0]}: no such folder", file=sys.stderr)
        return 2
    for folder in map(Path, args.folders):
        if is_bench_folder(folder):
            for run in sorted(p for p in (folder / "runs").glob("*") if p.is_dir()):
                print(write_run_report(run, args.previews))
            print(write_bench_report(folder))
        else:
            print(write_run_report(folder, args.previews))
    return 0


if __name__ == "__main__":
    sys.exit(main())
