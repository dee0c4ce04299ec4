"""A real browser renders report.html (headless Chromium; skipped where there is none).

The report is built from a small generated results folder. Chromium loads it from disk and
dumps the DOM it built: the sections are there in reading order, no script ran or was
needed, the browser logged no console message, and every ``<img>`` is a PNG data URI that
Pillow decodes. A screenshot at 1280 px wide is a PNG that is not blank.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcavkit.report import build_report
from test_report import write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary found (neither `chromium` nor `chromium-browser` is on PATH): "
    "the browser check of report.html is skipped; install chromium to run it",
)
TIMEOUT_S = 120
RUN_ID = "20240501T120000-abcdef12"


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh profile; its log goes to stderr."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # tests may run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_results(tmp_path_factory.mktemp("results"))
    meta = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**meta, "run_id": RUN_ID}))
    return build_report(folder)


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chromium-profile")
    try:
        version = chromium(folder, "--version")
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"{CHROMIUM} does not run ({e}): the browser check is skipped")
    if version.returncode != 0 or "chrom" not in version.stdout.lower():
        pytest.skip(
            f"{CHROMIUM} --version failed (exit {version.returncode}: "
            f"{(version.stdout + version.stderr).strip()[:200]}): the browser check is skipped"
        )
    return folder


class Dom(HTMLParser):
    """The sections, images, scripts, run-id meta tags and text of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.run_ids: list[str | None] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(str(a.get("id")))
        elif tag == "img":
            self.images.append(str(a.get("src")))
        elif tag == "script":
            self.scripts += 1
        elif tag == "meta" and a.get("name") == "tcavkit-run-id":
            self.run_ids.append(a.get("content"))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def console_messages(log: str) -> list[str]:
    """The lines of Chromium's log that report a console message of the page."""
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def test_the_browser_renders_the_report(report: Path, profile: Path) -> None:
    done = chromium(profile, "--dump-dom", report.resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    dom = Dom()
    dom.feed(done.stdout)
    dom.close()
    assert dom.sections == ["findings", "plots", "summary", "details"]
    assert dom.scripts == 0
    assert dom.run_ids == [RUN_ID]
    text = " ".join("".join(dom.text).split())
    assert "moving from random images toward concept red raises the logit of class fire" in text
    assert "Read these results with care" in text and "Run id" in text and RUN_ID in text
    n_plots = len(list((report.parent / "plots").glob("*.png")))
    assert len(dom.images) == n_plots > 0
    for src in dom.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:60]
        data = base64.b64decode(src[len(prefix) :], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_the_screenshot_is_not_blank(report: Path, profile: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = chromium(
        profile, f"--screenshot={shot}", "--window-size=1280,2000", report.resolve().as_uri()
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and plots, not one flat colour
    assert (pixels < 80).mean() > 0.002  # dark text is drawn
    top = pixels[:200, 60:1220]  # the title and the start of the findings
    assert (top < 80).any()


PROBE = """<!DOCTYPE html><html><body>
<iframe id="f" src="{src}" style="width:{width}px;height:800px;border:0" onload="measure()">
</iframe><pre id="out"></pre>
<script>
function measure() {{
  const d = document.getElementById("f").contentDocument;
  const box = (e) => e.getBoundingClientRect();
  const plots = () => [...d.querySelectorAll("#plots figure img")].map(
    (img) => [Math.round(box(img).width), img.naturalWidth]);
  const fitted = plots();
  d.querySelectorAll("#plots input.zoom").forEach((box) => {{ box.checked = true; }});
  const toggled = plots();
  const headers = [...d.querySelectorAll("#summary-table th")].map(
    (th) => [th.textContent, Math.round(box(th).right)]);
  document.getElementById("out").textContent = JSON.stringify(
    {{width: d.documentElement.clientWidth, fitted, toggled, headers}});
}}
</script></body></html>
"""


def layout(report: Path, profile: Path, folder: Path, width: int) -> dict:
    """What a reader sees at ``width`` CSS pixels: each plot's shown and natural width, as
    the page shows it and after a click on each, and where each summary column ends."""
    probe = folder / f"probe-{width}.html"
    probe.write_text(PROBE.format(src=report.resolve().as_uri(), width=width))
    # the probe page (not the report) runs a script that measures the report in a frame
    done = chromium(profile, "--allow-file-access-from-files", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.index('<pre id="out">') + len('<pre id="out">')
    return json.loads(html.unescape(done.stdout[start : done.stdout.index("</pre>", start)]))


def test_a_narrow_screen_shows_plots_at_full_size_and_the_verdict_first(
    report: Path, profile: Path, tmp_path: Path
) -> None:
    """At 390 px the plots start at their own size (scrolling sideways) and a click fits
    them to the page; the verdict columns are in view. At 1280 px plots fit the page and a
    click shows them at full size."""
    narrow = layout(report, profile, tmp_path, 390)
    assert narrow["fitted"] and all(shown >= natural for shown, natural in narrow["fitted"])
    assert all(shown <= narrow["width"] for shown, _ in narrow["toggled"])
    ends = dict(narrow["headers"])
    verdict = ("target", "concept", "layer", "significant", "p_adjusted")
    assert [name for name, _ in narrow["headers"]][:5] == list(verdict)
    assert all(ends[name] <= narrow["width"] for name in verdict), narrow["headers"]
    wide = layout(report, profile, tmp_path, 1280)
    assert all(shown <= wide["width"] for shown, _ in wide["fitted"])
    assert all(shown >= natural for shown, natural in wide["toggled"])
