"""Every format and subtype keeps its rate, channels, length and subtype."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import noisy_tone, write_audio

ROUND_TRIPS = [
    ("WAV", "PCM_U8", ".wav"), ("WAV", "PCM_16", ".wav"), ("WAV", "PCM_24", ".wav"),
    ("WAV", "PCM_32", ".wav"), ("WAV", "FLOAT", ".wav"), ("WAV", "DOUBLE", ".wav"),
    ("FLAC", "PCM_16", ".flac"), ("FLAC", "PCM_24", ".flac"), ("OGG", "VORBIS", ".ogg"),
    ("MP3", "MPEG_LAYER_III", ".mp3"), ("AIFF", "PCM_16", ".aiff"),
]


@pytest.mark.parametrize("fmt, subtype, suffix", ROUND_TRIPS)
def test_format_and_subtype_round_trip(tmp_path, cli, fmt, subtype, suffix):
    if not sf.check_format(fmt, subtype):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    source = write_audio(tmp_path / f"in{suffix}", frames=44100 + 7, sample_rate=44100,
                         channels=2, subtype=subtype, fmt=fmt)
    before = sf.info(str(source))
    result = cli(source, "-o", tmp_path / "out", "-j", "1")
    assert result.exit_code == 0, result.output
    after = sf.info(str(tmp_path / "out" / source.name))
    assert (after.format, after.subtype) == (before.format, before.subtype)
    assert (after.samplerate, after.channels, after.frames) == (44100, 2, before.frames)


@pytest.mark.parametrize("sample_rate, channels", [(8000, 1), (11025, 2), (22050, 1),
                                                   (96000, 2), (192000, 1), (48000, 6)])
def test_rates_and_channel_counts_are_kept(tmp_path, cli, sample_rate, channels):
    frames = sample_rate // 2 + 3
    source = write_audio(tmp_path / "x.wav", frames, sample_rate, channels, "PCM_24")
    assert cli(source, "-o", tmp_path / "out", "-j", "1").exit_code == 0
    out, rate = sf.read(str(tmp_path / "out" / "x.wav"), always_2d=True)
    assert rate == sample_rate and out.shape == (frames, channels)
    assert sf.info(str(tmp_path / "out" / "x.wav")).subtype == "PCM_24"


def test_format_and_subtype_can_be_changed(tmp_path, cli):
    source = write_audio(tmp_path / "in" / "a.wav", subtype="PCM_16")
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "--format", "flac",
                 "--subtype", "PCM_24", "-j", "1")
    assert result.exit_code == 0, result.output
    info = sf.info(str(tmp_path / "out" / "a.flac"))
    assert (info.format, info.subtype, info.frames) == ("FLAC", "PCM_24", 16000)
    assert source.exists()


def test_stdin_to_stdout_pipeline(tmp_path):
    source = write_audio(tmp_path / "a.wav", frames=24000, sample_rate=24000, channels=2,
                         subtype="PCM_16")
    piped = subprocess.run([sys.executable, "-m", "denoise.cli", "-", "-o", "-", "-j", "1"],
                           input=source.read_bytes(), capture_output=True, timeout=120)
    assert piped.returncode == 0, piped.stderr.decode()
    (tmp_path / "b.wav").write_bytes(piped.stdout)
    out, rate = sf.read(str(tmp_path / "b.wav"), always_2d=True)
    info = sf.info(str(tmp_path / "b.wav"))
    assert (rate, out.shape, info.format, info.subtype) == (24000, (24000, 2), "WAV", "PCM_16")
    clean_tone = noisy_tone(24000, 24000, 2)
    assert not np.allclose(out, clean_tone, atol=1e-3), "output should differ from noisy input"


def test_stdin_to_folder_is_written_as_stdin_wav(tmp_path, cli):
    source = write_audio(tmp_path / "a.flac", subtype="PCM_24")
    result = cli("-", "-o", tmp_path / "out", "-j", "1", stdin=source.read_bytes())
    assert result.exit_code == 0, result.output
    info = sf.info(str(tmp_path / "out" / "stdin.wav"))
    assert (info.format, info.subtype, info.frames) == ("WAV", "PCM_24", 16000)


def test_an_opus_name_gets_opus(tmp_path, cli):
    write_audio(tmp_path / "a.wav", frames=48000, sample_rate=48000)
    assert cli(tmp_path / "a.wav", "-o", tmp_path / "a.opus").exit_code == 0
    info = sf.info(str(tmp_path / "a.opus"))
    assert (info.format, info.subtype, info.frames) == ("OGG", "OPUS", 48000)
