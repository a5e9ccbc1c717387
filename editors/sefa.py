"""SeFa: closed-form factorization of a style-based generator's latent space (Shen & Zhou, 2021).

Every synthesis layer turns its row of ``ws`` into a style ``s = A w + b``. A move ``w -> w + d``
changes the styles by ``A d``, so the unit directions that change the styles the most are the
top eigenvectors of ``AᵀA``, where ``A`` stacks the affine matrices of the chosen layers. SeFa
needs nothing but the weights: no sampling, no labels.

The layers are chosen by **ws row** (``--layers 0-3`` means "the layers that read ``ws[:, 0:4]``"),
because that is also where the resulting direction is applied. ToRGB affines share their row
with the next block's first conv; like the reference implementations they are left out unless
``include_torgb=True``. Only :meth:`invkit.Generator.style_affines` is used, so SeFa works on every
adapter that exposes its affines.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from invkit.direction import Direction, Space
from invkit.editing import as_wplus
from invkit.editor import Editor
from invkit.generator import Generator, StyleAffine
from invkit.hookspecs import hookimpl


def is_torgb(affine: StyleAffine) -> bool:
    """Whether an affine feeds a ToRGB layer: its ``torgb`` flag, or (for adapters written
    before the flag) ``torgb``/``to_rgb`` in its name."""
    return bool(getattr(affine, "torgb", False)) or "rgb" in affine.name.lower()


def select_affines(
    affines: Sequence[StyleAffine], layers: Sequence[int] | None, include_torgb: bool = False
) -> list[StyleAffine]:
    """The affines that read one of the ws rows ``layers`` (all rows when None)."""
    rows = None if layers is None else set(int(i) for i in layers)
    chosen = [
        a for a in affines
        if (rows is None or a.w_index in rows) and (include_torgb or not is_torgb(a))
    ]
    if not chosen:
        have = sorted({a.w_index for a in affines})
        raise ValueError(f"no style affine reads ws rows {sorted(rows or [])}; this generator's affines read rows {have}")
    return chosen


def factorize(
    weights: Sequence[torch.Tensor], top: int | None = None, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decompose ``AᵀA`` for ``A`` = the row-wise stack of ``weights``.

    Args:
        weights: affine matrices ``[C_i, w_dim]`` (same ``w_dim``).
        top: keep the ``top`` largest eigenpairs (all ``w_dim`` when None).
        normalize: scale every row of ``A`` (one output channel's weights) to unit length first,
            as the SeFa authors' released code does; the paper's formula uses ``A`` as is.

    Returns:
        ``(eigenvalues [k], directions [k, w_dim])``: eigenvalues in decreasing order (float64),
        directions unit-length (float32), each signed so that its largest-magnitude component is
        positive (eigenvectors have no sign of their own; this makes results reproducible).
    """
    A = torch.cat([w.detach().to("cpu", torch.float64) for w in weights], dim=0)
    if normalize:
        A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # AᵀA is only w_dim x w_dim (512 x 512 for every StyleGAN), so a symmetric eigensolver on
    # it is far cheaper than an SVD of the tall A and exact in float64.
    eigenvalues, vectors = torch.linalg.eigh(A.T @ A)
    order = torch.argsort(eigenvalues, descending=True)
    k = len(order) if top is None else min(int(top), len(order))
    if k < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    eigenvalues, vectors = eigenvalues[order[:k]], vectors[:, order[:k]].T
    vectors = vectors * _sign_of_largest(vectors)
    return eigenvalues, vectors.float()


def _sign_of_largest(vectors: torch.Tensor) -> torch.Tensor:
    """``[k, 1]`` of +-1: the sign of each row's largest-magnitude entry."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    return torch.sign(vectors.gather(1, idx)).clamp(min=0) * 2 - 1


class SefaEditor(Editor):
    """Directions from the generator's weights alone (closed-form factorization)."""

    name = "sefa"

    def fit(
        self,
        generator: Generator,
        layers: Sequence[int] | None = None,
        top: int = 10,
        space: Space = "w",
        include_torgb: bool = False,
        normalize: bool = False,
    ) -> list[Direction]:
        """The ``top`` SeFa directions for the ws rows ``layers``.

        Args:
            generator: any adapter that implements ``style_affines()``.
            layers: ws rows whose affines are factorized, and where the edit applies (all rows
                when None).
            top: how many directions (largest eigenvalues first).
            space: "w" (a ``[w_dim]`` vector added to the rows ``layers``) or "w+" (the same edit
                as a unit ``[num_ws, w_dim]`` tensor, zero outside ``layers``).
            include_torgb: also factorize the ToRGB affines.
            normalize: unit-normalize each affine row first (the SeFa authors' code does).

        Returns:
            Directions ``sefa_00, sefa_01, ...`` with stats ``eigenvalue``, ``rank``,
            ``explained`` (eigenvalue / trace of ``AᵀA``) and the factorized affine names.
        """
        if space not in ("w", "w+"):
            raise ValueError(f"SeFa directions live in W or W+, not {space!r}")
        rows = sorted(set(int(i) for i in layers)) if layers is not None else list(range(generator.num_ws))
        bad = [i for i in rows if not 0 <= i < generator.num_ws]
        if bad:
            raise ValueError(f"ws rows {bad} out of range: this generator has rows 0..{generator.num_ws - 1}")
        chosen = select_affines(generator.style_affines(), rows, include_torgb)
        weights = [a.weight for a in chosen]
        eigenvalues, vectors = factorize(weights, top=top, normalize=normalize)
        # trace(AᵀA) = sum of squared entries of A (= its row count once rows are unit length)
        trace = float(sum(w.shape[0] for w in weights)) if normalize else float(
            sum((w.detach().double() ** 2).sum() for w in weights))
        fp = generator.fingerprint()
        out = []
        for i, (ev, vec) in enumerate(zip(eigenvalues.tolist(), vectors)):
            d = Direction(
                vec, "w", f"sefa_{i:02d}", self.name, fp, layers=rows,
                stats={"eigenvalue": ev, "rank": i, "explained": ev / trace if trace else 0.0,
                       "normalize": normalize, "affines": [a.name for a in chosen]},
            )
            out.append(as_wplus(d, generator.num_ws) if space == "w+" else d)
        return out


@hookimpl
def register_editors(register):
    register("sefa", SefaEditor, description="closed-form factorization of the style affines (SeFa)")
