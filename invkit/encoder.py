"""The `Encoder` interface: images -> (W+ codes, feature code F at layer K)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from .inversion import Inversion


class Encoder(nn.Module, ABC):
    """An inversion encoder built for one generator.

    Subclasses set ``num_ws``, ``w_dim``, ``k`` (the generator layer F replaces),
    ``feature_shape`` (layer k's ``(C, H, W)``) and ``generator_fingerprint``.
    """

    num_ws: int
    w_dim: int
    k: int
    feature_shape: tuple[int, int, int]
    generator_fingerprint: str

    @abstractmethod
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images [B, 3, H, W]`` in [-1, 1] -> ``(ws [B, num_ws, w_dim], F [B, C, H', W'])``;
        F is None for a W+-only encoder (no feature code: the reconstruction is ``G(w)``)."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encode(images)

    @torch.no_grad()
    def invert(self, images: torch.Tensor, names: list[str] | None = None) -> Inversion:
        """Encode a batch into an :class:`Inversion` (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        try:
            ws, feats = self.encode(images)
        finally:
            self.train(was_training)
        return Inversion(ws, feats, self.k, self.generator_fingerprint, list(names or []))
