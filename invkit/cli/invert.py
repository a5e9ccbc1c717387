"""``invkit invert``: encode a folder of images with a Feature-Style encoder.

Writes, under ``--out``:

* ``rec_w/<name>.png``  the reconstruction ``G(w)`` from the latent code alone;
* ``rec_wf/<name>.png`` the Feature-Style reconstruction ``G(w, F)``;
* ``codes.safetensors`` the ``(w, F)`` codes of every inverted image as an
  :class:`~invkit.inversion.Inversion` (names = source file names; no F for a W+-only encoder,
  whose ``rec_wf`` images are then ``G(w)``);
* ``report.json`` seconds per image (model loading excluded, timed as ``invkit project`` times
  them: :mod:`invkit.cli._report`) and each image's pixel losses, ``mse_w`` and ``mse_wf`` (mean
  squared error on the [-1, 1] scale), skipped files.

Images are read at the generator's resolution (Lanczos) in batches of ``--batch``. An unreadable
image is reported by name and skipped; the others are still inverted and written, and the exit
code is then 1.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..inversion import Inversion
from ..io.images import iter_image_batches, list_images, save_image
from ..loading import load_generator
from ._args import positive_int
from ._report import REPORT_FILE, RunReport, batch_timer

CODES_FILE = "codes.safetensors"
REC_W_DIR = "rec_w"
REC_WF_DIR = "rec_wf"


def add_io_args(p, out_help: str = "output folder") -> None:
    """``--generator``, ``--images``, ``--out``: what every inverting command takes."""
    p.add_argument("--generator", "-g", required=True, help="generator checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    p.add_argument("--images", "-i", required=True, help="folder of input images")
    p.add_argument("--out", "-o", required=True, help=out_help)


def input_files(folder) -> list[Path]:
    """The image files of ``folder`` in name order; an error naming it when there are none."""
    files = list_images(folder)
    if not files:
        raise ValueError(f"{folder}: no images (looked for .png, .jpg, .jpeg, .bmp, .webp, .tif)")
    return files


def register(sub) -> None:
    p = sub.add_parser("invert", help="invert a folder of images with a Feature-Style encoder")
    add_io_args(p)
    p.add_argument("--encoder", "-e", required=True, help="encoder file (invkit .safetensors or official 143_enc.pth), a training run folder or checkpoint (its newest encoder), or a recipe that ships one (toy)")
    p.add_argument("--batch", type=positive_int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--adapter", help="force a generator adapter instead of detecting it")
    p.add_argument("--k", type=int, default=None,
                   help="layer K of an official encoder file (default 5); invkit files record it")
    p.add_argument("--input-size", type=int, default=256,
                   help="encoder input side of an official encoder file (default 256); invkit files record it")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"],
                   help="per-layer noise: const (the fixed buffers, reproducible; default), random (fresh each call) or none (zeros)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-pixel noise for --noise-mode random (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.set_defaults(func=run)


def output_names(paths: list[Path]) -> list[str]:
    """File stems, or the full name with dots replaced where two inputs share a stem."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_") for p in paths]


def run(args) -> int:
    from ..fs_encoder import load_encoder

    console = Console(stderr=True, soft_wrap=True)
    files = input_files(args.images)
    out = Path(args.out)
    codes_path = out / CODES_FILE
    refuse_earlier_run(out, args.overwrite, (CODES_FILE, REPORT_FILE), (REC_W_DIR, REC_WF_DIR))

    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    E = load_encoder(args.encoder, G, k=args.k, device=args.device, input_size=args.input_size)
    names = output_names(files)
    done: list[Inversion] = []
    written: set[str] = set()
    torch.manual_seed(args.seed)  # --noise-mode random draws from torch's generator
    skipped: list[tuple[Path, str]] = []
    run_report = RunReport("invert", args.generator, G, args.device,
                           {"kind": "encoder", "source": str(args.encoder), "k": E.k,
                            "feature_branch": getattr(E, "feature_branch", True)})

    progress = Progress(TextColumn("[bold]inverting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    with progress:
        task = progress.add_task("invert", total=len(files))

        def report(path: Path, exc: Exception) -> None:
            skipped.append((path, str(exc)))
            run_report.skip(path, str(exc))
            progress.console.print(f"[yellow]skipped[/yellow] {exc}", highlight=False)

        for chunk in iter_image_batches(files, G.resolution, args.batch, report):
            progress.advance(task, chunk.attempted)
            if not chunk.indices:
                continue
            batch_names = [names[i] for i in chunk.indices]
            images = chunk.images.to(args.device)
            with batch_timer(args.device, len(batch_names)) as timing:
                inv = E.invert(images, batch_names)
                with torch.no_grad():
                    rec_w = G.synthesize(inv.ws, noise_mode=args.noise_mode)
                    rec_wf = G.synthesize_from(inv.k, inv.features, inv.ws, noise_mode=args.noise_mode)
            for i, name in enumerate(batch_names):
                run_report.add(name, timing["per_image"], {"mse_w": float((rec_w[i] - images[i]).square().mean()),
                                                           "mse_wf": float((rec_wf[i] - images[i]).square().mean())})
                save_image(rec_w[i], out / REC_W_DIR / f"{name}.png")
                save_image(rec_wf[i], out / REC_WF_DIR / f"{name}.png")
                written.add(f"{name}.png")
            done.append(inv.to("cpu"))

    remove_stale_images(out, written)
    if done:
        codes = Inversion.cat(done)
        codes.meta.update({"encoder": str(args.encoder), "generator": str(args.generator),
                           "images": str(args.images), "noise_mode": args.noise_mode})
        codes.save(codes_path)
        run_report.write(out / REPORT_FILE)
        console.print(f"{len(codes)} images inverted -> [bold]{out}[/bold] ({REC_W_DIR}/, {REC_WF_DIR}/, "
                      f"{CODES_FILE}, {REPORT_FILE})")
    if skipped:
        console.print(f"[red]{len(skipped)} image(s) skipped:[/red] " + ", ".join(p.name for p, _ in skipped),
                      highlight=False)
        return 1
    return 0


def refuse_earlier_run(out: Path, overwrite: bool, files: tuple[str, ...], folders: tuple[str, ...]) -> None:
    """Refuse an ``out`` that holds any of ``files`` or a non-empty one of ``folders`` (an
    earlier run's results) unless ``overwrite``."""
    if not overwrite and (any((out / f).exists() for f in files)
                          or any((out / d).is_dir() and any((out / d).iterdir()) for d in folders)):
        raise ValueError(f"{out}: holds results of an earlier run; pass --overwrite to replace them")


def remove_stale_images(out: Path, written: set[str], folders: tuple[str, ...] = (REC_W_DIR, REC_WF_DIR)) -> None:
    """Remove reconstructions an earlier run (``--overwrite``) left in ``out`` that this run did
    not write, so the folder holds exactly the images of the new codes."""
    for folder in folders:
        if (out / folder).is_dir():
            for old in (out / folder).glob("*.png"):
                if old.name not in written and old.is_file() and not old.is_symlink():
                    old.unlink()
