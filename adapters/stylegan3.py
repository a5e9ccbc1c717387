"""StyleGAN3 (Alias-Free GAN, Karras et al. 2021): the T and R configurations.

A plain-PyTorch re-implementation of NVlabs' ``networks_stylegan3.Generator`` whose state-dict keys
are the official ones, so official weights load with ``load_state_dict`` and the reference vectors
are reproduced to float32 noise. Nothing here needs compiled ops; the resampling ops live in
:mod:`invkit.ops.upfirdn`.

The network, from ``z`` to the image:

* **mapping** -- ``z`` normalised to unit second moment, ``num_layers`` (2) equalised-lr fully
  connected layers with leaky ReLU (lr multiplier 0.01), broadcast to ``num_ws = num_layers + 2``
  rows (synthesis ``num_layers``, default 14), truncation towards ``w_avg``.
* **synthesis input** (layer index 0, reads ``ws[:, 0]``) -- Fourier features: ``C_0`` sinusoids
  with fixed frequencies ``freqs`` and phases ``phases``, evaluated on a ``size x size`` grid that
  covers ``size / sampling_rate`` units. An affine layer maps ``w`` to ``(r_c, r_s, t_x, t_y)``; the
  rotation is normalised to unit length, and rotation, translation and the user ``transform``
  buffer (the inverse of a user transform; identity by default) move the frequencies and phases.
  Frequencies near the band limit fade out linearly, then a trainable ``[C_0, C_0]`` matrix mixes
  the channels.
* **synthesis layers** ``L0 .. L{num_layers}`` (layer index k = j + 1 for ``Lj``, reading
  ``ws[:, j + 1]``) -- modulated conv (``conv_kernel`` 3 for T, 1 for R; weight and style
  pre-normalised, demodulated, input scaled by ``rsqrt(magnitude_ema)``), then the filtered leaky
  ReLU of :func:`invkit.ops.upfirdn.filtered_lrelu`: bias, up-sample x2 (x4 where the sampling rate
  doubles), ``lrelu * sqrt(2)``, clamp to ``conv_clamp``, low-pass and down-sample x2. The filters
  are Kaiser low-pass filters (separable; radial 2-D down filters for R, except in the
  critically sampled last layers). Feature maps carry a 10-pixel margin on each side except the
  last two layers. The last layer is ToRGB: 1x1 modulated conv without demodulation (styles
  scaled by ``1/sqrt(C_in)``), bias, clamp, no activation, no resampling.
* **output** -- the ToRGB output times ``output_scale`` (0.25).

Every size (sampling rates, cutoffs, transition bands, channel counts, map sizes, paddings) is
computed from the constructor kwargs with the paper's schedule (:func:`synthesis_schedule`) and
then checked against the checkpoint's tensor shapes and stored filters, so a mismatch is reported
key by key instead of producing a wrong image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from invkit.generator import Generator, LayerInfo, NoiseArg, StyleAffine
from invkit.hookspecs import hookimpl
from invkit.ops import resample
from invkit.ops.upfirdn import design_lowpass_filter

ADAPTER_NAME = "stylegan3"

#: Synthesis kwargs the official ``SynthesisNetwork`` / ``SynthesisLayer`` accept, with their
#: defaults. ``num_fp16_res`` only selects float16 on CUDA in the official code and is ignored
#: (everything runs in float32); ``magnitude_ema_beta`` only matters for training.
SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_layers": 14,
    "num_critical": 2,
    "first_cutoff": 2,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "margin_size": 10,
    "output_scale": 0.25,
    "num_fp16_res": 4,
    "conv_kernel": 3,
    "filter_size": 6,
    "lrelu_upsampling": 2,
    "use_radial_filters": False,
    "conv_clamp": 256,
    "magnitude_ema_beta": 0.999,
}
MAPPING_DEFAULTS: dict[str, Any] = {"num_layers": 2, "lr_multiplier": 0.01, "w_avg_beta": 0.998}
GENERATOR_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


# --------------------------------------------------------------------------------------------
# Configuration and the layer schedule
# --------------------------------------------------------------------------------------------
def normalize_kwargs(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``Generator`` kwargs in either layout -> one flat, complete, JSON-able dict.

    The stylegan3 repository passes the synthesis kwargs flat (``channel_base=...`` next to
    ``z_dim``), stylegan2-ada-style configs nest them in ``synthesis_kwargs``; both are accepted.
    Missing entries get the official defaults; unknown ones are refused, because silently
    ignoring an architecture switch would build a different network.
    """
    kwargs = dict(init_kwargs)
    nested = kwargs.pop("synthesis_kwargs", None) or {}
    mapping_kwargs = dict(kwargs.pop("mapping_kwargs", None) or {})
    for key in GENERATOR_KEYS:
        if key not in kwargs and key != "c_dim":
            raise ValueError(f"StyleGAN3 init_kwargs lack {key!r}")
    out: dict[str, Any] = {
        "z_dim": int(kwargs.pop("z_dim")),
        "c_dim": int(kwargs.pop("c_dim", 0) or 0),
        "w_dim": int(kwargs.pop("w_dim")),
        "img_resolution": int(kwargs.pop("img_resolution")),
        "img_channels": int(kwargs.pop("img_channels")),
    }
    synthesis = {**kwargs, **dict(nested)}
    unknown = sorted(set(synthesis) - set(SYNTHESIS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown StyleGAN3 synthesis kwargs {unknown}")
    unknown = sorted(set(mapping_kwargs) - set(MAPPING_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown StyleGAN3 mapping_kwargs {unknown}")
    for key, default in SYNTHESIS_DEFAULTS.items():
        value = synthesis.get(key, default)
        if key == "conv_clamp":
            out[key] = None if value is None else float(value)
        elif isinstance(default, bool):
            out[key] = bool(value)
        elif isinstance(default, int):
            out[key] = int(value)
        else:
            out[key] = float(value)
    out["mapping_kwargs"] = {
        "num_layers": int(mapping_kwargs.get("num_layers", MAPPING_DEFAULTS["num_layers"])),
        "lr_multiplier": float(mapping_kwargs.get("lr_multiplier", MAPPING_DEFAULTS["lr_multiplier"])),
        "w_avg_beta": float(mapping_kwargs.get("w_avg_beta", MAPPING_DEFAULTS["w_avg_beta"])),
    }
    if out["c_dim"] != 0:
        raise NotImplementedError(
            f"conditional StyleGAN3 generators (c_dim={out['c_dim']}) are not supported; "
            "every released StyleGAN3 model is unconditional"
        )
    return out


@dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input: ``channels`` features on a ``size x size`` grid sampled at
    ``sampling_rate`` samples per unit, band-limited to ``bandwidth`` (= the first cutoff)."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class LayerSpec:
    """Every size of one synthesis layer ``L{index}`` (all derived from the kwargs).

    ``in/out_size`` include margins; ``up/down_factor`` bracket the temporary sampling rate at
    which the leaky ReLU runs; ``padding`` is ``(left, right, top, bottom)`` of the up-sampled map.
    """

    index: int
    name: str
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    tmp_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]


def synthesis_schedule(config: Mapping[str, Any]) -> tuple[InputSpec, list[LayerSpec]]:
    """The per-layer sampling rates, cutoffs, sizes, channels and filter sizes (paper, Sec. 3.3
    and Appendix C), for a :func:`normalize_kwargs` config.

    Cutoffs grow geometrically from ``first_cutoff`` to ``img_resolution / 2`` over the first
    ``num_layers - num_critical`` layers and stay there; stopbands likewise, from
    ``first_stopband`` to ``last_cutoff * last_stopband_rel``; the sampling rate is the smallest
    power of two >= twice the stopband (capped at the resolution); the transition half-width
    fills the gap between cutoff and ``max(stopband, rate / 2)``. Channels are
    ``channel_base / 2 / cutoff`` capped at ``channel_max``. numpy float64 is used throughout
    so that the values (and hence the designed filters) equal the official ones bit for bit.
    """
    res = config["img_resolution"]
    num_layers = config["num_layers"]
    num_critical = config["num_critical"]
    last_cutoff = res / 2
    last_stopband = last_cutoff * config["last_stopband_rel"]
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = config["first_cutoff"] * (last_cutoff / config["first_cutoff"]) ** exponents
    stopbands = config["first_stopband"] * (last_stopband / config["first_stopband"]) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + config["margin_size"] * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((config["channel_base"] / 2) / cutoffs, config["channel_max"]))
    channels[-1] = config["img_channels"]

    spec_in = InputSpec(int(channels[0]), int(sizes[0]), float(sampling_rates[0]), float(cutoffs[0]))
    layers = []
    filter_size = config["filter_size"]
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == num_layers
        is_critical = idx >= num_layers - num_critical
        in_rate, out_rate = int(sampling_rates[prev]), int(sampling_rates[idx])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else config["lrelu_upsampling"])
        up = int(np.rint(tmp_rate / in_rate))
        down = int(np.rint(tmp_rate / out_rate))
        if in_rate * up != tmp_rate or out_rate * down != tmp_rate:
            raise ValueError(f"layer L{idx}: sampling rates {in_rate} -> {out_rate} are not integer ratios")
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        kernel = 1 if is_torgb else config["conv_kernel"]
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Total padding so that the output has out_size pixels: the size before decimation,
        # minus the up-sampled conv output, plus what the two FIR filters eat.
        pad_total = (out_size - 1) * down + 1
        pad_total -= (in_size + kernel - 1) * up
        pad_total += up_taps + down_taps - 2
        # Shift by up/2 so that samples sit at pixel centres (the symmetric interpretation of
        # the paper's Appendix C.3).
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        out_channels = int(channels[idx])
        layers.append(
            LayerSpec(
                index=idx,
                name=f"L{idx}_{out_size}_{out_channels}",
                is_torgb=is_torgb,
                is_critically_sampled=is_critical,
                in_channels=int(channels[prev]),
                out_channels=out_channels,
                in_size=in_size,
                out_size=out_size,
                in_sampling_rate=in_rate,
                out_sampling_rate=out_rate,
                tmp_sampling_rate=tmp_rate,
                in_cutoff=float(cutoffs[prev]),
                out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]),
                out_half_width=float(half_widths[idx]),
                conv_kernel=kernel,
                up_factor=up,
                down_factor=down,
                up_taps=up_taps,
                down_taps=down_taps,
                down_radial=bool(config["use_radial_filters"]) and not is_critical,
                padding=(pad_lo, pad_hi, pad_lo, pad_hi),
            )
        )
    return spec_in, layers


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
class FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer: stores ``weight = randn / lr_multiplier`` and uses
    ``weight * lr_multiplier / sqrt(in)`` and ``bias * lr_multiplier``; optional leaky ReLU
    (slope 0.2, gain sqrt(2))."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        weight_init: float = 1.0,
        bias_init: float | Sequence[float] = 0.0,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        bias = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
        self.bias = nn.Parameter(torch.from_numpy(bias / lr_multiplier))
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A [out, in], b [out])`` such that the pre-activation output is ``x @ A.T + b``."""
        return self.weight * self.weight_gain, self.bias * self.bias_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in] -> [B, out]``."""
        weight, bias = self.effective()
        if self.activation == "linear":
            return torch.addmm(bias.unsqueeze(0), x, weight.t())
        x = x.matmul(weight.t()) + bias.unsqueeze(0)
        return F.leaky_relu(x, 0.2) * np.sqrt(2)


class MappingNetwork(nn.Module):
    """``z [B, z_dim]`` -> ``ws [B, num_ws, w_dim]`` (``fc0 .. fc{n-1}`` and the ``w_avg`` buffer)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int, lr_multiplier: float):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        features = [z_dim] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnected(features[idx], features[idx + 1], "lrelu", lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        x = z.to(torch.float32)
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


class SynthesisInput(nn.Module):
    """Fourier features, ``w [B, w_dim] -> [B, C, size, size]`` (paper, Sec. 3.1 and Appendix F).

    ``affine`` maps ``w`` to ``(r_c, r_s, t_x, t_y)``: a rotation (normalised to unit length) and a
    translation applied to the features, composed with the ``transform`` buffer.
    """

    def __init__(self, w_dim: int, spec: InputSpec):
        super().__init__()
        self.spec = spec
        self.channels, self.size = spec.channels, spec.size
        self.sampling_rate, self.bandwidth = spec.sampling_rate, spec.bandwidth
        # Random frequencies inside the band (a radially decaying density), random phases;
        # checkpoints overwrite both.
        freqs = torch.randn([self.channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * self.bandwidth
        phases = torch.rand([self.channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([self.channels, self.channels]))
        self.affine = FullyConnected(w_dim, 4, weight_init=0.0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``w [B, w_dim]`` -> features ``[B, channels, size, size]`` (values about [-1, 1])."""
        batch = w.shape[0]
        t = self.affine(w)  # [B, 4] = (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # keep only the rotation's angle
        eye = torch.eye(3, device=w.device, dtype=w.dtype).unsqueeze(0).repeat([batch, 1, 1])
        m_r = eye.clone()
        m_r[:, 0, 0] = t[:, 0]
        m_r[:, 0, 1] = -t[:, 1]
        m_r[:, 1, 0] = t[:, 1]
        m_r[:, 1, 1] = t[:, 0]
        m_t = eye.clone()
        m_t[:, 0, 2] = -t[:, 2]
        m_t[:, 1, 2] = -t[:, 3]
        transforms = m_r @ m_t @ self.transform.unsqueeze(0)  # [B, 3, 3]

        # Transforming the sampling grid = transforming frequencies (linear part) and phases
        # (translation part) of each sinusoid.
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [B, C, 2]
        # Fade out frequencies between the bandwidth and the Nyquist rate to suppress aliasing.
        amplitudes = (
            1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        ).clamp(0, 1)

        # A size x size grid of pixel centres spanning size / sampling_rate units.
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * self.size / self.sampling_rate
        theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)

        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [B, H, W, C]
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    padding: int = 0,
    demodulate: bool = True,
    input_gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution, as one grouped conv over the batch.

    Args:
        x: ``[B, I, H, W]``.
        weight: ``[O, I, k, k]``.
        styles: ``[B, I]``.
        padding: zero padding on every side.
        demodulate: normalise each output channel's modulated weight to unit L2 norm. Before
            that, weight and styles are pre-normalised to unit RMS (the style RMS over the whole
            batch, as in the official code; it cancels in the demodulation up to the 1e-8 term).
        input_gain: scalar or ``[I]`` gain on the input channels (``rsqrt(magnitude_ema)``).

    Returns:
        ``[B, O, H + 2 padding - k + 1, W + ...]``.
    """
    batch, in_channels = styles.shape
    out_channels, _, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # [B, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [B, O]
        w = w * dcoefs.reshape(batch, out_channels, 1, 1, 1)
    if input_gain is not None:
        gain = input_gain.expand(batch, in_channels)
        w = w * gain.reshape(batch, 1, in_channels, 1, 1)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    w = w.reshape(batch * out_channels, in_channels, kh, kw)
    x = F.conv2d(x, w.to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


def modulated_conv2d_stationary(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    padding: int = 0,
    demodulate: bool = True,
    input_gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`modulated_conv2d` with one shared weight: ``conv(x * s * gain, W) * d``.

    By linearity, scaling the input channels by the (normalised) styles and the output channels
    by the demodulation coefficients ``d[b, o] = rsqrt(sum_i s[b, i]^2 sum_k W[o, i, k]^2 + 1e-8)``
    equals convolving with the per-sample weights of :func:`modulated_conv2d`, while the whole
    batch runs as one ordinary convolution. Same arguments, shapes and result (float32 rounding).
    """
    batch, in_channels = styles.shape
    out_channels = weight.shape[0]
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    scale = styles if input_gain is None else styles * input_gain.expand(batch, in_channels)
    x = x * scale.reshape(batch, in_channels, 1, 1).to(x.dtype)
    out = F.conv2d(x, weight.to(x.dtype), padding=padding)
    if demodulate:
        d = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [B, O]
        d = d.reshape(batch, out_channels, 1, 1).to(out.dtype)
        out = out.mul_(d) if resample.inplace_ok(out, d) else out * d
    return out


#: Modulated-conv strategies of the fast path (see :func:`choose_modconv`).
MODCONV_MODES = ("auto", "grouped", "stationary")


def choose_modconv(batch: int, in_channels: int, out_channels: int, kernel: int, hw_in: int, hw_out: int) -> str:
    """The cheaper strategy for a shape: for one sample both run the same convolution and differ
    in what gets scaled, ``O * I * k^2`` weights ("grouped") or ``I * HW_in + O * HW_out``
    activations ("stationary"); for batches the stationary form is one ordinary convolution with
    a shared weight instead of ``B`` conv groups, which is what oneDNN / cuDNN run best."""
    if batch > 1:
        return "stationary"
    weights = out_channels * in_channels * kernel * kernel
    return "stationary" if in_channels * hw_in + out_channels * hw_out < weights else "grouped"


class SynthesisLayer(nn.Module):
    """One ``L{k}`` layer: modulated conv then filtered leaky ReLU (or, for ToRGB, a 1x1
    modulated conv, bias and clamp). ``x [B, in_channels, in_size, in_size]`` and
    ``w [B, w_dim]`` -> ``[B, out_channels, out_size, out_size]``."""

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: float | None):
        super().__init__()
        self.spec = spec
        self.is_torgb = spec.is_torgb
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(
            torch.randn([spec.out_channels, spec.in_channels, spec.conv_kernel, spec.conv_kernel])
        )
        self.bias = nn.Parameter(torch.zeros([spec.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer(
            "up_filter",
            design_lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2, spec.tmp_sampling_rate),
        )
        self.register_buffer(
            "down_filter",
            design_lowpass_filter(
                spec.down_taps,
                spec.out_cutoff,
                spec.out_half_width * 2,
                spec.tmp_sampling_rate,
                radial=spec.down_radial,
            ),
        )

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """``w [B, w_dim] -> [B, in_channels]`` as used by the convolution."""
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.spec.in_channels * self.spec.conv_kernel**2))
        return styles

    def forward(self, x: torch.Tensor, w: torch.Tensor, modconv: str = "auto") -> torch.Tensor:
        """Modulated conv then filtered leaky ReLU. With the fast ops (the default) the
        activations are channels_last, the cheaper modulated-conv strategy is picked per shape
        and the up-sampled map never exists in full (:func:`invkit.ops.resample.filtered_lrelu`);
        under ``resample.use_impl("reference")`` the plain oracle ops of
        :mod:`invkit.ops.upfirdn` run instead."""
        spec = self.spec
        conv = modulated_conv2d
        if resample.get_impl() == "fast":
            x = resample.conv_layout(x)
            if modconv == "auto":
                size_in = x.shape[2] * x.shape[3]
                size_out = (x.shape[2] + spec.conv_kernel - 1) * (x.shape[3] + spec.conv_kernel - 1)
                modconv = choose_modconv(x.shape[0], spec.in_channels, spec.out_channels, spec.conv_kernel,
                                         size_in, size_out)
            if modconv not in ("grouped", "stationary"):
                raise ValueError(f"modconv must be one of {MODCONV_MODES}, got {modconv!r}")
            conv = modulated_conv2d_stationary if modconv == "stationary" else modulated_conv2d
        x = conv(
            x,
            self.weight,
            self.styles(w),
            padding=spec.conv_kernel - 1,
            demodulate=not self.is_torgb,
            input_gain=self.magnitude_ema.rsqrt(),
        )
        # ToRGB: linear (slope 1, gain 1) with no resampling, but still clamped.
        return resample.filtered_lrelu(
            x,
            self.up_filter,
            self.down_filter,
            self.bias,
            up=spec.up_factor,
            down=spec.down_factor,
            padding=spec.padding,
            gain=1.0 if self.is_torgb else float(np.sqrt(2)),
            slope=1.0 if self.is_torgb else 0.2,
            clamp=self.conv_clamp,
        )


class SynthesisNetwork(nn.Module):
    """``input`` and the layers ``L{k}_{size}_{channels}`` under their official names."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        spec_in, specs = synthesis_schedule(config)
        self.output_scale = config["output_scale"]
        self.input = SynthesisInput(config["w_dim"], spec_in)
        self.layer_names = [spec.name for spec in specs]
        for spec in specs:
            setattr(self, spec.name, SynthesisLayer(config["w_dim"], spec, config["conv_clamp"]))

    def layer_modules(self) -> list[SynthesisLayer]:
        return [getattr(self, name) for name in self.layer_names]


# --------------------------------------------------------------------------------------------
# The Generator
# --------------------------------------------------------------------------------------------
class StyleGAN3Generator(Generator):
    """NVlabs StyleGAN3 (T or R) as an invkit :class:`~invkit.generator.Generator`.

    Layer indices: 0 is the Fourier input (``ws[:, 0]``, ``[C_0, 36, 36]`` at every official
    resolution), k >= 1 is the output of ``L{k-1}`` (reading ``ws[:, k]``), including margins; the
    last index is the ToRGB output *before* ``output_scale``. StyleGAN3 has no noise inputs:
    ``noise_mode`` is accepted and ignored (a noise list must be empty).

    Build it with :func:`from_nvlabs` (official weights) or directly from a config
    (``StyleGAN3Generator(normalize_kwargs(kwargs))``: official random initialisation, filters
    designed with scipy).
    """

    adapter_name = ADAPTER_NAME
    #: Modulated-conv strategy of the fast path (``invkit.ops.resample.set_impl("fast")``, the
    #: default): "auto", "grouped" or "stationary" (see :func:`choose_modconv`). The reference
    #: path always modulates the weights, one conv group per sample.
    modconv: str = "auto"

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        config = normalize_kwargs(config)
        self.config = config
        self.z_dim = config["z_dim"]
        self.w_dim = config["w_dim"]
        self.resolution = config["img_resolution"]
        self.img_channels = config["img_channels"]
        self.num_ws = config["num_layers"] + 2
        self.synthesis = SynthesisNetwork(config)
        mk = config["mapping_kwargs"]
        # The official key prefix is ``mapping.``, but ``mapping`` is the Generator's method:
        # register the module under that name directly (``add_module`` refuses names that are
        # class attributes) and reach it through ``mapping_network``.
        self._modules["mapping"] = MappingNetwork(
            self.z_dim, self.w_dim, self.num_ws, mk["num_layers"], mk["lr_multiplier"]
        )
        inp = self.synthesis.input
        self.layers = [LayerInfo(0, "input", (inp.channels, inp.size, inp.size), 0)]
        for k, layer in enumerate(self.synthesis.layer_modules(), start=1):
            s = layer.spec
            self.layers.append(LayerInfo(k, s.name, (s.out_channels, s.out_size, s.out_size), k))

    @property
    def mapping_network(self) -> MappingNetwork:
        """The mapping network module (state-dict prefix ``mapping.``)."""
        return self._modules["mapping"]

    @property
    def w_avg(self) -> torch.Tensor:  # type: ignore[override]
        """The truncation centre ``[w_dim]`` (``mapping.w_avg``)."""
        return self.mapping_network.w_avg

    @property
    def schedule(self) -> list[LayerSpec]:
        """The :class:`LayerSpec` of every ``L{k}`` layer, in order."""
        return [layer.spec for layer in self.synthesis.layer_modules()]

    def mapping(
        self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got {list(z.shape)}")
        return self.mapping_network(z, truncation_psi, truncation_cutoff)

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
        """Walk input, ``L0 .. L{n}``; stop at, or replace, activation ``stop_at`` / ``replace_at``.

        The replacement happens right after layer ``replace_at`` produced its output, i.e.
        right before the next layer reads it (StyleGAN3 has no skip connections, so nothing
        else sees the original); replacing the last index replaces the ToRGB output, which is
        then scaled by ``output_scale``.
        """
        _check_noise(noise_mode)
        last = len(self.layers) - 1
        for name, k in (("stop_at", stop_at), ("replace_at", replace_at)):
            if k is not None and not 0 <= k <= last:
                raise ValueError(f"{name}={k} out of range: this generator has layers 0..{last}")
        if (replace_at is None) != (features is None):
            raise ValueError("replace_at and features must be given together")
        ws = ws.to(torch.float32)
        x = self.synthesis.input(ws[:, 0])
        for k in range(len(self.layers)):
            if k > 0:
                x = getattr(self.synthesis, self.layers[k].name)(x, ws[:, k], self.modconv)
            if k == stop_at:
                return x.contiguous()
            if k == replace_at:
                x = _blend(x, features, blend)
        return (x * self.synthesis.output_scale).contiguous()

    def style_affines(self) -> list[StyleAffine]:
        """The style affine of every ``L{k}`` layer (``s = A w + b``, ``A [C_in, w_dim]``).

        This is the output of each layer's ``affine`` module with its equalised-lr gains applied.
        Not included: the ToRGB layer's extra ``1/sqrt(C_in)`` (part of its convolution) and the
        style RMS pre-normalisation of demodulated layers (not affine). The synthesis input's
        affine is excluded too: it maps ``w`` to the four transform parameters
        ``(r_c, r_s, t_x, t_y)`` of the Fourier features, not to channel styles.
        """
        out = []
        for k, layer in enumerate(self.synthesis.layer_modules(), start=1):
            weight, bias = layer.affine.effective()
            out.append(StyleAffine(layer.spec.name, k, weight.detach(), bias.detach()))
        return out

    def input_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthesis input's affine ``(A [4, w_dim], b [4])``: ``w -> (r_c, r_s, t_x, t_y)``."""
        weight, bias = self.synthesis.input.affine.effective()
        return weight.detach(), bias.detach()

    def set_input_transform(self, angle_deg: float = 0.0, translate: tuple[float, float] = (0.0, 0.0)) -> None:
        """Rotate (degrees) and translate (in units of the input's field of view, as NVlabs'
        ``gen_images.py --rotate/--translate``) every generated image by writing the inverse
        transform into the ``transform`` buffer. This changes the weights' fingerprint."""
        s, c = np.sin(np.radians(angle_deg)), np.cos(np.radians(angle_deg))
        m = np.array([[c, s, translate[0]], [-s, c, translate[1]], [0, 0, 1]], dtype=np.float64)
        buf = self.synthesis.input.transform
        buf.copy_(torch.as_tensor(np.linalg.inv(m), dtype=buf.dtype))
        self._fingerprint_cache = None


def _check_noise(noise_mode: NoiseArg) -> None:
    if isinstance(noise_mode, str):
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
    elif len(noise_mode) != 0:
        raise ValueError("StyleGAN3 has no noise inputs: a noise list must be empty (see sample_noise())")


def _blend(own: torch.Tensor, features: torch.Tensor, blend: float | torch.Tensor) -> torch.Tensor:
    """``(1 - blend) * own + blend * features``; a tensor ``blend [B]`` mixes per image."""
    if isinstance(blend, torch.Tensor):
        if blend.ndim == 1:
            blend = blend.reshape(-1, 1, 1, 1)
    elif blend == 1:
        return features.to(own.dtype)
    return own + blend * (features.to(own.dtype) - own)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def from_nvlabs(state_dict: Mapping[str, torch.Tensor], init_kwargs: Mapping[str, Any]) -> StyleGAN3Generator:
    """Build a generator from an official ``G_ema.state_dict()`` and its ``init_kwargs`` (flat
    stylegan3 layout or nested ``synthesis_kwargs``).

    Raises ValueError naming the first missing, unexpected or wrongly shaped key, or a stored
    filter whose length disagrees with the schedule computed from the kwargs.
    """
    # Built on the meta device: no random initialisation of weights that are replaced anyway.
    with torch.device("meta"):
        G = StyleGAN3Generator(init_kwargs)
    expected = G.state_dict()
    given = dict(state_dict)
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        raise ValueError(
            "state dict does not match a StyleGAN3 generator built from these init_kwargs ("
            + "; ".join(detail)
            + "); the layer names encode the sizes computed from img_resolution/channel_base/channel_max"
        )
    for key, ref in expected.items():
        if tuple(given[key].shape) != tuple(ref.shape):
            raise ValueError(
                f"state dict key {key!r} has shape {list(given[key].shape)}, but these init_kwargs "
                f"give {list(ref.shape)}"
            )
    tensors = {k: given[k].detach().to("cpu", torch.float32).clone().contiguous() for k in expected}
    G.load_state_dict(tensors, strict=True, assign=True)
    return G


def _checkpoint_layout(obj: Any) -> tuple[dict, dict] | None:
    """``(state_dict, init_kwargs)`` from a torch file in the reference-vector layout
    (``{'state_dict', 'config': {'init_kwargs'}}``) or ``{'state_dict', 'init_kwargs'}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), Mapping):
        return None
    kwargs = obj.get("init_kwargs")
    if kwargs is None and isinstance(obj.get("config"), Mapping):
        kwargs = obj["config"].get("init_kwargs")
    if not isinstance(kwargs, Mapping):
        return None
    return dict(obj["state_dict"]), dict(kwargs)


def _is_stylegan3_state(state_dict: Mapping[str, Any]) -> bool:
    return "synthesis.input.freqs" in state_dict and "synthesis.input.transform" in state_dict


def load(checkpoint, device: str | torch.device = "cpu") -> StyleGAN3Generator:
    """Adapter entry point: an NVlabs network pickle (read without executing its code) or a
    torch file holding ``state_dict`` and ``init_kwargs`` -> generator on ``device``."""
    from invkit.io.checkpoint import CheckpointError

    if checkpoint.format == "pickle":
        from .nvlabs import read_network

        net = read_network(checkpoint)
        state_dict, init_kwargs = net.state_dict, net.init_kwargs
        if not _is_stylegan3_state(state_dict):
            raise CheckpointError(
                f"{checkpoint.path}: the network ({getattr(net, 'module_name', '?')}."
                f"{getattr(net, 'class_name', '?')}) is not a StyleGAN3 generator"
            )
    elif checkpoint.format in ("torch-zip", "torch-legacy"):
        layout = _checkpoint_layout(checkpoint.torch_object())
        if layout is None or not _is_stylegan3_state(layout[0]):
            raise CheckpointError(
                f"{checkpoint.path}: not a StyleGAN3 checkpoint (expected a dict with 'state_dict' "
                "holding synthesis.input.* keys and 'init_kwargs')"
            )
        state_dict, init_kwargs = layout
    else:
        raise CheckpointError(f"{checkpoint.path}: cannot read a {checkpoint.format} file as StyleGAN3")
    try:
        G = from_nvlabs(state_dict, init_kwargs)
    except (ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{checkpoint.path}: {exc}") from None
    return G.to(device)


def from_config(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], device="cpu") -> StyleGAN3Generator:
    """Rebuild from invkit's own format: ``config`` is ``G.config``."""
    return from_nvlabs(state_dict, config).to(device)


# --------------------------------------------------------------------------------------------
# Plugin hooks
# --------------------------------------------------------------------------------------------
@hookimpl
def register_generators(register):
    register(
        ADAPTER_NAME,
        load,
        from_config=from_config,
        description="NVlabs StyleGAN3 (Alias-Free GAN), T and R configs: network pickles or state dicts",
    )


@hookimpl
def identify_checkpoint(checkpoint):
    """Claim torch files in the ``{'state_dict', 'init_kwargs'}`` layout whose keys are StyleGAN3's
    (NVlabs pickles are identified by the ``nvlabs`` plugin's reader)."""
    if checkpoint.format not in ("torch-zip", "torch-legacy"):
        return None
    try:
        layout = _checkpoint_layout(checkpoint.torch_object())
    except Exception:  # not ours to report: another plugin or the loader will
        return None
    if layout is not None and _is_stylegan3_state(layout[0]):
        return ADAPTER_NAME
    return None
