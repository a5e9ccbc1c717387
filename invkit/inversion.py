"""`Inversion`: the (w, F) codes of a batch of images, tied to the generator they belong to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .io import tensorfile

KIND = "inversion"


@dataclass
class Inversion:
    """Feature-Style codes of N images.

    Attributes:
        ws: ``[N, num_ws, w_dim]`` latent codes in W+.
        features: ``[N, C, H, W]`` the feature code F that replaces layer ``k``.
        k: the generator layer F replaces (see :class:`invkit.generator.LayerInfo`).
        generator_fingerprint: :meth:`Generator.fingerprint` of the generator they belong to.
        names: one label per image (usually the source file name).
        meta: anything else JSON-serialisable (encoder fingerprint, preprocessing, ...).
    """

    ws: torch.Tensor
    features: torch.Tensor
    k: int
    generator_fingerprint: str
    names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ws.ndim != 3 or self.features.ndim != 4 or self.ws.shape[0] != self.features.shape[0]:
            raise ValueError(
                f"Inversion needs ws [N, num_ws, w_dim] and features [N, C, H, W] with the same N, "
                f"got {list(self.ws.shape)} and {list(self.features.shape)}"
            )
        if not self.names:
            self.names = [str(i) for i in range(len(self))]
        if len(self.names) != len(self):
            raise ValueError(f"{len(self.names)} names for {len(self)} codes")

    def __len__(self) -> int:
        return self.ws.shape[0]

    def __getitem__(self, idx: int | slice | list[int]) -> Inversion:
        if isinstance(idx, int):
            idx = [idx]
        names = [self.names[i] for i in range(len(self))[idx]] if isinstance(idx, slice) else [self.names[i] for i in idx]
        return Inversion(self.ws[idx], self.features[idx], self.k, self.generator_fingerprint, names, dict(self.meta))

    def to(self, device: str | torch.device) -> Inversion:
        return Inversion(self.ws.to(device), self.features.to(device), self.k,
                         self.generator_fingerprint, list(self.names), dict(self.meta))

    @staticmethod
    def cat(items: list[Inversion]) -> Inversion:
        """Concatenate inversions of the same generator and layer."""
        if not items:
            raise ValueError("nothing to concatenate")
        first = items[0]
        for it in items[1:]:
            if (it.k, it.generator_fingerprint) != (first.k, first.generator_fingerprint):
                raise ValueError("cannot concatenate inversions of different generators or layers")
        return Inversion(
            torch.cat([it.ws for it in items]), torch.cat([it.features for it in items]), first.k,
            first.generator_fingerprint, [n for it in items for n in it.names], dict(first.meta),
        )

    def check_generator(self, generator) -> None:
        """Refuse a generator these codes were not made for."""
        fp = generator.fingerprint()
        if fp != self.generator_fingerprint:
            raise ValueError(
                f"inversion was made for generator {self.generator_fingerprint}, not {fp}: "
                f"invert the images again with this generator's encoder"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``ws``, ``features`` and the metadata as one safetensors file."""
        return tensorfile.save(
            path,
            {"ws": self.ws, "features": self.features},
            {"kind": KIND, "k": self.k, "generator_fingerprint": self.generator_fingerprint,
             "names": self.names, "meta": self.meta},
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Inversion:
        tensors, meta = tensorfile.load(path, kind=KIND, device=device)
        tensorfile.require_finite(tensors, path)
        try:
            return cls(tensors["ws"], tensors["features"], int(meta["k"]), meta["generator_fingerprint"],
                       list(meta["names"]), dict(meta.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise tensorfile.FileFormatError(f"{path}: malformed codes file ({type(exc).__name__}: {exc})") from None
