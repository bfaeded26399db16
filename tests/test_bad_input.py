"""Bad input: one line naming the file and cause, the batch goes on, exit 1.
Awkward but valid input: processed, keeping length, rate, channels, subtype."""

import os

import numpy as np
import pytest
import soundfile as sf

from conftest import BENCH_DATA, write_audio
from denoise.engine.runlog import LOG_NAME


def _valid_wav_bytes(tmp_path):
    return write_audio(tmp_path / "valid_source.wav", subtype="PCM_16").read_bytes()


def _make_empty(folder, tmp_path):
    (folder / "empty.wav").write_bytes(b"")
    return "empty.wav", "empty"


def _make_truncated_header(folder, tmp_path):
    (folder / "cut.wav").write_bytes(_valid_wav_bytes(tmp_path)[:30])
    return "cut.wav", "not a readable audio file"


def _make_corrupt_header(folder, tmp_path):
    data = bytearray(_valid_wav_bytes(tmp_path))
    data[8:16] = b"JUNKJUNK"
    (folder / "corrupt.wav").write_bytes(bytes(data))
    return "corrupt.wav", "not a readable audio file"


def _make_text_as_mp3(folder, tmp_path):
    (folder / "notes.mp3").write_text("these are my meeting notes\n" * 50)
    return "notes.mp3", "not a readable audio file"


def _make_nan(folder, tmp_path):
    audio = np.zeros(16000, dtype=np.float32)
    audio[100], audio[200] = np.nan, np.inf
    sf.write(str(folder / "nan.wav"), audio, 16000, subtype="FLOAT")
    return "nan.wav", "2 NaN or infinite samples"


def _make_zero_length(folder, tmp_path):
    sf.write(str(folder / "zero.wav"), np.zeros((0, 1), dtype=np.float32), 16000)
    return "zero.wav", "no audio samples"


def _make_broken_link(folder, tmp_path):
    (folder / "gone.wav").symlink_to(tmp_path / "does-not-exist.wav")
    return "gone.wav", "no such file"


BAD_INPUTS = [_make_empty, _make_truncated_header, _make_corrupt_header, _make_text_as_mp3,
              _make_nan, _make_zero_length, _make_broken_link]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__[6:])
def test_bad_input_gets_one_line_and_batch_goes_on(tmp_path, cli, make_bad):
    folder = tmp_path / "in"
    write_audio(folder / "good.wav")
    name, cause = make_bad(folder, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.exists()}
    result = cli(*sorted(folder.iterdir()), "-o", tmp_path / "out", "-j", "1")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert name in errors[0] and cause in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert (tmp_path / "out" / "good.wav").exists()
    assert not (tmp_path / "out" / name).exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.exists()} == before
    leftovers = [p.name for p in (tmp_path / "out").iterdir()
                 if p.name.startswith(".") and p.name != LOG_NAME]
    assert leftovers == []  # no temporary file; the run log is meant to stay


def test_an_output_folder_under_a_file_is_refused_once_before_the_run(tmp_path, cli):
    sources = [write_audio(tmp_path / name) for name in ("a.wav", "b.wav")]
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    result = cli(*sources, "-o", blocker / "out", "-j", "1")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: cannot write to -o {blocker / 'out'}: {blocker} is a file, not a folder"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path, cli):
    source = write_audio(tmp_path / "secret.wav")
    source.chmod(0)
    result = cli(source, "-o", tmp_path / "out", "-j", "1")
    assert result.exit_code == 1 and "secret.wav" in result.stderr


def _awkward(kind, rng):
    """(signal [T, C], sample_rate, subtype) for each awkward-but-valid case."""
    if kind == "float_beyond_full_scale":
        # Real speech, which the default model keeps, at a peak of 2.5 (+8 dBFS).
        speech, rate = sf.read(str(BENCH_DATA / "librispeech_ljspeech_ami_cv__lhotse"
                                   / "LJ002-0020.wav"), dtype="float64", always_2d=True)
        speech = speech[:3 * rate]
        return 2.5 * speech / np.abs(speech).max(), rate, "FLOAT"
    tone = np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)[:, None]
    cases = {
        "one_sample": (np.array([[0.25]]), 16000, "PCM_16"),
        "three_samples_stereo": (np.full((3, 2), 0.1), 44100, "PCM_16"),
        "silence": (np.zeros((16000, 1)), 16000, "PCM_16"),
        "dc_offset": (0.5 + 0.1 * tone, 16000, "PCM_16"),
        "clipped": (np.clip(3 * tone, -1, 1), 16000, "PCM_16"),
        "very_quiet": (1e-4 * tone + 1e-5 * rng.standard_normal((16000, 1)), 16000, "PCM_24"),
        "unsigned_8bit": (0.5 * tone, 8000, "PCM_U8"),
        "six_channels": (0.3 * np.repeat(tone, 6, axis=1), 48000, "PCM_24"),
        "rate_192k": (0.3 * np.tile(tone, (3, 1)), 192000, "PCM_16"),
    }
    return cases[kind]


AWKWARD = ["one_sample", "three_samples_stereo", "silence", "dc_offset", "clipped",
           "very_quiet", "unsigned_8bit", "float_beyond_full_scale", "six_channels", "rate_192k"]


@pytest.mark.parametrize("kind", AWKWARD)
def test_awkward_valid_input_is_processed(tmp_path, cli, kind):
    signal, rate, subtype = _awkward(kind, np.random.default_rng(0))
    source = tmp_path / "in" / f"{kind}.wav"
    source.parent.mkdir()
    sf.write(str(source), signal.astype(np.float32), rate, subtype=subtype)
    result = cli(source, "-o", tmp_path / "out", "-j", "1")
    assert result.exit_code == 0, result.output
    out, out_rate = sf.read(str(tmp_path / "out" / source.name), always_2d=True)
    assert out_rate == rate and out.shape == signal.shape
    assert sf.info(str(tmp_path / "out" / source.name)).subtype == subtype
    assert np.isfinite(out).all()
    if kind == "silence":
        assert np.abs(out).max() == 0
    if kind == "float_beyond_full_scale":
        assert np.abs(out).max() > 1.2, "float output must not be clipped to full scale"


def test_names_with_spaces_and_non_ascii(tmp_path, cli):
    folder = tmp_path / "entrevues d'été"
    write_audio(folder / "Zoë & José – take 1.wav")
    write_audio(folder / "会议 录音.flac")
    result = cli(folder, "-o", tmp_path / "sortie", "-j", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sortie").iterdir() if p.name != LOG_NAME) == [
        "Zoë & José – take 1.wav", "会议 录音.flac"]
