"""A bench's runs shared between processes: ``bench.shard=I/N`` invocations into one folder, and the ranks of a
torchrun job; the division by cost and the refusals."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from behavior.bench_share import balanced
from tests.conftest import REPO, make_clip_tree
from tests.helpers import run_main, run_module, torchrun_command, torchrun_env
from tests.test_bench import SETTINGS
from tests.test_pipeline import read_csv

# Two tiny models x one seed: two runs, one per shard or rank.
QUICK = [*SETTINGS, "data.cache=null", "bench.cache_speed=false"]
# What a run's training decides; speeds and wall times differ from one process to the next.
SAME = ["model", "seeds", "top1_mean", "top1_std", "mean_class_accuracy_mean", "mean_class_accuracy_std",
        "macro_f1_mean", "macro_f1_std", "parameters", "gflops_per_clip"]


def test_runs_are_divided_by_cost():
    # The two heavy runs go to different processes, and the light ones fill up the other.
    assert balanced([10, 10, 1, 1, 1, 1], 2) == [[0, 2, 4], [1, 3, 5]]
    assert balanced([1, 8, 1, 1, 1], 2) == [[1], [0, 2, 3, 4]]
    assert balanced([1.0] * 5, 2) == [[0, 2, 4], [1, 3]]  # equal costs: every other run
    assert balanced([1.0], 3) == [[0], [], []]


@pytest.mark.parametrize("value", ["2/2", "a/b", "1", "-1/2", "0/0", "1/2/3"])
def test_a_bad_shard_is_one_line(tmp_path, value):
    code, _, err = run_main("behavior.bench", f"bench.shard={value}", f"hydra.run.dir={tmp_path / 'bench'}")
    assert code == 2 and err.strip().splitlines() == [
        f"error: bench.shard={value}: must be I/N with 0 <= I < N (this invocation's share of N, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), or null for every run"], err
    assert not (tmp_path / "bench").exists()


def test_sharing_needs_one_given_folder(monkeypatch):
    code, _, err = run_main("behavior.bench", "bench.shard=0/2")
    assert code == 2 and err.strip().splitlines() == [
        "error: bench.shard=0/2: give hydra.run.dir=<the one folder every process writes into>; each process's "
        "default (outputs/bench/${now:...}) would be its own"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, _, err = run_main("behavior.bench")
    assert code == 2 and err.startswith("error: behavior.bench under torchrun (2 ranks): give hydra.run.dir=")


@pytest.mark.slow  # trains in subprocesses
def test_shards_add_up_to_one_bench(tmp_path):
    root = make_clip_tree(tmp_path / "clips", per_class=6)
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    run_module("behavior.bench", f"data.root={root}", f"hydra.run.dir={whole}", *QUICK)

    first = run_module("behavior.bench", f"data.root={root}", f"hydra.run.dir={shared}", "bench.shard=0/2", *QUICK)
    assert "bench.shard=0/2: 1 of the 2 runs here" in first.stdout and first.stdout.count(": start ->") == 1
    # The tables so far: the finished run, and a line naming the one still missing.
    assert len(read_csv(shared / "results.csv")) == 1
    assert "1 of the 2 runs not finished yet" in (shared / "results.md").read_text()
    assert "1 of the 2 runs not finished yet" in first.stdout

    second = run_module("behavior.bench", f"data.root={root}", f"hydra.run.dir={shared}", "bench.shard=1/2", *QUICK)
    assert second.stdout.count(": start ->") == 1 and "skipped" not in second.stdout
    assert "not finished yet" not in second.stdout + (shared / "results.md").read_text()
    # Each shard trained the other run (the costlier model first).
    assert "[1/2] tiny seed 0: start" in first.stdout and "[2/2] tiny_noattn seed 0: start" in second.stdout
    rows = [{k: r[k] for k in SAME} for r in read_csv(shared / "results.csv")]
    assert rows == [{k: r[k] for k in SAME} for r in read_csv(whole / "results.csv")]
    assert [r["model"] for r in rows] == ["tiny", "tiny_noattn"]

    # A shard killed after its run's last epoch, before the run was recorded: an unsharded call skips the finished
    # run and continues the other from its last.pt.
    (shared / "runs" / "tiny_noattn_seed0" / "bench_run.json").unlink()
    again = run_module("behavior.bench", f"data.root={root}", f"hydra.run.dir={shared}", *QUICK)
    assert "[1/2] tiny seed 0: skipped, done already" in again.stdout
    assert again.stdout.count(": start ->") == 1 and "resumed from" in again.stdout
    assert [{k: r[k] for k in SAME} for r in read_csv(shared / "results.csv")] == rows


def torchrun(*args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=<nproc> -m behavior.bench <args>`` on a free port."""
    proc = subprocess.run(torchrun_command("behavior.bench", *args, processes=nproc), cwd=REPO, env=torchrun_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow  # two ranks train in subprocesses
def test_torchrun_ranks_share_the_runs(tmp_path):
    root = make_clip_tree(tmp_path / "clips", per_class=6)
    bench = tmp_path / "bench"
    proc = torchrun(f"data.root={root}", f"hydra.run.dir={bench}", *QUICK)
    out = proc.stdout
    # Each run trained once, by the rank rank 0 gave it (the costlier model to rank 0).
    plan = json.loads((bench / "bench_ranks.json").read_text())
    assert plan["assignment"] == [["tiny_seed0"], ["tiny_noattn_seed0"]]
    assert out.count(": start ->") == 2 and out.count(": done, top-1") == 3  # rank 0 also reports rank 1's
    assert "rank 0: [1/2] tiny seed 0: start ->" in out and "rank 1: [2/2] tiny_noattn seed 0: start ->" in out
    assert sorted(p.name for p in (bench / "runs").iterdir()) == ["tiny_noattn_seed0", "tiny_seed0"]
    assert all((bench / "runs" / name / "metrics.json").is_file() for name in ("tiny_seed0", "tiny_noattn_seed0"))
    assert "resumed from" not in out
    # Rank 1 shows only its run's start and done lines; its training went into its own log.
    # (Both ranks write to one pipe, unbuffered here: a line of one may start in the middle of the other's.)
    rank1 = re.findall(r"rank 1: .*", out)
    assert len(rank1) == 2 and ": start ->" in rank1[0] and ": done, top-1" in rank1[1]
    log1 = (bench / "bench.rank1.log").read_text()
    assert "classes" in log1 and "run dir:" in log1 and log1.count(": start ->") == 1
    log0 = (bench / "bench.log").read_text()
    assert "(on another rank)" in log0 and log0.count(": start ->") == 1
    # Rank 0 alone writes and prints the tables, with every model.
    md = (bench / "results.md").read_text()
    assert "| tiny | 1 |" in md and "| tiny_noattn | 1 |" in md and "not finished" not in md
    assert out.count("| model | seeds |") == 1 and "bench of 2 model(s)" in out
    assert [r["model"] for r in read_csv(bench / "results.csv")] == ["tiny", "tiny_noattn"]
