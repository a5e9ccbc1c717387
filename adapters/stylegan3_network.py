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

Pieces: :mod:`invkit.adapters.stylegan3_schedule` (kwargs and the layer schedule),
:mod:`invkit.adapters.stylegan3_layers` (the building blocks), this module (the generator and
:func:`from_nvlabs`), and the plugin :mod:`invkit.adapters.stylegan3` (checkpoint files, hooks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from invkit.generator import Generator, LayerInfo, NoiseArg, StyleAffine

from .stylegan3_layers import MappingNetwork, SynthesisNetwork
from .stylegan3_schedule import LayerSpec, normalize_kwargs

ADAPTER_NAME = "stylegan3"


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
            out.append(StyleAffine(layer.spec.name, k, weight.detach(), bias.detach(), torgb=layer.spec.is_torgb))
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


def from_config(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], device="cpu") -> StyleGAN3Generator:
    """Rebuild from invkit's own format: ``config`` is ``G.config``."""
    return from_nvlabs(state_dict, config).to(device)
