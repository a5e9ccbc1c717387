"""The `Generator` interface every adapter implements.

A style-based generator maps ``z -> ws`` (:meth:`Generator.mapping`) and ``ws -> image``
(:meth:`Generator.synthesize`). The Feature-Style method additionally needs the activation at a
layer K (:meth:`Generator.features_at`) and the image with that activation replaced
(:meth:`Generator.synthesize_from`).

Layer numbering follows the paper and the official FS code: index 0 is the synthesis input (the
StyleGAN2 constant, the StyleGAN3 Fourier input), index k >= 1 is the output of the k-th
convolution layer (StyleGAN2 at 1024 px: K = 5 is the second 3x3 conv at 16x16, F is 512x16x16;
StyleGAN3: k >= 1 is ``L{k-1}``).

Adapters implement one method, :meth:`Generator.run_synthesis`, which walks the synthesis network
once and can either stop at a layer (returning its activation) or substitute a layer's activation.
The public methods are thin wrappers around it, so every adapter gets identical semantics.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

NoiseMode = Literal["const", "random", "none"]
#: ``noise_mode`` may also be an explicit list of per-layer noise tensors (see
#: :meth:`Generator.sample_noise`), which is what training on synthetic images needs.
NoiseArg = NoiseMode | Sequence[torch.Tensor]


@dataclass(frozen=True)
class LayerInfo:
    """One activation that :meth:`Generator.features_at` can return.

    Attributes:
        index: 0 for the synthesis input, k >= 1 for the k-th conv layer's output.
        name: the official module name (``"conv1"``, ``"b16.conv1"``, ``"L3_52_512"``, ...).
        shape: ``(C, H, W)`` of the activation for one image.
        w_index: the row of ``ws`` the layer consumes (None for a constant input).
    """

    index: int
    name: str
    shape: tuple[int, int, int]
    w_index: int | None


@dataclass(frozen=True)
class StyleAffine:
    """A style affine ``s = A w + b`` of one synthesis layer, as used by SeFa.

    Attributes:
        name: the layer's name (conv or ToRGB).
        w_index: the row of ``ws`` it reads.
        weight: effective matrix ``A`` ``[C_in, w_dim]`` (equalised-lr gain applied).
        bias: effective bias ``[C_in]``.
        torgb: whether the layer is a ToRGB layer (SeFa leaves these out by default).
    """

    name: str
    w_index: int
    weight: torch.Tensor
    bias: torch.Tensor
    torgb: bool = False


@dataclass
class SynthesisState:
    """What the layers after ``k`` need from one synthesis pass up to layer ``k``
    (:meth:`Generator.synthesis_state`): resuming from it runs only the layers after ``k``.

    Attributes:
        k: the layer.
        features: ``G_k(ws)``, activation ``k`` ``[B, C, H, W]`` (:meth:`Generator.features_at`).
        rows: how many leading ``ws`` rows the state depends on: codes that agree with the ones it
            was made from on ``ws[:, :rows]`` (with the same noise) give the same state, so an
            edit that leaves those rows alone can reuse it.
        carry: adapter-private data (StyleGAN2: the RGB skip image so far); None when the adapter
            does not resume (the generic fallback, which runs every layer again).
    """

    k: int
    features: torch.Tensor
    rows: int
    carry: Any = None


class Generator(nn.Module, ABC):
    """A style-based generator; adapters subclass this.

    Subclasses set ``z_dim``, ``w_dim``, ``num_ws``, ``resolution``, ``img_channels`` and
    ``layers`` in ``__init__`` (reading every size from checkpoint tensor shapes) and register a
    ``w_avg`` buffer ``[w_dim]``. ``adapter_name`` names the adapter that built it and
    ``config`` holds the JSON-serialisable constructor arguments (so the generator can be saved
    in invkit's own safetensors + JSON format and rebuilt by its adapter).
    """

    adapter_name: str = ""
    z_dim: int
    w_dim: int
    num_ws: int
    resolution: int
    img_channels: int
    layers: list[LayerInfo]
    w_avg: torch.Tensor
    config: dict

    # ---- what adapters implement -------------------------------------------------------
    @abstractmethod
    def mapping(
        self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        """Map latents ``z [B, z_dim]`` (standard normal) to ``ws [B, num_ws, w_dim]``.

        Truncation is ``w_avg + psi * (w - w_avg)`` on the first ``truncation_cutoff`` rows (all
        rows when None).
        """

    @abstractmethod
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
        """Run the synthesis network once.

        Args:
            ws: ``[B, num_ws, w_dim]``.
            noise_mode: "const" (stored buffers), "random", "none", or a list of noise tensors
                as returned by :meth:`sample_noise`.
            stop_at: return the activation of layer ``stop_at`` ``[B, C, H, W]`` instead of the
                image.
            replace_at / features: replace activation ``replace_at`` by ``features`` (or blend,
                ``(1 - blend) * own + blend * features``) right before the next conv layer
                consumes it. ToRGB layers read their block's own (unreplaced) output, as in the
                official FS code.

        Returns:
            The raw image ``[B, img_channels, resolution, resolution]`` (roughly [-1, 1]) or the
            requested activation.
        """

    def sample_noise(
        self, batch: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Draw one set of per-layer noise tensors (``[B, 1, H, W]`` each); pass the list back
        as ``noise_mode`` to reproduce the same image. Generators without noise return ``[]``."""
        return []

    def style_affines(self) -> list[StyleAffine]:
        """Every layer's style affine, in synthesis order (for SeFa and similar editors)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its style affines")

    # ---- generic API built on run_synthesis ----------------------------------------------
    def synthesize(self, ws: torch.Tensor, noise_mode: NoiseArg = "const") -> torch.Tensor:
        """``ws [B, num_ws, w_dim]`` -> raw image ``[B, C, H, W]``, roughly in [-1, 1]."""
        self._check_ws(ws)
        return self.run_synthesis(ws, noise_mode)

    def features_at(self, k: int, ws: torch.Tensor, noise_mode: NoiseArg = "const") -> torch.Tensor:
        """The activation of layer ``k`` for ``ws``: ``[B, *self.layer(k).shape]``."""
        self._check_ws(ws)
        self.layer(k)
        return self.run_synthesis(ws, noise_mode, stop_at=k)

    def synthesize_from(
        self,
        k: int,
        features: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: NoiseArg = "const",
        blend: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """The image with layer ``k``'s activation replaced by ``features`` ``[B, C, H, W]``.

        ``blend`` < 1 mixes ``(1 - blend) * own + blend * features`` (training warm-up).
        Semantics follow the official FS code: the replacement happens right before the next
        conv layer reads activation k; ToRGB layers keep reading their block's own conv output,
        so when k is a block's second conv the skip image up to k's block stays w-driven.
        ``features=None`` (codes without F: a W+-only encoder, W / W+ projection) is ``G(w)``,
        :meth:`synthesize`.
        """
        if features is None:
            return self.synthesize(ws, noise_mode)
        self._check_ws(ws)
        expected = self.layer(k).shape
        if tuple(features.shape[1:]) != expected or features.shape[0] != ws.shape[0]:
            raise ValueError(
                f"features for layer {k} must be [{ws.shape[0]}, {', '.join(map(str, expected))}], "
                f"got {list(features.shape)}"
            )
        return self.run_synthesis(ws, noise_mode, replace_at=k, features=features, blend=blend)

    def synthesis_state(self, k: int, ws: torch.Tensor, noise_mode: NoiseArg = "const") -> SynthesisState:
        """Run the layers up to ``k`` for ``ws [B, num_ws, w_dim]`` and keep what the rest need.

        ``state.features`` equals :meth:`features_at` ``(k, ws, noise_mode)``. Adapters that can
        resume a pass override this and :meth:`synthesize_after`; this fallback keeps only the
        activation (``rows = num_ws``: any change of ``ws`` counts).
        """
        return SynthesisState(k, self.features_at(k, ws, noise_mode), self.num_ws)

    def synthesize_after(self, state: SynthesisState, features: torch.Tensor, ws: torch.Tensor,
                         noise_mode: NoiseArg = "const") -> torch.Tensor:
        """:meth:`synthesize_from` ``(state.k, features, ws, noise_mode)`` from a state that
        :meth:`synthesis_state` made of the same ``ws`` (at least its first ``state.rows`` rows)
        and noise: only the layers after ``k`` run where the adapter resumes (StyleGAN2); the
        fallback runs the whole pass. Returns the raw image ``[B, C, R, R]``, roughly in [-1, 1].
        """
        return self.synthesize_from(state.k, features, ws, noise_mode)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: NoiseArg = "const"):
        """``z [B, z_dim]`` -> image; a convenience for ``synthesize(mapping(z))``."""
        return self.synthesize(self.mapping(z, truncation_psi), noise_mode)

    # ---- helpers ---------------------------------------------------------------------------
    def layer(self, k: int) -> LayerInfo:
        """The :class:`LayerInfo` with index ``k``; a clear error when out of range."""
        if not 0 <= k < len(self.layers):
            raise ValueError(f"layer index {k} out of range: this generator has layers 0..{len(self.layers) - 1}")
        return self.layers[k]

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(
                f"ws must be [B, {self.num_ws}, {self.w_dim}] for this generator, got {list(ws.shape)}"
            )

    def fingerprint(self) -> str:
        """A stable hash of the weights (16 hex chars): the same file always gives the same
        value, and directions/encoders record it to refuse being used with another generator."""
        state = sorted(self.state_dict().items())
        # In-place updates (optimiser steps, load_state_dict) bump a tensor's _version, so the
        # cached hash is reused only while no weight has changed.
        versions = tuple(t._version for _, t in state)
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is not None and cached[0] == versions:
            return cached[1]
        h = hashlib.sha256()
        for key, tensor in state:
            h.update(key.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        self._fingerprint_cache = (versions, h.hexdigest()[:16])
        return self._fingerprint_cache[1]

    def describe(self) -> dict:
        """Sizes and layer table as plain data (for ``invkit info`` and JSON configs)."""
        return {
            "adapter": self.adapter_name,
            "z_dim": self.z_dim,
            "w_dim": self.w_dim,
            "num_ws": self.num_ws,
            "resolution": self.resolution,
            "img_channels": self.img_channels,
            "fingerprint": self.fingerprint(),
            "layers": [
                {"index": li.index, "name": li.name, "shape": list(li.shape), "w_index": li.w_index}
                for li in self.layers
            ],
        }
