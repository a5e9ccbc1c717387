"""Fast up-FIR-down resampling, filtered leaky ReLU and fused bias + activation.

The plain implementations in :mod:`invkit.ops.upfirdn` stay the test oracle ("reference" path); this
module computes the same values with far fewer operations and far less memory ("fast" path, the
default). :func:`set_impl` / :func:`use_impl` choose the path globally; every op also takes an
explicit ``impl=`` argument.

What the fast path does differently (same results up to float32 rounding):

* **Polyphase up-sampling.** Zero insertion followed by a FIR filter equals a strided transposed
  convolution of the un-stuffed signal (``y[n] = sum_m x[m] f[n - m U]``), so the zeros are never
  materialised and ``(U - 1) / U`` of the multiply-adds on them are never done.
* **Separable passes.** A 1-D filter is applied along W and then along H (``T`` taps each instead
  of ``T**2``); down-sampling is a strided convolution that only computes the kept samples.
  StyleGAN3-R's radial 2-D filters are applied as one strided depthwise convolution.
* **channels_last depthwise convolutions.** oneDNN's depthwise kernels vectorise over channels in
  NHWC, several times faster on CPU than NCHW for these long thin kernels.
* **Tiling.** :func:`filtered_lrelu` processes (channel chunk x output-row band) tiles, so the
  temporarily up-sampled map (the 4x up-sampled 1044^2 maps of StyleGAN3-1024 hold hundreds of MB)
  only ever exists one small tile at a time; tiles stay cache-sized and their allocations are
  reused by the allocator instead of page-faulting fresh memory on every call.
* **Folded gains.** The up-sampling gain goes into the up filter, the activation gain into the down
  filter (``clamp(g * lrelu(v), c) = g * clamp(lrelu(v), c / g)``), so the non-linearity is two
  in-place passes over each tile.

Conventions are those of :mod:`invkit.ops.upfirdn`: ``[B, C, H, W]`` maps, filters ``None`` / ``[T]``
(separable) / ``[T, T]``, padding ``(left, right, top, bottom)`` of the up-sampled map (negative
crops), filters applied as true convolutions unless ``flip_filter``. Outputs of the fast path are
``channels_last`` tensors (same values and shape; call ``.contiguous()`` if you need NCHW strides).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from invkit.ops import upfirdn

Padding = Sequence[int]
IMPLS = ("fast", "reference")
_impl = "fast"

#: Upper bound (bytes) of one up-sampled tile in :func:`filtered_lrelu`. Large enough that the
#: halo rows a band recomputes stay a small fraction, small enough to stay in L2/L3 and below the
#: allocator's mmap threshold (fresh mmapped memory page-faults on every call).
TILE_BYTES = 6 * 2**20
#: Channels per tile: a multiple of 16 (one AVX-512 register of float32) keeps the NHWC kernels
#: fully vectorised.
TILE_CHANNELS = 64
#: Dense convolutions run in channels_last from this many pixels per map on: oneDNN's NHWC kernels
#: win clearly on large maps with few channels (x2-4 for StyleGAN2's 1024-px transposed conv),
#: while NCHW is faster for the small 512-channel maps of the first blocks.
CHANNELS_LAST_MIN_PIXELS = 64 * 64


def conv_layout(x: torch.Tensor) -> torch.Tensor:
    """``x [B, C, H, W]`` in the memory format the fast path convolves it in (see
    :data:`CHANNELS_LAST_MIN_PIXELS`); a no-op when it already is."""
    if x.shape[2] * x.shape[3] >= CHANNELS_LAST_MIN_PIXELS:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


# --------------------------------------------------------------------------------------------
# The global switch
# --------------------------------------------------------------------------------------------
def set_impl(name: str) -> None:
    """Use the ``"fast"`` (default) or ``"reference"`` implementation of every resampling op,
    and of the adapters' modulated convolutions, from now on (process-wide)."""
    global _impl
    if name not in IMPLS:
        raise ValueError(f"unknown resampling implementation {name!r}; choose one of {IMPLS}")
    _impl = name


def get_impl() -> str:
    """The implementation currently selected by :func:`set_impl`."""
    return _impl


@contextlib.contextmanager
def use_impl(name: str) -> Iterator[None]:
    """``with use_impl("reference"): ...`` selects an implementation for a block of code."""
    before = get_impl()
    set_impl(name)
    try:
        yield
    finally:
        set_impl(before)


def inplace_ok(*tensors: torch.Tensor) -> bool:
    """Whether in-place updates are safe: no autograd graph will need the overwritten values."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _resolve(impl: str | None) -> str:
    if impl is None:
        return _impl
    if impl not in IMPLS:
        raise ValueError(f"unknown resampling implementation {impl!r}; choose one of {IMPLS}")
    return impl


# --------------------------------------------------------------------------------------------
# One axis of up-FIR-down
# --------------------------------------------------------------------------------------------
def _depthwise(f: torch.Tensor, channels: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D filter ``[T]`` as a depthwise conv weight ``[C, 1, T, 1]`` (dim 2) or ``[C, 1, 1, T]``."""
    shape = [1, 1, 1, 1]
    shape[dim] = f.shape[0]
    return f.to(dtype).reshape(shape).expand(channels, 1, *shape[2:])


def _pad_axis(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Zero-pad (positive) or crop (negative) ``x`` along ``dim`` (2 or 3)."""
    if before == 0 and after == 0:
        return x
    pad = [before, after, 0, 0] if dim == 3 else [0, 0, before, after]
    return F.pad(x, pad)


def _fir_axis(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int,
    down: int,
    pad: tuple[int, int],
    dim: int,
    window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Up-sample by ``up`` (zero insertion), pad, convolve with the 1-D filter ``f [T]`` (true
    convolution, gain already folded in), keep every ``down``-th sample; along ``dim`` only.

    ``window = (n0, n1)`` computes output samples ``n0 .. n1 - 1`` only (indices of the full
    output; samples outside the signal are zeros). Without it the whole output is returned.

    With ``z`` the zero-stuffed, padded signal the output is ``o[n] = sum_k z[nD + k] f[T-1-k]``.
    For ``up > 1`` this equals ``yfull[nD + T - 1 - pad0]`` with ``yfull[i] = sum_m x[m] f[i - mU]``
    (the strided transposed convolution), which is how it is computed: no zeros, no wasted taps.
    """
    n_in = x.shape[dim]
    taps = f.shape[0]
    n_out = (n_in * up + pad[0] + pad[1] - taps) // down + 1
    n0, n1 = (0, n_out) if window is None else window
    channels = x.shape[1]
    if up == 1:
        # o[n] = sum_k xp[nD + k] h[k]: a strided correlation of the padded input (the rows of
        # the window only: they need input rows nD - pad0 ... nD - pad0 + T - 1).
        lo = n0 * down - pad[0]
        hi = (n1 - 1) * down - pad[0] + taps
        a, b = max(lo, 0), min(hi, n_in)
        conv_pad = [0, 0]
        if taps > 1 and a == 0 and b == n_in and a - lo == hi - b:
            # Symmetric zero padding: let the convolution do it instead of copying the map.
            conv_pad[dim - 2] = a - lo
            xs = x
        elif a >= b:  # the window lies entirely in the zero padding
            shape = list(x.shape)
            shape[dim] = hi - lo
            xs = x.new_zeros(shape)
        else:
            xs = _pad_axis(x.narrow(dim, a, b - a), a - lo, hi - b, dim)
        if taps == 1:
            out = xs * f[0]
            index = [slice(None)] * 4
            index[dim] = slice(None, None, down)
            return out[tuple(index)]
        stride = [1, 1]
        stride[dim - 2] = down
        weight = _depthwise(f.flip(0), channels, dim, x.dtype)
        return F.conv2d(xs, weight, stride=stride, padding=conv_pad, groups=channels)

    # Transposed convolution: yfull index k = n D + T - 1 - pad0 for the wanted n.
    k0 = n0 * down + taps - 1 - pad[0]
    k1 = (n1 - 1) * down + taps - pad[0]  # exclusive
    m_lo = max(0, -((taps - 1 - k0) // up))  # ceil((k0 - T + 1) / up), at least 0
    m_hi = min(n_in - 1, (k1 - 1) // up)
    if m_lo > m_hi:
        shape = list(x.shape)
        shape[dim] = n1 - n0
        return x.new_zeros(shape)
    if dim == 2:
        return _up_rows_polyphase(x, f, up, k0, k1, down)
    xs = x.narrow(dim, m_lo, m_hi - m_lo + 1)
    stride = [1, 1]
    stride[dim - 2] = up
    y = F.conv_transpose2d(xs, _depthwise(f, channels, dim, x.dtype), stride=stride, groups=channels)
    # y[j] = yfull[j + m_lo * up]; cut (or zero-extend) to yfull[k0 : k1].
    start = k0 - m_lo * up
    y = _pad_axis(y, -start, (k1 - m_lo * up) - y.shape[dim], dim)
    if down > 1:
        index = [slice(None)] * 4
        index[dim] = slice(None, None, down)
        y = y[tuple(index)]
    return y


def _up_rows_polyphase(x: torch.Tensor, f: torch.Tensor, up: int, k0: int, k1: int, down: int) -> torch.Tensor:
    """Rows ``k0 .. k1 - 1`` (every ``down``-th) of ``yfull[k] = sum_m x[m] f[k - m up]`` along H.

    oneDNN's strided transposed convolution is slow along H in channels_last, so the rows are
    computed per phase: with ``k = a up + s``, ``yfull[k] = sum_j x[a - j] f[j up + s]``, i.e. ``up``
    ordinary depthwise convolutions with ``J = ceil(T / up)`` taps whose outputs are interleaved.
    """
    channels, n_in = x.shape[1], x.shape[2]
    taps = f.shape[0]
    j_taps = -(-taps // up)
    f = F.pad(f, [0, j_taps * up - taps])  # zero taps make every phase J long
    a_lo, a_hi = k0 // up, (k1 - 1) // up
    lo, hi = a_lo - j_taps + 1, a_hi + 1  # input rows used (zeros outside 0..n_in)
    a, b = max(lo, 0), min(hi, n_in)
    if a >= b:
        return x.new_zeros([x.shape[0], channels, len(range(0, k1 - k0, down)), x.shape[3]])
    xs = _pad_axis(x.narrow(2, a, b - a), a - lo, hi - b, 2)
    phases = []
    for s in range(up):
        # Correlation with the reversed phase filter = the convolution sum_j x[a - j] g_s[j].
        g = f[s::up].flip(0).to(x.dtype).reshape(1, 1, j_taps, 1).expand(channels, 1, j_taps, 1)
        phases.append(F.conv2d(xs, g, groups=channels).permute(0, 2, 3, 1))  # [B, rows, W, C]
    y = torch.stack(phases, dim=2)  # [B, rows, up, W, C]: rows interleaved by phase
    y = y.reshape(y.shape[0], -1, y.shape[3], y.shape[4]).permute(0, 3, 1, 2)  # NCHW view, NHWC memory
    y = y[:, :, k0 - a_lo * up: k1 - a_lo * up: down]
    return y


def _fir2d(x: torch.Tensor, f: torch.Tensor, up: int, down: int, padding: Padding) -> torch.Tensor:
    """Up-FIR-down with a non-separable ``f [T, T]`` (gain folded in), true convolution."""
    left, right, top, bottom = (int(p) for p in padding)
    channels = x.shape[1]
    taps_y, taps_x = f.shape
    if up == 1:
        x = F.pad(x, [left, right, top, bottom])
        weight = f.flip([0, 1]).to(x.dtype)[None, None].expand(channels, 1, taps_y, taps_x)
        return F.conv2d(x, weight, stride=down, groups=channels)
    weight = f.to(x.dtype)[None, None].expand(channels, 1, taps_y, taps_x)
    y = F.conv_transpose2d(x, weight, stride=up, groups=channels)
    # yfull index along each axis: n * down + T - 1 - pad0.
    h_out = (x.shape[2] * up + top + bottom - taps_y) // down + 1
    w_out = (x.shape[3] * up + left + right - taps_x) // down + 1
    y = F.pad(
        y,
        [
            -(taps_x - 1 - left), (w_out - 1) * down + taps_x - left - y.shape[3],
            -(taps_y - 1 - top), (h_out - 1) * down + taps_y - top - y.shape[2],
        ],
    )
    return y[:, :, ::down, ::down] if down > 1 else y


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
    impl: str | None = None,
) -> torch.Tensor:
    """Up-sample by zero insertion, pad, convolve with ``f``, keep every ``down``-th pixel.

    Same contract and result as :func:`invkit.ops.upfirdn.upfirdn2d` (see there); ``impl`` overrides
    the global choice. Returns ``[B, C, H', W']`` (channels_last on the fast path).
    """
    if _resolve(impl) == "reference":
        return upfirdn.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=gain, flip_filter=flip_filter)
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [B, C, H, W], got {list(x.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if f is None:
        f = torch.ones([1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got {list(f.shape)}")
    left, right, top, bottom = (int(p) for p in padding)
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    x = _channels_last(x)
    if f.ndim == 2:
        return _fir2d(x, f * gain, up, down, (left, right, top, bottom))
    f = f * math.sqrt(gain)
    x = _fir_axis(x, f, up, down, (left, right), dim=3)
    return _fir_axis(x, f, up, down, (top, bottom), dim=2)


# --------------------------------------------------------------------------------------------
# Bias + activation
# --------------------------------------------------------------------------------------------
def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    slope: float = 0.2,
    gain: float = math.sqrt(2),
    clamp: float | None = None,
    inplace: bool = False,
    impl: str | None = None,
) -> torch.Tensor:
    """``clamp(lrelu(x + bias, slope) * gain, -clamp, clamp)``, ``bias [C]`` over ``[B, C, ...]``.

    ``slope = 1, gain = 1`` is the linear case. With ``inplace`` (fast path) ``x`` is overwritten,
    saving one full-size temporary per op; only pass it for tensors nobody else holds.
    """
    if _resolve(impl) == "reference":
        return upfirdn.bias_lrelu(x, bias, slope=slope, gain=gain, clamp=clamp)
    if not inplace_ok(x) or (bias is not None and not inplace_ok(bias)):
        # Autograd needs the intermediate values: the plain out-of-place formula.
        return upfirdn.bias_lrelu(x, bias, slope=slope, gain=gain, clamp=clamp)
    if bias is not None:
        b = bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
        x = x.add_(b) if inplace else x + b
    elif not inplace:
        x = x.clone(memory_format=torch.preserve_format)
    if slope != 1:
        F.leaky_relu_(x, slope)
    if gain != 1:
        x.mul_(gain)
    if clamp is not None and clamp >= 0:
        x.clamp_(-clamp, clamp)
    return x


# --------------------------------------------------------------------------------------------
# Filtered leaky ReLU
# --------------------------------------------------------------------------------------------
def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    bias: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """StyleGAN3's alias-free non-linearity: bias, up-sample ``up`` with ``fu`` (gain ``up**2``)
    and ``padding``, ``clamp(lrelu(., slope) * gain)``, filter with ``fd``, keep every ``down``-th.

    Same contract and result as :func:`invkit.ops.upfirdn.filtered_lrelu`. The fast path computes the
    output in (channel chunk x row band) tiles so the up-sampled map never exists in full.

    Args:
        x: ``[B, C, H, W]``.
        fu, fd: ``None``, ``[T]`` (separable) or ``[T, T]`` (fd only: StyleGAN3-R's radial filters).
        bias: ``[C]`` or None.
        padding: ``(left, right, top, bottom)`` of the up-sampled map.

    Returns:
        ``[B, C, H', W']`` with ``W' = (W * up + left + right - Tu - Td + 2) // down + 1``.
    """
    if _resolve(impl) == "reference":
        return upfirdn.filtered_lrelu(x, fu, fd, bias, up=up, down=down, padding=padding, gain=gain,
                                      slope=slope, clamp=clamp)
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects [B, C, H, W], got {list(x.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if fu is not None and fu.ndim != 1:
        # A 2-D up filter is never used by StyleGAN3; the oracle handles it.
        return upfirdn.filtered_lrelu(x, fu, fd, bias, up=up, down=down, padding=padding, gain=gain,
                                      slope=slope, clamp=clamp)
    left, right, top, bottom = (int(p) for p in padding)
    x = _channels_last(x)
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    if fu is None and fd is None and up == 1 and down == 1:
        # ToRGB-like: no resampling, only padding, activation and clamp.
        x = F.pad(x, [left, right, top, bottom]) if any(padding) else x
        return bias_act(x, None, slope=slope, gain=gain, clamp=clamp, inplace=bias is not None or any(padding))

    one = torch.ones([1], dtype=torch.float32, device=x.device)
    fu = (one if fu is None else fu.to(x.device)) * up  # gain up**2 split over the two axes
    fd = one if fd is None else fd.to(x.device)
    # Fold the activation gain into the (linear) down filter and divide the clamp by it.
    act_gain = gain
    if act_gain > 0:
        fd = fd * (act_gain if fd.ndim == 2 else math.sqrt(act_gain))
        act_clamp = None if clamp is None or clamp < 0 else clamp / act_gain
    else:  # degenerate gains (0 or negative) are left to the plain formula
        return upfirdn.filtered_lrelu(x, fu / up, fd, None, up=up, down=down, padding=padding, gain=gain,
                                      slope=slope, clamp=clamp)

    batch, channels, height, width = x.shape
    taps_u, taps_d = fu.shape[0], fd.shape[-1]
    h_tmp = height * up + top + bottom - taps_u + 1
    w_tmp = width * up + left + right - taps_u + 1
    h_out = (h_tmp - taps_d) // down + 1
    w_out = (w_tmp - taps_d) // down + 1
    if h_out <= 0 or w_out <= 0:
        raise ValueError(f"filtered_lrelu: padding {tuple(padding)} leaves no output for a {height}x{width} input")
    out = torch.empty([batch, channels, h_out, w_out], dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)

    c_step = channels if channels <= TILE_CHANNELS else TILE_CHANNELS
    # Rows of the up-sampled tile per output row, plus the down filter's halo.
    # Tiles hold one image: bands stay tall (little halo) whatever the batch size.
    row_bytes = min(c_step, channels) * w_tmp * x.element_size()
    tmp_rows = max(TILE_BYTES // max(row_bytes, 1), down + taps_d)
    o_step = max(1, (tmp_rows - taps_d) // down + 1)
    for n, c0 in itertools.product(range(batch), range(0, channels, c_step)):
        xc = x[n:n + 1, c0:c0 + c_step]
        # Up along W once per channel chunk is cheaper per band but holds a 1/up-size map; doing
        # it per band keeps memory bounded and costs only the input-row halo.
        for o0 in range(0, h_out, o_step):
            o1 = min(o0 + o_step, h_out)
            t0, t1 = o0 * down, (o1 - 1) * down + taps_d  # up-sampled rows this band needs
            # Input rows feeding t0..t1 (see _fir_axis): narrow before the W pass.
            k0, k1 = t0 + taps_u - 1 - top, t1 - 1 + taps_u - top
            m_lo = max(0, -((taps_u - 1 - k0) // up))
            m_hi = min(height - 1, (k1 - 1) // up)
            if m_lo > m_hi:
                tile = x.new_zeros([1, xc.shape[1], t1 - t0, w_tmp]).contiguous(memory_format=torch.channels_last)
            else:
                rows = xc[:, :, m_lo:m_hi + 1]
                tile = _fir_axis(rows, fu, up, 1, (left, right), dim=3)
                # Shift the H window to the narrowed rows: input row m_lo is now row 0.
                tile = _fir_axis(tile, fu, up, 1, (top + m_lo * up, bottom), dim=2,
                                 window=(t0, t1))
                # Rows the narrowed input cannot produce are exactly the zeros of the padding,
                # which _fir_axis returns as such.
            if not inplace_ok(tile):
                tile = F.leaky_relu(tile, slope) if slope != 1 else tile
                tile = tile.clamp(-act_clamp, act_clamp) if act_clamp is not None else tile
            else:
                if slope != 1:
                    F.leaky_relu_(tile, slope)
                if act_clamp is not None:
                    tile.clamp_(-act_clamp, act_clamp)
            if fd.ndim == 2:
                res = _fir2d(tile, fd, 1, down, (0, 0, 0, 0))
            else:
                res = _fir_axis(tile, fd, 1, down, (0, 0), dim=3)
                res = _fir_axis(res, fd, 1, down, (0, 0), dim=2)
            out[n:n + 1, c0:c0 + c_step, o0:o1].copy_(res)
    return out


def filter_taps(f: torch.Tensor | None) -> int:
    """Number of taps along one axis (1 for ``None``)."""
    return upfirdn.filter_taps(f)
