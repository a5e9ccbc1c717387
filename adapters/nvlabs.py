"""NVlabs network pickles, read as data: no embedded source is executed, no NVlabs code imported.

Plugin module (entry point ``nvlabs``): its ``identify_checkpoint`` hook names the adapter for
a pickle (``"stylegan2"`` or ``"stylegan3"``), and :func:`read_network` gives those adapters the
generator's state dict and constructor kwargs.

Layouts read (see ``docs/nvlabs.md``):

* stylegan2-ada-pytorch and stylegan3 training snapshots: a pickle of ``dict(G=..., D=...,
  G_ema=..., augment_pipe=..., training_set_kwargs=...)`` whose networks are
  ``torch_utils.persistence`` records ``_reconstruct_persistent_obj({'type': 'class',
  'version': 6, 'module_src': <source>, 'class_name': 'Generator', 'state': module.__dict__})``.
  ``G_ema`` is used. The record becomes a :class:`PersistentRecord`; its ``module_src`` stays a
  string. The state dict is the recursive walk of ``state['_parameters']``, ``['_buffers']``
  (minus ``_non_persistent_buffers_set``) and ``['_modules']`` -- the same keys, order and
  values as ``G_ema.state_dict()`` -- and the kwargs are ``state['_init_kwargs']``.
* A bare pickled ``Generator`` record (same layout, without the dict).
* Legacy TensorFlow StyleGAN2 pickles ``(G, D, Gs)``: ``Gs`` is converted by
  :mod:`invkit.adapters.tf_stylegan2`.

Which code a record came from is not stored in the pickle (NVlabs' loader executes
``module_src`` as an anonymous module), so :attr:`NVlabsNetwork.module_name` is inferred: StyleGAN3
state-dict keys (``synthesis.input.*``, ``synthesis.L{k}_*``) mean
``training.networks_stylegan3``; StyleGAN2 keys (``synthesis.b4.const``) with nested
``synthesis_kwargs`` mean stylegan2-ada-pytorch's ``training.networks``, and with flat kwargs the
stylegan3 repository's ``training.networks_stylegan2``. The class names that ``module_src``
defines (found by a text search, never by running it) must agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from invkit.hookspecs import hookimpl
from invkit.io import safe_pickle
from invkit.io.checkpoint import CheckpointError, CheckpointFile
from invkit.io.safe_pickle import Record

from . import tf_stylegan2

#: Key of the parsed network in ``CheckpointFile.cache``.
CACHE_KEY = "nvlabs.network"

STYLEGAN2 = "stylegan2"
STYLEGAN3 = "stylegan3"

MODULE_SG2_ADA = "training.networks"
MODULE_SG3_SG2 = "training.networks_stylegan2"
MODULE_SG3 = "training.networks_stylegan3"

#: Positional constructor arguments of every NVlabs ``Generator`` (for ``_init_args``).
_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


@dataclass
class NVlabsNetwork:
    """A generator read from an NVlabs (or legacy TF) pickle, as plain data.

    Attributes:
        state_dict: ``Generator.state_dict()`` of the official class: float tensors in the
            official key order (``synthesis.*`` then ``mapping.*``).
        init_kwargs: the official constructor kwargs (JSON-serialisable).
        class_name: ``"Generator"``.
        module_name: ``"training.networks"`` (stylegan2-ada-pytorch),
            ``"training.networks_stylegan2"`` / ``"training.networks_stylegan3"`` (stylegan3 repo).
        family: ``"stylegan2"`` or ``"stylegan3"``: the invkit adapter that builds it.
        source_format: ``"nvlabs-pickle"`` or ``"tf-pickle"``.
    """

    state_dict: dict[str, torch.Tensor]
    init_kwargs: dict[str, Any]
    class_name: str
    module_name: str
    family: str = field(default=STYLEGAN2)
    source_format: str = field(default="nvlabs-pickle")


class PersistentRecord(Record):
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` becomes: the record's
    fields as data. ``module_src`` is kept as text and never executed.

    Attributes:
        class_name: e.g. ``"Generator"``, ``"SynthesisLayer"``.
        module_src: the embedded source text of the defining module.
        version: the persistence format version (6 for the current NVlabs code).
        state: the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``,
            ``_init_kwargs``, plain attributes).
    """

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise ValueError("an NVlabs persistent record without type 'class'")
        class_name, module_src, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
        if not isinstance(class_name, str) or not isinstance(module_src, str):
            raise ValueError("an NVlabs persistent record without class_name/module_src text")
        if not isinstance(state, dict):
            raise ValueError(f"NVlabs record {class_name!r} has no state dict")
        self.class_name = class_name
        self.module_src = module_src
        self.version = meta.get("version")
        self.state = state

    def __repr__(self) -> str:
        return f"<NVlabs persistent {self.class_name}>"


def _persistent_record(meta: Any) -> PersistentRecord:
    return PersistentRecord(meta)


#: The NVlabs entries of the allow-list (on top of :func:`invkit.io.safe_pickle.standard_globals`).
NVLABS_GLOBALS: dict[safe_pickle.GlobalName, Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("dnnlib.tflib.network", "Network"): tf_stylegan2.TFNetworkRecord,
}

ALLOWED = safe_pickle.allow_list(NVLABS_GLOBALS)


# ----------------------------------------------------------------------------------------------
# records -> plain data


def _state_dict(record: PersistentRecord, source: str) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` of a record tree: own parameters, persistent buffers, then
    sub-modules, recursively, keys joined by dots."""
    out: dict[str, torch.Tensor] = {}

    def visit(prefix: str, node: Any, depth: int) -> None:
        if depth > 64:
            raise CheckpointError(f"{source}: NVlabs module tree nested too deeply")
        if not isinstance(node, PersistentRecord):
            raise CheckpointError(
                f"{source}: sub-module {prefix.rstrip('.') or '<root>'} is a {type(node).__name__}, "
                "not an NVlabs persistent record"
            )
        state = node.state
        skip = set(state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            tensors = state.get(group) or {}
            if not isinstance(tensors, Mapping):
                raise CheckpointError(f"{source}: {prefix}{group} of {node.class_name} is not a dict")
            for name, value in tensors.items():
                if value is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(value, torch.Tensor):
                    raise CheckpointError(f"{source}: {prefix}{name} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                visit(f"{prefix}{name}.", child, depth + 1)

    visit("", record, 0)
    return out


def _plain(value: Any) -> Any:
    """JSON-friendly copy of kwargs: dicts, lists, str, numbers, bool, None."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"unexpected {type(value).__name__} in the constructor kwargs")


def _init_kwargs(record: PersistentRecord, source: str) -> dict[str, Any]:
    state = record.state
    try:
        kwargs = _plain(state.get("_init_kwargs") or {})
        args = _plain(list(state.get("_init_args") or ()))
    except TypeError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    if len(args) > len(_GENERATOR_ARGS):
        raise CheckpointError(f"{source}: Generator record has {len(args)} positional arguments")
    kwargs.update(dict(zip(_GENERATOR_ARGS, args)))
    return kwargs


_SG3_KEY = re.compile(r"synthesis\.(input\.|L\d+_\d+_\d+\.)")
_CLASS_DEF = re.compile(r"^class\s+(\w+)", re.MULTILINE)


def classify(state_dict: Mapping[str, torch.Tensor], init_kwargs: Mapping[str, Any],
             module_src: str, source: str) -> tuple[str, str]:
    """``(family, module_name)`` of a generator, from its keys, kwargs layout and source text."""
    sg3 = any(_SG3_KEY.match(k) for k in state_dict)
    sg2 = "synthesis.b4.const" in state_dict
    if sg3 == sg2:
        what = "both StyleGAN2 and StyleGAN3" if sg3 else "neither StyleGAN2 nor StyleGAN3"
        raise CheckpointError(f"{source}: generator state dict has {what} keys; unknown network")
    classes = set(_CLASS_DEF.findall(module_src))
    if sg3:
        family, module = STYLEGAN3, MODULE_SG3
        expected, foreign = "SynthesisInput", "SynthesisBlock"
    else:
        family = STYLEGAN2
        module = MODULE_SG2_ADA if "synthesis_kwargs" in init_kwargs else MODULE_SG3_SG2
        expected, foreign = "SynthesisBlock", "SynthesisInput"
    if classes and (foreign in classes or expected not in classes):
        raise CheckpointError(
            f"{source}: the embedded source does not define {expected} (but "
            f"{sorted(classes)[:6]}), inconsistent with the {family} weights"
        )
    return family, module


def _from_record(record: PersistentRecord, source: str) -> NVlabsNetwork:
    if record.class_name != "Generator":
        raise CheckpointError(f"{source}: network record is a {record.class_name!r}, expected a Generator")
    sd = _state_dict(record, source)
    kwargs = _init_kwargs(record, source)
    family, module = classify(sd, kwargs, record.module_src, source)
    return NVlabsNetwork(sd, kwargs, record.class_name, module, family, "nvlabs-pickle")


def _from_tf(gs: tf_stylegan2.TFNetworkRecord, source: str) -> NVlabsNetwork:
    sd, kwargs = tf_stylegan2.convert_generator(gs, source)
    return NVlabsNetwork(sd, kwargs, "Generator", MODULE_SG2_ADA, STYLEGAN2, "tf-pickle")


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"dict with keys {sorted(map(str, obj))[:8]}"
    return type(obj).__name__


def network_from_pickle(obj: Any, source: str) -> NVlabsNetwork:
    """The generator in an unpickled NVlabs object (see the module docstring for layouts)."""
    if isinstance(obj, dict) and "G_ema" in obj:
        g = obj["G_ema"]
        if isinstance(g, PersistentRecord):
            return _from_record(g, source)
        if isinstance(g, tf_stylegan2.TFNetworkRecord):
            return _from_tf(g, source)
        raise CheckpointError(f"{source}: 'G_ema' is a {type(g).__name__}, not an NVlabs network")
    if isinstance(obj, PersistentRecord):
        return _from_record(obj, source)
    if isinstance(obj, (tuple, list)) and len(obj) == 3 and all(
        isinstance(o, tf_stylegan2.TFNetworkRecord) for o in obj
    ):
        return _from_tf(obj[2], source)  # (G, D, Gs): Gs holds the averaged weights
    if isinstance(obj, tf_stylegan2.TFNetworkRecord):
        return _from_tf(obj, source)
    raise CheckpointError(f"{source}: not an NVlabs network pickle (top level is a {_describe(obj)})")


def read_network(checkpoint: CheckpointFile | str | os.PathLike) -> NVlabsNetwork:
    """The generator of an NVlabs or legacy TF StyleGAN2 pickle, without executing its code.

    The parsed result is cached in ``checkpoint.cache`` so that the ``identify_checkpoint`` hook
    and the adapter's ``load`` read the file once.

    Raises:
        invkit.io.safe_pickle.UnsafePickleError: the pickle names a global outside the allow-list.
        invkit.io.checkpoint.CheckpointError: not a pickle, truncated/corrupt, or not a generator
            layout this reader knows (the message names the file).
    """
    if not isinstance(checkpoint, CheckpointFile):
        checkpoint = CheckpointFile(checkpoint)
    cached = checkpoint.cache.get(CACHE_KEY)
    if cached is not None:
        return cached
    if checkpoint.format != "pickle":
        raise CheckpointError(f"{checkpoint.path}: not a pickle (format {checkpoint.format})")
    obj = safe_pickle.load(checkpoint.path, ALLOWED)
    net = network_from_pickle(obj, str(checkpoint.path))
    checkpoint.cache[CACHE_KEY] = net
    return net


@hookimpl(trylast=True)
def identify_checkpoint(checkpoint: CheckpointFile) -> str | None:
    """``"stylegan2"`` / ``"stylegan3"`` for NVlabs and TF pickles; None for other formats.

    Asked last, after every other plugin: a pickle that no one else claims and that this reader
    refuses (unsafe global, corrupt, not a generator) raises with the reason instead of ``None``.
    """
    if checkpoint.format != "pickle":
        return None
    return read_network(checkpoint).family
