"""``invkit train``: train a Feature-Style encoder from a recipe, or resume a run.

    invkit train faces --data ffhq/ --out runs/faces
    invkit train toy --out runs/toy              # the demo's recipe brings its own images and loss
    invkit train cars --data cars/ --generator car.pkl --set schedule.lr=5e-5 --set keep_last=5
    torchrun --nproc_per_node 4 -m invkit train faces --data ffhq/ --out runs/faces

Pointing ``--out`` at an existing run resumes it where its last checkpoint left off.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console

from .. import plugins
from ..recipe import Recipe, get_recipe
from ._args import positive_int


def register(sub) -> None:
    p = sub.add_parser("train", help="train a Feature-Style encoder from a recipe (resumes an existing run)")
    p.add_argument("recipe", help="a registered recipe (see `invkit recipes`) or a recipe .json file")
    p.add_argument("--data", "-d", help="folder of real training images (searched recursively; default: the "
                                        "recipe's own images, for recipes that ship them such as toy)")
    p.add_argument("--generator", "-g", help="generator checkpoint, zoo name, URL or a recipe that ships one (toy) (default: the recipe's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting, e.g. schedule.lr=5e-5 or loss.lpips=0.5 (repeatable)")
    p.add_argument("--out", "-o", help="run folder (default: runs/RECIPE-NAME); an existing run is resumed")
    p.add_argument("--device", help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    p.add_argument("--max-steps", type=positive_int, help="stop (with a checkpoint) after this step; run again to continue")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar or log lines while training (the final summary line is still printed)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    console = Console(stderr=True, soft_wrap=True)
    rank = int(os.environ.get("RANK", "0"))
    recipe: Recipe = get_recipe(args.recipe).with_overrides(args.overrides)
    if args.generator:
        recipe = recipe.with_overrides([f"generator={args.generator}"])
    # A registered recipe may bring its own real images and objective (docs/plugins.md).
    entry = plugins.recipes().get(recipe.name) if recipe.name in plugins.recipes() else None
    data, loss = args.data, getattr(entry.obj, "loss", None) if entry is not None else None
    if data is None and entry is not None and hasattr(entry.obj, "training_data"):
        data = entry.obj.training_data(recipe)
    if recipe.schedule.batch_real > 0 and data is None:
        raise ValueError(f"recipe {recipe.name!r} trains on real images: pass --data DIR "
                         f"(or --set schedule.batch_real=0 for synthetic images only)")
    out = args.out or f"runs/{recipe.name}"

    def report(msg: str) -> None:
        if rank == 0:
            console.print(f"[yellow]{msg}[/yellow]", highlight=False, soft_wrap=True)

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from ..training import train

    started = time.time()
    result = train(recipe, data, generator=recipe.generator, out_dir=out, device=args.device, loss=loss,
                   progress=not args.no_progress, max_steps=args.max_steps, report=report)
    if rank == 0:
        total = recipe.schedule.total_steps
        state = "stopped" if result.interrupted or result.step < total else "finished"
        console.print(_summary(state, result, total, time.time() - started, recipe), soft_wrap=True,
                      highlight=False)
        encoder_file = getattr(result, "encoder_file", None)
        if encoder_file is not None and encoder_file.is_file():  # only a file this run wrote
            console.print(f"encoder -> [bold]{encoder_file}[/bold]", soft_wrap=True)
    # the shell's convention: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)
    return 128 + (result.stop_signal or 2) if result.interrupted else 0


def _summary(state: str, result, total: int, seconds: float, recipe: Recipe) -> str:
    """One line: where the run stopped, how long it took, its last losses and where it is."""
    from ..training.logging import active_terms

    terms = "  ".join(f"{n} {v:.4g}" for n, v in active_terms(result.last_losses or {}, recipe.loss).items())
    minutes, sec = divmod(int(seconds), 60)
    return (f"{state} at step {result.step}/{total} in {minutes}m{sec:02d}s"
            + (f"; last losses: {terms}" if terms else "") + f"; run folder [bold]{result.run_dir}[/bold]")
