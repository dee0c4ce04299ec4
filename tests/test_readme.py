"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "__readme__"})
    summary = (tmp_path / "tcavkit-example/results/summary.csv").read_text()
    assert "significant" in summary
    import pandas as pd

    table = pd.read_csv(tmp_path / "tcavkit-example/results/summary.csv")
    colours = {"fire": "red", "water": "blue", "grass": "green"}
    for target, colour in colours.items():
        rows = table[(table.target == target) & (table.concept == colour)]
        assert rows.significant.any(), rows
    assert not table[table.concept == "striped"].significant.any()
