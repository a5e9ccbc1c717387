"""``invkit eval``: reconstruction metrics of an encoder on a folder of images.

The protocol (as in the paper's Table 1): the first ``--n`` images of the folder in file-name
order, each read at the generator's resolution (Lanczos), inverted, reconstructed as
``G(w, F)`` (and ``G(w)`` with ``--with-w``), and compared with the input at that resolution.
MSE/PSNR/SSIM are computed on [0, 1] pixels (SSIM: 11x11 Gaussian window, sigma 1.5), LPIPS with
AlexNet on [-1, 1], ID as the ArcFace cosine (or dlib's descriptor, reported as ``id_dlib``), FID
between the inputs and the reconstructions with the FID Inception. The JSON report states all of
this next to the numbers; a table is printed.

An unreadable image is reported by name and left out; the rest are still evaluated, and the
exit code is then 1.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..io.atomic import write_text
from ..io.images import iter_image_batches, list_images
from ..loading import load_generator
from ..metrics import ALL_METRICS, ReconstructionMetrics, load_identity_embedder, parse_metrics
from ._args import check_outputs, positive_int
from ._output import keep_whole, print_table

REC_WF = "G(w,F)"
REC_W = "G(w)"
#: Table column order and whether higher is better (the paper's Table 1 arrows).
COLUMNS = [("ssim", True), ("psnr", True), ("mse", False), ("lpips", False), ("id", True),
           ("id_dlib", True), ("fid", False)]


def add_model_args(p) -> None:
    """Arguments shared by ``eval`` and ``bench``."""
    p.add_argument("--generator", "-g", required=True, help="generator checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    p.add_argument("--images", "-i", required=True, help="folder of (aligned) test images")
    p.add_argument("--n", type=int, default=None, help="evaluate the first N images in name order (default: all)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated, from {','.join(ALL_METRICS)} (default mse,psnr,ssim,lpips,id; "
                        f"without id when --generator names a recipe that is not of aligned faces, e.g. toy)")
    p.add_argument("--perceptual", default="auto",
                   help="network of the LPIPS column: alex, vgg, or a recipe's (toy: toy-LPIPS); auto (default): "
                        "the recipe that --generator names, else alex (the paper's)")
    p.add_argument("--with-w", action="store_true", help="also evaluate the latent-only reconstruction G(w)")
    p.add_argument("--id-net", default="auto", choices=["auto", "arcface", "dlib"],
                   help="identity network (auto: ArcFace when its weights are available, else dlib)")
    p.add_argument("--batch", type=positive_int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--adapter", help="force a generator adapter instead of detecting it")
    p.add_argument("--k", type=int, default=None, help="layer K of an official encoder file (default 5)")
    p.add_argument("--input-size", type=int, default=256, help="encoder input side of an official encoder file")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")


def register(sub) -> None:
    p = sub.add_parser("eval", help="reconstruction metrics (SSIM, PSNR, MSE, LPIPS, ID, FID) of an encoder")
    add_model_args(p)
    p.add_argument("--encoder", "-e", required=True, help="encoder file (invkit .safetensors or official 143_enc.pth), a training run folder or checkpoint (its newest encoder), or a recipe that ships one (toy)")
    p.add_argument("--out", "-o", required=True, help="JSON report path")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`."""

    results: dict[str, dict] = field(default_factory=dict)
    evaluated: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    model_seconds: float = 0.0
    total_seconds: float = 0.0
    identity_network: str | None = None

    @property
    def images_per_second(self) -> float:
        """Inversion + reconstruction throughput (metrics and file reading excluded)."""
        return len(self.evaluated) / self.model_seconds if self.model_seconds else math.nan


def select_images(folder: str, n: int | None) -> list[Path]:
    """The protocol's images: the first ``n`` image files of ``folder`` in name order."""
    files = list_images(folder)
    if not files:
        raise ValueError(f"{folder}: no images (looked for .png, .jpg, .jpeg, .bmp, .webp, .tif)")
    if n is not None:
        if n < 1:
            raise ValueError(f"--n must be >= 1, got {n}")
        if n > len(files):
            raise ValueError(f"{folder}: --n {n} asked for, but the folder holds only {len(files)} images")
        files = files[:n]
    return files


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(G, encoder, files: list[Path], metrics: list[str], batch: int = 4, with_w: bool = False,
             identity=None, lpips=None, fid_net=None, device="cpu", progress=None) -> Evaluation:
    """Invert ``files`` and accumulate ``metrics`` for ``G(w, F)`` (and ``G(w)``); an encoder
    without F (``feature_branch`` False: W+-only encoders, W / W+ projections) is evaluated as
    ``G(w)`` alone.

    ``identity``/``lpips``/``fid_net`` are built on demand when their metric is requested and
    they are None (so a missing weight file fails before any work is done).
    """
    device = torch.device(device)
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    ev = Evaluation()
    if "id" in metrics and identity is None:
        identity = load_identity_embedder("auto", device)
    ev.identity_network = getattr(identity, "label", None) if "id" in metrics else None
    pair_metrics = [m for m in metrics if m != "fid"]
    if "lpips" in pair_metrics and lpips is None:
        from ..nets.lpips import LPIPS

        lpips = LPIPS(net="alex").to(device)
    primary = REC_WF if getattr(encoder, "feature_branch", True) else REC_W
    variants = [primary] + ([REC_W] if with_w and primary != REC_W else [])
    meters = {v: ReconstructionMetrics(pair_metrics, lpips=lpips, identity=identity, device=device)
              for v in variants} if pair_metrics else {}
    fids = {}
    if "fid" in metrics:
        from ..nets.fid import FIDAccumulator, load_fid_inception

        net = fid_net if fid_net is not None else load_fid_inception(device=device)
        fids = {v: FIDAccumulator(net, device=device, batch_size=batch) for v in variants}
    start = time.perf_counter()
    def report(path: Path, exc: Exception) -> None:
        ev.skipped.append({"file": str(path), "error": str(exc)})

    for part in iter_image_batches(files, G.resolution, batch, report):
        if progress is not None:
            progress(part.attempted)
        if not part.indices:
            continue
        chunk = [files[i] for i in part.indices]
        x = part.images.to(device)
        _sync(device)
        t0 = time.perf_counter()
        ws, feats = encoder.encode(x)
        outs = {primary: G.synthesize_from(encoder.k, feats, ws)}
        _sync(device)
        ev.model_seconds += time.perf_counter() - t0
        if len(variants) > 1:
            outs[REC_W] = G.synthesize(ws)
        for v, y in outs.items():
            if v in meters:
                meters[v].update(x, y)
            if v in fids:
                fids[v].update_real(x)
                fids[v].update_fake(y.clamp(-1, 1))
        ev.evaluated.extend(p.name for p in chunk)
    ev.total_seconds = time.perf_counter() - start
    for v in variants:
        res = dict(meters[v].summary()) if v in meters else {}
        if v in fids and fids[v].real.n >= 2:
            res["fid"] = {"mean": fids[v].compute(), "std": math.nan, "n": fids[v].real.n}
        ev.results[v] = res
    return ev


def results_table(rows: dict[str, dict], title: str, extra: dict[str, str] | None = None) -> Table:
    """A rich table in the paper's Table 1 layout: one row per method, metric columns with
    arrows (higher/lower is better), plus any ``extra`` columns (``{header: key}``)."""
    present = [(m, up) for m, up in COLUMNS if any(m in r for r in rows.values())]
    table = Table(title=title)
    table.add_column("Method")
    for m, up in present:
        table.add_column(f"{m.upper().replace('_DLIB', ' (dlib)')} {'↑' if up else '↓'}", justify="right")
    for header in extra or {}:
        table.add_column(header, justify="right")
    for name, r in rows.items():
        cells = [name]
        for m, _ in present:
            v = r.get(m, {}).get("mean") if isinstance(r.get(m), dict) else None
            cells.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else _fmt(m, v))
        for key in (extra or {}).values():
            v = r.get(key)
            cells.append("-" if v is None else f"{v:.3g}")
        table.add_row(*cells)
    return table


def _fmt(metric: str, value: float) -> str:
    if metric in ("psnr", "fid"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def metrics_and_perceptual(args, G, device) -> tuple[list[str], object, str]:
    """``--metrics`` (its default without ``id`` for a recipe that is not of aligned faces) and the
    LPIPS column's network with its label (None, None when LPIPS is not requested)."""
    from .. import plugins
    from ..projection import perceptual_network
    from ..recipe import get_recipe

    text = args.metrics
    if text is None:
        named = str(args.generator) in plugins.recipes()
        faces = not named or get_recipe(str(args.generator)).preprocess.align == "ffhq"
        text = "mse,psnr,ssim,lpips" + (",id" if faces else "")
    metrics = parse_metrics(text)
    if "lpips" not in metrics:
        return metrics, None, None
    net, label = perceptual_network(args.perceptual, G, args.generator, fallback="alex", device=device)
    return metrics, net, label


def protocol(args, G, n_files: int, lpips_label: str | None = None) -> dict:
    return {
        "images": str(args.images),
        "selection": f"first {n_files} images in file-name order",
        "resolution": G.resolution,
        "resize": "Lanczos to the generator resolution",
        "pixel_metrics_scale": "MSE, PSNR (data_range 1) and SSIM on [0, 1] pixels; inputs clamped to [-1, 1]",
        "ssim": "Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, population statistics, mean over channels",
        "lpips": f"{lpips_label or 'LPIPS (alex, ImageNet trunk)'}, inputs in [-1, 1]",
        "fid": "FID Inception pool3 (2048-d), inputs vs reconstructions; biased upwards for small N",
    }


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def write_report(path: str | Path, report: dict) -> Path:
    path = Path(path)
    write_text(path, json.dumps(_json_safe(report), indent=2) + "\n")
    return path


def run(args) -> int:
    from ..fs_encoder import load_encoder

    console = Console(stderr=True, soft_wrap=True)
    files = select_images(args.images, args.n)
    check_outputs([args.out], args.overwrite, [*files, args.generator, args.encoder])
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    metrics, lpips, lpips_label = metrics_and_perceptual(args, G, args.device)
    E = load_encoder(args.encoder, G, k=args.k, device=args.device, input_size=args.input_size)
    notes: list[str] = []
    identity = load_identity_embedder(args.id_net, args.device, notes=notes) if "id" in metrics else None
    for note in notes:
        console.print(f"[yellow]warning:[/yellow] {note}", highlight=False)
    progress = Progress(TextColumn("[bold]evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console)
    with progress:
        task = progress.add_task("eval", total=len(files))
        ev = evaluate(G, E, files, metrics, args.batch, args.with_w, identity=identity, lpips=lpips,
                      device=args.device, progress=lambda k: progress.advance(task, k))
    report = {
        "protocol": protocol(args, G, len(files), lpips_label),
        "generator": {"source": str(args.generator), "adapter": G.adapter_name, "fingerprint": G.fingerprint(),
                      "resolution": G.resolution},
        "encoder": {"source": str(args.encoder), "k": E.k},
        "identity_network": ev.identity_network,
        "notes": notes,
        "n_evaluated": len(ev.evaluated),
        "skipped": ev.skipped,
        "results": ev.results,
        "images_per_second": ev.images_per_second,
        "seconds": ev.total_seconds,
        "device": str(args.device),
    }
    out = write_report(args.out, report)
    print_table(keep_whole(results_table(ev.results, f"{len(ev.evaluated)} images at {G.resolution} px"), "Method"))
    for s in ev.skipped:
        console.print(f"[yellow]skipped[/yellow] {s['error']}", highlight=False)
    console.print(f"report -> [bold]{out}[/bold]")
    return 1 if ev.skipped else 0
