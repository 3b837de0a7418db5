"""Peak resident memory of the decode paths, measured per backend in a process of its own (run by tests/test_memory.py).

``python tests/memory_probe.py SPEC.json`` reads ``{"clips": {"long", "uhd", "small"}, "checkpoint", "work",
"cases": {backend: [[op, mutant], ...]}}``, imports once, then forks one child per backend; the children run side by
side and the probe prints one JSON line ``{backend: {"op/real" or "op/mutant": case}}``. A case holds how far the
child's resident set rose above where it stood when the case began (``peak``, bytes), whether that is the case's own
peak (``exact``), facts about what the operation produced (``facts``) and its wall and CPU seconds.

The resident set counts every byte wherever it lives: NumPy, torch's CPU allocator, FFmpeg's frame buffers inside
PyAV, decord and torchcodec (tracemalloc sees NumPy's only). The kernel keeps its high-water mark, VmHWM, and resets
it to the current size when "5" is written to /proc/self/clear_refs. Where that write is refused the mark stays where
earlier work left it: the figure is then an upper bound of the case's peak (still sound against a budget), and the
case's own only when the case raised the mark.

Each operation first runs once on a small clip (codec libraries, thread pools and lazy imports loaded); before each
case the freed heap goes back to the kernel (gc, malloc_trim). The caller sets MALLOC_MMAP_THRESHOLD_ so frame-sized
blocks are mmapped and unmapped when freed: a case cannot quietly reuse memory an earlier one freed. A ``mutant`` case
applies a deliberate break of the promise first (a whole-clip decode, the cache's chunking off, predict at full
size); the test asserts its peak lands above the budget the real code stays under.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __name__ == "__main__" and __package__ is None:  # run as a file: import this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import behavior.data.cache as cache_module  # noqa: E402
import behavior.engine.inference as inference  # noqa: E402
from behavior.data.cache import CacheSettings, ClipCache  # noqa: E402
from behavior.data.dataset import ClipDataset  # noqa: E402
from behavior.data.records import ClipRecord  # noqa: E402
from behavior.data.sampling import SamplingConfig  # noqa: E402
from behavior.data.transforms import TransformConfig, build_transform  # noqa: E402
from behavior.video import _READERS, VideoReader, probe_video  # noqa: E402

CACHE_SIZE = 32  # the cache's resize target: the pool it stores is small, the full-size frames it decodes are not


def status(field: str) -> int:
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return status("VmHWM") <= status("VmRSS") + (1 << 20)


def prescan(backend: str, clip: str, work: Path):
    meta = probe_video(clip, backend, verify=True)
    return meta, {"frames": meta.num_frames}


def dataset_item(backend: str, clip: str, work: Path):
    transform = build_transform(TransformConfig.preset("default", size=64, crop_size=64), False)
    sampling = SamplingConfig.preset("tsn", num_frames=8)
    item = ClipDataset([ClipRecord(clip, "a")], {"a": 0}, sampling, transform, False, backend)[0]
    return item, {"shape": list(item[0].shape)}


def cache_miss(backend: str, clip: str, work: Path):
    # max_frames above the clip's length: the pool is every frame (small once resized), so only the chunked
    # decoding keeps the full-size frames from piling up.
    pool = ClipCache(tempfile.mkdtemp(dir=work), CacheSettings(backend, "short_side", CACHE_SIZE, 100_000)).get(clip)
    return pool, {"shape": list(pool.shape)}


@functools.cache
def predict_settings(checkpoint: str):
    """conf/predict.yaml as the command composes it (composed once, before the fork), decode.max_short_side left at
    its default: auto."""
    from behavior.predict.batch import PredictSettings
    from tests.helpers import command_config

    values = {"checkpoint": checkpoint, "input": checkpoint, "output": "p.csv", "progress": False, "num_workers": 0,
              "device": "cpu"}
    return PredictSettings.from_mapping(command_config("predict", **values))


def predict(backend: str, clip: str, work: Path, checkpoint: str):
    from behavior.predict.batch import run

    settings = predict_settings(checkpoint)
    out = Path(tempfile.mkdtemp(dir=work)) / "p.csv"
    counts = run(dataclasses.replace(settings, input=clip, output=str(out),
                                     decode=dataclasses.replace(settings.decode, backend=backend)))
    facts = json.loads(out.with_name(out.name + ".provenance.json").read_text())["settings"]
    return counts, {"ok": counts.get("ok"), "max_short_side": facts["decode.max_short_side"]}


def whole_clip_verify(self) -> int:
    """Mutant pre-scan: decode the clip into one array, then count it."""
    return len(self._read(list(range(len(self)))))


REAL_GET_FRAMES = VideoReader.get_frames


def whole_clip_get_frames(self, indices):
    """Mutant reader: decode every frame of the clip, then pick the ones asked for."""
    return REAL_GET_FRAMES(self, range(len(self)))[list(indices)]


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def mutant(op: str) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    if op == "prescan":
        for reader_class in _READERS.values():
            stack.enter_context(patched(reader_class, "verify", whole_clip_verify))
    elif op == "dataset":
        stack.enter_context(patched(VideoReader, "get_frames", whole_clip_get_frames))
    elif op == "cache":  # one decode call for the whole pool instead of 16 frames at a time
        stack.enter_context(patched(cache_module, "DECODE_CHUNK", 1 << 30))
    elif op == "predict":  # decode.max_short_side=auto resolved to full size
        stack.enter_context(patched(inference, "decode_size", lambda max_short_side, pipeline: None))
    return stack


def measure(fn) -> dict:
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc
    if trim is not None:
        trim(0)
    start, before = status("VmRSS"), status("VmHWM")
    reset = reset_high_water_mark()
    result, facts = fn()
    peak = status("VmHWM")
    del result
    return {"peak": peak - start, "exact": reset or peak > before, "facts": facts}


def run_cases(spec: dict, backend: str) -> dict:
    clips, work = spec["clips"], Path(spec["work"])
    ops = {"prescan": prescan, "dataset": dataset_item, "cache": cache_miss,
           "predict": lambda b, c, w: predict(b, c, w, spec["checkpoint"])}
    results = {}
    for op, broken in spec["cases"][backend]:
        start, cpu = time.perf_counter(), time.process_time()
        if not any(name.startswith(op + "/") for name in results):
            ops[op](backend, clips["small"], work)  # warm-up
        clip = clips["uhd" if op == "predict" else "long"]
        with mutant(op) if broken else contextlib.ExitStack():
            case = measure(lambda: ops[op](backend, clip, work))  # noqa: B023
        results[f"{op}/{'mutant' if broken else 'real'}"] = {**case, "seconds": round(time.perf_counter() - start, 2),
                                                            "cpu": round(time.process_time() - cpu, 2)}
    return results


def main(spec_file: str) -> None:
    """One child per backend, forked after the imports (paid once) and run side by side; each measures itself (its
    own high-water mark). Nothing here has decoded yet, so no decoder or thread pool is inherited."""
    spec = json.loads(Path(spec_file).read_text())
    predict_settings(spec["checkpoint"])
    children = {}
    for backend in spec["cases"]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            code = 1
            try:
                with os.fdopen(write, "w") as out, contextlib.redirect_stdout(sys.stderr):  # predict prints progress
                    out.write(json.dumps(run_cases(spec, backend)))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(write)
        children[backend] = (pid, read)
    reports = {}
    for backend, (pid, read) in children.items():
        with os.fdopen(read) as pipe:
            text = pipe.read()
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        reports[backend] = json.loads(text) if code == 0 else {"error": f"exit status {code}"}
    print(json.dumps(reports))


if __name__ == "__main__":
    main(sys.argv[1])
