"""Produce the toy assets: ``python -m invkit.recipes.toy_build ...`` (docs/demo.md, step by step).

::

    python -m invkit.recipes.toy_fit --out runs/toy_fit --kimg 160            # the generator
    python -m invkit.recipes.toy_build assets --fit-run runs/toy_fit --work runs/toy_encoder
    python -m invkit.recipes.toy_build directions --generator G --encoder E --out DIR

``assets`` runs the whole chain after the generator fit, resumably: export the fitted generator,
train the encoder with the training engine through the registered ``toy`` recipe (what ``invkit
train toy`` does), fit and calibrate the directions, and copy everything into the assets folder.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path

import torch

from . import toy, toy_directions


def build_assets(fit_run: Path, work: Path, assets: Path, overrides: list[str] | None = None) -> None:
    """Export the generator of the ``toy_fit`` run ``fit_run`` into ``assets``, train the encoder
    for it in ``work`` (resuming a run there), and fit the directions. The attribute net in
    ``assets`` is used (and kept)."""
    from . import toy_fit

    assets.mkdir(parents=True, exist_ok=True)
    generator = toy_fit.export_checkpoint(fit_run, assets / toy.GENERATOR_FILE)
    print(f"generator: {generator}", flush=True)
    settings = [f"generator={generator}", f"loss_networks.lpips_trunk={assets / toy.ATTRIBUTE_NET_FILE}"]
    result = toy.train_encoder(work, settings + list(overrides or []), progress=False,
                               report=lambda m: print(m, flush=True))
    exported = Path(work) / "encoder.safetensors"
    if result.interrupted or not exported.is_file():
        raise RuntimeError(f"{work}: encoder training stopped at step {result.step}; run the same command again to resume")
    shutil.copyfile(exported, assets / toy.ENCODER_FILE)
    print(f"encoder: {assets / toy.ENCODER_FILE}", flush=True)
    for p in toy_directions.write_directions(generator, assets / toy.ENCODER_FILE, assets,
                                             attribute_net=assets / toy.ATTRIBUTE_NET_FILE):
        print(f"direction: {p}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invkit.recipes.toy_build", description="produce the toy assets")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("assets", help="fitted generator -> generator, encoder, directions in an assets folder")
    b.add_argument("--fit-run", required=True, help="a toy_fit run folder (its checkpoint.safetensors)")
    b.add_argument("--work", default="runs/toy_encoder", help="encoder training run folder (resumed)")
    b.add_argument("--assets", default=str(toy.assets_dir()), help="where the files go (default: the package's)")
    b.add_argument("overrides", nargs="*", help="recipe overrides KEY=VALUE for the encoder")
    d = sub.add_parser("directions", help="InterFaceGAN + SeFa directions with calibrated strengths")
    d.add_argument("--generator", required=True)
    d.add_argument("--encoder", required=True)
    d.add_argument("--attribute-net", help="default: the shipped one")
    d.add_argument("--out", required=True, help="folder for the direction files")
    d.add_argument("--n", type=int, default=2000, help="rendered training images whose encoder codes set the SeFa strengths")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cmd == "assets":
        build_assets(Path(args.fit_run), Path(args.work), Path(args.assets), args.overrides)
        return 0
    paths = toy_directions.write_directions(args.generator, args.encoder, args.out, args.attribute_net, args.n)
    print("\n".join(str(x) for x in paths))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
