"""``invkit demo``: invert, edit and mix held-out toy faces with the shipped models; an HTML report.

The inputs are *rendered* by :mod:`.toy_domain` from seeds no shipped model saw (from
``toy_domain.HELD_OUT_START``), never sampled from the generator. Every number in the report is
measured here, on these images; every strength is the one stored in the direction file
(calibrated on training seeds, :mod:`.toy_directions`).
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..io.atomic import atomic_path
from ..metrics import mse, psnr, ssim, to_unit
from . import toy_directions as dirs
from . import toy_domain

#: Attributes whose read-back on G(w, F) the report checks against the input's.
READ_BACK = ("smile", "yaw", "hair")
#: Upscaling of the 64 px tiles in the report's pictures (nearest neighbour, so pixels stay honest).
ZOOM = 2


def labelled_grid(tiles: torch.Tensor, header: list[str]) -> Image.Image:
    """A picture of ``tiles [R, S, 3, H, W]`` (in [-1, 1]) with ``header`` above the S columns;
    tiles are enlarged ``ZOOM`` times (nearest)."""
    r, s, _, h, w = tiles.shape
    th, tw, pad = h * ZOOM, w * ZOOM, 2
    font = ImageFont.load_default(size=13)
    left, top = 0, 22
    canvas = Image.new("RGB", (left + s * (tw + pad) + pad, top + r * (th + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    arr = (to_unit(tiles) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    for j, text in enumerate(header):
        x = left + pad + j * (tw + pad) + (tw - font.getlength(text)) / 2
        draw.text((x, 4), text, fill="black", font=font)
    for i in range(r):
        y = top + pad + i * (th + pad)
        for j in range(s):
            tile = Image.fromarray(np.ascontiguousarray(arr[i, j])).resize((tw, th), Image.NEAREST)
            canvas.paste(tile, (left + pad + j * (tw + pad), y))
    return canvas


def _reconstruction_metrics(rec: torch.Tensor, images: torch.Tensor, perceptual) -> dict[str, float]:
    """MSE, PSNR and SSIM on [0, 1] images (as ``invkit eval`` computes them) and toy-LPIPS."""
    a, b = to_unit(rec), to_unit(images)
    return {"mse": float(mse(a, b).mean()),
            "psnr_db": float(psnr(a, b).mean()), "ssim": float(ssim(a, b).mean()),
            "toy_lpips": float(perceptual(rec.clamp(-1, 1), images).mean())}


@torch.no_grad()
def run_demo(out_dir: str | os.PathLike = "invkit-demo", n_eval: int = 64, n_show: int = 6,
             log: Callable[[str], None] = print, assets: Path | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Invert ``n_eval`` held-out rendered faces with the shipped models, edit and mix them, and
    write ``out_dir/report.html`` with its PNGs and ``metrics.json``. Returns the numbers.

    Args:
        out_dir: the report folder (created). Existing report files there are refused unless
            ``overwrite``; nothing else in the folder is touched.
        n_eval: held-out images measured.
        n_show: images shown in the pictures (the first ``n_show`` of them).
        assets: a folder with the toy assets (default: the shipped ones).
    """
    from ..editing import edit_strip, mix
    from ..fs_encoder import load_encoder
    from ..loading import load_generator
    from .toy import (
        ATTRIBUTE_NET_FILE,
        ENCODER_FILE,
        GENERATOR_FILE,
        ToyPerceptual,
        assets_dir,
        load_attribute_net,
    )

    t0 = time.time()
    out = Path(out_dir)
    names = ["report.html", "metrics.json", "reconstruction.png", "edit_glasses.png", "mixing.png"]
    clash = [n for n in names if (out / n).exists()]
    if clash and not overwrite:
        raise FileExistsError(f"{out}: already holds {', '.join(clash)}; pass --overwrite to replace the report")
    folder = Path(assets or assets_dir())

    def path(name: str) -> Path:
        p = folder / name
        if not p.is_file():
            raise FileNotFoundError(f"{p}: toy asset missing (see docs/demo.md to rebuild it)")
        return p

    log(f"[1/5] loading the shipped models from {folder}")
    G = load_generator(path(GENERATOR_FILE))
    encoder = load_encoder(path(ENCODER_FILE), generator=G)
    net = load_attribute_net(path(ATTRIBUTE_NET_FILE))
    directions = dirs.load_directions(folder)
    perceptual = ToyPerceptual(net)
    out.mkdir(parents=True, exist_ok=True)

    log(f"[2/5] inverting {n_eval} held-out rendered faces (seeds from {toy_domain.HELD_OUT_START})")
    images, truth = dirs.rendered(n_eval, toy_domain.HELD_OUT_START)
    inv = dirs.invert_in_batches(encoder, images)
    ws, feats = inv.ws, inv.features
    rec_w = G.synthesize(ws)
    rec_wf = G.synthesize_from(encoder.k, feats, ws)
    readings = dirs.predict(net, rec_wf)  # what the read-back and every edit are measured from
    results: dict[str, Any] = {
        "n_eval": n_eval, "k": encoder.k, "feature_shape": list(feats.shape[1:]),
        "G(w)": _reconstruction_metrics(rec_w, images, perceptual),
        "G(w,F)": _reconstruction_metrics(rec_wf, images, perceptual),
        "perceptual_metric": "toy-LPIPS (LPIPS formula on the toy attribute net's features, uniform channel "
                             "weights; not AlexNet LPIPS)"}
    log(f"      {'':8s} {'MSE[0,1]':>9s} {'PSNR dB':>8s} {'SSIM':>6s} {'toy-LPIPS':>10s}")
    for key in ("G(w)", "G(w,F)"):
        m = results[key]
        log(f"      {key:8s} {m['mse']:9.5f} {m['psnr_db']:8.2f} {m['ssim']:6.3f} {m['toy_lpips']:10.4f}")
    results["read_back"] = _read_back(net, images, readings, truth)
    rb = results["read_back"]
    log(f"      attribute net on G(w, F): glasses agree with the input on {rb['glasses_agreement']:.0%}; "
        + ", ".join(f"{a} off by {rb[a]['rec_vs_input']:.3f} (its own error {rb[a]['input_vs_truth']:.3f})"
                    for a in READ_BACK))

    pictures: list[tuple[str, str, str]] = []

    def picture(name: str, image: Image.Image, title: str, caption: str) -> None:
        with atomic_path(out / name) as tmp:
            image.save(tmp, format="PNG")
        pictures.append((name, title, caption))

    show = list(range(min(n_show, n_eval)))
    picture("reconstruction.png", labelled_grid(torch.stack([images[show], rec_w[show], rec_wf[show]], 1),
                                                ["input", "G(w)", "G(w, F)"]),
            "Inversion", "each row: held-out rendered input | G(w), the W+ code alone | G(w, F), W+ and feature code")

    log("[3/5] toggling glasses along the conditioned InterFaceGAN direction")
    toggle = directions[dirs.TOGGLE_DIRECTION]
    g = dirs.measure_toggle(G, inv, toggle, net, toggle.strength, readings)
    edited = g.pop("edited")
    results["glasses_toggle"] = g
    log(f"      |alpha| = {toggle.strength:g}: flipped on {g['flip_rate']:.0%}; other attributes moved at most "
        f"{g['max_other_change']:.3f} of their range")
    picture("edit_glasses.png", labelled_grid(torch.stack([images[show], rec_wf[show], edited[show]], 1),
                                              ["input", "G(w, F)", f"toggled, |a|={toggle.strength:g}"]),
            "InterFaceGAN: glasses on / off",
            f"input | G(w, F) | glasses added where absent, removed where present (alpha = ±{toggle.strength:g}, "
            f"the glasses boundary made orthogonal to {', '.join(dirs.CONDITION_ATTRIBUTES)}; paper Eq. 1)")

    log("[4/5] editing strips (each direction at its calibrated strength)")
    results["strips"] = {}
    sub = inv[show]
    strip_names = [a for a in dirs.EDIT_ATTRIBUTES[1:] if a in directions]
    strip_names += sorted(n for n in directions if n.startswith("sefa_"))[:3]
    for name in strip_names:
        d = directions[name]
        s = d.strength or 3.0
        strengths = [-s, -s / 2, 0.0, s / 2, s]
        strip = edit_strip(G, sub, d, strengths)
        moved = dirs.measure_strip(G, inv, d, net, s, readings)
        results["strips"][name] = {"strength": s, "moved": moved}
        top = max(moved, key=moved.get)
        label = f"InterFaceGAN: {name}" if d.editor == "interfacegan" else f"SeFa: {name}"
        what = (f"{name} moved {moved[name]:.2f} of its range at ±{s:g}; the largest other change was "
                f"{max(v for k, v in moved.items() if k != name):.2f}" if name in moved else
                f"unsupervised; at ±{s:g} the attribute net sees {top} move most ({moved[top]:.2f} of its range)")
        log(f"      {name}: {what}")
        picture(f"edit_{name}.png", labelled_grid(strip, [f"a={a:+.3g}" if a else "G(w, F)" for a in strengths]),
                label, f"alpha from -{s:g} to +{s:g} (the direction's calibrated strength); {what}")

    log("[5/5] style mixing and the report")
    perm = [show[(i + 1) % len(show)] for i in range(len(show))]
    ab, _ = mix(G, inv[show], inv[perm])
    picture("mixing.png", labelled_grid(torch.stack([images[show], images[perm], ab], 1),
                                        ["A", "B", "G(w_B, F_A)"]),
            "Style mixing", f"A | B | G(w_B, F_A): A's feature code (its {feats.shape[-1]}x{feats.shape[-1]} "
                            f"structure at layer K) with B's W+ code for the layers after K")
    results["seconds"] = time.time() - t0
    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2) + "\n")
    report = _write_report(out, results, pictures)
    log(f"report: {report.resolve()}  ({results['seconds']:.1f} s)")
    results["report"] = str(report)
    return results


def _read_back(net, images: torch.Tensor, p_rec: dict[str, torch.Tensor], truth: torch.Tensor) -> dict[str, Any]:
    """Does the attribute net read the same attributes on G(w, F) (its readings ``p_rec``) as on
    the input? Glasses: the fraction of images where both readings agree; each of
    :data:`READ_BACK`: the mean absolute difference of the readings, next to the net's own mean
    error on the inputs."""
    p_in = dirs.predict(net, images)
    out: dict[str, Any] = {"glasses_agreement": float(((p_in["glasses"] > 0.5) == (p_rec["glasses"] > 0.5)).float().mean()),
                           "glasses_input_accuracy": float(((p_in["glasses"] > 0.5).float() == truth[:, 0]).float().mean())}
    for a in READ_BACK:
        t = truth[:, toy_domain.ATTRIBUTE_NAMES.index(a)]
        out[a] = {"rec_vs_input": float((p_rec[a] - p_in[a]).abs().mean()),
                  "input_vs_truth": float((p_in[a] - t).abs().mean())}
    return out


CAVEATS = [
    "The domain is procedural cartoon faces at 64 px, drawn by invkit's own renderer; the generator is a small "
    "StyleGAN2 fit to that renderer (docs/demo.md). Numbers here say nothing about FFHQ-scale models.",
    "The perceptual distance is toy-LPIPS (the LPIPS formula on the toy attribute net's features), not the "
    "calibrated AlexNet LPIPS: its values are not comparable with published LPIPS numbers.",
    "Edits are judged by the same small attribute net; it has its own error (shown in the read-back table).",
    "Each direction's strength was calibrated on training seeds, never on the held-out images shown here.",
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _write_report(out: Path, results: dict[str, Any], pictures: list[tuple[str, str, str]]) -> Path:
    rows = [[key, f"{m['mse']:.5f}", f"{m['psnr_db']:.2f}", f"{m['ssim']:.3f}", f"{m['toy_lpips']:.4f}"]
            for key, m in (("G(w)", results["G(w)"]), ("G(w, F)", results["G(w,F)"]))]
    rb = results["read_back"]
    read_rows = [["glasses", f"agree on {rb['glasses_agreement']:.0%} of images",
                  f"{rb['glasses_input_accuracy']:.0%} correct on inputs"]]
    read_rows += [[a, f"{rb[a]['rec_vs_input']:.3f}", f"{rb[a]['input_vs_truth']:.3f}"] for a in READ_BACK]
    g = results["glasses_toggle"]
    strip_rows = [[name, f"±{s['strength']:g}", f"{s['moved'][name]:.2f}" if name in s["moved"] else "n/a (unsupervised)",
                   max(((k, v) for k, v in s["moved"].items() if k != name), key=lambda kv: kv[1])[0]
                   + f" {max(v for k, v in s['moved'].items() if k != name):.2f}"]
                  for name, s in results["strips"].items()]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>invkit demo</title>",
        "<style>body{font-family:sans-serif;max-width:62em;margin:2em auto;padding:0 1em}"
        "img{image-rendering:pixelated;max-width:100%}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #999;padding:.3em .8em;text-align:right}.caveats{background:#fff8e0;"
        "padding:.5em 1em;border-left:4px solid #e0b000}</style></head><body>",
        "<h1>invkit demo: Feature-Style inversion and editing</h1>",
        f"<p>{results['n_eval']} held-out faces, rendered by the procedural renderer from seeds no model saw "
        f"(never sampled from the GAN), encoded into a W+ code w and a feature code F "
        f"({'x'.join(map(str, results['feature_shape']))}) at generator layer K = {results['k']}.</p>",
        "<h2>Reconstruction</h2>",
        _table(["", "MSE on [0, 1]", "PSNR (dB)", "SSIM", "toy-LPIPS"], rows),
        "<p>Mean over images; PSNR and SSIM per image on [0, 1] (as <code>invkit eval</code>).</p>",
        "<h3>Does G(w, F) keep the attributes?</h3>",
        _table(["attribute", "G(w, F) vs input (mean abs. difference)", "attribute net vs truth on inputs"],
               read_rows),
        "<h2>Edits</h2>",
        f"<p>Glasses toggle at |alpha| = {g['strength']:g}: flipped on {g['flip_rate']:.0%} of the "
        f"{results['n_eval']} images; the other attributes moved at most {g['max_other_change']:.3f} of their "
        f"range (glasses {g['glasses_change']:.2f}).</p>",
        _table(["direction", "strength", "own attribute moved", "largest other"], strip_rows),
        "<p>Moves are the attribute net's mean absolute change from G(w, F) at alpha = ±strength, as a "
        "fraction of each attribute's range (SeFa directions have no attribute of their own).</p>",
    ]
    for name, title, caption in pictures:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p>"
                     f"<img src='{html.escape(name)}' alt='{html.escape(title)}'>")
    parts.append("<h2>Caveats</h2><div class='caveats'><ul>"
                 + "".join(f"<li>{html.escape(c)}</li>" for c in CAVEATS) + "</ul></div>")
    parts.append(f"<p>Made in {results['seconds']:.1f} s by <code>invkit demo</code>.</p></body></html>")
    path = out / "report.html"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
    return path
