"""Memory bench: peak memory of `denoise` must not grow with file length.

The CLI streams long files in chunks and writes its output as it goes, so its
peak memory should be the same for a 1-minute and a 2-hour file. This script
checks that end to end: it writes 48 kHz stereo PCM_16 WAV files of the given
durations (speech tiled from bench-data plus white noise at about 10 dB SNR,
written block by block), runs the real CLI on each as a subprocess, and reports

  wall s        wall-clock seconds of the whole CLI run (imports, worker start)
  RTF           real-time factor: wall seconds / audio seconds
  tree RSS      peak of the summed VmRSS of the CLI and all its descendants
                (joblib/loky workers), sampled every 50 ms from /proc; pages
                shared between processes (libraries) are counted once per process
  single peak   the largest VmHWM (the kernel's own peak RSS of a process)
                sampled from any one process of the tree; exact unless the peak
                came in a process's last 50 ms
  CPU s         user + system seconds of the CLI and its reaped workers; less
                noisy than wall time when other jobs share the machine
  ratio         tree RSS / tree RSS of the shortest file with the same -j

It also checks that each output has the input's frames, rate and channels.
Linux only (reads /proc).

    python bench/memory.py
    python bench/memory.py --durations 60,600 --jobs 1 --keep --workdir /data/tmp
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEECH = (Path("/work/shared/bench-data/librispeech_ljspeech_ami_cv__lhotse")
          / "libri-1088-134315-0000.wav")
RATE, CHANNELS, BLOCK_S, SNR_DB = 48_000, 2, 10, 10.0
SAMPLE_S = 0.05


@dataclass
class Run:
    duration_s: float
    jobs: int
    wall_s: float
    cpu_s: float
    tree_peak_mb: float
    single_peak_mb: float
    output_ok: bool


def noisy_block() -> np.ndarray:
    """BLOCK_S seconds of stereo noisy speech at RATE, as int16 [frames, channels]."""
    from denoise.engine.dsp import resample

    speech, rate = sf.read(SPEECH, dtype="float32", always_2d=True)
    speech = resample(speech[:, 0], rate, RATE)
    frames = BLOCK_S * RATE
    speech = np.resize(speech, frames)  # tiles the utterance
    rng = np.random.default_rng(0)
    noise_rms = np.sqrt(np.mean(speech**2)) / 10 ** (SNR_DB / 20)
    block = speech[:, None] + noise_rms * rng.standard_normal((frames, CHANNELS))
    return np.round(np.clip(0.5 * block / np.abs(block).max(), -1, 1) * 32767).astype(np.int16)


def write_wav(path: Path, duration_s: float, block: np.ndarray) -> None:
    """Write ``duration_s`` seconds by repeating ``block``, one block at a time."""
    left = round(duration_s * RATE)
    with sf.SoundFile(path, "w", RATE, CHANNELS, "PCM_16", format="WAV") as out:
        while left > 0:
            out.write(block[:left])
            left -= len(block)


def memory_kb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of ``pid``; zeros once it is gone or a zombie."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    fields[line[:5]] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from the parent pids in /proc/*/stat."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # the command name may hold spaces; fields after it are safe
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += frontier
    return tree


def measure(command: list[str], env: dict | None = None) -> tuple[float, float, float, float]:
    """Run ``command``; returns wall s, CPU s, peak tree RSS and peak single RSS (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    tree_peak, single_peak = 0, 0
    while True:
        rss, hwm = zip(*(memory_kb(pid) for pid in process_tree(proc.pid)))
        tree_peak, single_peak = max(tree_peak, sum(rss)), max(single_peak, *hwm)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed with exit code {proc.returncode}")
    print(f"  {shlex.join(command)}  # {wall:.1f} s", flush=True)
    # ru_maxrss is no use here: it keeps this script's own RSS from before exec
    return wall, usage.ru_utime + usage.ru_stime, tree_peak / 1024, single_peak / 1024


def run_cli(src: Path, dst: Path, jobs: int) -> tuple[float, float, float, float]:
    """Run the CLI with the spectral method; see :func:`measure`."""
    return measure([sys.executable, "-m", "denoise.cli", str(src), "-o", str(dst), "--method",
                    "spectral", "-j", str(jobs), "--overwrite", "-q"])


def same_shape(src: Path, dst: Path) -> bool:
    a, b = sf.info(src), sf.info(dst)
    return (a.frames, a.samplerate, a.channels) == (b.frames, b.samplerate, b.channels)


def machine() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "unknown CPU")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{len(os.sched_getaffinity(0))} cores (nproc), {model}; load average {load}"


def table(runs: list[Run]) -> str:
    base: dict[int, float] = {}
    for run in sorted(runs, key=lambda r: r.duration_s):
        base.setdefault(run.jobs, run.tree_peak_mb)
    lines = ["| duration s | jobs | wall s | RTF | CPU s | peak tree RSS (MB) | largest single "
             "process peak (MB) | tree RSS / shortest file's "
             "| output frames/rate/channels |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        lines.append(f"| {run.duration_s:g} | {run.jobs} | {run.wall_s:.1f} "
                     f"| {run.wall_s / run.duration_s:.4f} | {run.cpu_s:.0f} "
                     f"| {run.tree_peak_mb:.0f} | {run.single_peak_mb:.0f} "
                     f"| {run.tree_peak_mb / base[run.jobs]:.2f} "
                     f"| {'match' if run.output_ok else 'MISMATCH'} |")
    return "\n".join(lines)


def numbers(text: str, kind: type) -> list:
    return [kind(item) for item in text.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--durations", default="60,7200", help="seconds, comma separated")
    parser.add_argument("--jobs", default="1,2", help="-j values, comma separated")
    parser.add_argument("--workdir", type=Path, help="where to write the files (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    durations, jobs_list = sorted(numbers(args.durations, float)), numbers(args.jobs, int)

    print(f"machine: {machine()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="denoise-memory-", dir=args.workdir))
    block, runs, started = noisy_block(), [], time.perf_counter()
    try:
        for duration in durations:
            src = workdir / f"noisy-{duration:g}s.wav"
            write_wav(src, duration, block)
            for jobs in jobs_list:
                dst = workdir / f"clean-{duration:g}s-j{jobs}.wav"
                runs.append(Run(duration, jobs, *run_cli(src, dst, jobs), same_shape(src, dst)))
                if not args.keep:
                    dst.unlink()
            if not args.keep:
                src.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(workdir)
        else:
            print(f"files kept in {workdir}")
    print()
    print(table(sorted(runs, key=lambda r: (r.jobs, r.duration_s))))
    print(f"\ntotal {time.perf_counter() - started:.0f} s (file generation included); "
          f"{machine()}")


if __name__ == "__main__":
    main()
