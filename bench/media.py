"""Media bench: a long M4A and a long 720p MP4 through `denoise`, end to end.

For each duration it makes the media with PyAV (noisy speech from the
repository's samples: LibriSpeech speech with real crowd noise, tiled),
runs the real CLI on it as a subprocess (spectral method) and reports

  wall s        wall-clock seconds of the whole CLI run (imports, workers,
                decoding, enhancing, encoding, copying the video)
  RTF           wall seconds / audio seconds
  tree RSS      peak of the summed VmRSS of the CLI and its workers
  single peak   the largest VmHWM of any one of its processes
  ratio         tree RSS / tree RSS of the shortest file of the same kind

and checks the output: decoded, the audio has as many samples as the
input's; the video has the input's packets.

    python bench/media.py                          # 2 h M4A, 1 h 720p MP4
    python bench/media.py --m4a 60,600 --mp4 60    # shorter
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT)]
from bench.memory import machine, measure  # noqa: E402
from media_maker import NOISY_SPEECH, write_video  # noqa: E402

RATE = 48_000
SEGMENT_S = 60  # the video is encoded once for this long, then repeated by stream copy


def stereo_speech(seconds: float) -> np.ndarray:
    """``seconds`` of the noisy sample, tiled, at 48 kHz stereo: ``[2, T]``."""
    from denoise.engine.dsp import resample

    import torch

    speech, rate = sf.read(str(NOISY_SPEECH), dtype="float32", always_2d=True)
    speech = resample(torch.from_numpy(speech.T.copy()), rate, RATE).numpy()[0]
    tiled = np.resize(speech, round(seconds * RATE))
    return np.stack([tiled, 0.8 * tiled]).astype(np.float32)


def make_m4a(path: Path, seconds: float) -> None:
    """An AAC M4A, 48 kHz stereo at 128 kb/s, written in 10-minute parts."""
    part_s = 600
    with av.open(str(path), "w", format="ipod") as output:
        stream = output.add_stream("aac", rate=RATE, layout="stereo")
        stream.bit_rate = 128_000
        block = stereo_speech(part_s)
        written = 0
        total = round(seconds * RATE)
        while written < total:
            part = block[:, : total - written]
            for start in range(0, part.shape[-1], 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(part[:, start: start + 1024]), format="fltp",
                    layout="stereo")
                frame.sample_rate, frame.pts = RATE, written + start
                frame.time_base = Fraction(1, RATE)
                for packet in stream.encode(frame):
                    output.mux(packet)
            written += part.shape[-1]
        for packet in stream.encode(None):
            output.mux(packet)


def make_mp4(path: Path, seconds: float, workdir: Path) -> None:
    """A 1280x720 25 fps H.264 + AAC stereo MP4: one segment encoded, then
    repeated by copying its packets with shifted timestamps."""
    segment = workdir / "segment.mp4"
    write_video(segment, [stereo_speech(SEGMENT_S)], RATE, SEGMENT_S, size=(1280, 720),
                languages=("eng",), bit_rate=128_000)
    repeats = max(1, round(seconds / SEGMENT_S))
    with av.open(str(segment)) as source, av.open(str(path), "w", format="mp4") as output:
        copies = {s.index: output.add_stream_from_template(s) for s in source.streams}
        ends = {}
        for stream in source.streams:
            ends[stream.index] = 0
        for packet in source.demux():  # the length of each stream's timeline
            if packet.size and packet.pts is not None:
                ends[packet.stream.index] = max(ends[packet.stream.index],
                                                packet.pts + (packet.duration or 0))
        for repeat in range(repeats):
            source.seek(0)
            for packet in source.demux():
                if not packet.size:
                    continue
                shift = repeat * ends[packet.stream.index]
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                packet.stream = copies[packet.stream.index]
                output.mux(packet)
    segment.unlink()


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def video_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        if not container.streams.video:
            return 0
        return sum(1 for packet in container.demux(video=0) if packet.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--m4a", default="60,7200", help="M4A durations (s), comma separated")
    parser.add_argument("--mp4", default="60,3600", help="MP4 durations (s), comma separated")
    parser.add_argument("--jobs", type=int, default=2, help="-j of the runs")
    parser.add_argument("--workdir", type=Path, help="where to write the files (default /tmp)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="denoise-media-bench-", dir=args.workdir))
    rows, base = [], {}
    try:
        for kind, durations in (("m4a", args.m4a), ("mp4", args.mp4)):
            for seconds in sorted(float(d) for d in durations.split(",") if d):
                source = workdir / f"noisy-{seconds:g}s.{kind}"
                started = time.perf_counter()
                make_m4a(source, seconds) if kind == "m4a" else make_mp4(source, seconds,
                                                                         workdir)
                print(f"  made {source.name} ({source.stat().st_size / 1e6:.0f} MB) in "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
                target = workdir / f"clean-{seconds:g}s.{kind}"
                wall, _, tree_mb, single_mb = measure(
                    [sys.executable, "-m", "denoise.cli", str(source), "-o", str(target),
                     "--method", "spectral", "-j", str(args.jobs), "-q"])
                same = (audio_samples(target) == audio_samples(source)
                        and video_packets(target) == video_packets(source))
                base.setdefault(kind, tree_mb)
                rows.append(f"| {kind.upper()} | {seconds / 60:g} min | {wall:.1f} "
                            f"| {wall / seconds:.4f} | {tree_mb:.0f} | {single_mb:.0f} "
                            f"| {tree_mb / base[kind]:.2f} | {'match' if same else 'MISMATCH'} |")
                source.unlink()
                target.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| file | length | wall s | RTF | peak tree RSS (MB) | largest process peak (MB) "
          "| tree RSS / shortest | samples, video packets |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
