"""``invkit sample``: a PNG grid of random images from any loadable generator."""

from __future__ import annotations

import numpy as np
import torch
from rich.console import Console

from ..io.images import save_grid
from ..loading import load_generator
from ._args import MAX_SEEDS, check_outputs, finite_float, parse_int_ranges, positive_int


def register(sub) -> None:
    p = sub.add_parser("sample", help="render a grid of images for a list of seeds")
    p.add_argument("--generator", "-g", required=True, help="checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    p.add_argument("--adapter", help="force an adapter instead of detecting it")
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 1,5,9 (default 0-7)")
    p.add_argument("--trunc", type=finite_float, default=1.0, help="truncation psi (default 1.0)")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"],
                   help="per-layer noise: const (the fixed buffers, reproducible; default), random (fresh each call) or none (zeros)")
    p.add_argument("--ncol", type=positive_int, default=None, help="grid columns (default: up to 8)")
    p.add_argument("--batch", type=positive_int, default=4, help="images per forward pass (default 4; lower it to save memory)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")
    p.add_argument("--out", "-o", default="grid.png", help="output image grid (default grid.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-pixel noise for --noise-mode random (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One ``z [z_dim]`` per seed, drawn as NVlabs' ``gen_images.py`` does
    (``np.random.RandomState(seed).randn(z_dim)``), so seeds mean the same images as there."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def run(args) -> int:
    console = Console(stderr=True, soft_wrap=True)
    seeds = parse_int_ranges(args.seeds, MAX_SEEDS)
    check_outputs([args.out], args.overwrite, [args.generator])
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    z = seed_latents(seeds, G.z_dim).to(args.device)
    images = []
    torch.manual_seed(args.seed)  # --noise-mode random draws from torch's generator
    with torch.no_grad():
        for i in range(0, len(seeds), args.batch):
            ws = G.mapping(z[i:i + args.batch], truncation_psi=args.trunc)
            images.append(G.synthesize(ws, noise_mode=args.noise_mode).cpu())
    out = save_grid(torch.cat(images), args.out, ncol=args.ncol or min(8, len(seeds)))
    console.print(f"{G.adapter_name} generator, {G.resolution}px, {len(seeds)} seeds -> [bold]{out}[/bold]")
    return 0
