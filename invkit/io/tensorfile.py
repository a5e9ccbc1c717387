"""invkit's own file format: safetensors with a JSON document in the header metadata.

Every file invkit writes (generators, encoders, inversions, directions, training checkpoints) is
one ``.safetensors`` file whose ``__metadata__`` holds ``{"invkit": "<json>"}``. The JSON says
what the file is (``"kind"``) and everything needed to rebuild it. One file means the tensors
and their description can never get out of sync; writes are atomic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path

META_KEY = "invkit"
FORMAT_VERSION = 1


class FileFormatError(ValueError):
    """A file that is not what it claims to be; the message names the file and the problem."""


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` (must contain ``"kind"``)."""
    if "kind" not in meta:
        raise ValueError("meta needs a 'kind'")
    doc = {"format_version": FORMAT_VERSION, **meta}
    path = Path(path)
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={META_KEY: json.dumps(doc)})
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the JSON document of an invkit file (cheap: reads the header only)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise FileFormatError(f"{path}: not a safetensors file (bad header length)")
            header = json.loads(fh.read(n))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: not a readable safetensors file ({exc})") from None
    raw = (header.get("__metadata__") or {}).get(META_KEY)
    if raw is None:
        raise FileFormatError(f"{path}: safetensors file without invkit metadata")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: corrupt invkit metadata ({exc})") from None


def load(
    path: str | os.PathLike, kind: str | None = None, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors, meta)``; with ``kind``, refuse a file of another kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    meta = read_meta(path)
    if kind is not None and meta.get("kind") != kind:
        raise FileFormatError(f"{path}: holds a {meta.get('kind')!r}, expected a {kind!r}")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise FileFormatError(f"{path}: corrupt safetensors data ({exc})") from None
    return tensors, meta


def require_finite(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse floating-point tensors holding NaN or Inf (codes, directions): they would render
    black images and exit 0. Raises :class:`FileFormatError` naming the file and tensor."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise FileFormatError(f"{path}: tensor {name!r} holds NaN or Inf values")
