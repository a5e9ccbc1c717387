"""The numpy part of :mod:`invkit.io.safe_pickle`: inert, validating stand-ins for the numpy
globals a pickle of arrays names (``numpy.dtype``, ``numpy.ndarray``, ``_reconstruct``,
``scalar``, ``_frombuffer``). Only numeric dtypes without fields, and payloads whose byte length
matches their shape, are accepted; dtypes are read into an inert :class:`_DTypeSpec` first
because numpy's own ``dtype.__setstate__`` can set internal flags from the file."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np


class Invalid(ValueError):
    """Raised by the validating stand-ins; becomes a ``PickleFormatError``."""


_Invalid = Invalid


#: dtype strings numpy writes into pickles (``dtype.str`` without byte order) that hold plain
#: numbers. Object ("O"), void/structured ("V"), strings and datetimes are refused.
_NUMERIC_DTYPES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
)


class _DTypeSpec:
    """Inert stand-in for ``numpy.dtype(spec, align, copy)`` plus its pickled state."""

    def __init__(self, spec: str):
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # numpy >= 1.? writes (version, byteorder, subarray, names, fields, elsize, alignment,
        # flags[, metadata]); only the byte order may differ from a plain numeric dtype.
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise _Invalid(f"unexpected numpy dtype state {state!r:.80}")
        byteorder, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise _Invalid("structured numpy dtypes are not allowed")
        if byteorder not in ("<", ">", "|", "="):
            raise _Invalid(f"bad numpy byte order {byteorder!r}")
        if len(state) == 9 and state[8] is not None:
            raise _Invalid("numpy dtype metadata is not allowed")
        self.byteorder = byteorder

    def dtype(self) -> np.dtype:
        dt = np.dtype(self.spec)
        if self.byteorder in ("<", ">"):
            dt = dt.newbyteorder(self.byteorder)
        return dt


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> _DTypeSpec:
    if not isinstance(spec, str) or spec not in _NUMERIC_DTYPES:
        raise _Invalid(f"numpy dtype {spec!r:.40} is not a plain numeric type")
    if align not in (False, 0) or copy not in (True, False, 0, 1):
        raise _Invalid("unexpected numpy dtype arguments")
    return _DTypeSpec(spec)


def _as_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _DTypeSpec):
        raise _Invalid(f"expected a numpy dtype, got {type(value).__name__}")
    return value.dtype()


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: usable only as ``_reconstruct``'s first argument
    (it is not a class, so it cannot be instantiated or called from the pickle)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _Invalid("BUILD on numpy.ndarray is not allowed")

    def __repr__(self) -> str:
        return "<numpy.ndarray token>"


_NDARRAY = _NdarrayToken()


class _ValidatedArray(np.ndarray):
    """What ``_reconstruct`` returns: numpy's pickled ``BUILD`` state is checked (numeric
    dtype, payload length = shape x itemsize) before numpy sees it. Turned into a plain
    ``numpy.ndarray`` after loading."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Invalid("unexpected numpy array state")
        version, shape, dtype, is_fortran, raw = state
        dt = _as_dtype(dtype)
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _Invalid(f"bad numpy array shape {shape!r:.80}")
        if not isinstance(raw, (bytes, bytearray)):
            raise _Invalid("numpy array payload is not raw bytes")
        if len(raw) != math.prod(shape) * dt.itemsize:
            raise _Invalid(f"numpy array payload of {len(raw)} bytes does not fit shape {shape}, {dt}")
        super().__setstate__((version, shape, dt, bool(is_fortran), bytes(raw)))


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ValidatedArray:
    if subtype is not _NDARRAY:
        raise _Invalid("numpy _reconstruct of something other than numpy.ndarray")
    if shape != (0,) or dtype not in (b"b", "b"):
        raise _Invalid("unexpected numpy _reconstruct arguments")
    return np.empty(0, dtype=np.uint8).view(_ValidatedArray)


def _numpy_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for ``numpy._core.numeric._frombuffer`` (protocol 5 arrays)."""
    dt = _as_dtype(dtype)
    if isinstance(buf, pickle.PickleBuffer):
        buf = buf.raw()
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise _Invalid("numpy array payload is not raw bytes")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _Invalid(f"bad numpy array shape {shape!r:.80}")
    if order not in ("C", "F") or len(buf) != math.prod(shape) * dt.itemsize:
        raise _Invalid(f"numpy array payload of {len(buf)} bytes does not fit shape {shape}, {dt}")
    return np.frombuffer(bytes(buf), dtype=dt).reshape(shape, order=order).copy(order=order)


def _numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    dt = _as_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        raise _Invalid(f"numpy scalar payload does not fit {dt}")
    return np.frombuffer(bytes(data), dtype=dt)[0]


