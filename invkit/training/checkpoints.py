"""Training checkpoints: one safetensors file per saved step, written atomically.

A file holds the encoder's weights, the optimiser and scheduler states, every rank's RNG
streams and data position, and the recipe (tensors in safetensors, the rest in its JSON
metadata). Nested states are split into named tensors and JSON by :func:`flatten_state`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import tensorfile
from ..recipe import Recipe, RecipeError

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "training-checkpoint"
CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^step-(\d+)\.safetensors$")


# =============================================================================================
# Nested state <-> (tensors, JSON)
# =============================================================================================
def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Split a nested state (optimizer / scheduler state dicts) into JSON and named tensors.

    Tensors are stored in ``tensors`` under ``prefix.path`` and replaced by
    ``{"__tensor__": name}``; tuples and dicts with non-string keys are tagged so that
    :func:`unflatten_state` restores them exactly.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten_state(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten_state(doc: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten_state`."""
    if isinstance(doc, dict):
        if "__tensor__" in doc:
            return tensors[doc["__tensor__"]]
        if "__items__" in doc:
            return {_json_key(k): unflatten_state(v, tensors) for k, v in doc["__items__"]}
        if "__tuple__" in doc:
            return tuple(unflatten_state(v, tensors) for v in doc["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in doc.items()}
    if isinstance(doc, list):
        return [unflatten_state(v, tensors) for v in doc]
    return doc


def _json_key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


# =============================================================================================
# RNG states
# =============================================================================================
def capture_rng(engine: torch.Generator) -> dict[str, torch.Tensor | Any]:
    """This process's RNG streams: the engine's generator, torch's CPU and CUDA generators,
    numpy's and Python's (all as uint8 tensors or JSON-able values)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "engine": engine.get_state(),
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.uint32).view(np.uint8).copy()),
        "numpy_rest": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _python_state_to_json(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: Mapping[str, Any], engine: torch.Generator) -> None:
    engine.set_state(state["engine"])
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().view(np.uint32)
    name, pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state((name, keys, pos, has_gauss, cached))
    random.setstate(_python_state_from_json(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _python_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_json(doc: list) -> tuple:
    version, internal, gauss = doc
    return (version, tuple(internal), gauss)


# =============================================================================================
# Checkpoint files
# =============================================================================================
def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.safetensors"


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


@dataclass
class TrainingState:
    """What a checkpoint holds, rebuilt into Python objects.

    Attributes:
        step: optimiser steps completed.
        model: the encoder's state dict.
        optimizer: the optimiser's state dict (a :class:`Lookahead` dict for ranger).
        scheduler: the lr scheduler's state dict.
        rng: per-rank RNG states (``rng[rank]`` as from :func:`capture_rng`).
        data: per-rank real-image stream positions.
        recipe: the run's recipe.
        meta: the rest of the JSON document (generator fingerprint, encoder config, ...).
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]]
    data: list[dict[str, int] | None]
    recipe: Recipe
    meta: dict[str, Any]


def save_checkpoint(path: str | os.PathLike, state: TrainingState) -> Path:
    """Write one checkpoint file atomically (safetensors tensors + JSON document)."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in state.model.items():
        tensors[f"model.{k}"] = v.detach()
    doc = {
        "kind": CHECKPOINT_KIND,
        "step": state.step,
        "recipe": state.recipe.to_dict(),
        "optimizer": flatten_state(state.optimizer, "optimizer", tensors),
        "scheduler": flatten_state(state.scheduler, "scheduler", tensors),
        "rng": [flatten_state(r, f"rng.{i}", tensors) for i, r in enumerate(state.rng)],
        "data": state.data,
        **state.meta,
    }
    # safetensors refuses tensors sharing memory (e.g. a state tensor aliasing a parameter)
    seen: set[int] = set()
    for k, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            tensors[k] = t.clone()
        seen.add(ptr)
    return tensorfile.save(path, tensors, doc)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    tensors, doc = tensorfile.load(path, kind=CHECKPOINT_KIND)
    model = {k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    doc = dict(doc)
    try:
        recipe = Recipe.from_dict(doc.pop("recipe"))
    except (KeyError, RecipeError) as exc:
        raise tensorfile.FileFormatError(f"{path}: bad recipe in checkpoint ({exc})") from None
    state = TrainingState(
        step=int(doc.pop("step")),
        model=model,
        optimizer=unflatten_state(doc.pop("optimizer"), tensors),
        scheduler=unflatten_state(doc.pop("scheduler"), tensors),
        rng=[unflatten_state(r, tensors) for r in doc.pop("rng")],
        data=doc.pop("data"),
        recipe=recipe,
        meta={k: v for k, v in doc.items() if k not in ("kind", "format_version")},
    )
    return state


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints; returns what was deleted."""
    found = list_checkpoints(run_dir)
    doomed = [p for _, p in found[:-keep_last]] if keep_last > 0 else []
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed
