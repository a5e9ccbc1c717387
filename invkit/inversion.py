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
        features: ``[N, C, H, W]`` the feature code F that replaces layer ``k``, or None for codes
            without one (a W+-only encoder, W / W+ projection): their image is ``G(w)``.
        k: the generator layer F replaces (see :class:`invkit.generator.LayerInfo`).
        generator_fingerprint: :meth:`Generator.fingerprint` of the generator they belong to.
        names: one label per image (usually the source file name).
        meta: anything else JSON-serialisable (encoder fingerprint, preprocessing, ...).
    """

    ws: torch.Tensor
    features: torch.Tensor | None
    k: int
    generator_fingerprint: str
    names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.features
        if self.ws.ndim != 3 or (f is not None and (f.ndim != 4 or self.ws.shape[0] != f.shape[0])):
            raise ValueError(
                f"Inversion needs ws [N, num_ws, w_dim] and features [N, C, H, W] (or None) with the same N, "
                f"got {list(self.ws.shape)} and {None if f is None else list(f.shape)}"
            )
        if not self.names:
            self.names = [str(i) for i in range(len(self))]
        if len(self.names) != len(self):
            raise ValueError(f"{len(self.names)} names for {len(self)} codes")

    @property
    def has_features(self) -> bool:
        """Whether the codes carry a feature code F (else their image is ``G(w)``)."""
        return self.features is not None

    def __len__(self) -> int:
        return self.ws.shape[0]

    def _with(self, ws: torch.Tensor, features: torch.Tensor | None, names: list[str]) -> Inversion:
        return Inversion(ws, features, self.k, self.generator_fingerprint, names, dict(self.meta))

    def __getitem__(self, idx: int | slice | list[int]) -> Inversion:
        if isinstance(idx, int):
            idx = [idx]
        names = [self.names[i] for i in range(len(self))[idx]] if isinstance(idx, slice) else [self.names[i] for i in idx]
        return self._with(self.ws[idx], None if self.features is None else self.features[idx], names)

    def to(self, device: str | torch.device) -> Inversion:
        return self._with(self.ws.to(device), None if self.features is None else self.features.to(device),
                          list(self.names))

    @staticmethod
    def cat(items: list[Inversion]) -> Inversion:
        """Concatenate inversions of the same generator and layer (all with F, or all without)."""
        if not items:
            raise ValueError("nothing to concatenate")
        first = items[0]
        for it in items[1:]:
            if (it.k, it.generator_fingerprint) != (first.k, first.generator_fingerprint):
                raise ValueError("cannot concatenate inversions of different generators or layers")
            if it.has_features != first.has_features:
                raise ValueError("cannot concatenate inversions with and without feature codes")
        feats = torch.cat([it.features for it in items]) if first.has_features else None
        return first._with(torch.cat([it.ws for it in items]), feats, [n for it in items for n in it.names])

    def check_generator(self, generator) -> None:
        """Refuse a generator these codes were not made for."""
        fp = generator.fingerprint()
        if fp != self.generator_fingerprint:
            raise ValueError(
                f"inversion was made for generator {self.generator_fingerprint}, not {fp}: "
                f"invert the images again with this generator's encoder"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``ws``, ``features`` (when present) and the metadata as one safetensors file."""
        tensors = {"ws": self.ws} if self.features is None else {"ws": self.ws, "features": self.features}
        return tensorfile.save(
            path, tensors,
            {"kind": KIND, "k": self.k, "generator_fingerprint": self.generator_fingerprint,
             "names": self.names, "meta": self.meta},
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Inversion:
        tensors, meta = tensorfile.load(path, kind=KIND, device=device)
        tensorfile.require_finite(tensors, path)
        try:
            return cls(tensors["ws"], tensors.get("features"), int(meta["k"]), meta["generator_fingerprint"],
                       list(meta["names"]), dict(meta.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise tensorfile.FileFormatError(f"{path}: malformed codes file ({type(exc).__name__}: {exc})") from None
