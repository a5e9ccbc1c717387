"""Training run folders as encoder sources: a run (``runs/faces``) or one of its checkpoints
(``runs/faces/checkpoints/step-00010000.safetensors``) can stand wherever an encoder file is
taken, so a long run can be tried before it ends.

A run folder holds ``checkpoints/step-NNNNNNNN.safetensors``, each a safetensors file of kind
``training-checkpoint`` whose tensors ``model.*`` are the encoder's state dict and whose JSON
records the encoder's config (``encoder``) and its generator's fingerprint. The encoder is
written out as an ordinary encoder file (kind ``encoder``), either where the user asks
(``invkit export-encoder``) or in the cache (``<INVKIT_CACHE>/run-encoders/``), once per
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from . import tensorfile

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "training-checkpoint"
CHECKPOINT_DIR = "checkpoints"
ENCODER_KIND = "encoder"
_CKPT_RE = re.compile(r"^step-(\d+)\.safetensors$")


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)


def _check_complete(path: Path) -> None:
    """Raise :class:`tensorfile.FileFormatError` when the file is shorter (or longer) than its
    safetensors header says (a truncated copy, a disk that filled up)."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise tensorfile.FileFormatError(f"{path}: unreadable checkpoint header ({exc})") from None
    size = path.stat().st_size
    if size != 8 + n + end:
        raise tensorfile.FileFormatError(f"{path}: truncated checkpoint ({size} bytes, the header "
                                         f"describes {8 + n + end})")


def latest_checkpoint(run_dir: str | os.PathLike, report=None) -> Path | None:
    """The newest complete checkpoint: one whose header reads back and whose size matches it.
    A truncated or unreadable newer one is reported (``report``, default the log) and skipped,
    so a run resumes from the one before it."""
    warn = report or (lambda msg: log.warning("%s", msg))
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            if tensorfile.read_meta(path).get("kind") == CHECKPOINT_KIND:
                _check_complete(path)
                return path
        except tensorfile.FileFormatError as exc:
            warn(f"{exc}; skipped, resuming from an earlier checkpoint if there is one")
    return None


def training_checkpoint(source: str | os.PathLike) -> Path | None:
    """The checkpoint ``source`` stands for: a run folder's newest checkpoint, or ``source``
    itself when it is a training checkpoint; None for anything else (an encoder file, ...).
    A folder that is not a run, or a run without checkpoints, is an error naming it."""
    path = Path(source)
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            what = "a training run without checkpoints yet" if (path / CHECKPOINT_DIR).is_dir() or (
                path / "recipe.json").is_file() else "a folder, not an encoder file or a training run"
            raise FileNotFoundError(f"{path}: {what} (expected {CHECKPOINT_DIR}/step-*.safetensors)")
        return ckpt
    if path.is_file() and path.suffix == ".safetensors":
        try:
            kind = tensorfile.read_meta(path).get("kind")
        except tensorfile.FileFormatError:
            return None
        return path if kind == CHECKPOINT_KIND else None
    return None


def export_encoder(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the encoder of a training checkpoint as an encoder file (what ``invkit.load_encoder``
    reads; the same file the run writes as ``encoder.safetensors`` when it finishes)."""
    tensors, doc = tensorfile.load(checkpoint, kind=CHECKPOINT_KIND)
    config = doc.get("encoder") or {}
    if not config:
        raise tensorfile.FileFormatError(
            f"{checkpoint}: the checkpoint records no encoder config (not a Feature-Style encoder run)")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    meta = {"kind": ENCODER_KIND, "architecture": "feature-style", "config": config,
            "generator_fingerprint": doc.get("generator_fingerprint"),
            "source_checkpoint": str(checkpoint), "step": doc.get("step")}
    return tensorfile.save(out, model, meta)


def cached_encoder(checkpoint: Path, cache_dir: Path) -> Path:
    """The checkpoint's encoder as a file in ``cache_dir/run-encoders`` (written once)."""
    key = hashlib.sha1(str(checkpoint.resolve()).encode()).hexdigest()[:16]
    stat = checkpoint.stat()
    out = cache_dir / "run-encoders" / f"{key}-{checkpoint.stem}-{stat.st_mtime_ns}.safetensors"
    if not out.is_file():
        export_encoder(checkpoint, out)
    return out
