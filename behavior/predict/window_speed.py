"""How fast window mode reads a long recording, per container, beside FFmpeg decoding the same file.

    python -m behavior.predict.window_speed [--seconds 100 400] [--containers mp4 mkv ts] [--window 2] [--stride 1]

For each length a 640x360, 25 fps H.264 recording is made (surveillance_fight clips joined, or generated frames when
they are absent; the live benchmark's source) and remuxed into each container without re-encoding, so every
container holds the same stream (their timelines must be identical: any difference stops the benchmark, a reader's
bug such as a seek landing wrong). ``python -m behavior.predict`` then runs in window mode on it in a fresh process
with the default recipe's untrained BehaviorNet (speed does not depend on the weights). Printed per recording: wall
time, real-time factor (recording length / wall time), the main process's peak resident memory (VmHWM), and the time of
``ffmpeg -i FILE -f null -`` (decoding only, the floor for any reader). The command's fixed cost (starting Python,
importing torch, loading the checkpoint) is measured on a 2 s recording and taken off to give the time the video
itself costs, and its real-time factor: the rate a recording hours long is classified at. Two lengths show how that
time grows (linear: its ratio equals the length ratio) and whether peak memory does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from behavior.live.speed import FPS, default_checkpoint, make_source
from behavior.predict.timeline import timeline_path, timelines_folder
from behavior.video.writer import remux


def ffmpeg_seconds(path: Path) -> float | None:
    """Wall time of FFmpeg decoding every frame and discarding it, or None without an ffmpeg binary."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    start = time.perf_counter()
    subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"], check=True)
    return time.perf_counter() - start


# Runs a module as ``python -m`` would and, at exit, writes its own peak resident set (VmHWM) to $HWM_FILE. The
# child's rusage would not do: a child forked from this process counts this process's peak until it calls exec.
PEAK_PROBE = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM"))
    with open(os.environ["HWM_FILE"], "w") as out:
        out.write(kib)
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def predict_window_mode(checkpoint: Path, video: Path, output: Path, window: float,
                        stride: float) -> tuple[float, float]:
    """Wall seconds and peak resident MiB (of the main process) of one ``behavior.predict`` process in window mode."""
    peak_file = output.with_suffix(".peak")
    command = [sys.executable, "-c", PEAK_PROBE, "behavior.predict", f"checkpoint={checkpoint}", f"input={video}",
               f"output={output}", f"predict.window={window}", f"predict.stride={stride}", "progress=false"]
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, env={**os.environ, "HWM_FILE": str(peak_file)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"behavior.predict failed on {video} (exit {proc.returncode})")
    return seconds, int(peak_file.read_text()) / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[100.0, 400.0], help="recording lengths")
    parser.add_argument("--containers", nargs="+", default=["mp4", "mkv", "ts"], help="containers to compare")
    parser.add_argument("--window", type=float, default=2.0, help="predict.window in seconds (default 2)")
    parser.add_argument("--stride", type=float, default=1.0, help="predict.stride in seconds (default 1)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = folder / "default.pt"
        default_checkpoint(checkpoint)
        short = folder / "start_up.mp4"
        make_source(short, 2.0)
        fixed = min(predict_window_mode(checkpoint, short, folder / f"start_up{i}.csv", args.window, args.stride)[0]
                    for i in range(2))
        print(f"fixed cost of the command (a 2 s recording): {fixed:.1f}s", flush=True)
        for seconds in args.seconds:
            made = folder / f"recording_{seconds:g}s.mp4"
            print(f"{made.name}: {make_source(made, seconds)}", flush=True)
            timelines = set()
            for container in args.containers:
                video = made if container == "mp4" else remux(made, made.with_suffix(f".{container}"))
                output = folder / f"{video.name}.csv"
                wall, peak = predict_window_mode(checkpoint, video, output, args.window, args.stride)
                rows.append((seconds, container, wall, peak, ffmpeg_seconds(video)))
                print(f"  .{container}: {wall:.1f}s ({seconds / wall:.1f}x real time), peak {peak:.0f} MiB",
                      flush=True)
                timelines.add(timeline_path(timelines_folder(output), folder, str(video)).read_bytes())
            # One stream in every container: any difference is a reader's bug (a seek that landed wrong, say).
            if len(timelines) > 1:
                raise SystemExit(f"the {seconds:g} s recording's timelines differ between containers "
                                 f"{', '.join(args.containers)}")
            print(f"  timelines identical in {', '.join(args.containers)}", flush=True)
    print(f"\nwindow mode, default BehaviorNet (untrained), predict.window={args.window:g} "
          f"predict.stride={args.stride:g}, 640x360 {FPS:g} fps H.264; fixed cost of the command {fixed:.1f}s")
    print("| length (s) | container | predict (s) | real-time factor | without the fixed cost | peak RSS (MiB) "
          "| ffmpeg decode-only (s) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for seconds, container, wall, peak, ffmpeg in rows:
        decode = "n/a" if ffmpeg is None else f"{ffmpeg:.1f} ({seconds / ffmpeg:.0f}x)"
        video = max(wall - fixed, 1e-9)
        print(f"| {seconds:g} | {container} | {wall:.1f} | {seconds / wall:.1f}x | {video:.1f}s "
              f"({seconds / video:.0f}x) | {peak:.0f} | {decode} |")
    if len(args.seconds) > 1:
        for container in args.containers:
            mine = [(s, w - fixed, p) for s, c, w, p, _ in rows if c == container]
            (s0, w0, p0), (s1, w1, p1) = mine[0], mine[-1]
            print(f"{container}: length x{s1 / s0:.1f} -> time without the fixed cost x{w1 / max(w0, 1e-9):.1f} "
                  f"(linear growth: equal); peak memory {p0:.0f} -> {p1:.0f} MiB")


if __name__ == "__main__":
    main()
