"""Editing and mixing Feature-Style codes (paper Eq. 1).

An inversion is ``(w, F)``: W+ codes and the feature code F that replaces layer K. Moving ``w``
alone would leave F describing the old image, so the edit also moves F by how much the
generator's own layer-K activation moves::

    w̃ = w + α·d
    F̃ = F + (G_K(w̃) − G_K(w))          # both G_K calls with the same noise
    image = G(w̃, F̃)

At α = 0 the difference is exactly zero, so the result is bit-identical to the reconstruction
``G(w, F)``. A direction restricted to ws rows that layer K does not read (rows after K's) leaves
F untouched and changes only the layers after K.

:class:`PreparedEdit` serves repeated edits of one inversion (a slider, a sweep): it keeps ``F``,
``G_K(w)`` and the generator's state at K, so each edit runs the layers up to K once for ``w̃``
(``G_K(w̃)``; skipped when ``w̃`` leaves the rows those layers read unchanged) and the layers after
K once, instead of :func:`edit`'s two ``G_K`` passes and a full synthesis.

Style mixing swaps the two halves: ``G(w_B, F_A)`` keeps A's spatial structure (F) and takes B's
styles for every layer after K.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .direction import Direction
from .generator import Generator, NoiseArg, SynthesisState
from .inversion import Inversion


def as_wplus(direction: Direction, num_ws: int) -> Direction:
    """The W direction ``direction`` as an equivalent unit W+ direction ``[num_ws, w_dim]``.

    The W vector is copied into the rows ``direction.layers`` (all rows when empty) and the
    result is scaled to unit Frobenius norm, so every direction invkit writes has unit length
    (a W+ step of α moves each of the ``n`` chosen rows by ``α / sqrt(n)``).
    """
    if direction.space == "w+":
        return direction
    if direction.space != "w":
        raise ValueError(f"direction {direction.name!r} lives in {direction.space.upper()}; only W converts to W+")
    rows = direction.layers or list(range(num_ws))
    if any(not 0 <= i < num_ws for i in rows):
        raise ValueError(f"direction {direction.name!r} names ws rows {rows} outside 0..{num_ws - 1}")
    vec = direction.vector.new_zeros(num_ws, direction.vector.shape[0])
    vec[rows] = direction.vector
    vec = vec / vec.norm().clamp_min(1e-12)
    return Direction(vec, "w+", direction.name, direction.editor, direction.generator_fingerprint,
                     list(rows), direction.attribute, dict(direction.stats))


def _noise_for(G: Generator, batch: int, noise_mode: NoiseArg) -> NoiseArg:
    """Fix the noise once, so that every synthesis of one edit sees the same noise."""
    if isinstance(noise_mode, str) and noise_mode == "random":
        return G.sample_noise(batch)
    return noise_mode


def _check(G: Generator, inversion: Inversion, direction: Direction | None = None) -> None:
    inversion.check_generator(G)
    if direction is not None:
        direction.check(G)
        if direction.space == "z":
            raise ValueError(
                f"direction {direction.name!r} lives in Z, but an inversion holds W+ codes; "
                f"use a W or W+ direction (e.g. fit it on the inversion codes)"
            )
    G._check_ws(inversion.ws)


def edit_codes(
    G: Generator,
    inversion: Inversion,
    direction: Direction,
    strength: float | torch.Tensor,
    noise_mode: NoiseArg = "const",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Paper Eq. 1 on the codes: ``(w̃ [N, num_ws, w_dim], F̃ [N, C, H, W])`` (F̃ None for codes
    without F).

    Args:
        G: the generator ``inversion`` and ``direction`` were made for (refused otherwise).
        inversion: the codes of N images.
        direction: a W or W+ direction.
        strength: α, a number or ``[N]`` (one per image).
        noise_mode: noise of the two ``G_K`` calls: "const", "none", an explicit noise list, or
            "random" (drawn once and used for both calls).
    """
    _check(G, inversion, direction)
    noise = _noise_for(G, len(inversion), noise_mode)
    return _edit_codes(G, inversion, direction, strength, noise)


def _edit_codes(G, inversion, direction, strength, noise) -> tuple[torch.Tensor, torch.Tensor | None]:
    ws = inversion.ws
    ws_edit = direction.apply(ws, strength)
    if not inversion.has_features:  # codes without F (W+-only encoder, projection): the edit is w̃ alone
        return ws_edit, None
    k = inversion.k
    # The difference first, then the add: at α = 0 it is exactly zero and F̃ == F bit for bit.
    delta = G.features_at(k, ws_edit, noise) - G.features_at(k, ws, noise)
    return ws_edit, inversion.features + delta


def edit(
    G: Generator,
    inversion: Inversion,
    direction: Direction,
    strength: float | torch.Tensor,
    noise_mode: NoiseArg = "const",
) -> torch.Tensor:
    """The edited images ``G(w̃, F̃)``: ``[N, img_channels, R, R]``, roughly in [-1, 1].

    See :func:`edit_codes` for the arguments. With ``noise_mode="random"`` one noise draw is used
    for both ``G_K`` calls and for the final synthesis.
    """
    _check(G, inversion, direction)
    noise = _noise_for(G, len(inversion), noise_mode)
    ws_edit, feats_edit = _edit_codes(G, inversion, direction, strength, noise)
    return G.synthesize_from(inversion.k, feats_edit, ws_edit, noise)


class PreparedEdit:
    """Repeated Eq. 1 edits of one inversion, reusing ``F`` and ``G_K(w)``.

    ``PreparedEdit(G, inversion).render(ws_edit)`` equals ``G(w̃, F̃)`` of :func:`edit` for the
    same codes and noise (bit for bit on adapters that resume a pass, StyleGAN2; see
    :meth:`Generator.synthesize_after`). Per edit it runs the layers up to K once for ``w̃`` and
    the layers after K once; when ``w̃`` agrees with ``w`` on the rows the layers up to K read
    (``state.rows``), ``G_K(w̃) = G_K(w)`` and only the layers after K run.

    Args:
        G: the generator of ``inversion`` (refused otherwise).
        inversion: the codes of N images.
        noise_mode: as in :func:`edit`; "random" is drawn once here and kept for every edit.
    """

    def __init__(self, G: Generator, inversion: Inversion, noise_mode: NoiseArg = "const"):
        _check(G, inversion)
        self.G, self.inversion = G, inversion
        self.noise = _noise_for(G, len(inversion), noise_mode)
        with torch.no_grad():
            self.state: SynthesisState = G.synthesis_state(inversion.k, inversion.ws, self.noise)

    def codes(self, ws_edit: torch.Tensor) -> tuple[torch.Tensor, SynthesisState]:
        """``(F̃ [N, C, H, W], the state at K of ws_edit)`` for edited codes ``ws_edit``
        ``[N, num_ws, w_dim]`` (e.g. :meth:`Direction.apply` of ``inversion.ws``)."""
        ws = self.inversion.ws
        if ws_edit.shape != ws.shape:
            raise ValueError(f"edited codes must be {list(ws.shape)}, got {list(ws_edit.shape)}")
        rows = self.state.rows
        if torch.equal(ws_edit[:, :rows], ws[:, :rows]):
            return self.inversion.features, self.state  # G_K(w̃) = G_K(w): F̃ = F exactly
        state = self.G.synthesis_state(self.inversion.k, ws_edit, self.noise)
        # The difference first, then the add, as _edit_codes: the same float rounding as edit().
        return self.inversion.features + (state.features - self.state.features), state

    @torch.no_grad()
    def render(self, ws_edit: torch.Tensor) -> torch.Tensor:
        """The edited images ``G(w̃, F̃)`` ``[N, img_channels, R, R]``, roughly in [-1, 1]."""
        feats, state = self.codes(ws_edit)
        return self.G.synthesize_after(state, feats, ws_edit, self.noise)


def edit_strip(
    G: Generator,
    inversion: Inversion,
    direction: Direction,
    strengths: Sequence[float],
    noise_mode: NoiseArg = "const",
) -> torch.Tensor:
    """Every image at every strength: ``[N, S, img_channels, R, R]``.

    One noise draw serves the whole strip, so only the edit changes along it; each strength is
    one batch of N, so the α = 0 column equals :func:`edit` (and the reconstruction) exactly.
    """
    _check(G, inversion, direction)
    noise = _noise_for(G, len(inversion), noise_mode)
    columns = []
    for alpha in strengths:
        ws_edit, feats_edit = _edit_codes(G, inversion, direction, float(alpha), noise)
        columns.append(G.synthesize_from(inversion.k, feats_edit, ws_edit, noise))
    return torch.stack(columns, dim=1)


def mix(
    G: Generator, inv_a: Inversion, inv_b: Inversion, noise_mode: NoiseArg = "const"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Style mixing: ``(G(w_B, F_A), G(w_A, F_B))``, each ``[N, img_channels, R, R]``.

    ``G(w_B, F_A)`` has A's spatial structure (its feature code) rendered with B's styles for the
    layers after K. Both inversions must come from ``G``, with the same layer K and size N.
    """
    _check(G, inv_a)
    _check(G, inv_b)
    if not (inv_a.has_features and inv_b.has_features):
        raise ValueError("style mixing needs feature codes F: these codes have none (a W+-only encoder "
                         "or a W / W+ projection)")
    if inv_a.k != inv_b.k:
        raise ValueError(f"cannot mix feature codes of layer {inv_a.k} and layer {inv_b.k}")
    if len(inv_a) != len(inv_b):
        raise ValueError(f"cannot mix {len(inv_a)} codes with {len(inv_b)} codes (pair them one to one)")
    noise = _noise_for(G, len(inv_a), noise_mode)
    ab = G.synthesize_from(inv_a.k, inv_a.features, inv_b.ws, noise)
    ba = G.synthesize_from(inv_a.k, inv_b.features, inv_a.ws, noise)
    return ab, ba


def spread_strength(direction: Direction, ws: torch.Tensor, spread: float = 2.0) -> float:
    """A default edit strength: ``spread`` standard deviations of the codes along the direction.

    Each code's coordinate along the direction is ``t = <ws, delta> / <delta, delta>`` with
    ``delta = direction.apply(0, 1)`` (so ``t`` is in units of alpha); the result is
    ``spread * std(t)``: moving that far keeps an edit inside the range the codes cover.

    Args:
        direction: a W or W+ direction.
        ws: codes ``[N, num_ws, w_dim]`` (N >= 2) the direction will be applied to, e.g. the
            encoder's codes it was fit on, or mapping-network samples.
        spread: how many standard deviations.
    """
    if ws.ndim != 3 or len(ws) < 2:
        raise ValueError(f"need codes [N >= 2, num_ws, w_dim], got {list(ws.shape)}")
    ws = ws.detach().double()
    delta = direction.apply(torch.zeros_like(ws[:1]), 1.0)[0]
    norm2 = delta.square().sum()
    if norm2 <= 0:
        raise ValueError(f"direction {direction.name!r} is zero on the rows it applies to")
    t = (ws * delta).sum((1, 2)) / norm2
    return float(spread * t.std())


def mapped_codes(G: Generator, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """``ws [n, num_ws, w_dim]`` of mapping-network samples (seeded): the codes generator-only
    editors (SeFa, GANSpace) act on, for :func:`spread_strength` when no inversions are at hand."""
    with torch.no_grad():
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(G.w_avg.device)
        return G.mapping(z)


def fill_strengths(directions: Sequence[Direction], ws: torch.Tensor | None) -> None:
    """Record a default strength, :func:`spread_strength` of ``ws``, in each W/W+ direction whose
    ``strength`` is None (in place; nothing when ``ws`` is None). ``invkit edit`` then spans
    ``[-strength, strength]``."""
    if ws is None:
        return
    for d in directions:
        if d.strength is None and d.space != "z":
            d.strength = spread_strength(d, ws)
