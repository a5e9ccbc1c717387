"""``invkit bench``: the paper's Table 1 for one or more encoders, plus throughput.

Every ``--encoder`` is evaluated with the ``invkit eval`` protocol (first ``--n`` images in name
order, at the generator's resolution) and becomes a row ``<label> G(w,F)`` (and ``<label> G(w)``
with ``--with-w``); the columns are SSIM, PSNR, MSE, LPIPS, ID, FID as in the paper, and
images/s: inversion + reconstruction throughput after one warm-up batch, metrics and file
reading excluded. ``--out`` also writes the rows as JSON.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console

from ..io.images import load_image
from ..loading import load_generator
from ..metrics import load_identity_embedder, parse_metrics
from ._output import keep_whole, print_table
from .eval import REC_W, add_model_args, evaluate, protocol, results_table, select_images, write_report


def register(sub) -> None:
    p = sub.add_parser("bench", help="Table 1 of the paper (SSIM, PSNR, MSE, LPIPS, ID, FID) plus images/s")
    add_model_args(p)
    p.add_argument("--encoder", "-e", required=True, action="append",
                   help="encoder file; repeat for several rows (label with LABEL=PATH)")
    p.add_argument("--out", "-o", default=None, help="also write the table as JSON here")
    p.set_defaults(func=run)


def parse_encoder_arg(text: str) -> tuple[str, str]:
    """``"label=path"`` or ``"path"`` (label: the file stem)."""
    label, sep, path = text.partition("=")
    if sep and label and not Path(text).exists():
        return label, path
    return Path(text).stem, text


@torch.no_grad()
def _warm_up(G, E, files, batch: int, device) -> None:
    """One untimed batch, so lazy initialisation (cuDNN autotuning, allocator) is not timed."""
    x = torch.stack([load_image(p, G.resolution) for p in files[:batch]]).to(device)
    ws, feats = E.encode(x)
    G.synthesize_from(E.k, feats, ws)


def run(args) -> int:
    from ..fs_encoder import load_encoder

    console = Console(stderr=True, soft_wrap=True)
    metrics = parse_metrics(args.metrics)
    files = select_images(args.images, args.n)
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    identity = load_identity_embedder(args.id_net, args.device) if "id" in metrics else None
    rows: dict[str, dict] = {}
    skipped = []
    for spec in args.encoder:
        label, path = parse_encoder_arg(spec)
        E = load_encoder(path, G, k=args.k, device=args.device, input_size=args.input_size)
        try:
            _warm_up(G, E, files, args.batch, args.device)
        except ValueError:
            pass  # an unreadable image among the first ones: evaluate() reports it
        console.print(f"[bold]{label}[/bold]: {len(files)} images ...")
        t0 = time.perf_counter()
        ev = evaluate(G, E, files, metrics, args.batch, args.with_w, identity=identity, device=args.device)
        for variant, res in ev.results.items():
            row = dict(res)
            row["images_per_second"] = ev.images_per_second if variant != REC_W else None
            row["n"] = len(ev.evaluated)
            rows[f"{label} {variant}"] = row
        skipped.extend(ev.skipped)
        console.print(f"  done in {time.perf_counter() - t0:.1f}s", highlight=False)
    title = f"{len(files)} images at {G.resolution} px ({args.device})"
    print_table(keep_whole(results_table(rows, title, extra={"images/s": "images_per_second"}), "Method"))
    for s in {s["file"]: s for s in skipped}.values():
        console.print(f"[yellow]skipped[/yellow] {s['error']}", highlight=False)
    if args.out:
        write_report(args.out, {"protocol": protocol(args, G, len(files)), "device": str(args.device),
                                "generator": {"source": str(args.generator), "fingerprint": G.fingerprint()},
                                "rows": rows, "skipped": skipped})
        console.print(f"table -> [bold]{args.out}[/bold]")
    return 1 if skipped else 0
