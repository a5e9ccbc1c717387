"""Inference options for synthesis: TF32, bfloat16 autocast and ``torch.compile``.

All of them trade exactness for speed on CUDA and are off by default; the float32 paths are what
reproduces the reference vectors. On the CPU TF32 and bf16 autocast are accepted as no-ops (or
refused, with ``strict=True``) so that the same script runs everywhere.

    from invkit import inference
    with torch.no_grad(), inference.inference_mode("cuda", tf32=True, bf16=True):
        img = G.synthesize(ws)
    fast_synth = inference.compiled(G.synthesize)      # torch.compile where it pays off

Quality cost: :func:`psnr_vs_fp32` measures it for a generator and a batch of ``ws``
(``benchmarks/synthesis.py`` and ``docs/performance.md`` report it where a GPU was available).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch


def _is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor-core math for CUDA matmuls and cuDNN convolutions, process
    wide. TF32 keeps float32 range with a 10-bit mantissa (~1e-3 relative error per product)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def inference_mode(
    device: str | torch.device = "cpu", tf32: bool = False, bf16: bool = False, strict: bool = False
) -> Iterator[None]:
    """Context for fast synthesis on ``device``.

    Args:
        device: where the generator runs.
        tf32: CUDA only: TF32 matmuls/convolutions inside the block (restored afterwards).
        bf16: CUDA only: ``torch.autocast(dtype=bfloat16)``: convolutions and matmuls in bfloat16
            (8-bit mantissa), element-wise ops and reductions in float32.
        strict: raise ``ValueError`` instead of ignoring ``tf32``/``bf16`` off CUDA.

    On the CPU (``strict=False``) both switches do nothing: oneDNN has no TF32, and bf16 autocast
    on CPUs without native bf16 matmul units is slower than float32.
    """
    cuda = _is_cuda(device)
    if (tf32 or bf16) and not cuda:
        if strict:
            raise ValueError(f"tf32/bf16 inference needs a CUDA device, got {device!r}")
        yield
        return
    if cuda and not torch.cuda.is_available():
        raise ValueError("inference on CUDA was requested but torch.cuda.is_available() is False")
    with contextlib.ExitStack() as stack:
        if tf32:
            before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            set_tf32(True)
            stack.callback(lambda: (setattr(torch.backends.cuda.matmul, "allow_tf32", before[0]),
                                    setattr(torch.backends.cudnn, "allow_tf32", before[1])))
        if bf16:
            stack.enter_context(torch.autocast(device_type="cuda", dtype=torch.bfloat16))
        yield


def compiled(fn: Callable, mode: str = "max-autotune-no-cudagraphs", dynamic: bool = False) -> Callable:
    """``torch.compile(fn)`` with settings that suit synthesis: shapes are fixed per generator and
    batch, so ``dynamic=False``; autotuned convolution/matmul choices pay off on CUDA.

    On the CPU compilation needs a C++ toolchain at first call and mostly fuses element-wise ops
    that the fast path already does in place, so it rarely pays off there; it is still allowed.
    Raises RuntimeError with the reason when ``torch.compile`` is unavailable.
    """
    if not hasattr(torch, "compile"):
        raise RuntimeError("torch.compile is not available in this PyTorch build")
    return torch.compile(fn, mode=mode, dynamic=dynamic)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """PSNR (dB) between two images in ``[-1, 1]`` (``data_range`` 2), over the whole batch."""
    mse = (a.float() - b.float()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


@torch.no_grad()
def psnr_vs_fp32(G, ws: torch.Tensor, tf32: bool = False, bf16: bool = False) -> float:
    """Image PSNR (dB) of ``G.synthesize(ws)`` under the given options against plain float32,
    on ``ws``'s device: the quality cost of TF32 / bf16 for this generator."""
    device = ws.device
    with inference_mode(device, tf32=False, bf16=False):
        ref = G.synthesize(ws)
    with inference_mode(device, tf32=tf32, bf16=bf16):
        out = G.synthesize(ws)
    return psnr(out.clamp(-1, 1), ref.clamp(-1, 1))
