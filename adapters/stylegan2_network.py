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

The plugin that registers the ``stylegan2`` adapter is :mod:`invkit.adapters.stylegan2`; the
layers live in :mod:`invkit.adapters.stylegan2_layers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from invkit.generator import Generator, NoiseArg, StyleAffine, SynthesisState
from invkit.ops import resample

from .stylegan2_layers import (
    MappingNetwork,
    StyledConv,
    ToRGB,
    block_names,
    blur_kernel,
    layer_table,
    upsample2x,
    upsample2x_fast,
)

ADAPTER_NAME = "stylegan2"


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
        self.register_buffer("blur", blur_kernel(), persistent=False)
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
        return self._convs_from(0, x, None, ws, noises, swap, stop_at)

    def _convs_from(self, start: int, x: torch.Tensor, img: torch.Tensor | None, ws: torch.Tensor,
                    noises: list, swap=None, stop_at: int | None = None, state_at: int | None = None):
        """The conv layers ``start, start + 1, ...`` (0-based conv numbers; layer index j + 1)
        from activation ``x`` and the RGB skip image ``img`` so far.

        Returns the image, activation ``stop_at`` (as the next conv reads it), or for
        ``state_at`` the pair ``(own activation, skip image)`` right after that layer and the
        ToRGB of its block when it ends one (what :meth:`synthesize_after` resumes from).
        """
        for j in range(start, len(self.convs)):
            own = self.convs[j](x, ws[:, j], noises[j], self.modconv)
            x = own if swap is None else swap(j + 1, own)
            if stop_at == j + 1:
                return x.contiguous()
            if j % 2 == 0:  # j even: the block's last conv: its ToRGB reads the unreplaced output
                y = self.torgbs[j // 2](own, ws[:, j + 1], self.modconv)
                img = y if img is None else self._skip_up(img, y)
            if state_at == j + 1:
                return own.contiguous(), img
        return img.contiguous()

    def synthesis_state(self, k: int, ws: torch.Tensor, noise_mode: NoiseArg = "const") -> SynthesisState:
        """The layers up to ``k`` for ``ws``: activation ``k`` and the RGB skip image including
        the ToRGB of ``k``'s block when ``k`` ends one (see :meth:`Generator.synthesis_state`).

        Conv index i reads ``ws[:, i - 1]`` and the ToRGB after conv index i (odd i) reads
        ``ws[:, i]``, so the state depends on the first ``k + 1`` rows for odd ``k``, ``k`` rows
        for even ``k``.
        """
        self._check_ws(ws)
        self.layer(k)
        noises = self._noise_list(noise_mode, ws.shape[0])
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        if k == 0:
            return SynthesisState(0, x, 0, None)
        own, img = self._convs_from(0, x, None, ws, noises, state_at=k)
        return SynthesisState(k, own, k + 1 if k % 2 else k, img)

    def synthesize_after(self, state: SynthesisState, features: torch.Tensor, ws: torch.Tensor,
                         noise_mode: NoiseArg = "const") -> torch.Tensor:
        """The image with activation ``state.k`` replaced by ``features``, running only the
        layers after ``k`` (bit-identical to :meth:`Generator.synthesize_from` with the ``ws``
        and noise the state was made with)."""
        self._check_ws(ws)
        expected = self.layer(state.k).shape
        if tuple(features.shape[1:]) != expected or features.shape[0] != ws.shape[0]:
            raise ValueError(f"features for layer {state.k} must be [{ws.shape[0]}, "
                             f"{', '.join(map(str, expected))}], got {list(features.shape)}")
        noises = self._noise_list(noise_mode, ws.shape[0])
        return self._convs_from(state.k, features.to(ws.dtype), state.carry, ws, noises)

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
                out.append(StyleAffine(f"b{4 * 2 ** block}.torgb", j + 1, a.detach(), b.detach(), torgb=True))
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
