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
import re
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
            if "torch_error" in self.cache:
                raise self.cache["torch_error"]
            try:
                self.cache["torch"] = self._read_torch()
            except CheckpointError as exc:
                self.cache["torch_error"] = exc
                raise
        return self.cache["torch"]

    def _read_torch(self) -> Any:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            named = re.search(r"GLOBAL ([\w.]+)", str(exc))
            why = f"it names the global '{named.group(1)}'" if named else _first_line(exc)
            raise RefusedCheckpointError(
                f"{self.path}: refused to load ({why}, which is outside torch's weights-only safe "
                "list); nothing from the file was executed"
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{self.path}: truncated or corrupt torch file ({_first_line(exc)})") from None
        check_tensors(obj, self.path, self.path.stat().st_size)
        return obj

    @property
    def refusal(self) -> CheckpointError | None:
        """Why a safe reader refused this file (e.g. a global outside torch's safe list), if one
        did; :func:`invkit.loading.identify` reports it instead of "no adapter recognises"."""
        err = self.cache.get("torch_error")
        return err if isinstance(err, RefusedCheckpointError) else None

    def invkit_meta(self) -> dict[str, Any] | None:
        """The JSON document of an invkit safetensors file, or None for any other file."""
        if self.format != "safetensors":
            return None
        try:
            return tensorfile.read_meta(self.path)
        except tensorfile.FileFormatError:
            return None


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict[str, Any]:
    """A ``torch.save``d state dict (e.g. LPIPS heads, torchvision or Inception weights, also from
    ``INVKIT_WEIGHTS_DIR``) through the same guarded reader as checkpoints: ``weights_only``,
    tensors checked against the file, one-line errors naming the file and ``what`` it should be.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a torch file, refused, corrupt, or not a dict.
    """
    ckpt = CheckpointFile(path)
    try:
        obj = ckpt.torch_object()
    except CheckpointError as exc:
        raise type(exc)(f"{exc} (expected {what})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{ckpt.path}: expected {what} (a state dict), got a {type(obj).__name__}")
    return obj


class RefusedCheckpointError(CheckpointError):
    """A safe reader refused the file: it names code outside the allow-list, or its contents
    claim more than the file holds (an expansion bomb, stride-0 tensors); nothing ran."""


#: The most nodes a loaded checkpoint object may have when walked as a tree.
MAX_OBJECT_NODES = 2_000_000


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_tensors(obj: Any, source: object, file_size: int | None = None) -> None:
    """Refuse a loaded checkpoint object whose tensors claim more than the file holds.

    Walks ``obj`` (dicts, lists, tuples, ``argparse.Namespace``) counting shared sub-objects at
    every place they are reached, in time linear in the distinct objects; refuses cycles and trees
    of more than :data:`MAX_OBJECT_NODES` nodes. Every tensor must be a dense, non-overlapping
    view of its storage (no stride-0 "broadcast" tensors that claim a huge shape over one stored
    value) and, with ``file_size``, hold no more bytes than the file.

    Raises:
        CheckpointError: naming ``source`` and the tensor.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: Any, where: str) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if isinstance(node, torch.Tensor):
            _check_tensor(node, where or "<root>", source, file_size)
            sizes[key] = 1
            return 1
        if isinstance(node, argparse.Namespace):
            node = vars(node)
        if isinstance(node, dict):
            items = [(f"{where}.{k}" if where else str(k), v) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            items = [(f"{where}[{i}]", v) for i, v in enumerate(node)]
        else:
            return 1
        if key in active:
            raise RefusedCheckpointError(f"{source}: the checkpoint refers to itself (a cycle at {where or '<root>'})")
        active.add(key)
        total = 1
        for name, child in items:
            total += visit(child, name)
            if total > MAX_OBJECT_NODES:
                raise RefusedCheckpointError(f"{source}: objects shared so often that reading it would visit more "
                                      f"than {MAX_OBJECT_NODES} entries (an expansion bomb); refused")
        active.discard(key)
        sizes[key] = total
        return total

    try:
        visit(obj, "")
    except RecursionError:
        raise RefusedCheckpointError(f"{source}: checkpoint nested too deeply") from None


def _check_tensor(t: torch.Tensor, where: str, source: object, file_size: int | None) -> None:
    if t.layout != torch.strided or t.is_quantized:
        raise RefusedCheckpointError(f"{source}: tensor {where} has an unsupported layout {t.layout}")
    nbytes = t.numel() * t.element_size()
    stored = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
    overlapping = t.numel() > 1 and any(s == 0 and n > 1 for n, s in zip(t.shape, t.stride()))
    if overlapping or nbytes > stored:
        raise RefusedCheckpointError(f"{source}: tensor {where} of shape {list(t.shape)} claims more elements "
                              f"than its storage holds (stride {list(t.stride())}); refused")
    if file_size is not None and nbytes > file_size:
        raise RefusedCheckpointError(f"{source}: tensor {where} of shape {list(t.shape)} needs {nbytes} bytes, "
                              f"more than the whole file ({file_size}); refused")


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
