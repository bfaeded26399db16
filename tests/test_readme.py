"""The README's Python example runs as written."""

import re
from pathlib import Path

import numpy as np

from conftest import REPO, noisy_tone, write_audio


def test_the_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", text[text.index("## How a batch runs"):],
                        re.S).group(1)
    monkeypatch.chdir(tmp_path)
    for index in range(2):
        write_audio(tmp_path / "in" / f"take{index}.wav", frames=16000 * 3, seed=index)
    space = {"noisy": noisy_tone(16000, 16000)[:, 0]}
    exec(compile(example, "README.md", "exec"), space)
    assert [result.status for result in space["results"]] == ["done", "done"]
    assert (tmp_path / "report" / "report.html").exists()
    assert len(list((tmp_path / "report" / "plots").glob("*.png"))) == 2
    assert space["clean"].shape == (16000,) and np.isfinite(space["clean"]).all()
    assert sorted(p.name for p in Path(tmp_path / "out").glob("*.wav")) == ["take0.wav",
                                                                         "take1.wav"]
