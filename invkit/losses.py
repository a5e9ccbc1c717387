"""The Feature-Style encoder's training losses (paper Eq. 2-8).

For a batch of target images ``x`` (synthetic ones with known ``w`` and noise, and real ones),
the encoder gives ``(w, F)`` and the generator two reconstructions, ``G(w)`` and ``G(w, F)``.
The terms, as :class:`FeatureStyleLoss` returns them:

========== ======================================================================== ==========
key        term                                                                     weight
========== ======================================================================== ==========
mse        ``||x - G(w)||^2`` (mean), synthetic images only                         ``mse`` (1)
lpips      ``sum_{i=0..2} LPIPS(down_i(x), down_i(G(w)))`` + the same for ``G(w, F)``;  lambda1 = 0.2
           ``down_i`` = ``i`` bilinear halvings (scales 1, 1/2, 1/4)
feature    ``||F - G_K(w)||^2`` (mean), ``G_K(w)`` detached (a target, not a path) lambda2 = 0.01
identity   faces: ``sum_{l=1..5} (1 - cos(A_l(x), A_l(y)))`` over ArcFace's 4 stage     lambda3 = 0.1
           outputs and its embedding, for ``y = G(w)`` and ``y = G(w, F)``
parsing    faces: ``sum_{j=1..3} (1 - cos(P_j(x), P_j(y)))`` over BiSeNet's 3 output    lambda4 = 0.1
           heads, for ``y = G(w)`` and ``y = G(w, F)``
mse_real   ``||x - G(w)||^2 + ||x - G(w, F)||^2`` (means) on every image, real ones    ``mse_real`` (0)
           included; off in the paper's objective, used by recipes whose perceptual
           network is weak (the ``toy`` recipe)
total      ``mse + lambda1 lpips + lambda2 feature + lambda3 identity + lambda4 parsing
           + mse_real mse_real``
========== ======================================================================== ==========

The lambda values and their assignment are those of the paper and of the official release's
training configuration (``lpips: 0.2, f_recon: 0.01, id: 0.1, landmark: 0.1``, pixel loss 1).
Per-reconstruction parts are logged too (``lpips_w``, ``lpips_wf``, ``identity_w``, ...).
Every term is a mean over the images it applies to. Cosines are over flattened activations.

Differences from the official code, on purpose: the auxiliary networks (LPIPS, ArcFace, BiSeNet)
are frozen here (no parameter requires grad, so nothing accumulates ``.grad`` on them) and kept
in eval mode; images are resized to ArcFace's 112x112 with an antialiased bilinear filter
instead of nearest-neighbour; targets' auxiliary features are computed without a graph.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .nets.arcface import ArcFace
from .nets.bisenet import BiSeNet
from .nets.lpips import LPIPS


@dataclass
class LossWeights:
    """Weights of the loss terms (paper values by default; see the module table)."""

    mse: float = 1.0
    lpips: float = 0.2     # lambda1
    feature: float = 0.01  # lambda2
    identity: float = 0.1  # lambda3
    parsing: float = 0.1   # lambda4
    mse_real: float = 0.0  # pixel term on both reconstructions of every image (not in the paper)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad = False`` on every parameter: gradients still flow through
    the module to its inputs, but none is stored on it."""
    return module.eval().requires_grad_(False)


def downscale(images: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` bilinear halvings (the official multi-scale LPIPS pyramid)."""
    for _ in range(times):
        images = F.interpolate(images, scale_factor=0.5, mode="bilinear", align_corners=False)
    return images


def pyramid_levels(images: torch.Tensor, min_size: int, scales: int) -> int:
    """How many of the first ``scales`` pyramid levels (level i: ``i`` halvings) of ``images
    [B, C, H, W]`` are at least ``min_size`` px on their short side."""
    side = min(images.shape[-2:])
    return next((i for i in range(scales) if side / 2 ** i < min_size), scales)


def multiscale_distance(net: nn.Module, x: torch.Tensor, y: torch.Tensor, levels: int) -> torch.Tensor:
    """``sum_{i < levels} net(down_i(x), down_i(y))`` per image ``[B]``: the multi-scale
    perceptual distance of the objective (``net`` as LPIPS: ``[B, 3, H, W]`` pairs in [-1, 1] ->
    ``[B]``; ``levels`` from :func:`pyramid_levels`)."""
    total = x.new_zeros(x.shape[0])
    for i in range(levels):
        total = total + net(downscale(x, i), downscale(y, i)).reshape(x.shape[0])
    return total


def cosine_distance_sum(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """``sum_l (1 - cos(a_l, b_l))`` per sample ``[B]``, activations flattened per sample."""
    return sum(1 - F.cosine_similarity(x.flatten(1), y.flatten(1), dim=1, eps=1e-6) for x, y in zip(a, b))


class FeatureStyleLoss(nn.Module):
    """All training terms of the Feature-Style encoder.

    Args:
        lpips: an :class:`~invkit.nets.lpips.LPIPS` (AlexNet in the paper).
        weights: :class:`LossWeights`.
        arcface: enables the multi-layer identity loss (faces).
        parser: enables the multi-layer parsing loss (faces).
        lpips_scales: pyramid levels of the LPIPS term (3: scales 1, 1/2, 1/4). Levels whose
            images would be smaller than the LPIPS trunk accepts are skipped with a warning
            (only happens for tiny test generators).
    """

    def __init__(self, lpips: LPIPS, weights: LossWeights | None = None, arcface: ArcFace | None = None,
                 parser: BiSeNet | None = None, lpips_scales: int = 3):
        super().__init__()
        self.weights = weights or LossWeights()
        self.lpips = freeze(lpips)
        self.arcface = freeze(arcface) if arcface is not None else None
        self.parser = freeze(parser) if parser is not None else None
        self.lpips_scales = int(lpips_scales)
        self._warned = False

    def train(self, mode: bool = True) -> FeatureStyleLoss:
        # The auxiliary networks are fixed metrics: BatchNorm must keep its running statistics.
        super().train(mode)
        for net in (self.lpips, self.arcface, self.parser):
            if net is not None:
                net.eval()
        return self

    # ---- terms --------------------------------------------------------------------------
    def multiscale_lpips(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum_i mean_b LPIPS(down_i(x), down_i(y))`` over the pyramid levels (scalar)."""
        levels = pyramid_levels(x, self.lpips.min_size, self.lpips_scales)
        if levels < self.lpips_scales and not self._warned:
            warnings.warn(f"multi-scale LPIPS: {list(x.shape[-2:])} images are too small for "
                          f"level {levels} and below; those levels are skipped", stacklevel=2)
            self._warned = True
        return multiscale_distance(self.lpips, x, y, levels).mean()

    def forward(
        self,
        x: torch.Tensor,
        rec_w: torch.Tensor,
        rec_wf: torch.Tensor,
        feats: torch.Tensor | None,
        feats_target: torch.Tensor | None,
        synthetic_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Every term (scalars) and the weighted ``"total"``.

        Args:
            x: target images ``[B, 3, H, W]`` in [-1, 1].
            rec_w: ``G(w)``, same shape. rec_wf: ``G(w, F)``, same shape.
            feats: the encoder's ``F`` ``[B, C, h, w]``; None for a W+-only encoder (the
                ``feature`` term is then 0, and the engine passes ``rec_wf = rec_w``).
            feats_target: ``G_K(w)`` for the encoder's ``w``, same shape (detached here), or None.
            synthetic_mask: bool ``[B]``, True for synthetic images (None: all real).
        """
        if rec_w.shape != x.shape or rec_wf.shape != x.shape:
            raise ValueError(f"reconstructions {list(rec_w.shape)}, {list(rec_wf.shape)} must match x {list(x.shape)}")
        if feats is not None and (feats_target is None or feats.shape != feats_target.shape):
            raise ValueError(f"F {list(feats.shape)} and G_K(w) "
                             f"{None if feats_target is None else list(feats_target.shape)} differ in shape")
        x = x.detach()
        zero = x.new_zeros(())
        out: dict[str, torch.Tensor] = {}

        if synthetic_mask is not None and bool(synthetic_mask.any()):
            mask = synthetic_mask.to(device=x.device, dtype=torch.bool)
            out["mse"] = F.mse_loss(rec_w[mask], x[mask])
        else:
            out["mse"] = zero

        if self.weights.mse_real > 0:
            out["mse_real"] = F.mse_loss(rec_w, x) + F.mse_loss(rec_wf, x)
        else:
            out["mse_real"] = zero
        out["lpips_w"] = self.multiscale_lpips(x, rec_w)
        out["lpips_wf"] = self.multiscale_lpips(x, rec_wf)
        out["lpips"] = out["lpips_w"] + out["lpips_wf"]

        out["feature"] = zero if feats is None else F.mse_loss(feats, feats_target.detach())

        for name, net in (("identity", self.arcface), ("parsing", self.parser)):
            if net is None:
                out[f"{name}_w"] = out[f"{name}_wf"] = out[name] = zero
                continue
            levels = net.multi_level if name == "identity" else (lambda im, n=net: list(n(im)))
            with torch.no_grad():
                target = levels(x)
            out[f"{name}_w"] = cosine_distance_sum(levels(rec_w), target).mean()
            out[f"{name}_wf"] = cosine_distance_sum(levels(rec_wf), target).mean()
            out[name] = out[f"{name}_w"] + out[f"{name}_wf"]

        w = self.weights
        out["total"] = (w.mse * out["mse"] + w.lpips * out["lpips"] + w.feature * out["feature"]
                        + w.identity * out["identity"] + w.parsing * out["parsing"] + w.mse_real * out["mse_real"])
        return out
