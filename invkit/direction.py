"""`Direction`: an editing direction in a latent space of one particular generator."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .io import tensorfile

KIND = "direction"
Space = Literal["z", "w", "w+"]


@dataclass
class Direction:
    """A direction ``d`` to move latent codes along: ``w' = w + strength * d``.

    Attributes:
        vector: ``[z_dim]`` (space "z"), ``[w_dim]`` (space "w": added to every ws row in
            ``layers``) or ``[num_ws, w_dim]`` (space "w+").
        space: "z", "w" or "w+".
        layers: the ws rows the edit applies to (empty: all rows).
        name: a short label (``"smiling"``, ``"sefa_0"``).
        editor: the editor that produced it (``"sefa"``, ``"interfacegan"``, ...).
        generator_fingerprint: :meth:`Generator.fingerprint` of its generator.
        attribute: the semantic attribute, when known.
        stats: eigenvalue, validation accuracy, ... (JSON-serialisable).
        strength: the calibrated |alpha| of a clear edit along this direction (None: unknown).
            Directions are unit vectors, so how far to move depends on the generator and the
            attribute; whoever fits a direction can measure it (``invkit directions`` stores the
            spread of the fitting codes along it; the demo's directions store the step that
            moves their attribute by a set amount). ``invkit edit`` and the demo strips span
            ``[-strength, strength]`` by default.
    """

    vector: torch.Tensor
    space: Space
    name: str
    editor: str
    generator_fingerprint: str
    layers: list[int] = field(default_factory=list)
    attribute: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.space not in ("z", "w", "w+"):
            raise ValueError(f"direction space must be 'z', 'w' or 'w+', got {self.space!r}")
        want = 2 if self.space == "w+" else 1
        if self.vector.ndim != want:
            raise ValueError(
                f"a {self.space!r} direction needs a {want}-D vector, got shape {list(self.vector.shape)}"
            )
        self.layers = [int(i) for i in self.layers]
        if self.strength is not None:
            self.strength = float(self.strength)
            if not (self.strength > 0 and self.strength < float("inf")):
                raise ValueError(f"direction {self.name!r}: strength must be a positive finite number, got {self.strength}")

    def check(self, generator) -> None:
        """Refuse a generator this direction was not made for, or a shape that does not fit."""
        fp = generator.fingerprint()
        if fp != self.generator_fingerprint:
            raise ValueError(
                f"direction {self.name!r} was made for generator {self.generator_fingerprint}, "
                f"not {fp}: directions only transfer between identical generators"
            )
        dim = generator.z_dim if self.space == "z" else generator.w_dim
        if self.vector.shape[-1] != dim:
            raise ValueError(f"direction {self.name!r} has size {self.vector.shape[-1]}, generator's {self.space} has {dim}")
        if self.space == "w+" and self.vector.shape[0] != generator.num_ws:
            raise ValueError(
                f"W+ direction {self.name!r} has {self.vector.shape[0]} rows, generator has {generator.num_ws} ws"
            )
        if any(not 0 <= i < generator.num_ws for i in self.layers):
            raise ValueError(f"direction {self.name!r} names ws rows {self.layers} outside 0..{generator.num_ws - 1}")

    def apply(self, ws: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        """``ws [B, num_ws, w_dim]`` moved by ``strength`` (a number or ``[B]``) along the direction.

        Only W and W+ directions apply to ``ws``; a Z direction must be applied to ``z`` before
        the mapping (:meth:`apply_z`).
        """
        if self.space == "z":
            raise ValueError(
                f"direction {self.name!r} lives in Z; it cannot be added to W/W+ codes "
                f"(apply it to z before the mapping, or fit the direction in W)"
            )
        if ws.ndim != 3:
            raise ValueError(f"ws must be [B, num_ws, w_dim], got {list(ws.shape)}")
        d = self.vector.to(ws)
        if self.space == "w+":
            if d.shape != ws.shape[1:]:
                raise ValueError(f"W+ direction {self.name!r} is {list(d.shape)}, codes are {list(ws.shape[1:])}")
            delta = d.clone()
        else:
            if d.shape[0] != ws.shape[2]:
                raise ValueError(f"W direction {self.name!r} has size {d.shape[0]}, codes have w_dim {ws.shape[2]}")
            delta = d.expand(ws.shape[1], -1).clone()
        if self.layers:
            mask = torch.zeros(ws.shape[1], 1, dtype=ws.dtype, device=ws.device)
            mask[self.layers] = 1
            delta = delta * mask
        s = torch.as_tensor(strength, dtype=ws.dtype, device=ws.device).reshape(-1, 1, 1)
        return ws + s * delta

    def apply_z(self, z: torch.Tensor, strength: float) -> torch.Tensor:
        """``z [B, z_dim]`` moved along a Z direction."""
        if self.space != "z":
            raise ValueError(f"direction {self.name!r} lives in {self.space.upper()}, not Z")
        return z + strength * self.vector.to(z)

    def __repr__(self) -> str:
        shape = "x".join(str(n) for n in self.vector.shape)
        strength = "" if self.strength is None else f", strength={self.strength:g}"
        return (f"Direction(name={self.name!r}, editor={self.editor!r}, space={self.space!r}, vector=[{shape}], "
                f"layers={self.layers}{strength}, generator={self.generator_fingerprint!r})")

    def save(self, path: str | os.PathLike) -> Path:
        return tensorfile.save(
            path,
            {"vector": self.vector},
            {"kind": KIND, "space": self.space, "name": self.name, "editor": self.editor,
             "generator_fingerprint": self.generator_fingerprint, "layers": self.layers,
             "attribute": self.attribute, "stats": self.stats, "strength": self.strength},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Direction:
        tensors, meta = tensorfile.load(path, kind=KIND)
        tensorfile.require_finite(tensors, path)
        strength = meta.get("strength")
        if strength is not None and not (isinstance(strength, (int, float)) and math.isfinite(strength)):
            raise tensorfile.FileFormatError(f"{path}: direction strength {strength!r} is not a finite number")
        try:
            return cls(tensors["vector"], meta["space"], meta["name"], meta["editor"],
                       meta["generator_fingerprint"], meta.get("layers", []), meta.get("attribute", ""),
                       meta.get("stats", {}), strength)
        except (KeyError, TypeError, ValueError) as exc:
            raise tensorfile.FileFormatError(f"{path}: malformed direction file ({type(exc).__name__}: {exc})") from None


def save_directions(directions: list[Direction], folder: str | os.PathLike) -> list[Path]:
    """Write each direction to ``folder/<name>.safetensors``; returns the paths."""
    folder = Path(folder)
    out = []
    for d in directions:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", d.name) or "direction"
        out.append(d.save(folder / f"{safe}.safetensors"))
    return out
