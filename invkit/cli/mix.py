"""``invkit mix``: style mixing of two images through their Feature-Style codes.

::

    invkit mix A.png B.png --generator G.pkl --encoder enc.safetensors --out mix.png
    invkit mix nameA nameB --generator G.pkl --codes out/codes.safetensors --out mix.png

Writes one row of four images: the reconstructions ``G(w_A, F_A)`` and ``G(w_B, F_B)``, then
``G(w_B, F_A)`` (A's structure with B's styles after layer K) and ``G(w_A, F_B)``. With
``--codes``, A and B name entries of an ``invkit invert`` codes file (a name, its stem, or an
index).
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from ..editing import mix
from ..inversion import Inversion
from ..io.images import load_image, save_grid
from ..loading import load_generator
from ._args import check_outputs


def register(sub) -> None:
    p = sub.add_parser("mix", help="style mixing: A's feature code with B's latent code, and the reverse")
    p.add_argument("a", help="image A (or a name in --codes)")
    p.add_argument("b", help="image B (or a name in --codes)")
    p.add_argument("--generator", "-g", required=True, help="generator checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--encoder", "-e", help="encoder file, training run folder or checkpoint (its newest encoder) to invert A and B with")
    src.add_argument("--codes", help="codes file written by `invkit invert`; A and B are names in it")
    p.add_argument("--k", type=int, default=None, help="layer K of an official encoder file (default 5)")
    p.add_argument("--out", "-o", default="mix.png", help="output image (default mix.png)")
    p.add_argument("--adapter", help="force a generator adapter instead of detecting it")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"],
                   help="per-layer noise: const (the fixed buffers, reproducible; default), random (fresh each call) or none (zeros)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-pixel noise for --noise-mode random (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def _pick(codes: Inversion, key: str, source: str) -> Inversion:
    """The entry of ``codes`` named ``key`` (exact name, file stem, or integer index)."""
    if key in codes.names:
        return codes[codes.names.index(key)]
    stems = [Path(n).stem for n in codes.names]
    if stems.count(key) == 1:
        return codes[stems.index(key)]
    if key.lstrip("-").isdigit() and -len(codes) <= int(key) < len(codes):
        return codes[int(key) % len(codes)]
    raise ValueError(f"{source}: no code named {key!r} (names: {', '.join(codes.names[:5])}"
                     f"{', ...' if len(codes) > 5 else ''})")


@torch.no_grad()
def run(args) -> int:
    out = Path(args.out)
    check_outputs([out], args.overwrite, [args.a, args.b, args.generator, args.encoder, args.codes])
    torch.manual_seed(args.seed)  # --noise-mode random draws from torch's generator
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    if args.codes:
        codes = Inversion.load(args.codes, device=args.device)
        inv_a, inv_b = _pick(codes, args.a, args.codes), _pick(codes, args.b, args.codes)
    else:
        from ..fs_encoder import load_encoder

        E = load_encoder(args.encoder, G, k=args.k, device=args.device)
        images = torch.stack([load_image(p, size=G.resolution) for p in (args.a, args.b)]).to(args.device)
        both = E.invert(images, [Path(args.a).name, Path(args.b).name])
        inv_a, inv_b = both[0], both[1]
    # one noise draw for all four images, so that only the codes differ between them
    noise = G.sample_noise(1) if args.noise_mode == "random" else args.noise_mode
    ab, ba = mix(G, inv_a, inv_b, noise_mode=noise)
    rec_a = G.synthesize_from(inv_a.k, inv_a.features, inv_a.ws, noise_mode=noise)
    rec_b = G.synthesize_from(inv_b.k, inv_b.features, inv_b.ws, noise_mode=noise)
    save_grid(torch.cat([rec_a, rec_b, ab, ba]).cpu(), out, ncol=4)
    Console(stderr=True, soft_wrap=True).print(
        f"A={inv_a.names[0]}, B={inv_b.names[0]}: (rec A, rec B, F_A with w_B, F_B with w_A) -> [bold]{out}[/bold]",
        highlight=False)
    return 0
