"""Export a generator (and its Feature-Style encoder) as ONNX or TorchScript: ``invkit.export``.

Writes into one folder:

* ``generator.onnx`` / ``generator.pt``: ``ws [B, num_ws, w_dim]`` -> ``image [B, C, R, R]``;
* ``generator_from_k<K>.onnx`` / ``.pt``: ``(ws, features [B, C_K, H_K, W_K])`` -> ``image``, the
  paper's ``G(w, F)`` (:meth:`Generator.synthesize_from` at layer K);
* ``encoder.onnx`` / ``.pt`` (when an encoder is given): ``image [B, 3, R, R]`` in [-1, 1] ->
  ``(ws, features)``;
* ``export.json``: format, opset, every input and output (name, shape with ``"batch"`` for the
  dynamic axis, dtype, value range), K and its layer, the generator's fingerprint, and the largest
  difference from PyTorch measured when the files were checked.

Noise is the generator's stored constant noise (``noise_mode="const"``); the batch axis is dynamic.
Each file is traced at batch 2, written to a temporary path, loaded back (onnxruntime or
``torch.jit.load``) and compared with PyTorch at batches 1, 2 and 3; only when every file passes
are they renamed into place. This module is ``invkit.exporter`` (not ``invkit.export``) so that
importing it never shadows the function ``invkit.export``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

import torch

from ..encoder import Encoder
from ..generator import Generator
from ..io.atomic import atomic_path, write_text
from .formats import FORMATS, ONNX_OPSET, TRACE_BATCH, ExportError, GraphSpec, require, write
from .graphs import EncoderGraph, SynthesisFromKGraph, SynthesisGraph

METADATA_NAME = "export.json"
#: K when neither ``k`` nor an encoder says which layer (the official FS layer).
DEFAULT_K = 5

__all__ = ["DEFAULT_K", "FORMATS", "METADATA_NAME", "ONNX_OPSET", "ExportError", "export", "output_names"]


def output_names(fmt: str, k: int, with_encoder: bool) -> list[str]:
    """The files :func:`export` writes for a format, K and whether an encoder is exported."""
    suffix = FORMATS[fmt]
    names = [f"generator{suffix}", f"generator_from_k{k}{suffix}"]
    return names + [f"encoder{suffix}"] if with_encoder else names


def _tensor_info(name: str, shape: list, lo: float | None, hi: float | None, note: str) -> dict:
    return {"name": name, "shape": shape, "dtype": "float32", "range": [lo, hi], "note": note}


def _specs(G: Generator, k: int, encoder: Encoder | None) -> list[GraphSpec]:
    """The graphs to write, with deterministic realistic inputs (``ws = mapping(z)``, ``F`` the
    layer-K activation of other codes, images rendered by ``G`` and clamped to [-1, 1])."""
    layer = G.layer(k)

    def ws_for(batch: int, seed: int) -> torch.Tensor:
        z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return G.mapping(z)

    def features_for(batch: int) -> torch.Tensor:
        with torch.no_grad():
            return G.features_at(k, ws_for(batch, 2000 + batch))

    def images_for(batch: int) -> torch.Tensor:
        with torch.no_grad():
            return G.synthesize(ws_for(batch, 3000 + batch)).clamp(-1, 1)

    ws_shape = ["batch", G.num_ws, G.w_dim]
    img_shape = ["batch", G.img_channels, G.resolution, G.resolution]
    f_shape = ["batch", *layer.shape]
    ws_info = _tensor_info("ws", ws_shape, None, None, "W+ codes (unbounded; G.mapping(z) or encoder output)")
    img_info = _tensor_info("image", img_shape, -1.0, 1.0, "raw generator output, roughly [-1, 1] (not clamped)")
    f_info = _tensor_info("features", f_shape, None, None, f"layer {k} ({layer.name}) activation, unbounded")
    specs = [
        GraphSpec("generator", SynthesisGraph(G), lambda b: {"ws": ws_for(b, 1000 + b)}, ["image"], G,
                  {"inputs": [ws_info], "outputs": [img_info]}),
        GraphSpec(f"generator_from_k{k}", SynthesisFromKGraph(G, k),
                  lambda b: {"ws": ws_for(b, 1000 + b), "features": features_for(b)}, ["image"], G,
                  {"inputs": [ws_info, f_info], "outputs": [img_info]}),
    ]
    if encoder is not None:
        enc_in = _tensor_info("image", img_shape, -1.0, 1.0, "RGB image in [-1, 1]")
        specs.append(GraphSpec("encoder", EncoderGraph(encoder), lambda b: {"image": images_for(b)},
                               ["ws", "features"], None, {"inputs": [enc_in], "outputs": [ws_info, f_info]}))
    return specs


def _check_encoder(G: Generator, encoder: Encoder, k: int, source: str) -> None:
    problems = []
    if (encoder.num_ws, encoder.w_dim) != (G.num_ws, G.w_dim):
        problems.append(f"encoder gives ws [{encoder.num_ws}, {encoder.w_dim}], generator takes [{G.num_ws}, {G.w_dim}]")
    if encoder.k != k:
        problems.append(f"encoder was built for layer K = {encoder.k}, not {k}")
    if encoder.generator_fingerprint and encoder.generator_fingerprint != G.fingerprint():
        problems.append(f"encoder belongs to generator {encoder.generator_fingerprint}, not {G.fingerprint()}")
    if getattr(encoder, "feature_branch", True) is False:  # the graph's outputs are (ws, features)
        problems.append("encoder has no feature branch (a W+-only encoder); only FS encoders export")
    if problems:
        raise ExportError(f"{source}: cannot export this encoder with this generator: " + "; ".join(problems))


def export(
    generator: Generator | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    encoder: Encoder | str | os.PathLike | None = None,
    k: int | None = None,
    format: str = "onnx",
    overwrite: bool = False,
    opset: int = ONNX_OPSET,
) -> dict:
    """Write the generator (and encoder) graphs of ``format`` ("onnx" or "torchscript") to
    ``out_dir`` with ``export.json`` beside them; see the module docstring for the files.

    Args:
        generator: a :class:`Generator` or anything :func:`invkit.load_generator` reads.
        encoder: an :class:`Encoder` or a file :func:`invkit.load_encoder` reads (checked against
            the generator's fingerprint).
        k: the layer of ``generator_from_k<K>`` (default: the encoder's K, else 5).
        overwrite: replace existing outputs (otherwise refused before anything is written).
        opset: ONNX opset (20 or later: StyleGAN3's input grid is ``AffineGrid``).

    Returns:
        The metadata written to ``export.json``.

    Raises:
        ExportError (a ``ValueError``): a one-line reason naming the file, when the network cannot
        be traced or exported, or a written file would not load or not match PyTorch. Nothing is
        written then.
    """
    require(format)
    from ..loading import load_generator

    source = str(generator) if not isinstance(generator, Generator) else (generator.adapter_name or "generator")
    G = generator if isinstance(generator, Generator) else load_generator(generator)
    if next(G.parameters()).device.type != "cpu":
        G = copy.deepcopy(G).cpu()
    G.eval()
    enc_source = None if encoder is None else (str(encoder) if not isinstance(encoder, Encoder) else "encoder")
    if encoder is not None and not isinstance(encoder, Encoder):
        from ..fs_encoder import load_encoder

        encoder = load_encoder(encoder, generator=G, k=k)
    if encoder is not None:
        encoder = encoder.cpu().eval()
    k = (encoder.k if encoder is not None else DEFAULT_K) if k is None else int(k)
    try:
        layer = G.layer(k)
    except ValueError as exc:
        raise ExportError(f"{source}: {exc}") from None
    if encoder is not None:
        _check_encoder(G, encoder, k, f"{enc_source}")

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    targets = [out / n for n in output_names(format, k, encoder is not None)] + [out / METADATA_NAME]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise ExportError(f"{existing[0]} exists (pass overwrite=True / --overwrite to replace it)")

    specs = _specs(G, k, encoder)
    graphs = {}
    with contextlib.ExitStack() as stack:  # every temporary is renamed only if all pass
        for spec, target in zip(specs, targets):
            tmp = stack.enter_context(atomic_path(target))
            src = enc_source if spec.name == "encoder" else source
            errors = write(spec, tmp, format, src, opset)
            graphs[spec.name] = {"file": target.name, **spec.info, "max_abs_error_vs_pytorch": errors}
        meta = {
            "invkit_version": _invkit_version(),
            "torch_version": torch.__version__,
            "format": format,
            "opset": opset if format == "onnx" else None,
            "dynamic_axes": {"batch": 0},
            "trace_batch": TRACE_BATCH,
            "noise_mode": "const",
            "k": k,
            "layer": {"index": layer.index, "name": layer.name, "shape": list(layer.shape)},
            "generator": {"source": source, "adapter": G.adapter_name, "fingerprint": G.fingerprint(),
                          "resolution": G.resolution, "num_ws": G.num_ws, "w_dim": G.w_dim,
                          "img_channels": G.img_channels},
            "encoder": None if encoder is None else {"source": enc_source,
                                                      "generator_fingerprint": encoder.generator_fingerprint},
            "graphs": graphs,
        }
    write_text(out / METADATA_NAME, json.dumps(meta, indent=2) + "\n")
    return meta


def _invkit_version() -> str:
    """The installed distribution's version (read from its metadata: the exporter sits below
    the public ``invkit`` namespace and does not import it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("invkit")
    except PackageNotFoundError:
        return "unknown"
