"""Draw a training run's loss curves from its ``log.jsonl`` as a PNG (Pillow only).

::

    python -m invkit.recipes.toy_curve runs/toy_encoder/log.jsonl --out docs/images/toy_encoder_curve.png \\
        --terms total mse_real lpips_wf lpips_w

Used for docs/demo.md's convergence picture; works for any log.jsonl of the training engine (or
of ``toy_fit``, with ``--x kimg``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def read_log(path: str | Path, x: str, terms: list[str]) -> dict[str, list[tuple[float, float]]]:
    """``{term: [(x, value), ...]}`` for the positive values of each term in a JSON-lines log."""
    out: dict[str, list[tuple[float, float]]] = {t: [] for t in terms}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        for t in terms:
            v = record.get(t)
            if isinstance(v, (int, float)) and v > 0 and x in record:
                out[t].append((float(record[x]), float(v)))
    return out


def draw(curves: dict[str, list[tuple[float, float]]], x_label: str, title: str,
         size: tuple[int, int] = (720, 420)) -> Image.Image:
    """A log-scale line plot of ``curves`` with a legend."""
    w, h = size
    left, right, top, bottom = 70, 20, 36, 46
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    points = [p for c in curves.values() for p in c]
    if not points:
        raise ValueError("nothing to draw: no positive values of the requested terms")
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    lo = math.floor(math.log10(min(p[1] for p in points)))
    hi = math.ceil(math.log10(max(p[1] for p in points)))
    hi = max(hi, lo + 1)

    def px(xv: float, yv: float) -> tuple[float, float]:
        fx = (xv - x0) / max(x1 - x0, 1e-12)
        fy = (math.log10(yv) - lo) / (hi - lo)
        return left + fx * (w - left - right), top + (1 - fy) * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for e in range(lo, hi + 1):
        _, y = px(x0, 10.0 ** e)
        d.line([left, y, w - right, y], fill="#dddddd")
        d.text((6, y - 7), f"1e{e}", fill="black", font=font)
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        x, _ = px(xv, 10.0 ** lo)
        d.text((x - 15, h - bottom + 6), f"{xv:g}", fill="black", font=font)
    d.text(((w - font.getlength(x_label)) / 2, h - 20), x_label, fill="black", font=font)
    d.text((left, 10), title, fill="black", font=font)
    for i, (name, curve) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        if len(curve) > 1:
            d.line([px(*p) for p in curve], fill=colour, width=2)
        lx = w - right - 150
        ly = top + 8 + 16 * i
        d.line([lx, ly + 7, lx + 20, ly + 7], fill=colour, width=3)
        d.text((lx + 26, ly), name, fill="black", font=font)
    return img


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invkit.recipes.toy_curve", description=__doc__.split("\n")[0])
    p.add_argument("log", help="a log.jsonl")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--terms", nargs="+", default=["total"], help="logged keys to draw (default total)")
    p.add_argument("--x", default="step", help="logged key of the x axis (default step)")
    p.add_argument("--title", default="", help="title above the plot")
    args = p.parse_args(argv)
    draw(read_log(args.log, args.x, args.terms), args.x, args.title or args.log).save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
