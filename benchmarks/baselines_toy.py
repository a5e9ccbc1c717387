"""The paper's comparisons on the demo domain (docs/baselines.md): held-out renders to invert, and
the table of an ``invkit bench`` JSON with the issue's targets checked.

    python benchmarks/baselines_toy.py render --n 32 --out runs/heldout32
    invkit bench -g toy -e fs=toy -e wplus=runs/toy_encoder_wplus/encoder.safetensors \\
        -p "W+ opt=w+:steps=500" -p "W+F opt=w+f:steps=500" -i runs/heldout32 --with-w \\
        --metrics mse,psnr,ssim,lpips --out runs/baselines.json
    python benchmarks/baselines_toy.py table runs/baselines.json

``render`` writes ``toy_domain.render`` of seeds ``HELD_OUT_START ..`` (never seen by any shipped
model, nor by the W+-only encoder) as PNGs. ``table`` prints the rows as a Markdown table and
whether each target holds: the FS encoder's G(w, F) within 1 dB PSNR of W+ optimisation at >= 50x
its speed; its perceptual distance >= 40 % below the W+-only encoder's; W+F optimisation above
every other row in PSNR and SSIM and below them in perceptual distance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROWS = {"fs": "fs G(w,F)", "wplus": "wplus G(w)", "w_opt": "W+ opt G(w)", "wf_opt": "W+F opt G(w,F)"}


def render(n: int, out: Path, first: int | None = None) -> None:
    from invkit.recipes import toy_domain

    out.mkdir(parents=True, exist_ok=True)
    start = toy_domain.HELD_OUT_START if first is None else first
    for i in range(n):
        toy_domain.render(toy_domain.attributes_for_seed(start + i)).save(out / f"heldout_{start + i}.png")
    print(f"{n} held-out renders (seeds {start}..{start + n - 1}) -> {out}")


def table(report_path: Path) -> int:
    report = json.loads(report_path.read_text())
    rows = report["rows"]
    print(f"{report['protocol']['selection']}, {report['protocol']['resolution']} px; {report['protocol']['lpips']}\n")
    print("| inverter | PSNR (dB) | SSIM | MSE on [0, 1] | perceptual | s/image |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        secs = r.get("seconds_per_image")
        print(f"| {name} | {r['psnr']['mean']:.2f} | {r['ssim']['mean']:.3f} | {r['mse']['mean']:.5f} | "
              f"{r['lpips']['mean']:.4f} | {'-' if secs is None else f'{secs:.4g}'} |")
    missing = [v for v in ROWS.values() if v not in rows]
    if missing:
        print(f"\nno target check: rows {missing} missing (label them as in this script's docstring)")
        return 1
    fs, wp, wo, wf = (rows[ROWS[k]] for k in ("fs", "wplus", "w_opt", "wf_opt"))
    gap = wo["psnr"]["mean"] - fs["psnr"]["mean"]
    speed = wo["seconds_per_image"] / fs["seconds_per_image"]
    cut = 1 - fs["lpips"]["mean"] / wp["lpips"]["mean"]
    others = [fs, wp, wo]
    best = all(wf["psnr"]["mean"] > o["psnr"]["mean"] and wf["ssim"]["mean"] > o["ssim"]["mean"]
               and wf["lpips"]["mean"] < o["lpips"]["mean"] for o in others)
    checks = [
        (gap <= 1.0 and speed >= 50, f"FS G(w, F) {gap:.2f} dB below W+ optimisation (<= 1), {speed:.0f}x faster (>= 50)"),
        (cut >= 0.4, f"FS perceptual distance {100 * cut:.0f} % below the W+-only encoder's (>= 40 %)"),
        (best, "W+F optimisation above every other row in PSNR and SSIM, below in perceptual distance"),
    ]
    print()
    for ok, text in checks:
        print(f"- {'met' if ok else 'NOT met'}: {text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/baselines_toy.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="held-out toy renders as PNGs")
    r.add_argument("--n", type=int, default=32)
    r.add_argument("--first", type=int, default=None, help="first seed (default toy_domain.HELD_OUT_START)")
    r.add_argument("--out", required=True)
    t = sub.add_parser("table", help="Markdown table and target checks of an invkit bench JSON")
    t.add_argument("report")
    args = p.parse_args(argv)
    if args.cmd == "render":
        render(args.n, Path(args.out), args.first)
        return 0
    return table(Path(args.report))


if __name__ == "__main__":
    sys.exit(main())
