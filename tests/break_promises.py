"""Break each promise of docs/reliability.md on purpose and check that its proof test fails (issue 17).

    python tests/break_promises.py [--list] [--check] [--only NAME ...] [--baseline] [--keep]

For every break in ``tests/promise_breaks.py`` the checkout's files (``git ls-files``, untracked ones included) are
copied to a temporary folder that is made a git repository of its own (so reports can name a commit), the break
is applied there, and each named test runs alone in it: ``python -m pytest NODE -x -q -rfEs -p no:cacheprovider
--timeout=T``. Outcomes:

  caught   pytest exited 1 and the failure is the named test's own
  MISSED   the test passed with the promise broken: the test is too weak
  BROKEN   the break itself is wrong: its ``old`` text is stale, the tests did not collect, were skipped or
           errored in setup, or pytest hung past twice its per-test limit

``--baseline`` first runs every named test on an unbroken copy (each must pass). The exit status is 1 when any
break is missed or broken (or a baseline test fails). A developer script, not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_breaks() -> list:
    try:
        from tests.promise_breaks import BREAKS
    except ImportError:  # run as a script: tests/ is on sys.path, the checkout is not
        from promise_breaks import BREAKS
    return BREAKS


@dataclass
class Result:
    brk: str
    test: str
    outcome: str  # caught | MISSED | BROKEN | passes | FAILS
    detail: str
    seconds: float


def project_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout.decode()
    return sorted(name for name in out.split("\0") if name and (REPO / name).is_file())


def copy_project(dst: Path) -> Path:
    """The checkout's files in ``dst``, committed to a repository of their own."""
    for name in project_files():
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    git = ["git", "-C", str(dst), "-c", "user.name=break", "-c", "user.email=break@localhost",
           "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "unbroken"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return dst


def stale(tree: Path, brk) -> str:
    """Why ``brk`` cannot be applied to ``tree`` ("" when its ``old`` text occurs exactly once)."""
    path = tree / brk.file
    if not path.is_file():
        return f"stale: {brk.file} does not exist"
    count = path.read_text(encoding="utf-8").count(brk.old)
    return "" if count == 1 else f"stale: its old text occurs {count} times in {brk.file}, not once"


def apply(tree: Path, brk) -> None:
    path = tree / brk.file
    path.write_text(path.read_text(encoding="utf-8").replace(brk.old, brk.new), encoding="utf-8")


def run_test(tree: Path, basetemp: Path, node: str, timeout: int) -> tuple[int | None, str, float]:
    """pytest on one node in ``tree``: (exit status or None when it hung, output, seconds)."""
    command = [sys.executable, "-m", "pytest", node, "-x", "-q", "-rfEs", "-p", "no:cacheprovider",
               f"--timeout={timeout}", f"--basetemp={basetemp}"]
    # A wide "terminal", so pytest's summary line keeps the whole reason of a failure.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=2 * timeout + 120)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    finally:
        try:  # workers a broken guard left behind belong to the test's own process group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return code, out, time.monotonic() - start


def summary_lines(out: str, kind: str) -> list[tuple[str, str]]:
    """pytest's short summary lines of ``kind`` (FAILED, ERROR): (node id, reason)."""
    found = []
    for line in out.splitlines():
        if line.startswith(kind + " "):
            node, _, reason = line[len(kind) + 1:].partition(" - ")
            found.append((node.strip(), reason.strip()))
    return found


def judge(code: int | None, out: str, node: str) -> tuple[str, str]:
    """(outcome, detail) of a broken tree's run of ``node``."""
    tail = " | ".join(line for line in out.strip().splitlines()[-3:])[-200:]
    if code is None:
        return "BROKEN", "pytest hung past twice the per-test limit"
    skipped = summary_lines(out, "SKIPPED")
    if code == 0 and skipped:
        return "BROKEN", f"the test was skipped: {skipped[0][0]}"[:200]
    if code == 0:
        return "MISSED", "the test passed with the promise broken"
    failed, errors = summary_lines(out, "FAILED"), summary_lines(out, "ERROR")
    if code == 1 and failed and all(name.startswith(node) for name, _ in failed):
        return "caught", failed[0][1][:90] or "failed"
    if code == 1 and errors:
        return "BROKEN", f"error outside the test (setup): {errors[0][1][:120]}"
    if code == 1 and failed:
        return "BROKEN", f"another test failed: {failed[0][0]}"
    return "BROKEN", f"pytest exit status {code} (collection, import or usage error): {tail}"


def baseline(breaks: list, work: Path) -> list[Result]:
    tree = copy_project(work / "baseline")
    results, seen = [], set()
    for brk in breaks:
        for node in brk.tests:
            if node in seen:
                continue
            seen.add(node)
            code, out, seconds = run_test(tree, work / "tmp-baseline", node, brk.timeout)
            ok = code == 0 and not summary_lines(out, "SKIPPED")
            detail = "" if ok else (summary_lines(out, "FAILED") or [("", out.strip()[-200:])])[0][1][:120]
            results.append(Result("(unbroken)", node, "passes" if ok else "FAILS", detail, seconds))
            report(results[-1])
    return results


def break_one(brk, work: Path) -> list[Result]:
    tree = work / brk.name
    copy_project(tree)
    why = stale(tree, brk)
    if why:
        return [Result(brk.name, node, "BROKEN", why, 0.0) for node in brk.tests]
    apply(tree, brk)
    results = []
    for node in brk.tests:
        code, out, seconds = run_test(tree, work / f"tmp-{brk.name}", node, brk.timeout)
        outcome, detail = judge(code, out, node)
        results.append(Result(brk.name, node, outcome, detail, seconds))
        report(results[-1])
    return results


def short(node: str) -> str:
    return node.removeprefix("tests/")


def report(result: Result) -> None:
    print(f"  {result.outcome:7s} {result.seconds:6.1f}s  {result.brk}  ->  {short(result.test)}", file=sys.stderr,
          flush=True)


def table(results: list[Result]) -> str:
    rows = [("break", "test", "outcome", "seconds", "detail")]
    rows += [(r.brk, short(r.test), r.outcome, f"{r.seconds:.1f}", r.detail) for r in results]
    return "\n".join("| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |"
                     for row in [rows[0], ("---",) * 5, *rows[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these breaks")
    parser.add_argument("--list", action="store_true", help="list the breaks and their tests, run nothing")
    parser.add_argument("--check", action="store_true", help="only check every break applies to this checkout")
    parser.add_argument("--baseline", action="store_true", help="first run the named tests unbroken")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (their path is printed)")
    args = parser.parse_args(argv)
    breaks = load_breaks()
    if args.only:
        unknown = sorted(set(args.only) - {b.name for b in breaks})
        if unknown:
            parser.error(f"no such break: {', '.join(unknown)} (see --list)")
        breaks = [b for b in breaks if b.name in args.only]
    if args.list:
        for brk in breaks:
            print(f"{brk.name}  [{brk.promise}]  {brk.file}  timeout {brk.timeout}s")
            for node in brk.tests:
                print(f"    {node}")
        return 0
    if args.check:
        problems = [f"{brk.name}: {stale(REPO, brk)}" for brk in breaks if stale(REPO, brk)]
        print("\n".join(problems) or f"all {len(breaks)} breaks apply")
        return 1 if problems else 0

    work = Path(tempfile.mkdtemp(prefix="break-promises-"))
    results: list[Result] = []
    try:
        if args.baseline:
            print("baseline: the named tests on the unbroken project", file=sys.stderr)
            results += baseline(breaks, work)
        for brk in breaks:
            print(f"{brk.name}: {brk.file} ({brk.promise})", file=sys.stderr, flush=True)
            results += break_one(brk, work)
            if not args.keep:
                shutil.rmtree(work / brk.name, ignore_errors=True)
                shutil.rmtree(work / f"tmp-{brk.name}", ignore_errors=True)
    finally:
        if args.keep:
            print(f"copies kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    bad = [r for r in results if r.outcome in ("MISSED", "BROKEN", "FAILS")]
    counts = {k: sum(r.outcome == k for r in results) for k in ("caught", "MISSED", "BROKEN", "passes", "FAILS")}
    print("\n" + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
