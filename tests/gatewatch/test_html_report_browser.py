"""The report in a real browser: Debian's ``chromium``, headless, with no network.

Chromium writes every console message of the page (``console.*``, uncaught
errors, blocked fetches, CSP violations) to stderr as ``...:CONSOLE...`` lines
with ``--enable-logging=stderr``; the report logs nothing itself, so any such
line is a failure. A control page shows that both checks can fail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat


def render(page: Path, profile: Path, height: int = 2400) -> tuple[Image.Image, list[str]]:
    """A screenshot of ``page`` and the console lines it logged."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: services/debian.sh installs it (services/debian-packages.txt)")
    screenshot = profile.with_suffix(".png")
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", f"--window-size=1400,{height}", f"--screenshot={screenshot}",
        page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and screenshot.exists(), result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return Image.open(screenshot).convert("RGB"), console


def ink(image: Image.Image) -> tuple[float, int]:
    """Brightness variance and the number of distinct colours: near zero for a blank page."""
    variance = ImageStat.Stat(image.convert("L")).var[0]
    colours = image.getcolors(maxcolors=1 << 20) or []
    return variance, len(colours)


def test_the_demo_report_renders_with_no_console_message(demo_out: Path, tmp_path: Path) -> None:
    image, console = render(demo_out / "report.html", tmp_path / "report")
    assert console == []
    variance, colours = ink(image)
    assert variance > 500 and colours > 200, (variance, colours)
    # The header band is dark and the page below it light: the layout (and its CSS) applied.
    top = ImageStat.Stat(image.crop((0, 0, 1400, 40)).convert("L")).mean[0]
    body = ImageStat.Stat(image.crop((0, 400, 1400, 2400)).convert("L")).mean[0]
    assert top < 80 < 180 < body, (top, body)


def test_the_checks_catch_a_blank_page_and_console_errors(tmp_path: Path) -> None:
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body style='background:#fff'></body></html>")
    image, console = render(blank, tmp_path / "blank", height=600)
    assert console == [] and ink(image)[0] < 1
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!doctype html><html><body><h1>x</h1><script>console.error('gw-probe');"
        "fetch('http://example.invalid/x'); missing();</script></body></html>"
    )
    _, console = render(broken, tmp_path / "broken", height=600)
    assert any("gw-probe" in line for line in console) and any("missing" in line for line in console)
