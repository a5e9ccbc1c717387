"""``invkit demo``: the whole method, offline, on the demo domain a recipe plugin ships.

The built-in ``toy`` recipe (procedural cartoon faces, a 64 px StyleGAN2, a Feature-Style encoder
and editing directions, all shipped with invkit) inverts held-out images, edits and mixes them,
and writes an HTML report. The command finds the recipe through the plugin registry, never by
importing it: any recipe whose registry entry has a ``demo(out_dir, log=...)`` attribute works
with ``--recipe``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .. import plugins
from ._args import default_threads, positive_int


def register(sub) -> None:
    p = sub.add_parser("demo", help="invert, edit and mix held-out demo images offline; writes an HTML report")
    p.add_argument("--out", "-o", default="invkit-demo", help="report folder (default ./invkit-demo)")
    p.add_argument("--recipe", default="toy", help="recipe whose demo to run (default: toy)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: the cores not kept busy by other processes)")
    p.add_argument("--overwrite", action="store_true", help="replace the report files of an earlier run in --out")
    p.set_defaults(func=run)


def run(args) -> int:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    entry = plugins.recipes().get(args.recipe)
    demo = getattr(entry.obj, "demo", None)
    if demo is None:
        raise ValueError(f"recipe {args.recipe!r} ({entry.plugin}, {entry.distribution}) has no demo")
    import torch

    torch.set_num_threads(args.threads or default_threads())
    results = demo(Path(args.out), log=lambda m: console.print(m, markup=False), overwrite=args.overwrite)
    print(results["report"] if isinstance(results, dict) and "report" in results else Path(args.out))
    return 0
