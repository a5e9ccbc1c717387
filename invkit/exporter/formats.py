"""Writing one traced graph as ONNX or TorchScript, and proving the file before it is kept.

A graph is traced once at a batch of :data:`TRACE_BATCH`, written to a temporary path, loaded back
(onnxruntime / ``torch.jit.load``) and run at other batch sizes against the PyTorch module; only a
file that loads and agrees is renamed into place (the caller holds the temporary path, see
:func:`invkit.io.atomic.atomic_path`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..generator import Generator
from .graphs import specialize_sizes, trace

#: File suffix per format.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
#: ONNX opset written: 20 is the first with ``AffineGrid`` (StyleGAN3's Fourier input grid).
ONNX_OPSET = 20
#: Batch size the graphs are traced at; verification runs other sizes (:data:`CHECK_BATCHES`).
TRACE_BATCH = 2
CHECK_BATCHES = (1, 3)
#: A written file must match PyTorch to ``ATOL + RTOL * max|reference|`` (a graph that baked in
#: the trace's batch size, or a mistranslated op, is off by O(1)).
VERIFY_ATOL = 1e-4
VERIFY_RTOL = 1e-3


class ExportError(ValueError):
    """A network that cannot be exported, or an output that would not load or not agree."""


@dataclass
class GraphSpec:
    """One network to write.

    Attributes:
        name: file stem (``generator``, ``generator_from_k5``, ``encoder``).
        module: the PyTorch module (see :mod:`invkit.exporter.graphs`).
        make_inputs: ``batch -> {input name: tensor}`` (realistic values, deterministic).
        outputs: output names, in the module's order.
        generator: the generator whose switches :func:`~invkit.exporter.graphs.traceable` sets.
        info: input/output descriptions for the JSON (shapes, value ranges).
    """

    name: str
    module: nn.Module
    make_inputs: Callable[[int], dict[str, torch.Tensor]]
    outputs: list[str]
    generator: Generator | None = None
    info: dict = field(default_factory=dict)


def require(fmt: str) -> None:
    """Refuse an unknown format, or ONNX without the ``[export]`` extra, before any work."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")
    if fmt == "onnx":
        for module in ("onnx", "onnxruntime"):
            try:
                __import__(module)
            except ImportError:
                raise ExportError(f"ONNX export needs {module}: pip install 'invkit[export]'") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _runner_onnx(path: Path) -> Callable[[dict[str, torch.Tensor]], tuple[np.ndarray, ...]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inputs: tuple(session.run(None, {k: v.numpy() for k, v in inputs.items()}))


def _runner_torchscript(path: Path) -> Callable[[dict[str, torch.Tensor]], tuple[np.ndarray, ...]]:
    module = torch.jit.load(str(path), map_location="cpu")

    def run(inputs: dict[str, torch.Tensor]) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            return tuple(t.numpy() for t in _as_tuple(module(*inputs.values())))

    return run


def verify(spec: GraphSpec, path: Path, fmt: str, source: str) -> dict[str, float]:
    """Load ``path`` and compare it with ``spec.module`` at :data:`CHECK_BATCHES` (and the trace
    batch). Returns the max abs error per output; raises :class:`ExportError` when the file
    does not load or disagrees."""
    try:
        run = (_runner_onnx if fmt == "onnx" else _runner_torchscript)(path)
    except Exception as exc:  # noqa: BLE001 - any loader failure means the file is unusable
        raise ExportError(f"{source}: the written {spec.name} {fmt} file does not load: {_first_line(exc)}") from None
    errors = dict.fromkeys(spec.outputs, 0.0)
    for batch in (*CHECK_BATCHES, TRACE_BATCH):
        inputs = spec.make_inputs(batch)
        with torch.no_grad():
            want = [t.numpy() for t in _as_tuple(spec.module(*inputs.values()))]
        try:
            got = run(inputs)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{source}: the exported {spec.name} fails at batch {batch}: {_first_line(exc)}") from None
        for name, g, w in zip(spec.outputs, got, want):
            if g.shape != w.shape:
                raise ExportError(f"{source}: the exported {spec.name} gives {name} {list(g.shape)} at batch "
                                  f"{batch}, PyTorch {list(w.shape)}")
            err = float(np.abs(g - w).max())
            if not err <= VERIFY_ATOL + VERIFY_RTOL * float(np.abs(w).max()):
                raise ExportError(f"{source}: the exported {spec.name} differs from PyTorch by {err:.3g} "
                                  f"({name}, batch {batch}); not written")
            errors[name] = max(errors[name], err)
    return errors


def write(spec: GraphSpec, path: Path, fmt: str, source: str, opset: int = ONNX_OPSET) -> dict[str, float]:
    """Trace ``spec`` and write it to ``path`` (a temporary path: the caller renames it), then
    :func:`verify` it. Returns the verification errors."""
    example = spec.make_inputs(TRACE_BATCH)
    try:
        traced = trace(spec.module, tuple(example.values()), spec.generator)
        if fmt == "torchscript":
            torch.jit.save(traced, str(path))
        else:
            specialize_sizes(traced.graph)
            names = [*example, *spec.outputs]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # The TorchScript-based exporter: it takes the batch-clean trace as is; the
                # torch.export-based one re-traces the Python code (and is far slower here).
                torch.onnx.export(
                    traced, tuple(example.values()), str(path), dynamo=False, opset_version=opset,
                    input_names=list(example), output_names=spec.outputs,
                    dynamic_axes={n: {0: "batch"} for n in names},
                )
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - tracer and exporter raise many types
        raise ExportError(f"{source}: cannot export {spec.name} to {fmt}: {_first_line(exc)}") from None
    return verify(spec, path, fmt, source)

