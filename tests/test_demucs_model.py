"""DEMUCS: the reference's checkpoints load strictly and give its output.

Golden fixtures (``bench/make_demucs_golden.py``) hold, for each published
configuration, the seed the reference model was initialised with, the SHA-256
and the names and shapes of its state_dict, an input and the reference output.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from engine.backends.demucs import PRETRAINED, load_model
from engine.backends.demucs_model import Demucs

sys.path.insert(0, str(REPO))
from bench.make_demucs_golden import state_digest  # noqa: E402

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
    assert state_digest(state) == str(data["state_sha256"]), "weights differ from the reference's"
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
    with torch.no_grad():
        out = model(torch.from_numpy(data["input"])).numpy()
    expected = data["output"]
    assert out.shape == expected.shape == data["input"].shape
    assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()


def test_valid_length_padding_keeps_any_length():
    model = Demucs(hidden=4, depth=3).eval()
    for length in (1, 2, 255, 1000, 4097):
        with torch.no_grad():
            assert model(torch.randn(2, 1, length)).shape == (2, 1, length)
