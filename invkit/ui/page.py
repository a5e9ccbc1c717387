"""The Gradio page of ``invkit ui``: layout and event wiring around a :class:`~.session.Session`.

Importing this module imports Gradio (the ``[ui]`` extra); :mod:`invkit.cli.ui` imports it only
when the command runs. Every event handler goes through :func:`_guarded`: a :class:`UIError`
(a visitor's bad file) or any other exception becomes a message in the page's status line and a
warning toast, the outputs it could not compute are left as they were, and the server goes on.

Per-visitor values live in ``gr.State``: the inverted image (A), the second image for style
mixing (B) and an encoder the visitor uploaded; the :class:`Session` itself is shared.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from PIL import Image

from ..io.images import IMAGE_SUFFIXES, to_pil
from .session import Inverted, Session, UIError

log = logging.getLogger(__name__)

#: Images smaller than this are enlarged for display (nearest neighbour: pixels stay honest).
DISPLAY_SIDE = 256
#: Slider positions between -strength and +strength.
SLIDER_STEPS = 40
#: The views keep their pixels square when the browser scales them to the layout.
CSS = ".pixels img { image-rendering: pixelated; }"


def display(image: torch.Tensor | None) -> Image.Image | None:
    """``[1, 3, R, R]`` or ``[3, R, R]`` in [-1, 1] as a PIL image of at least
    :data:`DISPLAY_SIDE` px (integer nearest-neighbour enlargement)."""
    if image is None:
        return None
    im = to_pil(image[0] if image.ndim == 4 else image)
    scale = max(1, DISPLAY_SIDE // max(im.size))
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im


def _status(text: str) -> str:
    return f"**{text}**"


def _guarded(n_outputs: int, clears_upload: bool = False) -> Callable:
    """Wrap a handler whose last output is the status line: exceptions become that line (and a
    toast) with every other output skipped, so nothing a visitor does stops the server.
    ``clears_upload``: the first output is the upload widget, emptied also on failure so that the
    next file can be dropped at once."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any) -> tuple:
            try:
                return fn(*args)
            except UIError as exc:
                message = str(exc)
            except Exception as exc:  # noqa: BLE001 - a page event must never take the server down
                log.exception("invkit ui: %s failed", fn.__name__)
                message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            gr.Warning(message)
            skipped = [None] if clears_upload else [gr.skip()]
            return (*skipped, *[gr.skip()] * (n_outputs - 2), _status(f"Could not do that: {message}"))

        return run

    return wrap


def build_page(session: Session, export_root: str | os.PathLike | None = None) -> gr.Blocks:
    """The page for ``session``. ``export_root``: where exports are written (a new temporary
    folder by default, removed when the process ends); each export goes to its own subfolder,
    from which Gradio copies the files into its cache."""
    if export_root is None:
        export_root = tempfile.mkdtemp(prefix="invkit-ui-")
        atexit.register(shutil.rmtree, export_root, True)
    export_root = Path(export_root)
    names = list(session.directions)
    # Short captions (the last word of a name: a seed, a file stem); the full name is in the status.
    samples = [(display(image), name.split()[-1]) for name, image in session.samples]

    with gr.Blocks(title="invkit ui", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        current = gr.State(None)  # Inverted: image A
        second = gr.State(None)  # Inverted: image B (style mixing)
        encoder = gr.State(None)  # an encoder this visitor uploaded (None: the session's)
        gr.Markdown("# invkit: Feature-Style inversion and editing\n"
                    "Pick a sample or upload an image; it is encoded into a W+ code *w* and a feature code "
                    "*F*. Move a slider to edit (paper Eq. 1), mix styles with a second image, and export "
                    f"the edited image and its codes.\n\n{session.description}")
        status = gr.Markdown(_status("Pick a sample or upload an image."), elem_id="status")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                gallery = gr.Gallery(samples, label="samples (held-out)", columns=2, allow_preview=False,
                                     interactive=False, elem_id="sample-gallery", visible=bool(samples), height="auto")
                upload = gr.File(label="or upload an image", file_types=list(IMAGE_SUFFIXES), elem_id="upload")
            with gr.Column(scale=3):
                with gr.Row():
                    # No download buttons: the views are enlarged; "export" writes the real pixels.
                    shown = [gr.Image(label=label, type="pil", format="png", interactive=False, elem_id=eid, buttons=[],
                                      elem_classes="pixels")
                             for label, eid in (("input", "input-image"), ("G(w)", "rec-w"), ("G(w, F)", "rec-wf"),
                                                ("edited: G(w̃, F̃)", "edited"))]
                    view_in, view_w, view_wf, edited = shown
                sliders = []
                with gr.Row():
                    for i, name in enumerate(names):
                        s = float(f"{session.directions[name].strength:.3g}")  # readable limits
                        sliders.append(gr.Slider(-s, s, 0.0, step=2 * s / SLIDER_STEPS, label=name,
                                                 info=f"±{s:.3g} ({session.directions[name].editor})",
                                                 elem_id=f"slider-{i}", min_width=200))
                with gr.Row():
                    reset = gr.Button("reset sliders", elem_id="reset")
                    export = gr.Button("export edited image and codes", variant="primary", elem_id="export")
                downloads = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="downloads",
                                    visible=False)  # shown by the first export
        with gr.Accordion("Style mixing with a second image", open=False):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    gallery_b = gr.Gallery(samples, label="image B: a sample", columns=2, allow_preview=False,
                                           interactive=False, elem_id="mix-gallery", visible=bool(samples),
                                           height="auto")
                    upload_b = gr.File(label="or upload image B", file_types=list(IMAGE_SUFFIXES), elem_id="mix-upload")
                view_b = gr.Image(label="B: G(w_B, F_B)", type="pil", format="png", interactive=False, elem_id="mix-b",
                                  elem_classes="pixels", buttons=[])
                mix_ab = gr.Image(label="G(w_B, F_A): A's structure, B's styles", type="pil", format="png",
                                  interactive=False, elem_id="mix-ab", elem_classes="pixels", buttons=[])
                mix_ba = gr.Image(label="G(w_A, F_B): B's structure, A's styles", type="pil", format="png",
                                  interactive=False, elem_id="mix-ba", elem_classes="pixels", buttons=[])
        with gr.Accordion("Models", open=False):
            gr.Markdown("The generator and encoder the server was started with (`invkit ui --generator ... "
                        "--encoder ...`). Try another encoder of the same generator here; it serves this page "
                        "only (reload the page to go back to the server's).")
            encoder_upload = gr.File(label="encoder file (.safetensors or official .pth)",
                                     file_types=[".safetensors", ".pth", ".pt"], elem_id="encoder-upload")

        # ---- handlers --------------------------------------------------------------------
        def strengths(values) -> dict[str, float]:
            return {name: float(v or 0.0) for name, v in zip(names, values)}

        def mixed(a: Inverted | None, b: Inverted | None) -> tuple:
            if a is None or b is None:
                return None, None
            ab, ba = session.mix(a, b)
            return display(ab), display(ba)

        def shown_inversion(a: Inverted, b: Inverted | None, what: str) -> tuple:
            return (a, display(a.image), display(a.rec_w), display(a.rec_wf), display(a.rec_wf),
                    *[0.0] * len(sliders), *mixed(a, b),
                    _status(f"{what} inverted: input | G(w) | G(w, F). Move a slider to edit."))

        inverted_outputs = [current, view_in, view_w, view_wf, edited, *sliders, mix_ab, mix_ba, status]

        @_guarded(len(inverted_outputs))
        def pick(b: Inverted | None, enc, evt: gr.SelectData) -> tuple:
            a = session.invert_sample(int(evt.index), enc)
            return shown_inversion(a, b, a.name)

        # The upload widgets are emptied after each file (shown in the views instead): ready for the next.
        @_guarded(len(inverted_outputs) + 1, clears_upload=True)
        def uploaded(path: str, b: Inverted | None, enc) -> tuple:
            a = session.invert_file(path, Path(path).name, enc)
            return None, *shown_inversion(a, b, a.name)

        @_guarded(2)
        def slide(a: Inverted | None, *values) -> tuple:
            if a is None:
                return gr.skip(), _status("Pick a sample or upload an image first: the sliders edit it.")
            moved = {k: v for k, v in strengths(values).items() if v}
            what = ", ".join(f"{k} {v:+.3g}" for k, v in moved.items()) or "no edit"
            return display(session.edit(a, moved)), _status(f"edited: {what}")

        @_guarded(len(sliders) + 2)
        def reset_all(a: Inverted | None) -> tuple:
            return (*[0.0] * len(sliders), display(a.rec_wf) if a is not None else None, _status("sliders reset"))

        @_guarded(2)
        def export_files(a: Inverted | None, *values) -> tuple:
            if a is None:
                return gr.skip(), _status("Nothing to export yet: pick a sample or upload an image.")
            folder = Path(tempfile.mkdtemp(dir=export_root))
            png, codes = session.export(a, strengths(values), folder)
            return (gr.File(value=[str(png), str(codes)], visible=True),
                    _status(f"exported {png.name} and {codes.name} (below)"))

        def as_b(b: Inverted, a: Inverted | None) -> tuple:
            note = f"{b.name} is image B" + ("" if a is not None else "; pick or upload image A to mix")
            return (b, display(b.rec_wf), *mixed(a, b), _status(note))

        b_outputs = [second, view_b, mix_ab, mix_ba, status]

        @_guarded(len(b_outputs))
        def pick_b(a: Inverted | None, enc, evt: gr.SelectData) -> tuple:
            return as_b(session.invert_sample(int(evt.index), enc), a)

        @_guarded(len(b_outputs) + 1, clears_upload=True)
        def uploaded_b(path: str, a: Inverted | None, enc) -> tuple:
            return None, *as_b(session.invert_file(path, Path(path).name, enc), a)

        enc_outputs = [encoder, *inverted_outputs]

        @_guarded(len(enc_outputs) + 1, clears_upload=True)
        def new_encoder(path: str, a: Inverted | None, b: Inverted | None) -> tuple:
            enc = session.load_encoder_file(path, Path(path).name)
            if a is None:
                return (None, enc, *[gr.skip()] * (len(inverted_outputs) - 1),
                        _status(f"encoder {Path(path).name} loaded for this page"))
            return (None, enc, *shown_inversion(session.invert(a.image, a.name, enc), b, a.name)[:-1],
                    _status(f"encoder {Path(path).name} loaded; {a.name} inverted again with it"))

        gallery.select(pick, [second, encoder], inverted_outputs)
        upload.upload(uploaded, [upload, second, encoder], [upload, *inverted_outputs])
        gr.on([s.input for s in sliders], slide, [current, *sliders], [edited, status],
              trigger_mode="always_last", show_progress="hidden")
        reset.click(reset_all, [current], [*sliders, edited, status])
        export.click(export_files, [current, *sliders], [downloads, status])
        gallery_b.select(pick_b, [current, encoder], b_outputs)
        upload_b.upload(uploaded_b, [upload_b, current, encoder], [upload_b, *b_outputs])
        encoder_upload.upload(new_encoder, [encoder_upload, current, second], [encoder_upload, *enc_outputs])
    return page


def serve(session: Session, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          max_upload_mb: int = 300, block: bool = True) -> gr.Blocks:
    """Build the page and serve it on ``host:port`` (default 127.0.0.1, the first free port from
    7860); a public share link only with ``share``. Uploads over ``max_upload_mb`` are refused by
    Gradio before they reach invkit. ``block=False`` returns once the server runs."""
    page = build_page(session)
    page.queue(default_concurrency_limit=1)  # one edit at a time: torch already uses the cores
    page.launch(server_name=host, server_port=port, share=share, max_file_size=f"{max_upload_mb}mb",
                prevent_thread_lock=not block, show_error=True, ssr_mode=False, mcp_server=False,
                footer_links=[], css=CSS)
    return page
