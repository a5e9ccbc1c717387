"""The networks ``invkit export`` writes, as plain modules, and how they are traced.

Three graphs, each a thin :class:`torch.nn.Module` around the library call it freezes:

* :class:`SynthesisGraph` -- ``ws [B, num_ws, w_dim]`` -> ``image [B, C, R, R]``
  (:meth:`Generator.synthesize`, ``noise_mode="const"``).
* :class:`SynthesisFromKGraph` -- ``(ws, features [B, C_K, H_K, W_K])`` -> image: the paper's
  ``G(w, F)`` (:meth:`Generator.synthesize_from` at layer K, const noise).
* :class:`EncoderGraph` -- ``image [B, 3, H, W]`` in [-1, 1] -> ``(ws, features)``
  (:meth:`Encoder.encode`), with every ``nn.AdaptiveAvgPool2d`` swapped for the same average
  written as two matrix products (ONNX has no adaptive pooling for sizes that do not divide).

Tracing runs under :func:`traceable`, which picks the code paths whose graph does not depend on the
batch size: the fast path's *stationary* modulated convolution (one ordinary convolution with a
shared weight; the grouped form bakes ``groups = B`` into the trace) and the reference filtered
leaky ReLU (the fast one loops over the images of the batch in Python); and, for the encoder,
antialiased bilinear resizes as matrix products (:func:`resize_matrix`). Everything else is the
code that runs in PyTorch, so the exported graphs compute the same values.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..encoder import Encoder
from ..generator import Generator
from ..ops import resample


class SynthesisGraph(nn.Module):
    """``ws [B, num_ws, w_dim]`` (W+ codes, unbounded reals) -> ``image [B, C, R, R]``
    (raw generator output, roughly [-1, 1]); noise is the generator's stored constant noise."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesize(ws, noise_mode="const")


class SynthesisFromKGraph(nn.Module):
    """``(ws [B, num_ws, w_dim], features [B, C_K, H_K, W_K])`` -> ``image [B, C, R, R]``:
    the image with layer ``k``'s activation replaced by ``features`` (``G(w, F)``, const noise)."""

    def __init__(self, generator: Generator, k: int):
        super().__init__()
        self.generator = generator
        self.k = int(k)

    def forward(self, ws: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesize_from(self.k, features, ws, noise_mode="const")


class MatrixAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as ``P_h @ x @ P_w^T`` with the averaging matrices ``P [out, in]``
    (row i averages input cells ``floor(i in / out) .. ceil((i + 1) in / out) - 1``, the
    PyTorch rule): same values for every input size, and exportable to ONNX."""

    def __init__(self, output_size: int | tuple[int, int]):
        super().__init__()
        size = output_size if isinstance(output_size, tuple) else (output_size, output_size)
        self.output_size = (int(size[0]), int(size[1]))

    @staticmethod
    def matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
        """The ``[n_out, n_in]`` averaging matrix of one axis."""
        m = torch.zeros(n_out, n_in, dtype=like.dtype, device=like.device)
        for i in range(n_out):
            lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        p_h = self.matrix(h, self.output_size[0], x)
        p_w = self.matrix(w, self.output_size[1], x)
        return p_h @ x @ p_w.t()


class EncoderGraph(nn.Module):
    """``image [B, 3, H, W]`` in [-1, 1] -> ``(ws [B, num_ws, w_dim], features [B, C_K, H_K, W_K])``,
    on a private eval-mode copy of ``encoder`` whose adaptive pools are matrix products."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = copy.deepcopy(encoder).eval()
        for parent in self.encoder.modules():
            for name, child in parent.named_children():
                if isinstance(child, nn.AdaptiveAvgPool2d):
                    setattr(parent, name, MatrixAdaptiveAvgPool2d(child.output_size))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.encode(image)


def resize_matrix(n_in: int, n_out: int, interpolate=F.interpolate) -> torch.Tensor:
    """``[n_out, n_in]``: PyTorch's antialiased bilinear resize of one axis as a matrix (the
    resize of each unit vector), so ``A_h @ x @ A_w^T`` equals the separable resize exactly."""
    # Two identical columns: torch 2.13's antialiased kernel mishandles a width-1 image.
    basis = torch.eye(n_in).reshape(n_in, 1, n_in, 1).repeat(1, 1, 1, 2)
    out = interpolate(basis, size=(n_out, 2), mode="bilinear", align_corners=False, antialias=True)
    return out[..., 0].reshape(n_in, n_out).t()


def _interpolate(original, input: torch.Tensor, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners=None, recompute_scale_factor=None, antialias: bool = False) -> torch.Tensor:
    """``F.interpolate`` with the antialiased bilinear resize of a fixed ``size`` as two matrix
    products (the TorchScript-based ONNX exporter has no ``_upsample_bilinear2d_aa``)."""
    if antialias and mode == "bilinear" and size is not None and scale_factor is None and input.ndim == 4:
        h, w = (size, size) if isinstance(size, int) else size
        a_h = resize_matrix(int(input.shape[-2]), int(h), original).to(input)
        a_w = resize_matrix(int(input.shape[-1]), int(w), original).to(input)
        return a_h @ input @ a_w.t()
    return original(input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)


@contextlib.contextmanager
def traceable(generator: Generator | None = None) -> Iterator[None]:
    """Select code paths whose traced graph holds for every batch size (see the module doc),
    with gradients off; everything is restored on exit. Not thread-safe (process-wide switch)."""
    had_modconv = generator is not None and hasattr(generator, "modconv")
    old_modconv = generator.modconv if had_modconv else None
    old_flrelu, old_interpolate = resample.filtered_lrelu, F.interpolate
    resample.filtered_lrelu = functools.partial(old_flrelu, impl="reference")
    F.interpolate = functools.partial(_interpolate, old_interpolate)
    if had_modconv:
        generator.modconv = "stationary"
    try:
        with resample.use_impl("fast"), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            yield
    finally:
        resample.filtered_lrelu, F.interpolate = old_flrelu, old_interpolate
        if had_modconv:
            generator.modconv = old_modconv


def trace(module: nn.Module, inputs: tuple[torch.Tensor, ...], generator: Generator | None) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``module`` on ``inputs`` under :func:`traceable`."""
    with traceable(generator):
        return torch.jit.trace(module.eval(), inputs, check_trace=False)


def specialize_sizes(graph: torch._C.Graph) -> int:
    """Replace every ``aten::size(t, d)`` with ``d`` not the batch axis by its traced value.

    A trace records sizes as ops, so a depthwise filter expanded to ``x.shape[1]`` channels has a
    computed shape, and the TorchScript-based ONNX exporter then refuses the convolution ("kernel
    of unknown shape"). Only the batch axis is dynamic in the exported graphs, so every other
    size is a constant. Returns the number of sizes replaced.
    """
    torch._C._jit_pass_inline(graph)
    replaced = 0
    for node in list(graph.nodes()):
        inputs = list(node.inputs())
        if node.kind() != "aten::size" or len(inputs) != 2:
            continue
        sizes = inputs[0].type().sizes() if isinstance(inputs[0].type(), torch._C.TensorType) else None
        dim = inputs[1].toIValue()
        if not sizes or dim is None or dim % len(sizes) == 0 or sizes[dim % len(sizes)] is None:
            continue
        graph.setInsertPoint(node)
        node.output().replaceAllUsesWith(graph.insertConstant(int(sizes[dim % len(sizes)])))
        node.destroy()
        replaced += 1
    return replaced

