"""The layers of the StyleGAN2 network (:mod:`invkit.adapters.stylegan2_network`): [1, 3, 3, 1]
resampling, equalised-lr linear layers and the mapping MLP, modulated convolutions (reference,
grouped and stationary strategies), styled convs with noise, ToRGB, and the layer table.

Pure PyTorch, float32; the fast resampling paths come from :mod:`invkit.ops.resample`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from invkit.generator import LayerInfo
from invkit.ops import resample

SQRT2 = math.sqrt(2.0)
#: The 4-tap binomial filter both official implementations use for up-sampling.
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


# ---- resampling ------------------------------------------------------------------------------
def blur_kernel(taps: Sequence[float] = BLUR_TAPS, gain: float = 4.0) -> torch.Tensor:
    """Normalised 2-D outer-product filter ``[k, k]`` times ``gain`` (4 = up² keeps the mean)."""
    t = torch.tensor(list(taps), dtype=torch.float32)
    k = torch.outer(t, t)
    return k / k.sum() * gain


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """Depthwise FIR filter (true convolution) of ``x [B, C, H, W]`` after zero-padding
    ``pad = (before, after)`` on both spatial axes."""
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    w = kernel.flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, w, groups=c)


#: The same filter as 1-D taps with unit DC gain, for the separable fast path.
BLUR_1D = torch.tensor(BLUR_TAPS) / sum(BLUR_TAPS)


def upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-stuffing 2× up-sampling followed by the blur: ``[B, C, H, W] -> [B, C, 2H, 2W]``.

    Padding (2, 1) for a 4-tap filter matches ``upfirdn2d(up=2)`` of both official codes."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, h, 2, w, 2)
    up[:, :, :, 0, :, 0] = x
    up = up.reshape(b, c, 2 * h, 2 * w)
    taps = kernel.shape[0]
    return _filter2d(up, kernel, ((taps + 1) // 2, (taps - 2) // 2))


def upsample2x_fast(x: torch.Tensor) -> torch.Tensor:
    """:func:`upsample2x` with the [1, 3, 3, 1] blur, computed polyphase and separably
    (:func:`invkit.ops.resample.upfirdn2d`): no zero-stuffed map, 2 x 4 taps instead of 16."""
    return resample.upfirdn2d(x, BLUR_1D.to(x.device), up=2, padding=(2, 1, 2, 1), gain=4.0, impl="fast")


def blur_fast(x: torch.Tensor) -> torch.Tensor:
    """The 4-tap blur with padding 1 that follows the transposed conv (gain 4), separably."""
    return resample.upfirdn2d(x, BLUR_1D.to(x.device), padding=(1, 1, 1, 1), gain=4.0, impl="fast")


# ---- layers ----------------------------------------------------------------------------------
class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate.

    Stores ``weight = randn / lr_mul`` ``[out, in]`` and uses ``weight · lr_mul / √in`` and
    ``bias · lr_mul``, the convention of both official codes (so checkpoints copy over as is).
    With ``activate`` the output is ``lrelu(x, 0.2) · √2``.
    """

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0,
                 bias_init: float = 0.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.lr_mul = lr_mul
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.activate = activate

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A [out, in], b [out])`` with the equalised-lr gains applied."""
        return self.weight * self.weight_gain, self.bias * self.lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.effective()
        if self.activate:
            return F.leaky_relu(x @ weight.t() + bias, 0.2) * SQRT2
        return torch.addmm(bias.unsqueeze(0), x, weight.t())


class MappingNetwork(nn.Module):
    """``z [B, z_dim]`` -> ``w [B, w_dim]``: normalise z to unit second moment (PixelNorm), then
    ``len(dims) - 1`` equalised-lr FC layers with lrelu·√2."""

    def __init__(self, dims: Sequence[int], lr_mul: float = 0.01):
        super().__init__()
        self.fcs = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activate=True) for i in range(len(dims) - 1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for fc in self.fcs:
            x = fc(x)
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, up: bool = False) -> torch.Tensor:
    """Style-modulated convolution, one weight per sample (batch folded into conv groups).

    Args:
        x: ``[B, C_in, H, W]``.
        weight: ``[C_out, C_in, k, k]`` (already scaled by any constant gain).
        styles: ``[B, C_in]``.
        demodulate: rescale each output filter to unit norm (``rsqrt(Σ w² + 1e-8)``).
        up: stride-2 transposed conv ``[.., H, W] -> [.., 2H + k - 2, 2W + k - 2]`` (blur after).
    """
    b, c_in = x.shape[:2]
    c_out = weight.shape[0]
    w = weight.unsqueeze(0) * styles.reshape(b, 1, c_in, 1, 1)
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4]) + 1e-8).reshape(b, c_out, 1, 1, 1)
    return grouped_conv2d(x, w, up=up)


def grouped_conv2d(x: torch.Tensor, w: torch.Tensor, up: bool = False) -> torch.Tensor:
    """Convolve each sample of ``x [B, C_in, H, W]`` with its own weight ``w [B, C_out, C_in, k, k]``
    (batch folded into conv groups): ``[B, C_out, H, W]``, or with ``up`` the stride-2 transposed
    conv ``[B, C_out, 2H + k - 2, 2W + k - 2]``."""
    b, c_in, h, w_ = x.shape
    c_out, kh, kw = w.shape[1], w.shape[3], w.shape[4]
    if b > 1:
        # For one sample the fold is the identity; a reshape would give the size-1 batch dim a
        # stride that hides channels_last from oneDNN, which then copies the map to NCHW.
        x = x.reshape(1, b * c_in, h, w_)
    if up:
        # conv_transpose2d wants [in, out/groups, k, k] per group.
        w = w.transpose(1, 2).reshape(b * c_in, c_out, kh, kw)
        out = F.conv_transpose2d(x, w, stride=2, groups=b)
    else:
        out = F.conv2d(x, w.reshape(b * c_out, c_in, kh, kw), padding=kh // 2, groups=b)
    return out.reshape(b, c_out, *out.shape[2:]) if b > 1 else out


#: How the fast path runs modulated convolutions: "auto" picks per call (see
#: :func:`choose_modconv`), "grouped" modulates the weights (one conv group per sample),
#: "stationary" modulates the activations and convolves with the shared weight.
MODCONV_MODES = ("auto", "grouped", "stationary")


def choose_modconv(batch: int, c_in: int, c_out: int, k: int, hw_in: int, hw_out: int) -> str:
    """The cheaper modulated-conv strategy for a shape (the fast path's ``"auto"``).

    Both strategies run the same convolution FLOPs for one sample; they differ in what gets
    scaled: ``B·O·I·k²`` weight entries (grouped) or ``B·(I·HW_in + O·HW_out)`` activations
    (stationary). For ``B > 1`` the stationary form is one ordinary convolution over the batch
    with a shared weight, which oneDNN runs far better than ``B`` groups (measured in
    ``benchmarks/synthesis.py``), so it wins whenever the batch is larger than one.
    """
    if batch > 1:
        return "stationary"
    return "stationary" if c_in * hw_in + c_out * hw_out < c_out * c_in * k * k else "grouped"


def modulated_conv2d_stationary(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                                demodulate: bool = True, up: bool = False,
                                weight_sq: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`modulated_conv2d` with a stationary weight: ``conv(x · s, W) · d``.

    Modulating the input channels by the styles and scaling the output channels by the
    demodulation coefficients ``d[b, o] = rsqrt(Σ_i s[b, i]² Σ_k W[o, i, k]² + 1e-8)`` gives the
    same result as convolving with per-sample weights ``W · s · d`` (linearity), but every sample
    shares one weight tensor, so the batch is one ordinary convolution. Same arguments, shapes
    and result as :func:`modulated_conv2d` (up to float32 rounding). ``weight_sq [C_out, C_in]``
    is ``Σ_k W²`` when the caller has it already (see :meth:`StyledConv.fixed_weights`).
    """
    b = x.shape[0]
    c_out = weight.shape[0]
    x = x * styles.reshape(b, -1, 1, 1).to(x.dtype)
    if up:
        out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    else:
        out = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        if weight_sq is None:
            weight_sq = weight.square().sum(dim=[2, 3])
        d = torch.rsqrt(styles.square() @ weight_sq.t() + 1e-8)  # [B, O]
        d = d.reshape(b, c_out, 1, 1).to(out.dtype)
        out = out.mul_(d) if resample.inplace_ok(out, d) else out * d
    return out


def modulated_conv2d_fast(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                          demodulate: bool = True, up: bool = False, mode: str = "auto",
                          weight_sq: torch.Tensor | None = None) -> torch.Tensor:
    """The fast path's modulated conv: the strategy ``mode`` (see :data:`MODCONV_MODES`) in the
    memory format that suits the map size (:func:`invkit.ops.resample.conv_layout`). Same result as
    :func:`modulated_conv2d`. ``weight_sq [C_out, C_in]``: ``Σ_k W²`` if already known; with it
    the demodulation coefficients cost one ``[B, C_in] @ [C_in, C_out]`` product, whatever the
    strategy."""
    x = resample.conv_layout(x)
    if mode == "auto":
        b, c_in, h, w_ = x.shape
        c_out, _, k, _ = weight.shape
        hw_out = (2 * h + k - 2) * (2 * w_ + k - 2) if up else h * w_
        mode = choose_modconv(b, c_in, c_out, k, h * w_, hw_out)
    if mode == "stationary":
        return modulated_conv2d_stationary(x, weight, styles, demodulate=demodulate, up=up,
                                           weight_sq=weight_sq)
    if mode != "grouped":
        raise ValueError(f"modconv mode must be one of {MODCONV_MODES}, got {mode!r}")
    if demodulate and weight_sq is not None:
        # W · s · d with d from the known Σ_k W²: no square-and-sum over every modulated tap.
        d = torch.rsqrt(styles.square() @ weight_sq.t() + 1e-8)  # [B, O]
        scale = styles[:, None, :, None, None] * d[:, :, None, None, None]
        return grouped_conv2d(x, weight.unsqueeze(0) * scale.to(weight.dtype), up=up)
    return modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up)


class StyledConv(nn.Module):
    """Modulated 3×3 conv (optionally 2× up-sampling) + noise + bias + lrelu·√2 (+ clamp).

    Output ``[B, C_out, R, R]`` where ``R`` = ``resolution``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: bool = False, kernel_size: int = 3, conv_clamp: float | None = None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("blur", blur_kernel(), persistent=False)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self._fixed: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def fixed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W · gain [C_out, C_in, k, k], Σ_k (W · gain)² [C_out, C_in])`` for the fast path.

        Both depend on the weight only, so they are cached between calls, but only while no
        autograd graph will need them (the weight does not require grad or grad mode is off):
        training (e.g. ``recipes/toy_gan.py``) gets fresh, differentiable tensors every call.
        The cache is keyed by the weight's version counter, storage, dtype and device, so any
        in-place update (optimizer step, EMA ``lerp_``, ``load_state_dict``, ``.to()``)
        invalidates it. Writes through ``weight.data`` bypass the version counter: call
        :meth:`clear_cache` after those.
        """
        weight = self.weight
        if not resample.inplace_ok(weight):
            scaled = weight * self.weight_gain
            return scaled, scaled.square().sum(dim=[2, 3])
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device, self.weight_gain)
        if self._fixed is None or self._fixed[0] != key:
            with torch.no_grad():
                scaled = weight * self.weight_gain
                self._fixed = (key, scaled, scaled.square().sum(dim=[2, 3]))
        return self._fixed[1], self._fixed[2]

    def clear_cache(self) -> None:
        """Drop the cached :meth:`fixed_weights` (needed only after writes via ``weight.data``)."""
        self._fixed = None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None,
                modconv: str = "auto") -> torch.Tensor:
        if resample.get_impl() == "fast":
            return self._forward_fast(x, w, noise, modconv)
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, up=self.up)
        if self.up:
            # Transposed conv gives 2H + 1; the 4-tap blur with padding 1 brings it back to 2H.
            x = _filter2d(x, self.blur, (1, 1))
        if noise is not None:
            x = x + noise * self.noise_strength
        x = F.leaky_relu(x + self.bias.reshape(1, -1, 1, 1), 0.2) * SQRT2
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def _forward_fast(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None,
                      modconv: str) -> torch.Tensor:
        """Same result as the reference forward: separable blur, and noise, bias, lrelu·√2 and
        clamp applied in place on the conv output (no full-size temporaries)."""
        styles = self.affine(w)
        weight, weight_sq = self.fixed_weights()
        x = modulated_conv2d_fast(x, weight, styles, demodulate=True, up=self.up, mode=modconv,
                                  weight_sq=weight_sq)
        if self.up:
            x = blur_fast(x)
        if noise is not None:
            n = noise.to(x.dtype) * self.noise_strength
            x = x.add_(n) if resample.inplace_ok(x, n) else x + n
        return resample.bias_act(x, self.bias, slope=0.2, gain=SQRT2, clamp=self.conv_clamp,
                                 inplace=True, impl="fast")


class ToRGB(nn.Module):
    """Modulated 1×1 conv without demodulation + bias (+ clamp): ``[B, C, R, R] -> [B, img, R, R]``.

    The style is scaled by ``1/√C`` (the equalised-lr gain of a 1×1 conv)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, modconv: str = "auto") -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        if resample.get_impl() == "fast":
            y = modulated_conv2d_fast(x, self.weight, styles, demodulate=False, mode=modconv)
            return resample.bias_act(y, self.bias, slope=1.0, gain=1.0, clamp=self.conv_clamp,
                                     inplace=True, impl="fast")
        y = modulated_conv2d(x, self.weight, styles, demodulate=False)
        y = y + self.bias.reshape(1, -1, 1, 1)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


def block_names(resolution: int) -> list[str]:
    """Official (NVlabs) names of the conv layers, in order: ``b4.conv1, b8.conv0, b8.conv1, ...``."""
    names = ["b4.conv1"]
    r = 8
    while r <= resolution:
        names += [f"b{r}.conv0", f"b{r}.conv1"]
        r *= 2
    return names


def layer_table(resolution: int, channels: Sequence[int]) -> list[LayerInfo]:
    """The activations ``features_at`` can return: index 0 = ``b4.const`` ``[C_4, 4, 4]``
    (no w), index k >= 1 = the k-th conv layer's output, which reads ``ws[:, k - 1]``."""
    layers = [LayerInfo(0, "b4.const", (int(channels[0]), 4, 4), None)]
    for j, name in enumerate(block_names(resolution)):
        r = int(name[1:name.index(".")])
        c = int(channels[int(round(math.log2(r))) - 2])
        layers.append(LayerInfo(j + 1, name, (c, r, r), j))
    return layers
