"""The README's examples run as written, and what it says they show is what they show."""

from __future__ import annotations

import re
import shlex
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from tcavkit.cli import app
from tcavkit.config import parse_config

README = Path(__file__).resolve().parents[1] / "README.md"
COLOURS = {"fire": "red", "water": "blue", "grass": "green"}


def readme() -> str:
    return README.read_text(encoding="utf-8")


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", readme(), flags=re.S)


def invoke(*args: str):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart already
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args])


def row(table: pd.DataFrame, target: str, concept: str, layer: str) -> pd.Series:
    rows = table[(table.target == target) & (table.concept == concept) & (table.layer == layer)]
    assert len(rows) == 1, (target, concept, layer)
    return rows.iloc[0]


def is_positive(r: pd.Series) -> bool:
    return bool(r.significant) and r.direction == "positive"


def is_negative(r: pd.Series) -> bool:
    return bool(r.significant) and r.direction == "negative"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = fenced("python")
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    results = tmp_path / "tcavkit-example/results"
    for name in ("runs.csv", "summary.csv", "results.json"):  # the comment on result.save
        assert (results / name).is_file(), name
    table = pd.read_csv(results / "summary.csv")
    assert set(table.direction) <= {"positive", "negative", "none"}
    assert (table.direction != "none").eq(table.significant.astype(bool)).all()

    # "What this example shows", point by point.
    # Each class's body colour: positive at both layers.
    for target, colour in COLOURS.items():
        for layer in ("block2", "block3"):
            assert is_positive(row(table, target, colour, layer)), (target, colour, layer)

    # No colour is significantly positive for another class.
    for target, own in COLOURS.items():
        others = table[(table.target == target) & table.concept.isin(COLOURS.values())]
        others = others[others.concept != own]
        assert not (others.direction == "positive").any(), others
    # Every other class's colour is significantly negative for it, at both layers.
    for target, own in COLOURS.items():
        for colour in set(COLOURS.values()) - {own}:
            for layer in ("block2", "block3"):
                assert is_negative(row(table, target, colour, layer)), (target, colour, layer)

    # striped is significant for no class at either layer.
    assert not table[table.concept == "striped"].significant.any()

    # result.cavs and result.counts as the text after the example describes them.
    result = namespace["result"]
    cav = result.cavs[("red", "random500_3", "block3", 3)]
    assert 0.0 <= cav.accuracy <= 1.0 and cav.direction.ndim == 1
    counts = result.counts
    assert counts.cavs_trained > 0 and counts.cavs_from_cache == 0
    assert counts.sets_computed > 0 and counts.sets_from_cache == 0


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.mark.slow
def test_readme_demo_writes_the_report_it_describes(tmp_path, monkeypatch):
    """The set-up command's `tcavkit demo --out demo-out`, made small with --quick.

    The README shows the full-size demo's report; --quick changes the sizes, not the report.
    """
    setup = fenced("bash")[0]
    found = re.search(r"tcavkit (demo[^&\n]*)", setup)
    assert found, "the set-up command does not run the demo"
    args = shlex.split(found.group(1))
    assert args[:3] == ["demo", "--out", "demo-out"], args
    monkeypatch.chdir(tmp_path)
    result = invoke(*args, "--quick", "--quiet")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    # The README's Statistics section quotes the quick demo's negative controls.
    assert "Negative controls: 0 of 120 random sets" in result.stdout

    report = tmp_path / "demo-out/results/report.html"  # the path the README gives
    assert report.is_file()
    html = report.read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(html)
    names = [tag for tag, _ in parser.tags]
    # one self-contained file: no scripts, no style sheets, no files or URLs referred to
    assert "script" not in names and "link" not in names
    for _, attrs in parser.tags:
        for key in ("src", "href"):
            assert attrs.get(key) is None or attrs[key].startswith(("data:", "#")), attrs
    assert names.count("img") > 0
    # plain-language findings and a TCAV bar chart, as in the screenshot
    text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))
    fire_red = (
        r"At layer block3,[^.]*\bclass fire\b[^.]*\bconcept red\b",
        r"At layer block3,[^.]*\bconcept red\b[^.]*\bclass fire\b",
    )
    assert any(re.search(p, text) for p in fire_red), "no plain-language finding"
    assert re.search(r"TCAV scores? per class", text), "no TCAV bar chart"


def _command_lines() -> list[str]:
    """`tcavkit <command> ...` as written in the README's code (blocks and inline)."""
    text = readme()
    code = [
        line
        for block in re.findall(r"```\w*\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
    ]
    prose = re.sub(r"```\w*\n.*?```", "", text, flags=re.S)
    code += re.findall(r"`([^`\n]+)`", prose)
    found = []
    for line in code:
        line = line.split("#", 1)[0]
        found += re.findall(r"\btcavkit (\w+(?:[^&|;`]*))", line)
    return found


def test_readme_commands_match_the_cli():
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    lines = _command_lines()
    listed = {line.split()[0] for line in lines} & set(commands)
    assert listed == set(commands), f"the README never shows {set(commands) - listed}"
    for line in lines:
        name = line.split()[0]
        if name not in commands:
            continue
        help_text = re.sub(r"[\s│]+", " ", invoke(name, "--help").stdout)
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", line):
            assert re.search(rf"(?<![\w-]){option}\b", help_text), (
                f"`tcavkit {name}` has no {option} (README: tcavkit {line.strip()})"
            )


def test_readme_yaml_examples_are_valid_experiments(tmp_path):
    blocks = fenced("yaml")
    import yaml

    full = yaml.safe_load(blocks[0])
    parse_config(full, tmp_path, "README's experiment file")
    for index, block in enumerate(blocks[1:], start=2):
        part = yaml.safe_load(block)
        parse_config({**full, **part}, tmp_path, f"README's YAML example {index}")


def test_no_model_format_is_called_safe_to_run():
    """Running a model runs its code, whatever its format: the README says so in its
    security section, and nothing calls TorchScript safe without that qualification."""
    import tcavkit.models.loading as loading

    text = readme()
    security = text.split("### Security: what runs code", 1)[1].split("\n## ", 1)[0]
    assert "Running a model runs its code, whatever its format" in security
    assert "TorchScript is not a sandbox" in " ".join(security.split())
    for where in (text, loading.__doc__ or ""):
        assert "loaded safely" not in where and "loads safely" not in where
