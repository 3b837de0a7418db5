"""A crash in the middle of a write, at many points of every file behavior writes: checkpoints, clip-cache entries,
reports (written through behavior.atomic: after a kill each file is the old version or the new one, byte for byte,
and still loads) and predictions files (appended to: a file cut at any byte resumes to exactly the file an
uninterrupted run writes). Each promise has mutant rows, deliberate breaks the same check must catch.

A kill is real (tests/crash.py): the write runs in a forked child the kernel kills at byte n of the k-th file it
writes (RLIMIT_FSIZE, SIGXFSZ), or that exits just before fsync, just before os.replace or just after it; a fault
point fails the write with EFBIG instead, as a full disk would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import behavior.data.cache as cache_module
import behavior.engine.checkpoint as checkpoint_module
import behavior.report.plots as plots_module
import behavior.report.writer as writer_module
from behavior.data.cache import CacheSettings, ClipCache, decode_pool
from behavior.engine.checkpoint import read_checkpoint, write_checkpoint
from behavior.errors import DataError
from behavior.models import build_model
from behavior.predict.batch import PredictSettings, run
from behavior.predict.predictions import PROVENANCE_SUFFIX, PredictionsFile, columns_for, provenance_path
from behavior.report.writer import METRICS_FILE, write_report
from behavior.video.writer import write_video
from tests.conftest import moving_square_clip
from tests.crash import KILLED, Target, in_child, limit_file_size, mutate, verdict
from tests.helpers import tiny_checkpoint, tiny_recipe
from tests.test_predict import predict_cfg

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, RLIMIT_FSIZE and prctl: Linux")

ATOMIC_MUTANTS = pytest.mark.parametrize("mutant", [False, True], ids=["atomic_open", "mutant-plain-open"])


# Checkpoints: save_checkpoint over an existing one.

@ATOMIC_MUTANTS
def test_a_checkpoint_killed_mid_save_is_the_old_or_the_new_one(tmp_path, monkeypatch, mutant):
    recipe, path = tiny_recipe(), tmp_path / "run" / "last.pt"
    states = {}
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        states[epoch] = build_model(recipe.model, 3).state_dict()
    write_checkpoint(path, recipe, ["a", "b", "c"], states[1], 1)

    def loads() -> str | None:
        try:
            checkpoint = read_checkpoint(path)
        except Exception as err:
            return f"does not load ({err})"
        weights = states[checkpoint.epoch]
        same = all(torch.equal(weights[k], checkpoint.state["model_state"][k]) for k in weights)
        return None if same else f"epoch {checkpoint.epoch} with other weights"

    target = Target((checkpoint_module,), lambda: write_checkpoint(path, recipe, ["a", "b", "c"], states[2], 2),
                    {path: path.read_bytes()}, loads).learn_new()
    if mutant:
        mutate(monkeypatch, target.modules)
    points = target.mutant_points() if mutant else target.points(cuts=10)
    verdict(target.kill_problems(points, atomic=not mutant), mutant)
    if not mutant:
        target.check_next_write()


# The clip cache: a .json sidecar, then the .npy, each through atomic_open.

@pytest.fixture(scope="module")
def cached_clip(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", moving_square_clip(0, seed=1), fps=12)
    settings = CacheSettings(size=32, max_frames=8)
    return str(path), settings, decode_pool(str(path), settings)


@ATOMIC_MUTANTS
@pytest.mark.parametrize("before", ["nothing", "torn-entry"])
def test_a_cache_entry_killed_mid_write_gives_the_right_frames_after(tmp_path, monkeypatch, cached_clip, before,
                                                                      mutant):
    """First written, or rewritten over a torn .npy (which load_entry refuses, so the entry is rebuilt). A kill
    between the sidecar and the .npy leaves a sidecar alone (never an .npy without one): the next get decodes and
    stores the entry."""
    clip, settings, frames = cached_clip
    cache = ClipCache(tmp_path / "cache", settings)
    npy = cache.entry(clip)
    sidecar = npy.with_suffix(".json")

    def write() -> None:  # the writes never decode (the children inherit the patch); loads() decodes for real
        with monkeypatch.context() as patch:
            patch.setattr(cache_module, "decode_pool", lambda *args, **kwargs: frames)
            ClipCache(cache.root, settings).get(clip)

    def loads() -> str | None:
        if npy.exists() and not sidecar.exists():
            return "an .npy without the sidecar naming its clip"
        got = ClipCache(cache.root, settings).get(clip)  # decodes (really) and stores when the entry is not whole
        if not np.array_equal(np.asarray(got), frames):
            return "get returned other frames"
        return None if npy.read_bytes() == target.new[npy] else "the entry is not whole after get"

    target = Target((cache_module,), write, {sidecar: None, npy: None}, loads).learn_new()
    if before == "torn-entry":
        target.old = {sidecar: target.new[sidecar], npy: target.new[npy][: len(target.new[npy]) // 2]}
        target.new = {}
        target.learn_new()
    if mutant:
        mutate(monkeypatch, target.modules)
    points = target.mutant_points() if mutant else target.points(cuts=4 if before == "nothing" else 2)
    problems = target.kill_problems(points, atomic=not mutant)
    # Under the mutant the torn .npy is on disk, but get still refuses it and rebuilds: load_entry checks the length.
    assert not [why for why in problems if "get" in why]
    verdict(problems, mutant)
    if not mutant:
        target.check_next_write()


# Reports: write_report over an earlier report; metrics.json last, so its presence means a whole report.

REPORT_FILES = ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv", METRICS_FILE)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[tuple, dict[str, bytes], bytes]:
    """An earlier report and a new one, each drawn once by the real renderer: what makes the new one, the earlier
    one's files, and the new figure."""
    root, classes = tmp_path_factory.mktemp("reports"), ["left", "right", "up"]
    paths, labels = [f"/clips/c{i}.mp4" for i in range(9)], [i % 3 for i in range(9)]
    for seed, name in enumerate(("old", "new")):
        write_report(root / name, paths, labels, np.random.default_rng(seed).random((9, 3)), classes)
    return ((paths, labels, np.random.default_rng(1).random((9, 3)), classes),
            {name: (root / "old" / name).read_bytes() for name in REPORT_FILES},
            (root / "new" / "confusion_matrix.png").read_bytes())


@pytest.mark.parametrize("mutant", [None, "plain-open", "keeps-old-metrics"])
def test_a_report_killed_mid_write_leaves_old_or_new_files_and_never_a_mixed_report(tmp_path, monkeypatch, reports,
                                                                                    mutant):
    """Each file is the old or the new version; metrics.json parses, and when it is there every file is of the same
    report as it (the earlier report's metrics.json is removed before the first file is replaced)."""
    (paths, labels, scores, classes), old, png = reports
    out = tmp_path / "run"
    # The new figure as the real renderer drew it, saved through plots._save, without 0.2 s of drawing per child.
    drawn = SimpleNamespace(dpi=100, savefig=lambda fh, **kwargs: fh.write(png))
    monkeypatch.setattr(writer_module, "plot_confusion_matrix", lambda *args, **kwargs: plots_module._save(drawn,
                                                                                                        args[2]))
    files = [out / name for name in REPORT_FILES]

    def loads() -> str | None:
        metrics = out / METRICS_FILE
        if not metrics.exists():
            return None
        try:
            json.loads(metrics.read_text(encoding="utf-8"))
        except ValueError:
            return "metrics.json does not parse"
        version = target.new if metrics.read_bytes() == target.new[metrics] else target.old
        mixed = [p.name for p in files if (p.read_bytes() if p.exists() else None) != version[p]]
        return f"metrics.json beside {', '.join(mixed)} of the other report" if mixed else None

    target = Target((writer_module, plots_module), lambda: write_report(out, paths, labels, scores, classes),
                    {path: old[path.name] for path in files}, loads, may_vanish=(out / METRICS_FILE,)).learn_new()
    if mutant == "plain-open":
        mutate(monkeypatch, target.modules)
    elif mutant == "keeps-old-metrics":
        real_unlink = Path.unlink
        monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None if self.name == METRICS_FILE
                            else real_unlink(self, missing_ok))
    points = target.mutant_points() if mutant else target.points(cuts=2)
    verdict(target.kill_problems(points, atomic=not mutant), bool(mutant))
    if not mutant:
        target.check_next_write()


# Predictions files: appended to, row by row, never replaced. A file cut at any byte (what a kill mid-append leaves)
# resumes to exactly the file an uninterrupted run writes: the whole rows kept, the torn one cut and redone.

def prediction_rows(columns: list[str]) -> list[dict]:
    names = ["/clips/a.mp4", '/clips/new\nline, "quoted" \udcff.mp4', "/clips/été €.mp4", "/clips/b.mp4"]
    rows = [dict.fromkeys(columns) | {"path": name, "status": "ok", "label": "up", "score": 0.5 + i / 10,
                                      "label_1": "up", "score_1": 0.5 + i / 10, "label_2": "left",
                                      "score_2": 0.25, "num_frames": 12} for i, name in enumerate(names)]
    rows[2] = dict.fromkeys(columns) | {"path": names[2], "status": "error", "error": 'cannot decode: "moov", atom'}
    return rows


def resume_problems(path: Path) -> list[str]:
    """Write a small predictions file; then, for each byte offset, leave only the bytes before it, resume it as predict
    does (open, skip the rows done, append the others) and say what differs from the uninterrupted file."""
    columns = columns_for(2)
    rows = prediction_rows(columns)
    out = PredictionsFile(path, columns).open()
    ends = [path.stat().st_size]  # where the header (CSV) and then each row ends
    for row in rows:
        out.write(row)
        ends.append(path.stat().st_size)
    out.close()
    whole = path.read_bytes()
    problems = []
    for cut in range(len(whole) + 1):
        path.write_bytes(whole[:cut])
        whole_rows = sum(end <= cut for end in ends[1:])
        try:
            again = PredictionsFile(path, columns).open()
        except DataError as err:
            problems.append(f"cut at {cut}: refused ({err})")
            continue
        kept = path.read_bytes()
        if kept != whole[:ends[whole_rows]]:
            problems.append(f"cut at {cut}: resuming keeps {len(kept)} bytes, not the {ends[whole_rows]} of the "
                            f"whole rows")
        if again.done != {row["path"] for row in rows[:whole_rows]}:
            problems.append(f"cut at {cut}: {len(again.done)} row(s) taken as done, not {whole_rows}")
        for row in rows:
            if row["path"] not in again.done:
                again.write(row)
        again.close()
        if path.read_bytes() != whole:
            problems.append(f"cut at {cut}: the resumed file is not the uninterrupted one")
    return problems


def mutate_resume(monkeypatch, mutant: str) -> None:
    real_recognise, real_open = PredictionsFile._recognise, PredictionsFile.open
    if mutant == "keeps-torn-row":
        monkeypatch.setattr(PredictionsFile, "_recognise", lambda self, data: (real_recognise(self, data),
                                                                               len(data))[1])
    elif mutant == "forgets-done-rows":
        monkeypatch.setattr(PredictionsFile, "_recognise", lambda self, data: (real_recognise(self, data),
                                                                               self.done.clear())[0])
    else:  # starts-again: writes the file anew instead of appending to it
        def open_anew(self):
            if self.path.exists():
                self.path.write_bytes(b"")
            return real_open(self)
        monkeypatch.setattr(PredictionsFile, "open", open_anew)


@pytest.mark.parametrize("mutant", [None, "keeps-torn-row", "forgets-done-rows", "starts-again"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_predictions_file_cut_at_any_byte_resumes_to_the_uninterrupted_file(tmp_path, monkeypatch, suffix,
                                                                               mutant):
    """Every byte offset, rows with a newline, comma, quotes, non-ASCII and a byte that is not UTF-8 in the name."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not the point here; ~1200 opens stay fast
    if mutant:
        mutate_resume(monkeypatch, mutant)
    verdict(resume_problems(tmp_path / f"preds{suffix}"), bool(mutant))


@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("predict")
    for i in range(3):
        write_video(root / "clips" / f"c{i}.mp4", moving_square_clip(i, seed=i), fps=12)
    return root / "clips", tiny_checkpoint(root / "tiny.pt", ["left", "right", "up"])


@pytest.fixture
def one_thread():
    """The killed child and the resuming parent compute alike (the child runs one intra-op thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def killed_predict(settings: PredictSettings, n: int | None) -> str:
    """Run predict in a child killed when its output would grow past ``n`` bytes (armed once rows are written), or
    with None, just before it puts the output's provenance record in place (the output then holds its header only)."""
    def arm() -> None:
        real_write, real_replace = PredictionsFile.write, os.replace

        def write(self, row):
            limit_file_size(n)
            real_write(self, row)

        def replace(src, dst):
            if str(dst).endswith(PROVENANCE_SUFFIX):
                os._exit(KILLED)
            real_replace(src, dst)
        if n is None:
            os.replace = replace
        else:
            PredictionsFile.write = write
    return in_child(lambda: run(settings), arm)


@pytest.mark.parametrize("suffix, mutant", [(".csv", None), (".jsonl", None), (".csv", "keeps-torn-row")])
def test_a_predict_run_killed_mid_row_resumes_to_the_uninterrupted_file(tmp_path, monkeypatch, capsys, predict_inputs,
                                                                        one_thread, suffix, mutant):
    """The real command, killed by the kernel at byte n of its output, then run again: the same file as a run that
    was never killed, and only the clips not yet whole in it classified again."""
    clips, checkpoint = predict_inputs

    def settings(out: Path) -> PredictSettings:
        return predict_cfg(checkpoint=str(checkpoint), input=str(clips), output=str(out))

    run(settings(tmp_path / f"whole{suffix}"))
    whole = (tmp_path / f"whole{suffix}").read_bytes()
    record = json.loads(provenance_path(tmp_path / f"whole{suffix}").read_text())["checkpoint"]
    lines = [i + 1 for i, byte in enumerate(whole) if byte == ord("\n")]
    start, ends = ([0] + lines)[-4], lines[-3:]  # where the rows start (after the CSV header) and where each ends
    # Before the provenance record, midway through the first row, between the first two (nothing torn), one byte into
    # the last row, all of it but its last byte.
    cuts = [None, ends[0] - 40, ends[0], ends[1] + 1, ends[2] - 1] if suffix == ".csv" else [None, ends[1] - 1]
    if mutant:
        mutate_resume(monkeypatch, mutant)
        cuts = [ends[0] - 40]
    problems = []
    for n in cuts:
        out = tmp_path / f"cut{n}{suffix}"
        assert killed_predict(settings(out), n) == "killed" and out.stat().st_size == (start if n is None else n)
        capsys.readouterr()
        counts = run(settings(out))
        said, done = capsys.readouterr().out, sum(end <= (n or 0) for end in ends)
        if f"{done} already in {out.name}, {3 - done} to classify" not in said or counts["ok"] != 3 - done:
            problems.append(f"cut at {n}: {said.splitlines()[0]}; {counts['ok']} classified")
        torn = n not in [None, *ends]
        if ("a row torn by an earlier crash was cut off" in said) != torn:
            problems.append(f"cut at {n}: {'no torn row is said' if torn else 'a torn row is said'}")
        if out.read_bytes() != whole:
            problems.append(f"cut at {n}: the resumed file is not the uninterrupted one")
        if json.loads(provenance_path(out).read_text())["checkpoint"] != record:
            problems.append(f"cut at {n}: the provenance record does not name the checkpoint")
    verdict(problems, bool(mutant))
