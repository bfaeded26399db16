"""The Python example of docs/api.md runs as written, and the README links
every page of docs/."""

import re
from pathlib import Path

import numpy as np

from conftest import REPO, noisy_tone, write_audio


def test_the_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "docs" / "api.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
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


def test_the_readme_is_short_and_links_every_page_of_docs():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 210
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, page.name
        first = page.read_text().split("\n\n")
        assert first[0].startswith("# ") and 1 <= len(first[1].splitlines()) <= 3, page.name


def test_links_between_pages_point_at_pages_that_exist():
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|png))(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
