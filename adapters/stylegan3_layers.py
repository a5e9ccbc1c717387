"""The building blocks of the StyleGAN3 network (:mod:`invkit.adapters.stylegan3_network`):
equalised-lr fully connected layers, the mapping network, the Fourier-feature synthesis input,
modulated convolutions, the synthesis layer with its filtered leaky ReLU, and the synthesis
network that holds them under their official names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from invkit.ops import resample
from invkit.ops.upfirdn import design_lowpass_filter

from .stylegan3_schedule import InputSpec, LayerSpec, synthesis_schedule


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
