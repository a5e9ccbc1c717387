"""A checkpoint file as adapters see it: the path, its sniffed container format, and cached
safe readers, so that several plugins can inspect one file without reading it several times.

Nothing here executes code from a file: torch files are read with ``weights_only=True`` (with
``argparse.Namespace`` allowed, because rosinality's ``train.py`` stores its arguments that way);
plain pickles are left to readers with an explicit allow-list (see the NVlabs adapter).
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import tensorfile

#: The magic number ``torch.save`` writes first in its legacy (pre-1.6, non-zip) format.
_TORCH_LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the problem."""


def sniff_format(head: bytes) -> str:
    """Container format from a file's first bytes.

    Returns one of ``"torch-zip"`` (``torch.save`` >= 1.6), ``"torch-legacy"``, ``"pickle"``
    (e.g. NVlabs network pickles), ``"safetensors"``, ``"empty"`` or ``"unknown"``.
    """
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 0 < n < 100_000_000:
            return "safetensors"
    return "unknown"


class CheckpointFile:
    """A checkpoint on disk with lazily read, cached contents.

    Attributes:
        path: the file.
        format: see :func:`sniff_format`.
        cache: scratch space for adapters (e.g. a parsed NVlabs pickle), shared between the
            ``identify_checkpoint`` hook and the adapter's ``load``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise CheckpointError(f"{self.path}: is a folder, expected a checkpoint file")
        with open(self.path, "rb") as fh:
            self.head = fh.read(64)
        self.format = sniff_format(self.head)
        self.cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"CheckpointFile({str(self.path)!r}, format={self.format!r})"

    def torch_object(self) -> Any:
        """The object stored by ``torch.save`` (``weights_only=True``), cached."""
        if "torch" not in self.cache:
            if self.format not in ("torch-zip", "torch-legacy"):
                raise CheckpointError(f"{self.path}: not a torch.save file (format {self.format})")
            if self.format == "torch-zip" and not zipfile.is_zipfile(self.path):
                raise CheckpointError(f"{self.path}: truncated or corrupt torch file")
            try:
                with torch.serialization.safe_globals([argparse.Namespace]):
                    self.cache["torch"] = torch.load(self.path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
                raise CheckpointError(
                    f"{self.path}: refused to load (it needs code outside torch's safe list: {first})"
                ) from None
            except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
                raise CheckpointError(f"{self.path}: truncated or corrupt torch file ({exc})") from None
        return self.cache["torch"]

    def invkit_meta(self) -> dict[str, Any] | None:
        """The JSON document of an invkit safetensors file, or None for any other file."""
        if self.format != "safetensors":
            return None
        try:
            return tensorfile.read_meta(self.path)
        except tensorfile.FileFormatError:
            return None


def load_frozen(net: torch.nn.Module, state: dict[str, torch.Tensor], source: object, layout: str) -> torch.nn.Module:
    """Load a released state dict into ``net`` strictly, then freeze it in eval mode.

    Only BatchNorm's ``num_batches_tracked`` counters may be missing (unused in eval mode; files
    from old torch versions lack them). Any other missing or unexpected key raises a
    ``ValueError`` naming ``source`` and the ``layout`` it should have had.
    """
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{source}: state dict does not match the {layout} layout "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return net.eval().requires_grad_(False)
