"""DEMUCS: the reference's checkpoints load strictly and give its output.

Golden fixtures (``bench/make_demucs_golden.py``) hold, for each published
configuration, the seed the reference model was initialised with, a fingerprint
and the names and shapes of its state_dict, an input and the reference output.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from denoise.engine.backends.demucs import PRETRAINED, load_model
from denoise.engine.backends.demucs_model import Demucs

sys.path.insert(0, str(REPO))
from bench.make_demucs_golden import fingerprints_match, state_fingerprint  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name):
    data = np.load(FIXTURES / f"demucs_{name}.npz")
    return {key: data[key] for key in data.files}


@pytest.fixture(params=list(PRETRAINED))
def golden(request, tmp_path):
    """The reference's random-weight checkpoint for one configuration, on disk."""
    name = request.param
    data = _fixture(name)
    architecture = json.loads(str(data["config"]))
    assert architecture == PRETRAINED[name].architecture
    torch.manual_seed(int(data["seed"]))
    state = Demucs(**architecture).state_dict()
    assert fingerprints_match(state_fingerprint(state), data["state_fingerprint"]), \
        "weights differ from the reference's"
    path = tmp_path / f"{name}.th"
    torch.save(state, path)
    return name, path, data


def test_state_dict_names_and_shapes_are_the_reference_ones(golden):
    name, path, data = golden
    model = load_model(name, weights=path)  # load_state_dict(strict=True) inside
    state = model.state_dict()
    assert list(state) == [str(n) for n in data["names"]]
    assert [list(t.shape) for t in state.values()] == json.loads(str(data["shapes"]))


def test_forward_equals_the_reference_output(golden):
    name, path, data = golden
    model = load_model(name, weights=path)
    expected = data["output"]
    for forward in (model, model.plain_forward):  # the fast path, and its plain oracle
        with torch.no_grad():
            out = forward(torch.from_numpy(data["input"])).numpy()
        assert out.shape == expected.shape == data["input"].shape
        assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()


def test_valid_length_padding_keeps_any_length():
    model = Demucs(hidden=4, depth=3).eval()
    for length in (1, 2, 255, 1000, 4097):
        with torch.no_grad():
            assert model(torch.randn(2, 1, length)).shape == (2, 1, length)


@pytest.mark.parametrize("architecture", [
    dict(chin=2, chout=2, hidden=6, depth=3, kernel_size=8, stride=2, resample=2, glu=False),
    dict(hidden=5, depth=4, kernel_size=6, stride=3, resample=1, causal=False),
    dict(hidden=4, depth=2, kernel_size=4, stride=4, resample=4),
])
def test_time_major_layers_equal_the_modules_on_other_architectures(architecture, monkeypatch):
    """Configurations the golden files do not cover (no GLU, two channels,
    other kernels and strides, a batch), with blocks smaller than the signal
    so that block edges are crossed."""
    import denoise.engine.backends.demucs_model as demucs_model
    monkeypatch.setattr(demucs_model, "BLOCK_FRAMES", 7)
    torch.manual_seed(0)
    model = Demucs(**architecture).eval()
    mix = torch.randn(3, architecture.get("chin", 1), 3000)
    with torch.no_grad():
        expected = model.plain_forward(mix)
        out = model(mix)
    assert out.shape == mix.shape[:1] + (architecture.get("chout", 1), 3000)
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_kernel_not_a_multiple_of_stride_is_refused():
    with pytest.raises(ValueError, match="multiple of stride"):
        Demucs(kernel_size=7, stride=4)
