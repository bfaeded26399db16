"""What an installed denoise looks like from outside the clone."""

import subprocess
import sys


def test_installed_import_names_are_the_projects_own(tmp_path):
    """pip puts denoise.engine and denoise.cli into site-packages, never the
    generic top-level names engine and cli (run outside the clone, where the
    folders themselves are not on the path)."""
    code = ("import importlib.util as u; print(u.find_spec('engine'), u.find_spec('cli')); "
            "from denoise.engine import Batch, BatchOptions, plan_jobs; "
            "from denoise.cli.main import main; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "ok"]


def _fake_package(folder, name: str, error: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(f"raise OSError({error!r})\n")


def _run_with(fake, tmp_path, *args):
    import os

    from conftest import write_audio

    write_audio(tmp_path / "a.wav")
    env = {**os.environ, "PYTHONPATH": str(fake)}
    return subprocess.run([sys.executable, "-m", "denoise.cli", str(tmp_path / "a.wav"), "-o",
                           str(tmp_path / "out"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_torchaudio_that_cannot_load_is_one_line_with_the_repair(tmp_path):
    fake = tmp_path / "fake"
    _fake_package(fake, "torchaudio", "/venv/lib/python3.11/site-packages/torchaudio/lib/"
                  "libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")
    done = _run_with(fake, tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: torchaudio ") and "cannot load with torch" in line
    assert "libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace" in line
    assert f"{sys.executable} -m pip install 'torch==2.11.0' 'torchaudio==2.11.0'" in line
    assert not (tmp_path / "out").exists()


def test_a_missing_libsndfile_is_one_line_with_the_repair(tmp_path):
    fake = tmp_path / "fake"
    _fake_package(fake, "soundfile", "cannot load library 'libsndfile.so': "
                                     "libsndfile.so: cannot open shared object file")
    done = _run_with(fake, tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "soundfile" in line and "cannot load libsndfile" in line
    assert "--force-reinstall soundfile" in line


def test_an_internal_error_is_one_line_and_a_traceback_file(tmp_path, cli, monkeypatch):
    from pathlib import Path

    from conftest import write_audio

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("denoise.engine.report.write_reports", broken)
    write_audio(tmp_path / "a.wav")
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out", "--report", tmp_path / "rep")
    assert result.exit_code == 3
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert line.startswith("error: internal error: ZeroDivisionError: division by zero")
    crash = Path(line.split("the traceback is in ")[1].rstrip(")"))
    assert "Traceback" in crash.read_text() and "broken" in crash.read_text()
    assert "Traceback" not in result.stderr
    crash.unlink()
    shown = cli(tmp_path / "a.wav", "-o", tmp_path / "again", "--report", tmp_path / "rep", "-v")
    assert shown.exit_code == 3 and "Traceback (most recent call last)" in shown.stderr
    Path(shown.stderr.split("the traceback is in ")[1].split(")")[0]).unlink()


def test_version_and_self_test(cli):
    from importlib.metadata import version

    from denoise.engine import DISTRIBUTION

    assert cli("--version").stdout == f"denoise {version(DISTRIBUTION)}\n"
    result = cli("--self-test")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"denoise {version(DISTRIBUTION)} (python ")
    assert lines[1].startswith("ok  spectral: 16000 samples in and out, noise -")
    assert lines[2].startswith("ok  demucs: 16000 samples in and out")
    assert lines[3].startswith("ok  dfn3: 16000 samples in and out, noise -")  # test extras


def test_a_notebook_user_gets_a_tqdm_progress_bar(tmp_path):
    import io

    from conftest import write_audio
    from denoise.engine import Batch, BatchOptions, plan_jobs, progress_bar

    write_audio(tmp_path / "in" / "a.wav", frames=16000 * 6)
    write_audio(tmp_path / "in" / "b.wav", frames=16000 * 4, seed=1)
    shown = io.StringIO()
    batch = Batch(plan_jobs([str(tmp_path / "in")], str(tmp_path / "out")).jobs,
                  BatchOptions(log=None, segment_s=2))
    with progress_bar(file=shown) as show:
        results = list(batch.run(on_progress=show))
    assert [result.status for result in results] == ["done", "done"]
    final = shown.getvalue().split("\r")[-1]
    assert "100%" in final and "10.0/10.0 s audio" in final and "2/2 files" in final
