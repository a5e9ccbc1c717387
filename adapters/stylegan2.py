"""StyleGAN2 (config-e/f, ``architecture='skip'``) as one compact, readable PyTorch network.

One network serves every StyleGAN2 checkpoint family: rosinality / pSp ``.pt`` files and NVlabs
(stylegan2-ada-pytorch, the stylegan3 repo's stylegan2, legacy TF) pickles differ only in key
names and tensor layouts, which :mod:`invkit.adapters.stylegan2_formats` maps onto this module's
parameters. Both official implementations agree numerically with it (see ``docs/stylegan2.md``):
the upsampling conv is a stride-2 transposed conv of the *unflipped* weight followed by a
[1, 3, 3, 1] blur, exactly as both of them compute it.

Pure PyTorch, no compiled or JIT ops; runs on CPU and CUDA in float32. NVlabs' ``num_fp16_res``
only chooses float16 storage for the last blocks on CUDA there; here everything stays float32, so
the setting is recorded but changes nothing (the reference vectors were made with ``force_fp32``).
NVlabs' ``conv_clamp`` is honoured: conv layers clamp their activation to ``±conv_clamp``
(``conv_clamp · gain`` with the layer gain 1 of the skip architecture), ToRGB layers their output.

Layer numbering (``Generator.layers``): index 0 is the 4×4 constant input, index k >= 1 the output
of the k-th conv layer (k = 1 is the 4×4 conv ``b4.conv1``, then ``b8.conv0`` (upsampling),
``b8.conv1``, ``b16.conv0``, ...). At 1024 px index 5 is ``b16.conv1``, the second 3×3 conv at
16×16 (512×16×16). Conv index k reads ``ws[:, k - 1]``; the ToRGB of the block ending with conv
index k reads ``ws[:, k]``.

The module also is the plugin that registers the ``stylegan2`` adapter (see the hooks at the end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from invkit.generator import Generator, LayerInfo, NoiseArg, StyleAffine
from invkit.hookspecs import hookimpl
from invkit.ops import resample

ADAPTER_NAME = "stylegan2"
SQRT2 = math.sqrt(2.0)
#: The 4-tap binomial filter both official implementations use for up-sampling.
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


# ---- resampling ------------------------------------------------------------------------------
def _blur_kernel(taps: Sequence[float] = BLUR_TAPS, gain: float = 4.0) -> torch.Tensor:
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
        self.register_buffer("blur", _blur_kernel(), persistent=False)
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


# ---- the generator ---------------------------------------------------------------------------
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


class StyleGAN2Generator(Generator):
    """StyleGAN2 generator (skip architecture, unconditional).

    Args:
        z_dim: latent size.
        w_dim: intermediate latent size.
        resolution: output size (a power of two >= 4).
        channels: channel count per block resolution 4, 8, ..., ``resolution`` (read from a
            checkpoint's tensor shapes; official tables vary between repos).
        img_channels: output image channels.
        mapping_dims: widths ``[z_dim, h_1, ..., w_dim]`` of the mapping network (default:
            ``[z_dim] + [w_dim] * 8``).
        mapping_lr_mul: equalised-lr multiplier of the mapping (0.01 in every official model).
        conv_clamp: NVlabs activation clamp (None: off; official ffhq.pkl uses 256).
        num_fp16_res: NVlabs' float16 setting, recorded only (everything runs in float32).

    Parameters (``state_dict``): ``mapping_net.fcs.{i}.weight/bias``, ``w_avg [w_dim]``,
    ``const [C_4, 4, 4]``, ``convs.{j}.{weight [C_out, C_in, 3, 3], bias, noise_strength [],
    noise_const [R, R], affine.weight [C_in, w_dim], affine.bias}`` and
    ``torgbs.{b}.{weight [img, C, 1, 1], bias, affine.*}``; j is the 0-based conv number (layer
    index j + 1), b the block (4×4 = 0). ``docs/stylegan2.md`` maps them to the official keys.
    """

    adapter_name = ADAPTER_NAME
    #: Where ``w_avg`` came from: "stored" in the checkpoint, or how it was computed.
    w_avg_source: str = "stored"
    #: Modulated-conv strategy of the fast path (``invkit.ops.resample.set_impl("fast")``, the
    #: default): "auto", "grouped" or "stationary" (see :func:`choose_modconv`). The reference
    #: path always modulates the weights, one conv group per sample.
    modconv: str = "auto"

    def __init__(self, z_dim: int, w_dim: int, resolution: int, channels: Sequence[int],
                 img_channels: int = 3, mapping_dims: Sequence[int] | None = None,
                 mapping_lr_mul: float = 0.01, conv_clamp: float | None = None, num_fp16_res: int = 0):
        super().__init__()
        log2 = int(round(math.log2(resolution)))
        if resolution < 4 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        n_blocks = log2 - 1
        if len(channels) != n_blocks:
            raise ValueError(f"need {n_blocks} channel counts (4..{resolution} px), got {len(channels)}")
        mapping_dims = list(mapping_dims) if mapping_dims is not None else [z_dim] + [w_dim] * 8
        if mapping_dims[0] != z_dim or mapping_dims[-1] != w_dim:
            raise ValueError(f"mapping_dims must run from z_dim={z_dim} to w_dim={w_dim}, got {mapping_dims}")
        self.z_dim, self.w_dim, self.resolution, self.img_channels = z_dim, w_dim, resolution, img_channels
        self.channels = [int(c) for c in channels]
        self.conv_clamp = conv_clamp
        self.config: dict[str, Any] = {
            "z_dim": z_dim, "w_dim": w_dim, "resolution": resolution, "channels": self.channels,
            "img_channels": img_channels, "mapping_dims": mapping_dims, "mapping_lr_mul": mapping_lr_mul,
            "conv_clamp": conv_clamp, "num_fp16_res": num_fp16_res,
        }

        self.mapping_net = MappingNetwork(mapping_dims, lr_mul=mapping_lr_mul)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.const = nn.Parameter(torch.randn(self.channels[0], 4, 4))
        convs = [StyledConv(self.channels[0], self.channels[0], w_dim, 4, conv_clamp=conv_clamp)]
        torgbs = [ToRGB(self.channels[0], img_channels, w_dim, conv_clamp=conv_clamp)]
        for b in range(1, n_blocks):
            r, c_in, c_out = 4 * 2 ** b, self.channels[b - 1], self.channels[b]
            convs.append(StyledConv(c_in, c_out, w_dim, r, up=True, conv_clamp=conv_clamp))
            convs.append(StyledConv(c_out, c_out, w_dim, r, conv_clamp=conv_clamp))
            torgbs.append(ToRGB(c_out, img_channels, w_dim, conv_clamp=conv_clamp))
        self.convs = nn.ModuleList(convs)
        self.torgbs = nn.ModuleList(torgbs)
        self.register_buffer("blur", _blur_kernel(), persistent=False)
        self.num_ws = len(convs) + 1

        self.layers = layer_table(resolution, self.channels)

    # ---- mapping ---------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """``z [B, z_dim]`` -> ``ws [B, num_ws, w_dim]``; truncation ``w_avg + psi (w - w_avg)``
        on the first ``truncation_cutoff`` rows (all when None)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got {list(z.shape)}")
        w = self.mapping_net(z)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws

    # ---- noise -----------------------------------------------------------------------------
    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One standard-normal noise map ``[batch, 1, R, R]`` per conv layer (conv order), on the
        generator's device; pass the list as ``noise_mode`` to reproduce an image exactly."""
        device = self.const.device
        out = []
        for conv in self.convs:
            r = conv.resolution
            if generator is not None and generator.device != device:
                out.append(torch.randn(batch, 1, r, r, generator=generator).to(device))
            else:
                out.append(torch.randn(batch, 1, r, r, generator=generator, device=device))
        return out

    def _noise_list(self, noise_mode: NoiseArg, batch: int) -> list[torch.Tensor | None]:
        if isinstance(noise_mode, str):
            if noise_mode == "const":
                return [c.noise_const[None, None] for c in self.convs]
            if noise_mode == "none":
                return [None] * len(self.convs)
            if noise_mode == "random":
                return list(self.sample_noise(batch))
            raise ValueError(f"noise_mode must be 'const', 'random', 'none' or a list of tensors, got {noise_mode!r}")
        noise = list(noise_mode)
        if len(noise) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} noise tensors (one per conv layer), got {len(noise)}")
        for j, (n, conv) in enumerate(zip(noise, self.convs)):
            r = conv.resolution
            if n.ndim != 4 or n.shape[1:] != (1, r, r) or n.shape[0] not in (1, batch):
                raise ValueError(f"noise tensor {j} must be [{batch} or 1, 1, {r}, {r}], got {list(n.shape)}")
        return noise

    # ---- synthesis -------------------------------------------------------------------------
    def run_synthesis(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseArg = "const",
        *,
        stop_at: int | None = None,
        replace_at: int | None = None,
        features: torch.Tensor | None = None,
        blend: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Run the synthesis network once (see :meth:`Generator.run_synthesis`).

        Replacement follows the official Feature-Style code: activation ``replace_at`` is
        swapped for ``features`` (or blended ``(1 - blend)·own + blend·features``) only on its
        way into the *next conv layer*. A block's ToRGB always reads the block's own
        second-conv output, so:

        * ``replace_at`` = a block's second conv (e.g. 5 = ``b16.conv1``; also 1 = ``b4.conv1``):
          the RGB skip image up to and including that block stays w-driven; F enters from the
          next block on.
        * ``replace_at`` = a block's first (upsampling) conv (e.g. 4 = ``b16.conv0``): the
          block's second conv consumes F, so the same block's ToRGB already sees its effect.
        * ``replace_at`` = 0 replaces the constant input.
        * ``replace_at`` = the last layer changes nothing (no conv consumes it).

        ``stop_at`` returns activation ``stop_at`` as the next conv would consume it (after any
        replacement at that same index).
        """
        batch = ws.shape[0]
        if replace_at is not None:
            if features is None:
                raise ValueError("replace_at needs features")
            features = features.to(ws.dtype)
        noises = self._noise_list(noise_mode, batch)
        if isinstance(blend, torch.Tensor) and blend.ndim == 1:
            blend = blend.reshape(-1, 1, 1, 1)

        def swap(k: int, own: torch.Tensor) -> torch.Tensor:
            if replace_at != k:
                return own
            if isinstance(blend, float | int) and blend == 1:
                return features
            return torch.lerp(own, features, blend) if isinstance(blend, torch.Tensor) \
                else own + blend * (features - own)

        x = swap(0, self.const.unsqueeze(0).expand(batch, -1, -1, -1))
        if stop_at == 0:
            return x
        img = None
        block = 0
        for j, conv in enumerate(self.convs):
            own = conv(x, ws[:, j], noises[j], self.modconv)
            x = swap(j + 1, own)
            if stop_at == j + 1:
                return x.contiguous()
            if j % 2 == 0:  # j even: the block's last conv: its ToRGB reads the unreplaced output
                y = self.torgbs[block](own, ws[:, j + 1], self.modconv)
                img = y if img is None else self._skip_up(img, y)
                block += 1
        return img.contiguous()

    def _skip_up(self, img: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``upsample2x(img) + y``: the RGB skip connection (in place on the fast path)."""
        if resample.get_impl() == "fast":
            up = upsample2x_fast(img)
            return up.add_(y) if resample.inplace_ok(up, y) else up + y
        return upsample2x(img, self.blur) + y

    def trace(self, ws: torch.Tensor, noise_mode: NoiseArg = "const") -> dict[str, torch.Tensor]:
        """Every intermediate of one forward pass, keyed by official NVlabs names:
        ``b4.const``, ``b{R}.conv0/conv1`` (layer outputs), ``b{R}.torgb`` (ToRGB output
        without the skip) and ``b{R}:img`` (the accumulated RGB). For tests and debugging."""
        batch = ws.shape[0]
        noises = self._noise_list(noise_mode, batch)
        names = block_names(self.resolution)
        out: dict[str, torch.Tensor] = {}
        x = self.const.unsqueeze(0).expand(batch, -1, -1, -1)
        out["b4.const"] = x
        img, block = None, 0
        for j, conv in enumerate(self.convs):
            x = conv(x, ws[:, j], noises[j], self.modconv)
            out[names[j]] = x
            if j % 2 == 0:
                y = self.torgbs[block](x, ws[:, j + 1], self.modconv)
                r = 4 * 2 ** block
                out[f"b{r}.torgb"] = y
                img = y if img is None else self._skip_up(img, y.clone())
                out[f"b{r}:img"] = img
                block += 1
        return out

    # ---- editor support --------------------------------------------------------------------
    def style_affines(self) -> list[StyleAffine]:
        """Effective style affines (equalised-lr gains applied) in synthesis order: conv layers
        ``b{R}.conv0/conv1`` and ToRGB layers ``b{R}.torgb`` (a ToRGB style is further scaled by
        ``1/√C`` inside the layer; that constant is not folded in here)."""
        names = block_names(self.resolution)
        out: list[StyleAffine] = []
        block = 0
        for j, conv in enumerate(self.convs):
            a, b = conv.affine.effective()
            out.append(StyleAffine(names[j], j, a.detach(), b.detach()))
            if j % 2 == 0:
                a, b = self.torgbs[block].affine.effective()
                out.append(StyleAffine(f"b{4 * 2 ** block}.torgb", j + 1, a.detach(), b.detach()))
                block += 1
        return out

    @torch.no_grad()
    def compute_w_avg(self, n: int = 10_000, seed: int = 0, batch: int = 1000) -> torch.Tensor:
        """Mean of the mapping over ``n`` standard-normal z drawn with a fixed ``seed``
        (deterministic, device-independent: z is drawn on the CPU). Returns ``[w_dim]``."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen)
        device = self.const.device
        total = torch.zeros(self.w_dim, dtype=torch.float64, device=device)
        for i in range(0, n, batch):
            total += self.mapping_net(z[i:i + batch].to(device)).double().sum(0)
        return (total / n).float()


def from_config(config: dict, state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> StyleGAN2Generator:
    """Rebuild a generator saved in invkit's own format (``Generator.config`` + state dict)."""
    known = {"z_dim", "w_dim", "resolution", "channels", "img_channels", "mapping_dims",
             "mapping_lr_mul", "conv_clamp", "num_fp16_res"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"stylegan2 config has unknown entries {unknown}")
    G = StyleGAN2Generator(**config)
    result = G.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"stylegan2 weights do not match the config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return G.to(device)


# ---- plugin hooks ----------------------------------------------------------------------------
def load(checkpoint, device: str | torch.device = "cpu") -> StyleGAN2Generator:
    """Load any StyleGAN2 checkpoint the readers know (rosinality, pSp, NVlabs pickle)."""
    from .stylegan2_formats import load_checkpoint

    return load_checkpoint(checkpoint).to(device)


@hookimpl
def register_generators(register):
    register(
        ADAPTER_NAME,
        load,
        from_config=from_config,
        description="StyleGAN2 (rosinality / pSp .pt, NVlabs stylegan2-ada and legacy pickles)",
    )


@hookimpl
def identify_checkpoint(checkpoint):
    from .stylegan2_formats import identify

    return identify(checkpoint)
