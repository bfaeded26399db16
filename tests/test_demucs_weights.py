"""Checkpoints: both file layouts, refusals with one line, download and cache."""

import io
import sys
import types
import urllib.error
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from denoise.engine.backends import demucs
from denoise.engine.backends.demucs_model import Demucs

TINY = {"hidden": 4, "depth": 3, "kernel_size": 8, "stride": 4, "resample": 4}


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(1)
    return Demucs(**TINY).state_dict()


def _fake_reference_class():
    """A class that pickles as the reference's ``denoiser.demucs.Demucs``."""
    module = types.ModuleType("denoiser.demucs")

    class Demucs:  # noqa: D401 - only its name matters
        pass

    Demucs.__module__ = "denoiser.demucs"
    Demucs.__qualname__ = "Demucs"
    module.Demucs = Demucs
    sys.modules.setdefault("denoiser", types.ModuleType("denoiser"))
    sys.modules["denoiser.demucs"] = module
    return Demucs


def test_training_package_layouts_load(tmp_path, tiny_state):
    reference_class = _fake_reference_class()
    try:
        package = {"class": reference_class, "args": [], "kwargs": dict(TINY), "state": tiny_state}
        torch.save(package, tmp_path / "package.th")
        wrapped = {"model": dict(package, state={}), "best_state": tiny_state}
        torch.save(wrapped, tmp_path / "best.th")
    finally:
        del sys.modules["denoiser.demucs"]
    for name in ("package.th", "best.th"):
        model = demucs.load_model("dns48", weights=tmp_path / name)
        assert model.depth == 3 and model.encoder[0][0].out_channels == 4
        assert torch.equal(model.state_dict()["encoder.0.0.weight"], tiny_state["encoder.0.0.weight"])


def test_plain_state_dict_takes_the_architecture_of_model(tmp_path):
    torch.manual_seed(2)
    torch.save(Demucs(hidden=48).state_dict(), tmp_path / "plain.th")
    assert demucs.load_model("dns48", weights=tmp_path / "plain.th").encoder[0][0].out_channels == 48
    with pytest.raises(demucs.ModelError) as refused:
        demucs.load_model("dns64", weights=tmp_path / "plain.th")
    message = str(refused.value)
    assert "\n" not in message and "plain.th" in message and "do not fit" in message


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/denoise-test-pwned",))


def test_checkpoint_that_needs_code_is_refused(tmp_path, tiny_state):
    torch.save({"state": tiny_state, "kwargs": TINY, "evil": _Payload()}, tmp_path / "evil.th")
    with pytest.raises(demucs.ModelError) as refused:
        demucs.load_model("dns48", weights=tmp_path / "evil.th")
    assert "refused" in str(refused.value) and "\n" not in str(refused.value)
    import os

    assert not os.path.exists("/tmp/denoise-test-pwned")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_corrupt_checkpoint_is_one_line(tmp_path, content):
    (tmp_path / "bad.th").write_bytes(content)
    with pytest.raises(demucs.ModelError) as refused:
        demucs.load_model("dns48", weights=tmp_path / "bad.th")
    assert "bad.th" in str(refused.value) and "\n" not in str(refused.value)


def test_truncated_checkpoint_is_one_line(tmp_path, tiny_state):
    torch.save({"state": tiny_state, "kwargs": TINY}, tmp_path / "full.th")
    data = (tmp_path / "full.th").read_bytes()
    (tmp_path / "cut.th").write_bytes(data[: len(data) // 2])
    with pytest.raises(demucs.ModelError) as refused:
        demucs.load_model("dns48", weights=tmp_path / "cut.th")
    assert "\n" not in str(refused.value)


class _Response(io.BytesIO):
    headers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_goes_to_the_cache_and_records_its_hash(tmp_path, monkeypatch, tiny_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    buffer = io.BytesIO()
    torch.save(tiny_state, buffer)
    served = []
    monkeypatch.setattr(demucs.urllib.request, "urlopen",
                        lambda url, timeout: served.append(url) or _Response(buffer.getvalue()))
    with pytest.warns(UserWarning, match="does not start with the name's suffix"):
        path = demucs.download("dns48")
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "dns48-11decc9d8e3f0998.th"
    assert served == ["https://dl.fbaipublicfiles.com/adiyoss/denoiser/dns48-11decc9d8e3f0998.th"]
    import hashlib

    recorded = (path.parent / (path.name + ".sha256")).read_text().split()[0]
    assert recorded == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".partial")] == []
    assert demucs.download("dns48") == path and len(served) == 1, "second call uses the cache"


def test_matching_name_hash_passes_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert demucs.check_name_hash("m-abcdef12.th", "abcdef12" + "0" * 56)


def test_no_network_fails_the_run_with_one_line(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(demucs.urllib.request, "urlopen", offline)
    sf.write(str(tmp_path / "a.wav"), np.zeros(1600, dtype=np.float32), 16000)
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out", "--method", "demucs", "-j", "1")
    assert result.exit_code == 2
    note, line = [x for x in result.stderr.splitlines() if x.strip()]
    assert note.startswith("note: downloading DEMUCS dns48") and "CC BY-NC 4.0" in note
    assert line.startswith("error: cannot download model dns48") and "--weights" in line
    assert "--download-model dns48" in line
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []


def test_list_models_shows_what_is_cached(tmp_path, monkeypatch, cli, tiny_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "dns64-a7761ff99a7d5bb6.th"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    result = cli("--list-models")
    assert result.exit_code == 0
    table, licences = result.stdout.split("\n\n", 1)
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert set(rows) == set(demucs.PRETRAINED)
    assert rows["dns64"].endswith(str(cached))
    assert rows["dns48"].endswith(" no")
    assert " no " in rows["valentini_nc"] and "yes" in rows["dns48"]
    assert "DEMUCS weights are licensed CC BY-NC 4.0" in licences
    assert "DeepFilterNet3" in licences and "MIT or Apache-2.0" in licences


def test_half_precision_checkpoint_runs_in_float32(tmp_path, tiny_state):
    half = {name: value.half() for name, value in tiny_state.items()}
    torch.save({"kwargs": TINY, "state": half}, tmp_path / "half.th")
    wrong = {**tiny_state, "encoder.0.0.weight": tiny_state["encoder.0.0.weight"][:2]}
    torch.save({"kwargs": TINY, "state": wrong}, tmp_path / "wrong_shape.th")
    model = demucs.load_model("dns48", weights=tmp_path / "half.th").eval()
    reference = Demucs(**TINY).eval()
    reference.load_state_dict(tiny_state)
    mix = torch.randn(1, 1, 4000)
    with torch.no_grad():
        out, expected = model(mix), reference(mix)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max() <= 2e-3 * expected.abs().max()
    with pytest.raises(demucs.ModelError, match="wrong_shape.th.*do not fit"):
        demucs.load_model("dns48", weights=tmp_path / "wrong_shape.th")
