"""``invkit project``: per-image optimisation inversion in W, W+ or W+F (:mod:`invkit.projection`).

Writes, under ``--out``:

* ``rec/<name>.png``     the projection's image (``G(w)``, or ``G(w, F)`` for ``w+f``);
* ``codes.safetensors``  an :class:`~invkit.inversion.Inversion` of every finished image (F for
  ``w+f``; the settings in its ``meta``);
* ``report.json``        seconds per image (model loading and the mapping statistics excluded; the
  latter as ``setup_seconds``), each image's losses at the start and the end, skipped files and
  stopped images (:mod:`invkit.cli._report`);
* ``noise.safetensors``  the optimised noise maps, only with ``--optimize-noise``.

Resumable per image: every finished image is kept in ``OUT/partial/`` at once, and running the same
command again after an interruption skips those images (the settings must be the same); the
final files are assembled at the end and ``partial/`` removed. An unreadable image is reported by
name and skipped; an image whose loss turns NaN stops with a message naming it while the others go
on; either makes the exit code 1.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..inversion import Inversion
from ..io import atomic, tensorfile
from ..io.images import iter_image_batches, save_image
from ..loading import load_generator
from ..projection import (
    SPACES,
    ProjectionSettings,
    latent_statistics,
    perceptual_network,
    project,
    settings_dict,
)
from ._args import check_outputs, finite_float, positive_int
from ._report import REPORT_FILE, RunReport
from .invert import (
    CODES_FILE,
    add_io_args,
    input_files,
    output_names,
    refuse_earlier_run,
    remove_stale_images,
)

REC_DIR = "rec"
PARTIAL_DIR = "partial"
NOISE_FILE = "noise.safetensors"


def register(sub) -> None:
    p = sub.add_parser("project", help="invert images by per-image optimisation in W, W+ or W+F")
    add_io_args(p, "output folder (an unfinished run there is resumed)")
    p.add_argument("--space", default="w+", choices=SPACES, help="w, w+ (default) or w+f (W+ and F at layer K jointly)")
    p.add_argument("--steps", type=positive_int, default=1000, help="Adam steps per image (default 1000)")
    p.add_argument("--lr", type=finite_float, default=0.1, help="peak learning rate (default 0.1)")
    p.add_argument("--init-encoder", "-e", help="start from this encoder's codes (file, run folder or recipe: toy) "
                                                "instead of the mean w")
    p.add_argument("--k", type=int, default=None, help="layer K of F (default: the encoder's, else 5)")
    p.add_argument("--perceptual", default="auto",
                   help="perceptual network: alex, vgg, or a recipe's (toy: toy-LPIPS); auto (default): the "
                        "recipe that --generator names, else vgg")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="other projection settings, e.g. mse=0.5, perceptual=1 (0: MSE alone, no network "
                        "weights needed), noise_start=0.05, feature_lr=0.01, w_avg_samples=10000 (repeatable)")
    p.add_argument("--optimize-noise", action="store_true",
                   help="also optimise the noise maps (NVlabs), saved to noise.safetensors")
    p.add_argument("--batch", type=positive_int, default=4, help="images optimised together (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the start statistics and the w-noise (default 0)")
    p.add_argument("--adapter", help="force a generator adapter instead of detecting it")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.set_defaults(func=run)


def _partial_file(out: Path, name: str, noise: bool = False) -> Path:
    return out / PARTIAL_DIR / ("noise" if noise else "") / f"{name}.safetensors"


def _start_or_resume(out: Path, args, state: dict) -> None:
    """Clear an earlier run (``--overwrite``) or check that an unfinished one has ``state``."""
    partial = out / PARTIAL_DIR
    if args.overwrite and partial.is_dir() and not partial.is_symlink():
        shutil.rmtree(partial)
    saved = partial / "settings.json"
    if saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        if before != state:
            diff = ", ".join(f"{k}: {before.get(k)!r} -> {state.get(k)!r}" for k in state if before.get(k) != state.get(k))
            raise ValueError(f"{out}: holds an unfinished run with other settings ({diff}); "
                             f"run it with the same ones, or pass --overwrite to start again")
    else:
        atomic.write_text(saved, json.dumps(state, indent=2) + "\n")


def run(args) -> int:
    from ..fs_encoder import load_encoder

    console = Console(stderr=True, soft_wrap=True)
    files = input_files(args.images)
    out = Path(args.out)
    inputs = [*files, args.generator, args.init_encoder]
    # rec/ images without partial/ are a finished run's; with it, an unfinished run to resume
    refuse_earlier_run(out, args.overwrite, (CODES_FILE, REPORT_FILE, NOISE_FILE),
                       () if (out / PARTIAL_DIR).is_dir() else (REC_DIR,))
    check_outputs([out / CODES_FILE, out / REPORT_FILE, out / NOISE_FILE], args.overwrite, inputs)
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    E = load_encoder(args.init_encoder, G, k=args.k, device=args.device) if args.init_encoder else None
    k = args.k if args.k is not None else (E.k if E is not None else None)
    settings = ProjectionSettings(space=args.space, steps=args.steps, lr=args.lr, seed=args.seed,
                                  noise_maps=args.optimize_noise).with_overrides(
        ([f"k={k}"] if k is not None else []) + list(args.overrides))
    if settings.noise_maps and not G.sample_noise(1):
        raise ValueError(f"{args.generator}: this generator has no noise inputs; drop --optimize-noise")
    net, label = (None, None) if settings.perceptual == 0 else perceptual_network(
        args.perceptual, G, args.generator, fallback="vgg", device=args.device)
    inverter = {"kind": "projection", "settings": settings_dict(settings), "perceptual": label,
                "init_encoder": str(args.init_encoder) if args.init_encoder else None}
    _start_or_resume(out, args, {"inverter": inverter, "generator": G.fingerprint()})
    report = RunReport("project", args.generator, G, args.device, inverter)
    t0 = time.perf_counter()
    stats = latent_statistics(G, settings.w_avg_samples, settings.seed)
    report.setup_seconds = time.perf_counter() - t0

    names = output_names(files)
    todo = [i for i, name in enumerate(names) if not _partial_file(out, name).is_file()]
    if len(todo) < len(files):
        console.print(f"resuming: {len(files) - len(todo)} of {len(files)} images already projected", highlight=False)
    terminal = console.is_terminal
    progress = Progress(TextColumn(f"[bold]projecting ({settings.space}, {settings.steps} steps)"), BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=console, disable=not terminal)
    with progress:
        task = progress.add_task("project", total=len(todo) * settings.steps)

        def bad_image(path: Path, exc: Exception) -> None:
            report.skip(path, str(exc))
            progress.console.print(f"[yellow]skipped[/yellow] {exc}", highlight=False)

        def advance_by(n: int):
            return lambda step, total: progress.advance(task, n)

        sub = [files[i] for i in todo]
        for chunk in iter_image_batches(sub, G.resolution, args.batch, bad_image):
            if not chunk.indices:
                continue
            batch_names = [names[todo[i]] for i in chunk.indices]
            x = chunk.images.to(args.device)
            init = E.invert(x) if E is not None else None
            res = project(G, x, settings=settings, perceptual=net, init=init, names=batch_names, stats=stats,
                          on_step=advance_by(len(batch_names)))
            for i, name in enumerate(batch_names):
                if not res.ok[i]:
                    progress.console.print(f"[red]stopped[/red] {res.failed[name]}", highlight=False)
                    continue
                save_image(res.images[i], out / REC_DIR / f"{name}.png")
                if res.noise is not None:
                    tensorfile.save(_partial_file(out, name, noise=True),
                                    {f"noise_{j}": v[i:i + 1].cpu() for j, v in enumerate(res.noise)}, {"kind": "noise"})
                feats = None if res.features is None else res.features[i:i + 1]
                Inversion(res.ws[i:i + 1], feats, res.k, G.fingerprint(), [name],
                          {"seconds": res.seconds, "losses": res.losses[name]}).to("cpu").save(_partial_file(out, name))
            report.failed.update(res.failed)
            if not terminal:
                done = ", ".join(f"{n} {v['start']:.4g} -> {v['total']:.4g}" for n, v in res.losses.items())
                print(f"projected {len(batch_names)} image(s) in {res.seconds:.2f} s/image; loss {done}",
                      file=sys.stderr, flush=True)
    return _assemble(out, names, report, settings, console)


def _assemble(out: Path, names: list[str], report: RunReport, settings: ProjectionSettings, console) -> int:
    """Gather the per-image files of every finished image into the final outputs."""
    done = [n for n in names if _partial_file(out, n).is_file()]
    written: set[str] = set()
    if done:
        parts = [Inversion.load(_partial_file(out, n)) for n in done]
        for n, inv in zip(done, parts):
            report.add(n, inv.meta["seconds"], inv.meta["losses"])
            written.add(f"{n}.png")
        codes = Inversion.cat(parts)
        codes.meta = {"projection": settings_dict(settings), "perceptual": report.head["inverter"]["perceptual"]}
        codes.save(out / CODES_FILE)
        if settings.noise_maps:
            maps = [tensorfile.load(_partial_file(out, n, noise=True))[0] for n in done]
            tensorfile.save(out / NOISE_FILE, {key: torch.cat([m[key] for m in maps]) for key in maps[0]},
                            {"kind": "noise", "names": done})
        report.write(out / REPORT_FILE)
        remove_stale_images(out, written, (REC_DIR,))
        shutil.rmtree(out / PARTIAL_DIR)
        console.print(f"{len(done)} images projected -> [bold]{out}[/bold] ({REC_DIR}/, {CODES_FILE}, {REPORT_FILE}); "
                      f"{report.to_dict()['seconds_per_image']:.3g} s/image", highlight=False)
    problems = [s["file"] for s in report.skipped] + list(report.failed)
    if problems:
        console.print(f"[red]{len(problems)} image(s) not projected:[/red] " + ", ".join(Path(p).name for p in problems),
                      highlight=False)
        return 1
    return 0
