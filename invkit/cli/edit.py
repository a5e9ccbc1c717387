"""``invkit edit``: apply a direction to images at several strengths (paper Eq. 1).

::

    invkit edit --generator G.pkl --encoder enc.safetensors --images faces/ \\
        --direction dirs/smiling.safetensors --strength -3:3:7 --out edits/
    invkit edit --generator G.pkl --codes out/codes.safetensors \\
        --direction dirs/smiling.safetensors --strength -3:3:7 --out edits/

Writes one PNG strip per image, ``<out>/<name>.png``, one column per strength (the column at
strength 0 is the Feature-Style reconstruction ``G(w, F)``). Images are inverted with the encoder,
or their codes are read from an ``invkit invert`` codes file. An unreadable image is reported and
skipped, the others are still edited, and the exit code is then 1.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from rich.console import Console

from ..direction import Direction
from ..editing import edit_strip
from ..inversion import Inversion
from ..io.images import iter_image_batches, list_images, save_grid
from ..loading import load_generator
from ._args import parse_float_steps, positive_int


def register(sub) -> None:
    p = sub.add_parser("edit", help="edit images along a direction, one strip of strengths per image")
    p.add_argument("--generator", "-g", required=True, help="generator checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    p.add_argument("--direction", "-d", required=True, help="direction file (invkit directions ...)")
    p.add_argument("--strength", "-s", default=None,
                   help="START:STOP:COUNT or a comma list of strengths (default: -S:S:5 with the direction's "
                        "calibrated strength S, or -3:3:7 when it records none)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", "-i", help="folder of images to invert with --encoder")
    src.add_argument("--codes", help="codes file written by `invkit invert` (instead of --encoder/--images)")
    p.add_argument("--encoder", "-e", help="encoder file, training run folder or checkpoint (its newest encoder), or a recipe that ships one (toy); needed with --images")
    p.add_argument("--k", type=int, default=None, help="layer K of an official encoder file (default 5)")
    p.add_argument("--out", "-o", required=True, help="output folder for the strips")
    p.add_argument("--with-input", action="store_true", help="put the input image first in each strip (--images)")
    p.add_argument("--batch", type=positive_int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--adapter", help="force a generator adapter instead of detecting it")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"],
                   help="per-layer noise: const (the fixed buffers, reproducible; default), random (fresh each call) or none (zeros)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-pixel noise for --noise-mode random (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace strips of the same name in --out")
    # "--strength -3:3:7" must read as a value: argparse only treats plain negative numbers as
    # values, so widen its negative-number pattern to ranges and lists (Python >= 3.13 does so).
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    p.set_defaults(func=run)


def run(args) -> int:
    from .invert import output_names

    console = Console(stderr=True, soft_wrap=True)
    if args.images and not args.encoder:
        raise ValueError("--images needs --encoder (or pass --codes from `invkit invert`)")
    torch.manual_seed(args.seed)  # --noise-mode random draws from torch's generator
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    direction = Direction.load(args.direction)
    direction.check(G)  # refuse before any encoding work
    strengths = parse_float_steps(args.strength or default_strengths(direction))
    out = Path(args.out)

    if args.codes:
        codes = Inversion.load(args.codes, device=args.device)
        codes.check_generator(G)
        names = output_names([Path(n) for n in codes.names])
        _refuse_overwrite(out, names, args.overwrite)
        for start in range(0, len(codes), args.batch):
            batch = codes[start:start + args.batch]
            _write_strips(G, batch, direction, strengths, args, out, names[start:start + args.batch], None)
        console.print(f"{len(codes)} strips x {len(strengths)} strengths -> [bold]{out}[/bold]")
        return 0

    from ..fs_encoder import load_encoder

    files = list_images(args.images)
    if not files:
        raise ValueError(f"{args.images}: no images (looked for .png, .jpg, .jpeg, .bmp, .webp, .tif)")
    names = output_names(files)
    _refuse_overwrite(out, names, args.overwrite)
    E = load_encoder(args.encoder, G, k=args.k, device=args.device)
    skipped: list[str] = []
    done = 0
    def report(path: Path, exc: Exception) -> None:
        skipped.append(path.name)
        console.print(f"[yellow]skipped[/yellow] {exc}", highlight=False)

    for chunk in iter_image_batches(files, G.resolution, args.batch, report):
        if not chunk.indices:
            continue
        batch_names = [names[i] for i in chunk.indices]
        x = chunk.images.to(args.device)
        inv = E.invert(x, batch_names)
        _write_strips(G, inv, direction, strengths, args, out, batch_names, x if args.with_input else None)
        done += len(batch_names)
    console.print(f"{done} strips x {len(strengths)} strengths -> [bold]{out}[/bold]")
    if skipped:
        console.print(f"[red]{len(skipped)} image(s) skipped:[/red] {', '.join(skipped)}", highlight=False)
        return 1
    return 0


def default_strengths(direction: Direction) -> str:
    """``-S:S:5`` for a direction with a calibrated strength S, else ``-3:3:7``."""
    if direction.strength is None:
        return "-3:3:7"
    return f"{-direction.strength:g}:{direction.strength:g}:5"


def _refuse_overwrite(out: Path, names: list[str], overwrite: bool) -> None:
    if overwrite:
        return
    clash = [f"{n}.png" for n in names if (out / f"{n}.png").exists()]
    if clash:
        more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
        raise ValueError(f"{out}: already holds {', '.join(clash[:3])}{more}; pass --overwrite to replace them")


@torch.no_grad()
def _write_strips(G, inv: Inversion, direction: Direction, strengths: list[float], args, out: Path,
                  names: list[str], inputs: torch.Tensor | None) -> None:
    strips = edit_strip(G, inv, direction, strengths, noise_mode=args.noise_mode).cpu()
    for i, name in enumerate(names):
        tiles = strips[i] if inputs is None else torch.cat([inputs[i:i + 1].cpu(), strips[i]])
        save_grid(tiles, out / f"{name}.png", ncol=len(tiles))
