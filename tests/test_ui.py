"""The web UI in a real browser: Playwright drives Debian's Chromium (never a downloaded browser).

It draws a 7 on the canvas and uploads a photo of a 2, and checks what the page says. Screenshots
are kept in $DIGITREC_TEST_OUTPUT (default: the test's temporary directory).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def server_url():
    """`digitrec serve --workers 2`, as a user runs it on two cores: the UI lives in one worker and the
    supervisor must deal every one of the browser's connections to it."""
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def page(server_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server_url)
        page.wait_for_selector("#sketch canvas", timeout=60_000)
        yield page
        browser.close()


def _out(tmp_path: Path) -> Path:
    d = Path(os.environ.get("DIGITREC_TEST_OUTPUT") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_drawing_a_seven_on_the_canvas(page, tmp_path: Path) -> None:
    page.locator("#sketch button[aria-label=Brush]").click()  # Gradio's sketchpad starts with no tool
    box = page.locator("#sketch canvas").last.bounding_box()
    assert box is not None
    # The drawing surface is the square in the middle of the canvas element.
    side = 0.8 * min(box["width"], box["height"])
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2

    def at(fx: float, fy: float) -> tuple[float, float]:
        return left + fx * side, top + fy * side

    page.mouse.move(*at(0.3, 0.25))
    page.mouse.down()
    for fx, fy in ((0.5, 0.25), (0.7, 0.25), (0.6, 0.5), (0.5, 0.75), (0.45, 0.85)):  # a 7: bar, then stem
        page.mouse.move(*at(fx, fy), steps=8)
    page.mouse.up()
    verdict = page.locator("#verdict")
    verdict.get_by_text("7", exact=False).wait_for(timeout=30_000)
    page.screenshot(path=str(_out(tmp_path) / "ui-drawn-seven.png"), full_page=True)
    assert "**" not in verdict.inner_text() and verdict.inner_text().strip().startswith("7")


def test_uploading_a_photo(page, tmp_path: Path, mnist) -> None:
    from tests.conftest import render_on_paper

    (x, y) = mnist[1]
    photo = tmp_path / "two.png"
    Image.fromarray(render_on_paper(x[1], size=240, offset=(20, -30))).save(photo)  # a 2
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    page.locator("#verdict").get_by_text("2", exact=False).wait_for(timeout=30_000)
    page.screenshot(path=str(_out(tmp_path) / "ui-uploaded-two.png"), full_page=True)
    assert page.locator("#verdict").inner_text().strip().startswith(str(int(y[1])))
    assert np.asarray(Image.open(_out(tmp_path) / "ui-uploaded-two.png")).std() > 5


def test_reading_a_number(page, tmp_path: Path) -> None:
    """The Number tab: an uploaded photo of a number (a test fixture) is read, and the boxes are shown."""
    number = Path(__file__).parent / "data" / "number-57007803.jpg"
    page.get_by_role("tab", name="Number").click()
    page.locator("#number input[type=file]").set_input_files(str(number))
    text = page.locator("#number-text")
    text.get_by_text("57007803").wait_for(timeout=30_000)
    page.screenshot(path=str(_out(tmp_path) / "ui-number.png"), full_page=True)
    assert text.inner_text().strip() == "57007803"
