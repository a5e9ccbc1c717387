"""``invkit ui`` in a real browser: the command serves the demo's page in a subprocess, and
headless Chromium (Debian's ``chromium``, driven by Playwright through ``executable_path``; no
browser is downloaded) loads it, inverts an upload, moves a slider, exports, mixes, and gets a
message for every bad file while the server goes on.

Outside CI the tests skip, saying why, when Gradio, Playwright or Chromium is missing; in CI
(``CI=true``) that fails, because ``.ci/run`` installs all three.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 60_000


def _missing(what: str) -> None:
    msg = f"{what} (install invkit[ui,dev] and Debian's chromium; .ci/run does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def _requirements() -> str:
    import importlib.util

    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            _missing(f"{module} is not installed")
    chromium = shutil.which("chromium")
    if chromium is None:
        _missing("no chromium on PATH")
    return chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``invkit ui --port PORT`` (the demo's models) in a subprocess; yields ``(url, process)``."""
    chromium = _requirements()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("ui") / "server.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio")), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "invkit", "ui", "--port", str(port), "--threads", "1"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while not _answers(url):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"invkit ui did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    yield url, proc, chromium
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=server[2], headless=True)
        yield b
        b.close()


@pytest.fixture
def page(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[0])
    page.wait_for_selector("#status")
    page.locator("#sample-gallery img").last.wait_for()  # the page has rendered its samples
    yield page
    page.close()


def _status_says(page, text: str) -> str:
    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text)
    return page.inner_text("#status")


def _pixels(page, selector: str) -> np.ndarray:
    """The image an ``<img>`` shows, fetched from the server and decoded."""
    src = page.get_attribute(f"{selector} img", "src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")).astype(int)


def _new_src(page, selector: str, old: str | None) -> str:
    page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel + ' img');"
                           " return i && i.src && i.src !== old; }", arg=[selector, old])
    return page.get_attribute(f"{selector} img", "src")


def _toy_face(path: Path, seed_offset: int = 7) -> Path:
    from invkit.recipes import toy_domain

    toy_domain.render(toy_domain.attributes_for_seed(toy_domain.HELD_OUT_START + seed_offset)).save(path)
    return path


def _shipped_strength(name: str) -> float:
    """The calibrated strength stored in the demo's direction file ``name``."""
    from invkit.recipes import toy, toy_directions

    return toy_directions.load_directions(toy.assets_dir())[name].strength


def test_the_page_loads_with_samples_and_one_slider_per_direction(page):
    assert "invkit" in page.title()
    assert "Pick a sample or upload an image" in page.inner_text("#status")
    assert "generator toy (64 px" in page.content()
    assert page.locator("#sample-gallery img").count() == 8
    sliders = page.locator("input[type=range]")
    assert sliders.count() == 10
    labels = page.locator("[id^=slider-]").all_inner_texts()
    smile = _shipped_strength("smile")
    assert any("smile" in t for t in labels) and any(f"±{smile:.3g} (interfacegan)" in t for t in labels)


def test_an_upload_inverts_and_a_slider_move_changes_the_edited_image(page, tmp_path):
    page.set_input_files("#upload input[type=file]", str(_toy_face(tmp_path / "my_face.png")))
    assert "my_face.png inverted" in _status_says(page, "inverted")
    for view in ("#input-image", "#rec-w", "#rec-wf"):
        assert _pixels(page, view).shape == (256, 256, 3)
    before_src = _new_src(page, "#edited", None)
    before = _pixels(page, "#edited")
    assert np.array_equal(before, _pixels(page, "#rec-wf"))  # no edit yet: G(w, F)
    assert np.abs(_pixels(page, "#rec-wf") - _pixels(page, "#input-image")).mean() < 25  # a close reconstruction

    smile = page.locator("#slider-8 input[type=range]")
    assert "smile" in page.inner_text("#slider-8")
    smile.fill(smile.get_attribute("max"))
    _new_src(page, "#edited", before_src)
    after = _pixels(page, "#edited")
    assert np.abs(after - before).mean() > 1.0, "the edited image did not change"
    assert "smile +" in _status_says(page, "edited:")


def test_export_offers_the_edited_image_and_codes_that_load_back(page, tmp_path):
    from invkit.inversion import Inversion

    page.locator("#sample-gallery img").nth(2).click()
    _status_says(page, "inverted")
    hair = page.locator("#slider-2 input[type=range]")
    hair.fill(hair.get_attribute("max"))
    _status_says(page, "hair +")
    alpha = float(page.locator("#slider-2 input[type=number]").input_value())
    page.click("#export")
    _status_says(page, "exported")
    links = {a.get_attribute("download"): a.get_attribute("href") for a in page.locator("#downloads a[download]").all()}
    assert sorted(links) == ["codes.safetensors", "edited.png"]
    (tmp_path / "codes.safetensors").write_bytes(page.request.get(links["codes.safetensors"]).body())
    edited = Image.open(io.BytesIO(page.request.get(links["edited.png"]).body()))
    assert edited.size == (64, 64)  # the generator's own pixels, not the enlarged view
    codes = Inversion.load(tmp_path / "codes.safetensors")
    assert alpha == pytest.approx(_shipped_strength("hair"), abs=0.01)  # the slider's end is the calibrated strength
    assert codes.meta["edit"] == {"hair": pytest.approx(alpha)} and codes.k == 5 and codes.ws.shape[0] == 1


def test_style_mixing_with_a_second_image(page):
    page.locator("#sample-gallery img").nth(0).click()
    _status_says(page, "inverted")
    page.get_by_text("Style mixing with a second image").click()
    page.locator("#mix-gallery img").nth(4).click()
    _status_says(page, "is image B")
    ab, ba = _pixels(page, "#mix-ab"), _pixels(page, "#mix-ba")
    assert ab.shape == ba.shape == (256, 256, 3) and np.abs(ab - ba).mean() > 1.0


def test_bad_files_show_a_message_and_the_server_goes_on(page, server, tmp_path):
    from hostile import png_bomb

    page.locator("input[type=range]").nth(0).fill("3")  # before any image
    _status_says(page, "Pick a sample or upload an image first")

    notes = tmp_path / "notes.png"
    notes.write_text("this is a text file, not an image\n")
    page.set_input_files("#upload input[type=file]", str(notes))
    assert "notes.png: cannot read image" in _status_says(page, "Could not do that")

    page.set_input_files("#upload input[type=file]", str(png_bomb(tmp_path / "bomb.png")))
    assert "bomb.png: declares" in _status_says(page, "decompression bomb")

    page.set_input_files("#upload input[type=file]", str(_toy_face(tmp_path / "fine.png")))
    _status_says(page, "fine.png inverted")  # the same page goes on working
    assert server[1].poll() is None and _answers(server[0])


def test_an_encoder_of_another_generator_shows_the_fingerprint_message(page, tmp_path):
    from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
    from invkit.testing import tiny_stylegan2

    other = tiny_stylegan2(resolution=64, w_dim=32, max_channels=32)
    enc = FeatureStyleEncoder.for_generator(other, 5, input_size=32, depths=(1, 1, 1, 1), widths=(8, 16, 16, 32),
                                            stem_width=8)
    path = save_encoder(enc, tmp_path / "their_encoder.safetensors")
    page.get_by_text("Models", exact=True).click()
    page.set_input_files("#encoder-upload input[type=file]", str(path))
    text = _status_says(page, "trained for generator")
    assert "their_encoder.safetensors" in text and other.fingerprint() in text
    page.locator("#sample-gallery img").nth(1).click()  # the server's own encoder still serves the page
    _status_says(page, "inverted")
