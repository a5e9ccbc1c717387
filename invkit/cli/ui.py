"""``invkit ui``: an interactive inversion and editing page in the browser (the ``[ui]`` extra).

``invkit ui`` alone serves the demo's models (the ``toy`` recipe: its generator, encoder,
calibrated directions and held-out samples); ``--generator`` / ``--encoder`` serve any others,
with ``--directions DIR`` or SeFa directions computed on the spot. The page binds 127.0.0.1 (this
machine only) unless ``--host`` says otherwise, and makes no public share link unless
``--share``. Gradio is imported only when the command runs, so ``invkit --help`` and every other
command work without the extra.
"""

from __future__ import annotations

import importlib.util
import os

from rich.console import Console
from rich.markup import escape

from ._args import default_threads, positive_int

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub) -> None:
    p = sub.add_parser("ui", help="serve an interactive inversion and editing page (needs invkit[ui])")
    p.add_argument("--generator", "-g", default=None,
                   help="generator checkpoint path, zoo name, URL or a recipe that ships one (default: the demo's, toy)")
    p.add_argument("--encoder", "-e", default=None,
                   help="encoder file, training run folder or a recipe that ships one (default: the demo's, toy)")
    p.add_argument("--directions", "-d", default=None,
                   help="folder of direction files, one slider each (default: the recipe's, else SeFa computed now)")
    p.add_argument("--recipe", default=None,
                   help="the encoder's recipe: upload preprocessing (FFHQ alignment), samples, directions "
                        "(default: the recipe -e names or its training run's; toy without -g/-e)")
    p.add_argument("--align", default="auto", choices=["auto", "ffhq", "none"],
                   help="align uploaded faces: auto (as the recipe says; default), ffhq or none")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=positive_int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--share", action="store_true", help="also make a public Gradio share link (off by default)")
    p.add_argument("--max-pixels", type=positive_int, default=None,
                   help="largest uploaded image in pixels, refused from its header (default 40000000)")
    p.add_argument("--max-upload-mb", type=positive_int, default=300,
                   help="largest uploaded file in MB (images and encoder files; default 300)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: the cores not kept busy by other processes)")
    p.set_defaults(func=run)


def run(args) -> int:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if importlib.util.find_spec("gradio") is None:
        console.print("[red]error:[/red] " + escape("invkit ui needs Gradio: pip install 'invkit[ui]'"))
        return 1
    import torch

    from ..ui.session import MAX_PIXELS
    from ..ui.sources import load_session

    torch.set_num_threads(args.threads or default_threads())
    session = load_session(args.generator, args.encoder, args.directions, args.recipe, args.align,
                           args.max_pixels or MAX_PIXELS, args.device, log=lambda m: console.print(m, markup=False))
    if args.host not in LOOPBACK:
        console.print(f"note: listening on {args.host}: other machines can open the page (it has no login)")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a local tool
    from ..ui.page import serve

    serve(session, args.host, args.port, args.share, args.max_upload_mb)
    return 0
