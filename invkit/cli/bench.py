"""``invkit bench``: inverters side by side, the paper's Table 1 plus speed.

Every ``--encoder`` and every ``--project`` setting is evaluated with the ``invkit eval`` protocol
(GANInverter's: the same first ``--n`` images in name order for every inverter, at the generator's
resolution, metrics on [0, 1] pixels; LPIPS on [-1, 1]) and becomes a row: ``<label> G(w,F)`` for
inverters with a feature code, ``<label> G(w)`` for those without (a W+-only encoder, W / W+
projections), plus ``<label> G(w)`` of FS inverters with ``--with-w``. Columns: SSIM, PSNR, MSE,
LPIPS (``--perceptual`` picks its network), ID (faces), FID, and the speed: images/s and seconds
per image, inversion (encoding or optimisation) + reconstruction of a batch divided by its
images, after one untimed warm-up batch for encoders, metrics and file reading excluded.
``--out`` also writes the rows as JSON.

A projection setting is ``[LABEL=]SPACE[:KEY=VALUE,...]``: ``w+:steps=500``,
``wf=w+f:steps=500,init=fs`` (``init``: an ``--encoder`` label, or an encoder file / recipe,
whose codes start the optimisation; ``net``: the objective's perceptual network, as
``--perceptual`` names them, default the LPIPS column's when that is a recipe's, else vgg; any
key of :class:`invkit.projection.ProjectionSettings`, e.g. ``perceptual=0`` for MSE alone).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console

from ..io.images import load_image
from ..loading import load_generator
from ..metrics import load_identity_embedder
from ..projection import ProjectionSettings, Projector, perceptual_network, settings_dict
from ._output import keep_whole, print_table
from .eval import (
    REC_W,
    add_model_args,
    evaluate,
    metrics_and_perceptual,
    protocol,
    results_table,
    select_images,
    write_report,
)


def register(sub) -> None:
    p = sub.add_parser("bench", help="compare encoders and projections: SSIM, PSNR, MSE, LPIPS, ID, FID, speed")
    add_model_args(p)
    p.add_argument("--encoder", "-e", action="append", default=[],
                   help="encoder file or recipe (toy); repeat for several rows (label with LABEL=PATH)")
    p.add_argument("--project", "-p", action="append", default=[], metavar="[LABEL=]SPACE[:KEY=VALUE,...]",
                   help="a projection row, e.g. w+:steps=500 or wf=w+f:steps=500,init=LABEL (repeatable)")
    p.add_argument("--out", "-o", default=None, help="also write the table as JSON here")
    p.set_defaults(func=run)


def parse_encoder_arg(text: str) -> tuple[str, str]:
    """``"label=path"`` or ``"path"`` (label: the file stem)."""
    label, sep, path = text.partition("=")
    if sep and label and not Path(text).exists():
        return label, path
    return Path(text).stem, text


def parse_project_arg(text: str) -> tuple[str, str, dict[str, str]]:
    """``"[LABEL=]SPACE[:KEY=VALUE,...]"`` -> ``(label, space, {key: value})``; the default label
    is the setting as written."""
    head, _, options = text.partition(":")
    label, sep, space = head.rpartition("=")
    pairs = {}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--project {text!r}: expected KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return (label if sep and label else text), space.strip(), pairs


@torch.no_grad()
def _warm_up(G, E, files, batch: int, device) -> None:
    """One untimed batch, so lazy initialisation (cuDNN autotuning, allocator) is not timed."""
    x = torch.stack([load_image(p, G.resolution) for p in files[:batch]]).to(device)
    ws, feats = E.encode(x)
    G.synthesize_from(E.k, feats, ws)


def _inverters(args, G, encoders: dict, lpips_name: str):
    """``(label, inverter, description)`` for every ``--encoder`` and ``--project``, in order."""
    from ..fs_encoder import load_encoder

    rows = []
    for spec in args.encoder:
        label, path = parse_encoder_arg(spec)
        encoders[label] = E = load_encoder(path, G, k=args.k, device=args.device, input_size=args.input_size)
        rows.append((label, E, {"kind": "encoder", "source": path, "k": E.k,
                                "feature_branch": getattr(E, "feature_branch", True)}))
    for spec in args.project:
        label, space, options = parse_project_arg(spec)
        init = options.pop("init", None)
        net_name = options.pop("net", lpips_name)
        if "noise_maps" in options:
            raise ValueError(f"--project {spec!r}: bench renders codes with the generator's constant noise; "
                             f"noise_maps is not available here (use invkit project --optimize-noise)")
        E = None
        if init is not None:
            E = encoders.get(init) or load_encoder(init, G, k=args.k, device=args.device, input_size=args.input_size)
        k = [f"k={E.k}"] if E is not None and "k" not in options else []
        settings = ProjectionSettings(space=space).with_overrides(k + [f"{key}={v}" for key, v in options.items()])
        net, net_label = (None, None) if settings.perceptual == 0 else perceptual_network(
            net_name, G, args.generator, fallback="vgg", device=args.device)
        rows.append((label, Projector(G, settings, net, init_encoder=E),
                     {"kind": "projection", "settings": settings_dict(settings), "perceptual": net_label,
                      "init": init}))
    return rows


def run(args) -> int:
    console = Console(stderr=True, soft_wrap=True)
    if not args.encoder and not args.project:
        raise ValueError("nothing to compare: pass --encoder and/or --project")
    files = select_images(args.images, args.n)
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    metrics, lpips, lpips_label = metrics_and_perceptual(args, G, args.device)
    identity = load_identity_embedder(args.id_net, args.device) if "id" in metrics else None
    rows: dict[str, dict] = {}
    skipped, failed = [], {}
    for label, inverter, info in _inverters(args, G, {}, args.perceptual):
        if info["kind"] == "encoder":
            try:
                _warm_up(G, inverter, files, args.batch, args.device)
            except ValueError:
                pass  # an unreadable image among the first ones: evaluate() reports it
        console.print(f"[bold]{label}[/bold]: {len(files)} images ...")
        t0 = time.perf_counter()
        ev = evaluate(G, inverter, files, metrics, args.batch, args.with_w, identity=identity, lpips=lpips,
                      device=args.device)
        n = len(ev.evaluated)
        for i, (variant, res) in enumerate(ev.results.items()):
            timed = i == 0 or variant != REC_W  # the extra G(w) of an FS inverter costs nothing new
            rows[f"{label} {variant}"] = {**res, "n": n, "inverter": info,
                                          "images_per_second": ev.images_per_second if timed else None,
                                          "seconds_per_image": ev.model_seconds / n if timed and n else None}
        for index, message in getattr(inverter, "failed", {}).items():
            name = ev.evaluated[index]  # the projector numbers the images it was given, in order
            failed[f"{label}: {name}"] = f"{name}: {message.split(': ', 1)[-1]}"
            console.print(f"[red]stopped[/red] {label}: {failed[f'{label}: {name}']} (its start codes are scored)",
                          highlight=False)
        skipped.extend(ev.skipped)
        console.print(f"  done in {time.perf_counter() - t0:.1f}s", highlight=False)
    title = f"{len(files)} images at {G.resolution} px ({args.device})" + (f"; LPIPS: {lpips_label}" if lpips_label else "")
    print_table(keep_whole(results_table(rows, title, extra={"images/s": "images_per_second",
                                                             "s/image": "seconds_per_image"}), "Method"))
    for s in {s["file"]: s for s in skipped}.values():
        console.print(f"[yellow]skipped[/yellow] {s['error']}", highlight=False)
    if args.out:
        write_report(args.out, {"protocol": protocol(args, G, len(files), lpips_label), "device": str(args.device),
                                "generator": {"source": str(args.generator), "fingerprint": G.fingerprint()},
                                "rows": rows, "skipped": skipped, "failed": failed})
        console.print(f"table -> [bold]{args.out}[/bold]")
    return 1 if skipped or failed else 0
