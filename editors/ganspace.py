"""GANSpace: principal components of the mapping network's output (Härkönen et al., 2020).

Many ``z`` are drawn with a fixed seed and mapped to ``w``; the principal axes of that cloud
are directions along which ``w`` really varies. GANSpace's main observation is that applying a
component to only some ws rows gives disentangled edits (early rows: pose and shape; late rows:
colour and lighting), so each direction carries the ws rows it applies to.

The covariance is only ``w_dim x w_dim``, so it is accumulated exactly over all samples in
float64 and eigendecomposed; no incremental PCA is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from invkit.direction import Direction, Space
from invkit.editing import as_wplus
from invkit.editor import Editor
from invkit.generator import Generator
from invkit.hookspecs import hookimpl


@torch.no_grad()
def sample_w(
    generator: Generator, samples: int, seed: int = 0, batch: int = 2048, truncation_psi: float = 1.0
) -> torch.Tensor:
    """``samples`` mapped codes ``w [samples, w_dim]`` (row 0 of each ``ws``) from
    ``z ~ N(0, I)`` drawn with a CPU generator seeded ``seed`` (the same on every machine)."""
    rng = torch.Generator().manual_seed(seed)
    device = generator.w_avg.device
    out = []
    for start in range(0, samples, batch):
        z = torch.randn(min(batch, samples - start), generator.z_dim, generator=rng)
        out.append(generator.mapping(z.to(device), truncation_psi=truncation_psi)[:, 0].cpu())
    return torch.cat(out)


def principal_components(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of ``w [n, D]``: ``(mean [D], components [k, D] unit, variances [k])``.

    Components come in decreasing variance order; each is signed so that its largest-magnitude
    entry is positive (principal axes have no sign of their own).
    """
    if w.ndim != 2 or len(w) < 2:
        raise ValueError(f"PCA needs [n >= 2, D] samples, got {list(w.shape)}")
    x = w.detach().to("cpu", torch.float64)
    mean = x.mean(dim=0)
    xc = x - mean
    cov = xc.T @ xc / (len(x) - 1)
    variances, vectors = torch.linalg.eigh(cov)
    order = torch.argsort(variances, descending=True)[: max(1, min(k, len(variances)))]
    comps = vectors[:, order].T
    idx = comps.abs().argmax(dim=1, keepdim=True)
    comps = comps * torch.where(comps.gather(1, idx) < 0, -1.0, 1.0)
    return mean, comps, variances[order]


class GANSpaceEditor(Editor):
    """Directions from PCA of sampled ``w``, each applied to a range of ws rows."""

    name = "ganspace"

    def fit(
        self,
        generator: Generator,
        components: int = 10,
        layers: Sequence[int] | None = None,
        samples: int = 20_000,
        seed: int = 0,
        space: Space = "w",
        truncation_psi: float = 1.0,
    ) -> list[Direction]:
        """The first ``components`` principal axes of W, restricted to the ws rows ``layers``.

        Args:
            generator: any adapter.
            components: how many directions (largest variance first).
            layers: ws rows the edits apply to (all when None); GANSpace's per-component layer
                ranges are made by fitting once per range, or by editing ``Direction.layers``.
            samples / seed: how many ``z`` to map, and the seed that draws them.
            space: "w" (``[w_dim]`` added to the rows ``layers``) or "w+" (the same edit as a unit
                ``[num_ws, w_dim]`` tensor).

        Returns:
            Directions ``ganspace_00, ...`` with stats ``variance``, ``std`` (one standard
            deviation of W along the axis: a natural unit for the edit strength), ``explained``
            (fraction of the total variance), ``samples`` and ``seed``.
        """
        if space not in ("w", "w+"):
            raise ValueError(f"GANSpace directions live in W or W+, not {space!r}")
        if samples < 2:
            raise ValueError(f"GANSpace needs at least 2 samples, got {samples}")
        rows = sorted(set(int(i) for i in layers)) if layers is not None else list(range(generator.num_ws))
        bad = [i for i in rows if not 0 <= i < generator.num_ws]
        if bad:
            raise ValueError(f"ws rows {bad} out of range: this generator has rows 0..{generator.num_ws - 1}")
        w = sample_w(generator, samples, seed, truncation_psi=truncation_psi)
        _, comps, variances = principal_components(w, components)
        total = float(w.double().var(dim=0).sum())
        fp = generator.fingerprint()
        out = []
        for i, (var, vec) in enumerate(zip(variances.tolist(), comps)):
            d = Direction(
                vec.float(), "w", f"ganspace_{i:02d}", self.name, fp, layers=rows,
                stats={"variance": var, "std": max(var, 0.0) ** 0.5, "explained": var / total if total else 0.0,
                       "rank": i, "samples": samples, "seed": seed, "truncation_psi": truncation_psi},
            )
            out.append(as_wplus(d, generator.num_ws) if space == "w+" else d)
        return out


@hookimpl
def register_editors(register):
    register("ganspace", GANSpaceEditor, description="principal components of mapped w (GANSpace)")
