"""report.html in a real browser (headless Chromium): every plot is laid out and painted, and at
phone width the page does not overflow sideways.

The page has no script of its own; the test adds a small probe script to a copy of it that
measures every ``svg`` and its bars and writes the figures into the DOM that Chromium dumps.
Skipped when no Chromium binary is on PATH (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
from html import escape as html_escape, unescape as html_unescape
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from psqe_ray.report.html import render_html

from test_html import rich_report  # tests/report is on sys.path (pytest, no __init__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in map(shutil.which, BROWSERS) if b), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on PATH (Debian: apt-get install chromium); the "
                            "headless render check of report.html needs one")

PROBE = """<script id="probe-script">
(function () {
  var doc = document.documentElement;
  var out = {innerWidth: window.innerWidth, scrollWidth: doc.scrollWidth,
             bodyWidth: document.body.scrollWidth, figures: []};
  document.querySelectorAll("svg").forEach(function (svg) {
    var r = svg.getBoundingClientRect(), st = getComputedStyle(svg);
    var bars = svg.querySelectorAll("rect.bar"), drawn = 0;
    bars.forEach(function (b) {
      var q = b.getBoundingClientRect();
      if (q.width > 0 && q.height > 0) { drawn++; }
    });
    out.figures.push({name: svg.getAttribute("data-figure"), x: r.left + window.scrollX,
                      y: r.top + window.scrollY, w: r.width, h: r.height, bars: bars.length,
                      drawn: drawn, shown: st.display !== "none" && st.visibility !== "hidden"});
  });
  var host = window.parent.document;  // the page is in the host's iframe
  var pre = host.createElement("pre");
  pre.id = "probe";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(out);
  host.body.appendChild(pre);
})();
</script>"""


def _chromium(tmp: Path, page: Path, width: int, height: int, *extra: str) -> str:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}",
           f"--window-size={width},{height}", *extra, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _probe(tmp: Path, html: str, width: int, height: int = 900) -> dict:
    """The probe's figures for ``html`` laid out ``width`` CSS pixels wide.  The page is shown
    in an iframe of that width (headless Chromium will not make a window narrower than 500
    pixels, so a phone's 390 needs the frame); the probe runs in the page and writes into the
    host page, whose DOM Chromium dumps."""
    assert "</body>" in html
    framed = html.replace("</body>", PROBE + "\n</body>", 1)
    host = tmp / f"probe-{width}.html"
    host.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{margin:0}'
        'iframe{border:0;display:block}</style></head><body>'
        f'<iframe width="{width}" height="{height}" srcdoc="{html_escape(framed, quote=True)}">'
        "</iframe></body></html>", encoding="utf-8")
    dom = _chromium(tmp, host, max(width, 800), height + 50, "--dump-dom")
    m = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', dom, re.S)
    assert m, "the probe did not run"
    return json.loads(html_unescape(m.group(1)))


@pytest.fixture(scope="module")
def pages(pipeline_run) -> dict[str, str]:
    """A real run's report.html as written, and a page with every section filled in."""
    _, out, _ = pipeline_run
    return {"run": (out / "report.html").read_text(encoding="utf-8"),
            "rich": render_html(rich_report())}


@pytest.mark.parametrize("which", ["run", "rich"])
def test_every_figure_is_drawn(pages, which, tmp_path) -> None:
    html = pages[which]
    expected = re.findall(r'<svg [^>]*data-figure="([^"]*)"', html)
    assert len(expected) == html.count("<svg") >= 6
    got = _probe(tmp_path, html, 1280)
    assert [f["name"] for f in got["figures"]] == [
        n.replace("&amp;", "&").replace("&#x27;", "'") for n in expected]
    for f in got["figures"]:
        assert f["shown"] and f["w"] > 50 and f["h"] > 50, f
        assert f["bars"] > 0 and f["drawn"] == f["bars"], f  # every bar has an area
    if which == "run":  # the run's page has the newer sections' plots
        names = {f["name"] for f in got["figures"]}
        assert {"uvp", "scores-stage1-cluster", "scores-stage3-expansion"} <= names


def test_figures_are_painted(pages, tmp_path) -> None:
    """The screenshot: inside every figure's box there are pixels in the bar colours."""
    from PIL import Image

    html = pages["run"]
    layout = _probe(tmp_path, html, 1280)
    bottom = int(max(f["y"] + f["h"] for f in layout["figures"])) + 20
    page = tmp_path / "page.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "page.png"
    _chromium(tmp_path, page, 1280, bottom, f"--screenshot={shot}")
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[1] == 1280 and img.shape[0] >= bottom - 20
    blue, orange = np.array([0x4e, 0x79, 0xa7]), np.array([0xf2, 0x8e, 0x2b])
    for f in layout["figures"]:
        box = img[int(f["y"]):int(f["y"] + f["h"]), int(f["x"]):int(f["x"] + f["w"])]
        coloured = sum(int((np.abs(box - c).sum(axis=2) < 40).sum()) for c in (blue, orange))
        assert coloured > 20, f"{f['name']}: no bar painted"


@pytest.mark.parametrize("which", ["run", "rich"])
def test_phone_width_does_not_overflow(pages, which, tmp_path) -> None:
    got = _probe(tmp_path, pages[which], 390, 844)
    assert got["innerWidth"] <= 400  # the window really is phone-sized
    assert got["scrollWidth"] <= got["innerWidth"], got["scrollWidth"]
    assert got["bodyWidth"] <= got["innerWidth"]
    for f in got["figures"]:  # drawn there too, and not squeezed to illegible
        assert f["shown"] and f["drawn"] == f["bars"] > 0 and f["w"] >= 250, f
