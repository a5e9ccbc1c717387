"""An example invkit editor plugin: the difference between the mean codes of two labelled groups.

Its ``inputs`` make it usable from the command line with no code in invkit::

    invkit directions groupdiff --codes out/codes.safetensors --labels labels.csv \
        --attribute smiling --layers 0-5 --out dirs/
"""

from __future__ import annotations

import math

import torch

from invkit import Direction, Editor
from invkit.editor import EditorInput
from invkit.hookspecs import hookimpl


class GroupDifference(Editor):
    name = "groupdiff"
    inputs = (
        EditorInput("codes", "codes", "codes file written by `invkit invert`", required=True),
        EditorInput("labels", "labels", "CSV with a 'name' column and the attribute's column", required=True),
        EditorInput("layers", "rows", "ws rows the direction applies to (default: all)"),
        EditorInput("threshold", "float", "labels above this are the positive group", default=0.5),
        EditorInput("space", "str", "latent space of the direction", default="w", choices=("w", "w+")),
    )

    def fit(self, codes, labels, layers=None, threshold=0.5, space="w"):
        """``codes``: an invkit.Inversion; ``labels``: one float per code (NaN = unlabelled)."""
        y = torch.tensor(labels, dtype=torch.float64)
        known = ~torch.isnan(y)
        pos, neg = known & (y > threshold), known & (y <= threshold)
        if not pos.any() or not neg.any():
            return []  # nothing to compare: invkit reports "returned no directions"
        rows = list(layers) if layers else list(range(codes.ws.shape[1]))
        ws = codes.ws.double()[:, rows]
        diff = ws[pos].mean(0) - ws[neg].mean(0)  # [rows, w_dim]
        if space == "w":
            vec = diff.mean(0)
        else:
            vec = torch.zeros(codes.ws.shape[1:], dtype=torch.float64)
            vec[rows] = diff
        vec = (vec / vec.norm()).float()
        stats = {"n_pos": int(pos.sum()), "n_neg": int(neg.sum()), "gap": float(diff.norm() / math.sqrt(len(rows)))}
        return [Direction(vec, space, f"groupdiff_{space.replace('+', 'plus')}", self.name,
                          codes.generator_fingerprint, rows, stats=stats)]


@hookimpl
def register_editors(register):
    register("groupdiff", GroupDifference, description="mean code difference of two labelled groups")
