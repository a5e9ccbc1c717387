"""A restricted unpickler: read pickled data without ever running code from the file.

A pickle is a small program for a stack machine whose ``GLOBAL`` instruction imports any
callable by name and whose ``REDUCE`` instruction calls it, so ``pickle.load`` on a file from
the internet can do anything (``os.system``, ``builtins.exec``, ...). This module resolves
globals through an explicit allow-list instead: a name that is not on it stops the read before
anything is called, with an :class:`UnsafePickleError` naming the global and the file.

The allowed globals are the few that plain pickles of tensors, numpy arrays and containers
need, each mapped to a function of ours that validates its arguments:

* ``collections.OrderedDict``, ``builtins.set`` / ``frozenset`` / ``complex`` (also under
  their Python 2 names), ``_codecs.encode`` (protocol 2 writes ``bytes`` through it; only the
  ``str -> latin-1 bytes`` form is accepted);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` /
  ``_rebuild_parameter_with_state``: tensors are rebuilt from validated storages, parameters
  come back as plain tensors;
* ``torch.storage._load_from_bytes``: torch's own version calls ``torch.load(...,
  weights_only=False)`` on the embedded bytes; ours calls it with ``weights_only=True``;
* ``torch.<dtype>`` names (``torch.float32``, ...), which are inert values;
* ``numpy.dtype``, ``numpy.ndarray``, ``numpy(._)core.multiarray._reconstruct`` and
  ``.scalar``, ``numpy(._)core.numeric._frombuffer`` (protocol 5): only numeric dtypes (bool,
  int, uint, float, complex) without fields, and array and scalar payloads whose byte length
  matches their shape. numpy's own ``dtype.__setstate__``
  can set internal flags (e.g. "holds Python objects") from the file, so dtypes are first read
  into an inert :class:`_DTypeSpec` and only turned into a real ``numpy.dtype`` after checking.

Callers add the globals of their own format (e.g. the NVlabs persistent-object record) with
:func:`allow_list`. Objects of classes that derive from :class:`Record` are walked after
loading, like containers, so proxies inside them are replaced too.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .checkpoint import CheckpointError
from .pickle_numpy import (
    _NDARRAY,
    _DTypeSpec,
    _NdarrayToken,
    _numpy_dtype,
    _numpy_frombuffer,
    _numpy_reconstruct,
    _numpy_scalar,
    _ValidatedArray,
)
from .pickle_numpy import (
    Invalid as _Invalid,
)

GlobalName = tuple[str, str]
"""``(module, name)`` as a pickle's ``GLOBAL`` instruction spells it."""


class UnsafePickleError(CheckpointError):
    """A pickle names a global outside the allow-list; nothing from it was executed.

    Attributes:
        source: the file (or a description of the bytes).
        global_name: ``"module.name"`` of the refused global.
    """

    def __init__(self, source: str, global_name: str, why: str = ""):
        self.source = source
        self.global_name = global_name
        detail = f" ({why})" if why else ""
        super().__init__(
            f"{source}: refused to load: it names the global '{global_name}', which is not on "
            f"invkit's allow-list{detail}; nothing from the file was executed"
        )


class PickleFormatError(CheckpointError):
    """A pickle that is truncated, corrupt, or holds values that fail validation."""


class Record:
    """Base for the plain-data stand-ins a format defines for its own classes (e.g. an NVlabs
    persistent object). :func:`load` walks their ``__dict__`` like a container."""


# ----------------------------------------------------------------------------------------------
# torch: storages and tensors, validated

_STORAGE_TYPES = (torch.storage.TypedStorage,)
_INNER_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class _InnerRefusal(Exception):
    """``torch.load(weights_only=True)`` refused a storage payload; carries the global."""

    def __init__(self, global_name: str):
        super().__init__(global_name)
        self.global_name = global_name


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    """Stand-in for ``torch.storage._load_from_bytes``, which would run ``torch.load`` with
    ``weights_only=False``: the same bytes, read with ``weights_only=True``."""
    if not isinstance(data, (bytes, bytearray)):
        raise _Invalid("a torch storage payload is not bytes")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = _INNER_GLOBAL.search(str(exc))
        if match:  # torch's weights-only reader refused a global
            raise _InnerRefusal(match.group(1)) from None
        raise _Invalid(f"corrupt torch storage ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise _Invalid(f"corrupt torch storage ({_first_line(exc)})") from None
    if not isinstance(storage, _STORAGE_TYPES):
        raise _Invalid(f"a torch storage payload holds a {type(storage).__name__}")
    return storage


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(type(v) is int and v >= 0 for v in value)


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (arguments checked; hooks dropped)."""
    if not isinstance(storage, _STORAGE_TYPES):
        raise _Invalid("tensor without a valid storage")
    if type(storage_offset) is not int or storage_offset < 0:
        raise _Invalid("bad tensor storage offset")
    if not (_is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
        raise _Invalid("bad tensor size/stride")
    # torch would silently grow the storage for a view that reaches past its end
    if all(n > 0 for n in size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= storage._size():  # _size(): the element count, without a deprecation warning
            raise _Invalid(f"tensor of size {tuple(size)} reaches past its storage of {storage._size()} elements")
    if math.prod(size) > storage._size():
        raise _Invalid(f"tensor of size {tuple(size)} has more elements than its storage of "
                       f"{storage._size()} (overlapping strides)")
    if backward_hooks and len(backward_hooks):
        raise _Invalid("tensors with backward hooks are not allowed")
    if metadata:
        raise _Invalid("tensors with extra metadata are not allowed")
    try:
        return torch._utils._rebuild_tensor_v2(
            storage, storage_offset, tuple(size), tuple(stride), False, OrderedDict()
        )
    except RuntimeError as exc:  # e.g. size/stride reaching past the storage
        raise _Invalid(f"inconsistent tensor ({_first_line(exc)})") from None


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter``: the plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise _Invalid("parameter without tensor data")
    if backward_hooks and len(backward_hooks):
        raise _Invalid("parameters with backward hooks are not allowed")
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any, backward_hooks: Any, state: Any
) -> torch.Tensor:
    if state:
        raise _Invalid("parameters with extra Python state are not allowed")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


# ----------------------------------------------------------------------------------------------
# builtins


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode`` as protocol 2 uses it to write ``bytes``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Invalid("_codecs.encode is only allowed as str -> latin-1 bytes")
    return text.encode("latin1")


def _builtin_names(name: str, value: Any) -> dict[GlobalName, Any]:
    # Protocol <= 2 pickles spell the builtins module "__builtin__" (Python 2 names).
    return {("builtins", name): value, ("__builtin__", name): value}


_TORCH_DTYPES = [
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
    "uint8", "int8", "int16", "int32", "int64", "bool", "half", "float", "double", "long", "int",
]


def standard_globals() -> dict[GlobalName, Any]:
    """The allow-list for plain pickles of tensors, numpy arrays and containers."""
    table: dict[GlobalName, Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _latin1_bytes,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("numpy", "dtype"): _numpy_dtype,
        ("numpy", "ndarray"): _NDARRAY,
    }
    for core in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2.x / 1.x names
        table[(core, "_reconstruct")] = _numpy_reconstruct
        table[(core, "scalar")] = _numpy_scalar
    for numeric in ("numpy._core.numeric", "numpy.core.numeric"):
        table[(numeric, "_frombuffer")] = _numpy_frombuffer
    for name, value in (("set", set), ("frozenset", frozenset), ("complex", complex)):
        table.update(_builtin_names(name, value))
    for name in _TORCH_DTYPES:
        table[("torch", name)] = getattr(torch, name)
    return table


def allow_list(extra: Mapping[GlobalName, Any] | None = None) -> dict[GlobalName, Any]:
    """:func:`standard_globals` plus a format's own entries (which may not replace them)."""
    table = standard_globals()
    for key, value in (extra or {}).items():
        if key in table and table[key] is not value:
            raise ValueError(f"{key[0]}.{key[1]} is a standard global and cannot be remapped")
        table[key] = value
    return table


# ----------------------------------------------------------------------------------------------
# the unpickler


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from ``allowed``.

    Args:
        file: a binary file object.
        allowed: ``{(module, name): object}``; the object is what the pickle gets instead of
            importing ``module.name``.
        source: how errors name the data (usually the file path).
    """

    def __init__(self, file, allowed: Mapping[GlobalName, Any], source: str):
        super().__init__(file)
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            value = self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(self._source, f"{module}.{name}") from None
        return _guarded(value, f"{module}.{name}", self._shields)

    _shields: dict[int, Any]

    def load(self) -> Any:
        self._shields = {}
        return super().load()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self._source, "persistent_load", "persistent ids are not supported")


class _Guarded:
    """An allow-listed function as the pickle sees it: callable, but without a ``__dict__`` or
    settable attributes, so a ``BUILD`` on it cannot change the function invkit uses."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Any, name: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise _Invalid(f"BUILD on the allowed global {self._name} is not allowed")

    def __setattr__(self, key: str, value: Any) -> None:
        raise _Invalid(f"setting attributes of the allowed global {self._name} is not allowed")


def _guarded(value: Any, name: str, shields: dict[int, Any]) -> Any:
    """What :meth:`RestrictedUnpickler.find_class` hands the pickle for an allowed ``value``.

    Nothing a file does may change invkit's state: Python functions are wrapped in
    :class:`_Guarded`; Python classes (mutable types) are replaced by a throwaway subclass made
    for this read (instances still pass ``isinstance`` checks; a ``BUILD`` on the class only
    changes the throwaway); immutable built-in types and inert values pass through as they are.
    """
    if isinstance(value, type):
        if value.__flags__ & (1 << 8):  # Py_TPFLAGS_IMMUTABLETYPE (built-in types)
            return value
        key = id(value)
        if key not in shields:
            shields[key] = type(value.__name__, (value,), {"__module__": value.__module__,
                                                             "__qualname__": value.__qualname__})
        return shields[key]
    if callable(value) and not isinstance(value, (_NdarrayToken, torch.dtype)):
        return _Guarded(value, name)
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _resolve(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace the numpy proxies by real numpy objects, in containers and :class:`Record`s."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _ValidatedArray):
        out: Any = obj.view(np.ndarray)
    elif isinstance(obj, _DTypeSpec):
        out = obj.dtype()
    elif isinstance(obj, dict):
        memo[key] = obj
        for k in list(obj):
            obj[k] = _resolve(obj[k], memo)
        return obj
    elif isinstance(obj, list):
        memo[key] = obj
        obj[:] = [_resolve(v, memo) for v in obj]
        return obj
    elif isinstance(obj, Record):
        memo[key] = obj
        for k, v in list(vars(obj).items()):
            setattr(obj, k, _resolve(v, memo))
        return obj
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, memo) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        out = type(obj)(_resolve(v, memo) for v in obj)
    else:
        return obj
    memo[key] = out
    return out


#: The most nodes an unpickled object may have once shared sub-objects are counted every time
#: they are reached (what a reader walking it as a tree visits). Real network pickles have a
#: few thousand; a pickle that reuses one object twice per level reaches 2**depth.
MAX_EXPANDED_NODES = 2_000_000


def _children(obj: Any) -> tuple | list:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Record):
        return list(vars(obj).values())
    return ()


def check_expansion(obj: Any, limit: int = MAX_EXPANDED_NODES) -> int:
    """The node count of ``obj`` walked as a tree (shared sub-objects counted at every place they
    are reached), computed in time linear in the number of distinct objects.

    Raises:
        _Invalid: the graph has a cycle, or the tree is larger than ``limit`` nodes.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        children = _children(node)
        if not children:
            return 1
        if key in active:
            raise _Invalid("the pickle refers to itself (a cycle); refused")
        active.add(key)
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise _Invalid(
                    f"its objects are shared so often that walking them visits more than {limit} "
                    "nodes (an expansion bomb); refused"
                )
        active.discard(key)
        sizes[key] = total
        return total

    return size(obj)


def _read(file: BinaryIO, allowed: Mapping[GlobalName, Any], source: str) -> Any:
    try:
        obj = RestrictedUnpickler(file, allowed, source).load()
        check_expansion(obj)
        return _resolve(obj, {})
    except UnsafePickleError:
        raise
    except _InnerRefusal as exc:
        raise UnsafePickleError(
            source, exc.global_name, "named inside an embedded torch storage"
        ) from None
    except _Invalid as exc:
        raise PickleFormatError(f"{source}: invalid pickle contents: {exc}") from None
    except RecursionError:
        raise PickleFormatError(f"{source}: corrupt pickle (nested too deeply)") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise PickleFormatError(f"{source}: truncated or corrupt pickle ({_first_line(exc)})") from None
    except Exception as exc:  # corrupt opcodes surface as many types (KeyError, TypeError, ...)
        raise PickleFormatError(
            f"{source}: corrupt pickle ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def loads(data: bytes, allowed: Mapping[GlobalName, Any], source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with only the ``allowed`` globals (see :func:`allow_list`).

    Raises:
        UnsafePickleError: a global outside the allow-list (message names it and ``source``).
        PickleFormatError: truncated or corrupt data, or values that fail validation.
    """
    return _read(io.BytesIO(data), allowed, source)


def load(path: str | os.PathLike, allowed: Mapping[GlobalName, Any]) -> Any:
    """:func:`loads` on the contents of ``path`` (streamed, not read into memory first);
    errors name the file."""
    path = Path(path)
    try:
        fh = open(path, "rb", buffering=1 << 20)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with fh:
        return _read(fh, allowed, str(path))
