"""Slider latency of ``invkit ui`` on the demo's 64 px models (CPU). Prints numbers; asserts nothing.

Target: after the inversion, a slider move re-renders in <= 0.5 s on 2 cores. Measured at three
levels:

1. the model: one Eq. 1 edit of an inverted held-out sample, the full path (``invkit.editing.edit``:
   G_K(w), G_K(w̃) and a whole synthesis) against the session's fast path
   (:class:`invkit.editing.PreparedEdit`: F and G_K(w) reused), and the fast path for a direction
   that leaves the rows before K alone (only the layers after K run);
2. the page's handler: the edit plus the enlargement and the PNG encoding Gradio sends;
3. with ``--browser``: the whole round trip in headless Chromium (Debian's ``chromium``, Playwright),
   from setting a slider to the new edited image loaded in the page, against ``invkit ui`` running
   in a subprocess. ``--screenshot PATH`` saves the page after an upload and a slider move.

    python benchmarks/ui_latency.py [--threads 1] [--repeat 50] [--browser] [--screenshot docs/images/ui.png]
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls (seconds), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def report(label: str, times: list[float]) -> None:
    print(f"{label:58s} median {statistics.median(times) * 1e3:7.1f} ms   max {max(times) * 1e3:7.1f} ms"
          f"   (n={len(times)})")


def model_level(repeat: int) -> None:
    from invkit.direction import Direction
    from invkit.editing import as_wplus, edit
    from invkit.ui.page import display
    from invkit.ui.sources import load_session

    session = load_session(log=lambda m: None)
    face = session.invert_sample(0)
    d = session.directions["smile"]
    alphas = [d.strength * (i / repeat - 0.5) for i in range(repeat)]  # a different value each move
    moves = itertools.cycle(alphas)
    print(f"toy: {session.G.resolution} px, K = {face.inversion.k}, {torch.get_num_threads()} torch thread(s)")
    report("full Eq. 1 edit (editing.edit)", timed(lambda: edit(session.G, face.inversion, d, next(moves)), repeat))
    report("fast path (session.edit: F, G_K(w) reused)", timed(lambda: session.edit(face, {"smile": next(moves)}), repeat))
    rows = face.prepared.state.rows
    late_vec = as_wplus(d, session.G.num_ws).vector.clone()  # the demo's directions are W, SeFa's W+
    late_vec[:rows] = 0
    late = Direction(late_vec / late_vec.norm(), "w+", "late", "manual", d.generator_fingerprint)
    session.directions["late"] = late
    report(f"fast path, direction on rows >= {rows} (only layers after K)",
           timed(lambda: session.edit(face, {"late": next(moves)}), repeat))
    del session.directions["late"]

    def handler() -> None:
        shown = display(session.edit(face, {"smile": next(moves)}))
        shown.save(io.BytesIO(), format="PNG")  # what Gradio writes to its cache for the browser

    report("page handler (edit + 256 px view + PNG)", timed(handler, repeat))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_level(repeat: int, threads: int, screenshot: str | None) -> None:
    from playwright.sync_api import sync_playwright

    from invkit.recipes import toy_domain

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GRADIO_TEMP_DIR": tmp}
        proc = subprocess.Popen([sys.executable, "-m", "invkit", "ui", "--port", str(port), "--threads", str(threads)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 180
            while True:
                try:
                    urllib.request.urlopen(url, timeout=5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise SystemExit("invkit ui did not start") from None
                    time.sleep(0.5)
            face = Path(tmp) / "face.png"
            toy_domain.render(toy_domain.attributes_for_seed(toy_domain.HELD_OUT_START + 25)).save(face)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.goto(url)
                page.locator("#sample-gallery img").last.wait_for()
                page.set_input_files("#upload input[type=file]", str(face))
                page.wait_for_function("() => document.querySelector('#status').innerText.includes('inverted')")
                slider = page.locator("#slider-8 input[type=range]")  # smile
                lo, hi = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
                times = []
                for i in range(repeat + 1):
                    old = page.get_attribute("#edited img", "src")
                    value = lo + (hi - lo) * ((i * 7) % 20 + 1) / 22  # a new position every time
                    t0 = time.perf_counter()
                    slider.fill(f"{value:.4f}")
                    page.wait_for_function("old => { const i = document.querySelector('#edited img');"
                                           " return i && i.src !== old && i.complete && i.naturalWidth > 0; }", arg=old)
                    if i:  # the first move warms the page up
                        times.append(time.perf_counter() - t0)
                report("browser round trip (slider set -> new image shown)", times)
                if screenshot:  # clear edits on a frowning face with glasses: smile up, glasses off
                    for selector, end in (("#slider-8", "max"), ("#slider-1", "min")):
                        old = page.get_attribute("#edited img", "src")
                        move = page.locator(f"{selector} input[type=range]")
                        move.fill(move.get_attribute(end))
                        page.wait_for_function("old => { const i = document.querySelector('#edited img');"
                                               " return i && i.src !== old && i.complete; }", arg=old)
                    page.screenshot(path=screenshot, full_page=True)
                    print(f"screenshot: {screenshot} ({Path(screenshot).stat().st_size / 1024:.0f} KB)")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server (default 1)")
    parser.add_argument("--repeat", type=int, default=50, help="slider moves timed at each level (default 50)")
    parser.add_argument("--browser", action="store_true", help="also time the round trip in headless Chromium")
    parser.add_argument("--screenshot", default=None, help="save the page after an upload and a slider move here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_level(args.repeat)
    if args.browser or args.screenshot:
        browser_level(args.repeat if args.browser else 1, args.threads, args.screenshot)


if __name__ == "__main__":
    main()
