"""Up-sample / FIR-filter / down-sample ops and the low-pass filters they use.

These are the *reference* implementations: each op is written the plain way (zero insertion, a
full-resolution depthwise convolution, then decimation), so that it is easy to check against the
definitions of the Alias-Free GAN paper (Karras et al. 2021, Sec. 3 and Appendix C) and serves as
the oracle for any faster path. They are also what runs by default today.

Conventions (the same as NVlabs' ``upfirdn2d`` / ``filtered_lrelu``):

* feature maps are ``[B, C, H, W]`` float tensors;
* a filter is ``None`` (identity), a 1-D tensor ``[T]`` applied separably along both axes, or a
  2-D tensor ``[T, T]`` (the radial filters of StyleGAN3-R);
* ``padding`` is ``(left, right, top, bottom)`` in pixels of the *up-sampled* map; negative
  values crop;
* filtering is a true convolution (the kernel is flipped before ``conv2d``, which correlates);
  every filter used by StyleGAN is symmetric, so this only matters for custom filters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Padding = Sequence[int]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Up-sample by zero insertion, pad, convolve with ``f``, keep every ``down``-th pixel.

    Args:
        x: ``[B, C, H, W]``.
        f: ``None``, ``[T]`` (separable) or ``[T, T]``.
        up, down: integer factors, the same along both axes.
        padding: ``(left, right, top, bottom)`` after up-sampling (negative crops).
        gain: overall gain of the filter; zero insertion divides the mean by ``up**2``, so
            interpolation uses ``gain = up**2``.
        flip_filter: correlate instead of convolve.

    Returns:
        ``[B, C, H', W']`` with ``W' = (W * up + left + right - T + 1 + down - 1) // down`` (and the
        same for ``H'``).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [B, C, H, W], got {list(x.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got {list(f.shape)}")
    batch, channels, height, width = x.shape
    left, right, top, bottom = (int(p) for p in padding)

    # Zero insertion: every input pixel is followed by (up - 1) zeros along each axis.
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)

    # Pad (positive) or crop (negative) each side independently.
    x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    x = x[:, :, max(-top, 0): x.shape[2] - max(-bottom, 0), max(-left, 0): x.shape[3] - max(-right, 0)]

    # A separable filter carries sqrt(gain) per axis so that the 2-D product has the full gain.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = f[None, None].repeat(channels, 1, 1, 1)
        x = F.conv2d(x, weight, groups=channels)
    else:
        weight = f[None, None].repeat(channels, 1, 1)
        x = F.conv2d(x, weight.unsqueeze(2), groups=channels)  # along W
        x = F.conv2d(x, weight.unsqueeze(3), groups=channels)  # along H

    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def bias_lrelu(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    slope: float = 0.2,
    gain: float = float(np.sqrt(2)),
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(lrelu(x + bias, slope) * gain, -clamp, clamp)`` with ``bias [C]`` broadcast over
    ``[B, C, ...]``. ``slope = 1, gain = 1`` gives the linear (ToRGB) case."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)
    if slope != 1:
        x = torch.where(x >= 0, x, x * slope)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def filter_taps(f: torch.Tensor | None) -> int:
    """Number of taps along one axis (1 for ``None``)."""
    return 1 if f is None else int(f.shape[-1])


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    bias: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = float(np.sqrt(2)),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """The alias-free non-linearity of StyleGAN3: bias, up-sample, leaky ReLU, down-sample.

    In order: add ``bias [C]``; up-sample by ``up`` with filter ``fu`` (zero insertion, gain
    ``up**2``) and ``padding``; ``lrelu(., slope) * gain`` and clamp to ``[-clamp, clamp]`` (when
    ``clamp`` is given); low-pass with ``fd`` and keep every ``down``-th pixel. The non-linearity
    runs at the temporarily higher sampling rate so that the harmonics it creates can be filtered
    out before decimation (paper, Sec. 3.2).

    Args:
        x: ``[B, C, H, W]``.
        fu, fd: up / down filters (``None``, ``[T]`` or ``[T, T]``).
        bias: ``[C]`` or None.
        padding: ``(left, right, top, bottom)`` of the up-sampled map.

    Returns:
        ``[B, C, H', W']`` with
        ``W' = (W * up + left + right - (Tu - 1) - (Td - 1) + (down - 1)) // down``.
    """
    x = bias_lrelu(x, bias, slope=1.0, gain=1.0)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up**2)
    x = bias_lrelu(x, None, slope=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down)


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass FIR filter, as designed by StyleGAN3 (paper, Appendix C.1).

    Args:
        numtaps: filter length; 1 means "no filter" and returns None.
        cutoff: cutoff frequency ``f_c`` (same unit as ``fs``).
        width: transition band width (twice the half-width ``f_h``).
        fs: sampling rate the filter runs at.
        radial: build the 2-D rotation-invariant filter ``jinc(2 f_c r)`` windowed by the
            outer product of two Kaiser windows (StyleGAN3-R's down-sampling filters) instead of
            the separable 1-D one.

    Returns:
        float32 ``[numtaps]`` (separable, unit DC gain), ``[numtaps, numtaps]`` (radial, unit DC
        gain) or None.
    """
    import scipy.signal
    import scipy.special

    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        taps = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    # Odd lengths put a sample at r = 0, where J1(2 pi c r) / (pi r) tends to c.
    taps = np.where(r == 0, cutoff, taps)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    taps = taps * np.outer(window, window)
    taps = taps / np.sum(taps)
    return torch.as_tensor(taps, dtype=torch.float32)
