"""M4A/AAC, WebM/Opus, WMA and video, in and out.

The media are made here with PyAV from the real noisy speech in samples/
(LibriSpeech speech with real crowd noise, the JFK broadcast), the way a
phone, a browser or an editor writes them; every check decodes what
denoise wrote, as a player would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile as sf
from media_maker import (NOISY_SPEECH, STEREO_SPEECH, decode, packets, timeline,
                         write_audio_file, write_video)
from scipy.signal import resample_poly

SECONDS = 4
SUBTITLES = [(0.5, 1.5, "hello"), (2.0, 3.0, "world")]
CHAPTERS = [(0.0, 2.0, "Question"), (2.0, 4.0, "Answer")]


def _speech(path, rate: int | None = None) -> np.ndarray:
    audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.T[:, 1000: 1000 + SECONDS * file_rate + 333]
    if rate is not None and rate != file_rate:
        audio = resample_poly(audio, rate, file_rate, axis=-1).astype(np.float32)
    return audio


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The media a producer has, in one folder: name -> path."""
    folder = tmp_path_factory.mktemp("media")
    speech = _speech(NOISY_SPEECH)
    other = np.ascontiguousarray(speech[:, ::-1])  # a second, different track
    return {
        "interview.mp4": write_video(folder / "interview.mp4", [speech, other], 44100, SECONDS,
                                     subtitles=SUBTITLES, chapters=CHAPTERS),
        "memo.m4a": write_audio_file(folder / "memo.m4a", speech, 44100, "mp4", "aac",
                                     tags={"title": "Memo", "artist": "A. Reporter"},
                                     cover=True),
        "call.webm": write_audio_file(folder / "call.webm", _speech(NOISY_SPEECH, 48000), 48000,
                                      "webm", "libopus", 48000),
        "old.wma": write_audio_file(folder / "old.wma", _speech(STEREO_SPEECH), 44100, "asf",
                                    "wmav2", 128000),
        "raw.aac": write_audio_file(folder / "raw.aac", speech, 44100, "adts", "aac"),
        "film.ac3": write_audio_file(folder / "film.ac3", _speech(STEREO_SPEECH, 48000), 48000,
                                     "ac3", "ac3", 192000),
    }


def _streams(path) -> list[tuple]:
    """Each stream's kind, codec, language, flags, rate and channels (not
    MP4's chapter track, which holds the chapters)."""
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name, s.metadata.get("language"), int(s.disposition),
                 s.codec_context.sample_rate if s.type == "audio" else None,
                 s.codec_context.channels if s.type == "audio" else None)
                for s in container.streams if s.codec_context is not None]


def _bit_rate(path, track: int = 0) -> float:
    """Bits per second of an audio track, from its packets."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[track]
        size = sum(packet.size for packet in container.demux(stream))
        rate = stream.codec_context.sample_rate
    return size * 8 / (decode(path, track)[0].shape[-1] / rate)


def _lag(before: np.ndarray, after: np.ndarray) -> int:
    """Where ``after`` lines up best with ``before`` (samples; 0: aligned)."""
    reach = 2048
    window = before[0, 20000: 60000]
    scores = [np.dot(window, after[0, 20000 + lag: 60000 + lag]) for lag in range(-reach, reach)]
    return int(np.argmax(scores)) - reach


def _noise_floor_db(audio: np.ndarray, rate: int) -> float:
    """The 10th percentile of 20 ms frame levels: the level between words."""
    frame = rate // 50
    frames = audio[0, : audio.shape[-1] // frame * frame].reshape(-1, frame)
    return float(np.percentile(10 * np.log10(np.mean(frames**2, axis=1) + 1e-12), 10))


def _check_track(source, output, track: int = 0) -> None:
    """Decoded, the enhanced track has the input's samples: as many, from
    the same timestamp, aligned; and it is cleaner."""
    before, start_before = decode(source, track)
    after, start_after = decode(output, track)
    assert after.shape == before.shape
    assert abs(start_after - start_before) <= 0.001 + 1e-9  # ASF counts in whole ms
    assert _lag(before, after) == 0
    rate = _streams(source)[0][4] or 44100
    assert _noise_floor_db(after, rate) < _noise_floor_db(before, rate) - 2


def test_a_video_comes_back_as_the_same_video_with_its_sound_enhanced(media, tmp_path, cli):
    source = media["interview.mp4"]
    result = cli(source, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    (record,) = map(json.loads, result.stdout.splitlines())
    output = tmp_path / "out" / "interview.mp4"
    assert record["status"] == "done" and record["output"] == str(output)
    assert _streams(output) == _streams(source)  # codecs, languages, default flags
    for kind in ("video", "subtitle"):  # copied packet for packet, at the same times
        assert packets(output, kind) == packets(source, kind) != []
    with av.open(str(output)) as written, av.open(str(source)) as original:
        assert written.metadata["title"] == original.metadata["title"]
        assert written.chapters() == original.chapters()
        assert [c["metadata"]["title"] for c in written.chapters()] == ["Question", "Answer"]
    for track in (0, 1):
        _check_track(source, output, track)
        assert _bit_rate(output, track) == pytest.approx(_bit_rate(source, track), rel=0.1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".denoise-log.jsonl",
                                                                     "interview.mp4"]


@pytest.mark.parametrize("fmt, suffix", [("mp4", "mp4"), ("matroska", "mkv")])
def test_sound_that_starts_after_the_picture_stays_in_sync(tmp_path, cli, fmt, suffix):
    source = write_video(tmp_path / f"late.{suffix}", [_speech(NOISY_SPEECH)], 44100, SECONDS,
                         fmt=fmt, audio_start=0.5)
    assert decode(source)[1] > 0.4  # the sound starts late
    assert cli(source, "-o", tmp_path / "out").exit_code == 0
    _check_track(source, tmp_path / "out" / source.name)
    assert packets(tmp_path / "out" / source.name, "video") == packets(source, "video")


def test_a_gap_in_the_sound_stays_a_gap_and_what_follows_stays_in_sync(tmp_path, cli):
    source = write_video(tmp_path / "gap.mkv", [_speech(NOISY_SPEECH, 48000)], 48000, SECONDS,
                         fmt="matroska", audio_codec="libopus", audio_gap=(1.0, 1.5))
    assert cli(source, "-o", tmp_path / "out", "--method", "spectral").exit_code == 0
    before, after = timeline(source), timeline(tmp_path / "out" / "gap.mkv")
    assert abs(len(after) - len(before)) <= 48  # ends at the same time, within 1 ms
    assert np.abs(after[round(1.05 * 48000): round(1.45 * 48000)]).max() < 1e-3  # silence
    late = slice(2 * 48000, 3 * 48000)  # after the gap: in step with the input, within
    lags = [np.dot(before[late], np.roll(after, -lag)[late]) for lag in range(-480, 481)]
    assert abs(int(np.argmax(lags)) - 480) <= 48  # 1 ms (WebM times its packets in ms)


@pytest.mark.parametrize("name", ["memo.m4a", "call.webm", "old.wma", "raw.aac", "film.ac3"])
def test_audio_files_keep_container_codec_layout_bitrate_and_length(media, tmp_path, cli, name):
    source = media[name]
    result = cli(source, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    output = tmp_path / "out" / name
    assert _streams(output) == _streams(source)
    _check_track(source, output)
    assert _bit_rate(output) == pytest.approx(_bit_rate(source), rel=0.15)
    if name == "memo.m4a":  # the cover and the tags stay
        assert packets(output, "video") == packets(source, "video") != []
        with av.open(str(output)) as written:
            assert written.metadata["title"] == "Memo"
            assert written.metadata["artist"] == "A. Reporter"


def test_each_track_of_a_video_gets_its_plot(media, tmp_path, cli):
    result = cli(media["interview.mp4"], "-o", tmp_path / "out", "--report", tmp_path / "report",
                 "--plot")
    assert result.exit_code == 0, result.output
    plots = sorted(p.name for p in (tmp_path / "report" / "plots").iterdir())
    assert plots == ["interview.mp4.track1.png", "interview.mp4.track2.png"]
    (row,) = json.loads((tmp_path / "report" / "report.json").read_text())["files"]
    assert row["output"] == str(tmp_path / "out" / "interview.mp4")


def test_one_track_chosen_the_others_copied_untouched(media, tmp_path, cli):
    source = media["interview.mp4"]
    output = tmp_path / "one.mp4"
    assert cli(source, "-o", output, "--audio-track", "2").exit_code == 0
    first = [p for p in packets(output, "audio") if p[0] == 1]
    assert first == [p for p in packets(source, "audio") if p[0] == 1]
    _check_track(source, output, 1)

    result = cli(source, "-o", tmp_path / "three.mp4", "--audio-track", "3")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (f"error: {source}: has 2 audio tracks; there is "
                                             "no --audio-track 3")
    assert not (tmp_path / "three.mp4").exists()


def test_audio_only_from_a_video(media, tmp_path, cli):
    source = media["interview.mp4"]
    assert cli(source, "-o", tmp_path / "talk.m4a", "--audio-track", "1").exit_code == 0
    assert [s[0] for s in _streams(tmp_path / "talk.m4a")] == ["audio"]
    _check_track(source, tmp_path / "talk.m4a")

    assert cli(source, "-o", tmp_path / "out", "--audio-only").exit_code == 0
    assert [s[:2] for s in _streams(tmp_path / "out" / "interview.m4a")] == [("audio", "aac")] * 2


def test_lossless_out_of_a_lossy_file(media, tmp_path, cli):
    source = media["memo.m4a"]
    assert cli(source, "-o", tmp_path / "memo.flac").exit_code == 0
    info = sf.info(str(tmp_path / "memo.flac"))
    before, _ = decode(source)
    assert (info.format, info.samplerate, info.channels, info.frames) == \
        ("FLAC", 44100, 1, before.shape[-1])

    result = cli(media["interview.mp4"], "-o", tmp_path / "both.flac")
    assert result.exit_code == 1
    assert "has 2 audio tracks and a FLAC file holds one: choose one with --audio-track N" \
        in result.stderr
    assert not (tmp_path / "both.flac").exists()


def test_every_feature_works_on_media(media, tmp_path, cli, small_checkpoint):
    source = media["old.wma"]
    out = tmp_path / "out"
    result = cli(source, "-o", out, "--channels", "mix", "--segment-s", "1", "--preset",
                 "podcast", "--report", tmp_path / "report", "--plot")
    assert result.exit_code == 0, result.output
    after, _ = decode(out / "old.wma")
    assert np.allclose(after[0], after[1], atol=0.02)  # the mix, in both channels
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (row,) = report["files"]
    assert row["input"] == str(source) and row["output"] == str(out / "old.wma")
    assert row["metrics"]["noise_reduction_db"] > 2
    assert (tmp_path / "report" / "plots" / "old.wma.png").stat().st_size > 10_000
    from denoise.engine.metrics import LoudnessMeter

    meter = LoudnessMeter(44100, 2)
    meter.add(after.T)
    assert meter.loudness()[0] == pytest.approx(-16, abs=1)  # the podcast preset's target

    again = cli(source, "-o", out, "--channels", "mix", "--segment-s", "1", "--preset",
                "podcast", "--resume")
    assert again.exit_code == 0 and "up to date" in again.output

    demucs = cli(media["memo.m4a"], "-o", tmp_path / "demucs.m4a", "--weights",
                 small_checkpoint[0])
    assert demucs.exit_code == 0, demucs.output
    assert decode(tmp_path / "demucs.m4a")[0].shape == decode(media["memo.m4a"])[0].shape


def test_standard_input_to_standard_output(media):
    source = media["memo.m4a"]
    done = subprocess.run([sys.executable, "-m", "denoise.cli", "-", "-o", "-"],
                          stdin=open(source, "rb"), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    with av.open(__import__("io").BytesIO(done.stdout)) as written:
        assert written.streams.audio[0].codec_context.name == "aac"
        samples = sum(frame.samples for frame in written.decode(audio=0))
    assert samples == decode(source)[0].shape[-1]


def test_folder_walks_take_media_by_extension_or_content(media, tmp_path, cli):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "memo.m4a").write_bytes(media["memo.m4a"].read_bytes())
    (folder / "clip_from_phone").write_bytes(media["memo.m4a"].read_bytes())  # no extension
    (folder / "notes.txt").write_text("not media")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    result = cli(folder, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    taken = sorted(json.loads(line)["input"].rsplit("/", 1)[-1]
                   for line in result.stdout.splitlines())
    assert taken == ["clip_from_phone", "memo.m4a"]


def test_bad_media_fails_alone_with_one_line_and_leaves_nothing(media, tmp_path, cli):
    folder = tmp_path / "in"
    folder.mkdir()
    whole = media["interview.mp4"].read_bytes()
    moov = whole.find(b"moov") - 4
    (folder / "cut.mp4").write_bytes(whole[:moov] if moov > 0 else whole[: len(whole) // 2])
    silent = write_video(folder / "silent.mp4", [], 44100, 1.0)
    empty = write_video(folder / "empty.mkv", [np.zeros((1, 0), np.float32)], 48000, 1.0,
                        fmt="matroska", audio_codec="libopus")
    with av.open(str(folder / "mpegh.mp4"), "w", format="mp4") as output:  # no decoder for it
        stream = output.add_mux_stream("mpegh_3d_audio", rate=48000)
        for index in range(10):
            packet = av.Packet(bytes(200))
            packet.stream, packet.time_base = stream, Fraction(1, 1000)
            packet.pts = packet.dts = 20 * index
            output.mux(packet)
    (folder / "good.m4a").write_bytes(media["memo.m4a"].read_bytes())
    result = cli(folder, "-o", tmp_path / "out")
    assert result.exit_code == 1
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert errors == [
        f"error: {folder / 'cut.mp4'}: not a readable audio or video file (moov atom not found)",
        f"error: {empty}: audio track 1 holds no samples (zero length)",
        f"error: {folder / 'mpegh.mp4'}: its audio (track 1) is in a codec FFmpeg cannot decode",
        f"error: {silent}: has no audio track (a video without sound)",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".denoise-log.jsonl",
                                                                     "good.m4a"]

    # A container that cannot take what the file holds: refused whole, nothing written.
    result = cli(media["interview.mp4"], "-o", tmp_path / "both.aac")
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {media['interview.mp4']}: cannot write it as adts")
    assert sorted(p.name for p in tmp_path.iterdir() if "both" in p.name) == []
