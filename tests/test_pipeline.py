"""The staged pipeline: what each stage reads and loads, the backend
contract, and cleanup when a stage fails or the run is stopped."""

import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import snr_db, start_long_run, write_audio
from denoise.engine import backends
from denoise.engine.runlog import LOG_NAME


def test_a_dry_run_reads_no_audio_and_loads_no_model(tmp_path, cli, monkeypatch):
    """A model that is not in the cache, no network, and inputs whose audio
    would fail to decode: the dry run plans them all from their headers."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    def no_audio(*args, **kwargs):
        raise AssertionError("audio was read")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    monkeypatch.setattr("denoise.engine.audio_io.read_span", no_audio)
    monkeypatch.setattr("denoise.engine.audio_io.file_blocks", no_audio)
    write_audio(tmp_path / "in" / "a.wav", frames=16000 * 3)
    good = write_audio(tmp_path / "full.flac", frames=16000 * 3, fmt="FLAC")
    (tmp_path / "in" / "cut.flac").write_bytes(good.read_bytes()[:2000])  # header, then nothing
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "--method", "demucs", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("would write") == 2
    assert not (tmp_path / "out").exists()


def _count_input_opens(monkeypatch, source: Path) -> Counter:
    """Every open of ``source`` by soundfile (header probes included)."""
    opened = Counter()
    original = sf.SoundFile.__init__

    def counting(self, file, *args, **kwargs):
        if Path(str(file)).resolve() == source.resolve():
            opened["input"] += 1
        original(self, file, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "__init__", counting)
    return opened


@pytest.mark.parametrize("extra, most", [([], 3), (["--preset", "podcast"], 4),
                                         (["--preset", "podcast", "--report", "{rep}", "--plot"],
                                          5), (["--method", "spectral"], 2)])
def test_each_input_is_read_at_most_as_often_as_the_stages_need(tmp_path, cli, monkeypatch,
                                                                 extra, most):
    """Its header, its chunks, one pass for the level stage's speech level
    (a neural method's), one for the hum search of the podcast preset (where
    it finds none; two more where it tracks one), and one for the report's
    measures of the input."""
    source = write_audio(tmp_path / "a.wav", frames=16000 * 8, channels=2)
    opened = _count_input_opens(monkeypatch, source)
    arguments = [part.format(rep=tmp_path / "rep") for part in extra]
    result = cli(source, "-o", tmp_path / "out.wav", "-j", "1", *arguments)
    assert result.exit_code == 0, result.output
    assert opened["input"] <= most


def test_a_backend_is_one_module_and_one_registry_line(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "half", "half_backend:HalfBackend")
    rate = 16000
    t = np.arange(rate * 3) / rate
    signal_in = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), signal_in, rate, subtype="FLOAT")
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "b.wav", "--method", "half", "--report",
                 tmp_path / "rep")
    assert result.exit_code == 0, result.output
    out, _ = sf.read(str(tmp_path / "b.wav"), dtype="float32")
    interior = slice(rate // 10, -rate // 10)  # resampling filters ring at the true ends
    assert snr_db(0.5 * signal_in[interior], out[interior]) > 60
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<th>gain</th><td>0.5</td>" in page and "<th>method</th><td>half</td>" in page


def test_a_stream_carries_its_state_across_blocks():
    """The streaming contract on a causal backend with memory: fed in blocks
    of any size, it gives what the whole-signal call gives."""
    import torch
    from half_backend import HalfBackend, HalfOptions

    backend = HalfBackend(HalfOptions(smoothing=0.95))
    signal_in = np.random.default_rng(2).standard_normal((2, 5000)).astype(np.float32)
    offline = backend.enhance(torch.from_numpy(signal_in), 8000).numpy()
    stream = backend.stream(8000, channels=2)
    sizes = np.random.default_rng(3).integers(1, 700, size=100)
    edges = np.minimum(np.cumsum(np.r_[0, sizes]), signal_in.shape[1])
    pieces = [stream.feed(signal_in[:, a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    streamed = np.concatenate(pieces + [stream.flush()], axis=1)
    assert streamed.shape == signal_in.shape and stream.latency_samples == 0
    np.testing.assert_allclose(streamed, offline, atol=1e-6)


def test_a_failing_finishing_stage_fails_its_file_and_leaves_nothing(tmp_path, cli, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the limiter broke")

    monkeypatch.setattr("denoise.engine.finishing.Limiter._limit", broken)
    write_audio(tmp_path / "in" / "a.wav", frames=16000 * 4)
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "--preset", "podcast", "-j", "1")
    assert result.exit_code == 1
    assert "a.wav: internal error: RuntimeError: the limiter broke" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name != LOG_NAME] == []


def test_sigterm_while_workers_finish_files_leaves_nothing(tmp_path):
    """Stopped while a worker writes the finished output from the staging
    copy: both temporary files go."""
    # The spectral filter, which gets through 15 minutes before the deadline.
    process, out = start_long_run(tmp_path, 2, "--preset", "podcast", "--method", "spectral")
    deadline = time.monotonic() + 120
    while len(list(out.glob(".long.wav.*.partial"))) < 2:  # staging and the output
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "finishing never started"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr.decode()
    assert [p.name for p in out.iterdir()] == []


def test_a_slow_finishing_stage_holds_back_new_work(tmp_path, monkeypatch):
    """Backpressure: while completions wait, no new file is started, and
    the chunk outputs waiting to be put in order never outnumber the tasks
    in flight (a pool of two threads, a finishing stage 20x slower than
    enhancement)."""
    import concurrent.futures as cf

    from denoise.engine import Batch, BatchOptions, Measure, plan_jobs
    from denoise.engine import completion, schedule

    class Threads(cf.ThreadPoolExecutor):
        workers = 2

    slow = completion.complete

    def slow_complete(job):
        time.sleep(0.2)
        return slow(job)

    monkeypatch.setattr(schedule, "complete", slow_complete)
    monkeypatch.setattr(schedule.Run, "_open_pool", lambda run: (Threads(2), 1))
    seen = Counter()
    original = schedule.Run._take

    def watched(run, kind, subject, future):
        open_files = sum(file.sink is not None or file.completing for file in run.files)
        waiting = sum(len(file.waiting) for file in run.files)
        seen["open"], seen["waiting"] = max(seen["open"], open_files), max(seen["waiting"], waiting)
        yield from original(run, kind, subject, future)

    monkeypatch.setattr(schedule.Run, "_take", watched)
    for index in range(8):
        write_audio(tmp_path / "in" / f"{index}.wav", frames=16000 * 4, seed=index)
    batch = Batch(plan_jobs([str(tmp_path / "in")], str(tmp_path / "out")).jobs,
                  BatchOptions(segment_s=1.0, overlap_s=0.1, log=None),
                  measure=Measure(report_dir=tmp_path / "rep"))
    with batch:
        assert [result.status for result in batch.run()] == ["done"] * 8
    limit = schedule.TASKS_PER_WORKER * Threads.workers
    assert seen["waiting"] <= limit
    assert 1 <= seen["open"] <= limit + 1
