"""Per-image optimisation inversion ("projection") in W, W+ or W+F: the baselines of the paper's
comparisons, for any adapter.

For a batch of target images ``x`` the codes are optimised with Adam so that the generator
reproduces each image; every image has its own parameters and its own terms in a summed loss
(Adam is per-parameter, so the images do not interact: a batch only shares the forward passes).

* **spaces**: ``"w"`` one w per image, repeated over the ``num_ws`` rows; ``"w+"`` one w per row;
  ``"w+f"`` W+ and the feature code F at layer K jointly (the feature-space optimisation the
  paper cites; the image is ``G(w, F)``, :meth:`Generator.synthesize_from`).
* **start**: the mean w of ``w_avg_samples`` mapping outputs (NVlabs' projector: 10 000), with
  ``F = G_K(w_avg)``; or given codes, e.g. an encoder's (the usual hybrid, ``init=``): W takes the
  mean of their rows, W+F takes their F (``G_K(w)`` when they have none).
* **objective** per image: ``mse * ||x - y||^2`` (mean over pixels, [-1, 1] scale) ``+ perceptual
  * sum_i d(down_i(x), down_i(y))`` over ``perceptual_scales`` levels (full and half size), with any
  LPIPS-like network ``d`` (:func:`perceptual_network`), plus NVlabs' noise-map regulariser when the
  noise maps are optimised.
* **schedule** (NVlabs stylegan2-ada ``projector.py`` and rosinality's ``projector.py``): lr 0.1,
  raised over the first 5 % of the steps and lowered along a cosine over the last 25 %;
  Gaussian noise added to w of std ``w_std * noise_start * max(0, 1 - t / noise_ramp)^2``
  (``w_std``: the spread of the mapping's outputs, ``sqrt(E ||w - w_avg||^2)``), gone after 75 %.
  F's learning rate is ``lr * sigma_F / sigma_w`` (per-element spreads of ``G_K(w)`` and w), so F
  moves by the same fraction of its natural spread as w does.
* **noise maps**: off by default (the generator's constant noise, as ``invkit invert`` renders),
  because the codes file holds only (w, F) and an image made with optimised noise could not be
  re-rendered from it. ``noise_maps=True`` optimises them as NVlabs does (random start,
  ``noise_reg`` times the multi-scale autocorrelation penalty, renormalised after every step) for
  generators that have noise inputs, and returns them.

A non-finite loss stops that image (its message names it); the others go on. The result's
codes are the last step's, rendered without w-noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, apply_overrides, from_plain, to_plain
from .editing import mapped_codes
from .encoder import Encoder
from .generator import Generator
from .inversion import Inversion
from .losses import multiscale_distance, pyramid_levels

Space = Literal["w", "w+", "w+f"]
SPACES: tuple[str, ...] = ("w", "w+", "w+f")
#: K when neither the caller nor an initial encoder says which layer (the official FS layer).
DEFAULT_K = 5


@dataclass
class ProjectionSettings:
    """Everything that shapes one projection (defaults: NVlabs' / rosinality's projectors).

    Attributes:
        space: ``"w"``, ``"w+"`` or ``"w+f"``.
        steps: Adam steps per image.
        lr: peak learning rate of the codes.
        lr_rampup, lr_rampdown: fractions of the run for the linear rise and the cosine fall.
        noise_start: std of the noise added to w at step 0, as a fraction of ``w_std``.
        noise_ramp: fraction of the run after which no noise is added (quadratic decay).
        mse, perceptual: weights of the pixel and the perceptual terms.
        perceptual_scales: pyramid levels of the perceptual term (2: full and half size).
        k: the layer F replaces (``w+f``; recorded in the codes for every space).
        feature_lr: F's peak learning rate (None: ``lr * sigma_F / sigma_w``).
        noise_maps: optimise the generator's per-layer noise maps too (see the module doc).
        noise_reg: weight of the noise-map regulariser (NVlabs: 1e5).
        w_avg_samples: mapping samples of the start and of ``w_std``.
        seed: seed of those samples, of the w-noise and of the noise maps' start.
    """

    space: Space = "w+"
    steps: int = 1000
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    noise_start: float = 0.05
    noise_ramp: float = 0.75
    mse: float = 1.0
    perceptual: float = 1.0
    perceptual_scales: int = 2
    k: int = DEFAULT_K
    feature_lr: float | None = None
    noise_maps: bool = False
    noise_reg: float = 1e5
    w_avg_samples: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.space in SPACES, f"space must be one of {', '.join(SPACES)}, got {self.space!r}"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.lr > 0 and (self.feature_lr is None or self.feature_lr > 0), "learning rates must be > 0"),
            (0 <= self.lr_rampup <= 1 and 0 < self.lr_rampdown <= 1, "lr_rampup in [0, 1], lr_rampdown in (0, 1]"),
            (self.noise_start >= 0 and self.noise_ramp > 0, "noise_start >= 0 and noise_ramp > 0"),
            (self.mse >= 0 and self.perceptual >= 0 and self.mse + self.perceptual > 0,
             "mse and perceptual must be >= 0, not both 0"),
            (self.perceptual_scales >= 1 and self.k >= 0, "perceptual_scales >= 1 and k >= 0"),
            (self.w_avg_samples >= 2 and self.noise_reg >= 0, "w_avg_samples >= 2 and noise_reg >= 0"),
        ]
        numbers = (self.lr, self.feature_lr or 1.0, self.noise_start, self.mse, self.perceptual, self.noise_reg)
        checks.insert(0, (all(math.isfinite(v) for v in numbers), "settings must be finite numbers"))
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"projection: {msg}")

    def with_overrides(self, overrides: Sequence[str]) -> ProjectionSettings:
        """A copy with ``"key=value"`` edits (``steps=500``, ``space=w+f``), typed and checked."""
        return from_plain(ProjectionSettings, apply_overrides(ProjectionSettings, to_plain(self), overrides),
                          root="projection")


@dataclass
class LatentStatistics:
    """The mapping network's spread: ``w_avg [w_dim]``, ``w_std = sqrt(E ||w - w_avg||^2)``;
    ``feature_spreads`` caches ``sigma_F / sigma_w`` per (layer, seed) for W+F projections, so a
    run that projects batch after batch with one ``stats`` measures it once."""

    w_avg: torch.Tensor
    w_std: float
    feature_spreads: dict[tuple[int, int], float] = field(default_factory=dict)


@dataclass
class ProjectionResult:
    """What :func:`project` returns for N images.

    Attributes:
        ws: ``[N, num_ws, w_dim]`` the final codes (a failed image keeps its start).
        features: ``[N, C, H, W]`` F at layer ``k`` for ``w+f``, else None.
        k: the layer of ``features``.
        names: one label per image.
        ok: ``[N]`` bool, False for images stopped by a non-finite loss.
        failed: ``{name: message}`` of those images.
        losses: ``{name: {"start": ..., "total": ..., "mse": ..., "perceptual": ...}}`` at the start
            and at the end (terms as weighted in the objective's sum, before weighting).
        seconds: the batch's optimisation time (setup excluded) divided by N, per image.
        noise: the optimised noise maps (``[N, 1, H, W]`` per layer) when ``noise_maps``.
        images: ``[N, C, R, R]`` the final reconstructions, raw generator output (~[-1, 1]).
    """

    ws: torch.Tensor
    features: torch.Tensor | None
    k: int
    names: list[str]
    ok: torch.Tensor
    failed: dict[str, str] = field(default_factory=dict)
    losses: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    noise: list[torch.Tensor] | None = None
    images: torch.Tensor | None = None

    def inversion(self, generator_fingerprint: str, meta: dict | None = None) -> Inversion:
        """The codes of the images that finished (failed ones left out)."""
        idx = [i for i, good in enumerate(self.ok.tolist()) if good]
        feats = None if self.features is None else self.features[idx]
        return Inversion(self.ws[idx], feats, self.k, generator_fingerprint, [self.names[i] for i in idx],
                         dict(meta or {}))


@torch.no_grad()
def latent_statistics(G: Generator, samples: int = 10_000, seed: int = 0) -> LatentStatistics:
    """``w_avg`` and ``w_std`` from ``samples`` mapping outputs of seeded z (NVlabs' projector)."""
    gen = torch.Generator().manual_seed(seed)
    device = G.w_avg.device
    ws = [G.mapping(torch.randn(n, G.z_dim, generator=gen).to(device))[:, 0].double()
          for n in [1000] * (samples // 1000) + [samples % 1000] if n]
    w = torch.cat(ws)
    w_avg = w.mean(0)
    return LatentStatistics(w_avg.float(), float(((w - w_avg).square().sum() / samples).sqrt()))


def learning_rate_factor(t: float, rampup: float, rampdown: float) -> float:
    """The lr multiplier at run fraction ``t`` in [0, 1): linear rise over ``rampup``, cosine fall
    over the last ``rampdown`` (NVlabs / rosinality ``get_lr``)."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / rampup) if rampup > 0 else ramp


def noise_regularization(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """NVlabs' noise-map penalty per image ``[B]``: squared autocorrelation at a one-pixel shift
    along both axes, over an average-pooled pyramid down to 8 px, summed over the maps."""
    total = noise[0].new_zeros(noise[0].shape[0])
    for v in noise:
        while True:
            total = total + (v * v.roll(1, 3)).mean((1, 2, 3)) ** 2 + (v * v.roll(1, 2)).mean((1, 2, 3)) ** 2
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, 2)
    return total


def _start_codes(G: Generator, s: ProjectionSettings, stats: LatentStatistics, n: int,
                 init: Inversion | tuple[torch.Tensor, torch.Tensor | None] | None):
    """``(w_opt, F_opt or None)``: ``[N, 1 or num_ws, w_dim]`` and ``[N, C, H, W]``."""
    if init is None:
        ws = stats.w_avg.view(1, 1, -1).expand(n, G.num_ws, -1)
        feats = None
    else:
        ws, feats = (init.ws, init.features) if isinstance(init, Inversion) else init
        if ws.shape != (n, G.num_ws, G.w_dim):
            raise ValueError(f"initial codes must be [{n}, {G.num_ws}, {G.w_dim}], got {list(ws.shape)}")
        ws = ws.detach().to(stats.w_avg.device).float()
    w = ws.mean(1, keepdim=True) if s.space == "w" else ws
    if s.space != "w+f":
        return w.clone(), None
    if feats is None or tuple(feats.shape[1:]) != G.layer(s.k).shape:
        with torch.no_grad():
            feats = G.features_at(s.k, ws.contiguous())
    return w.clone(), feats.detach().to(ws).clone()


def project(
    G: Generator,
    images: torch.Tensor,
    space: Space | None = None,
    steps: int | None = None,
    *,
    settings: ProjectionSettings | None = None,
    perceptual: nn.Module | None = None,
    init: Inversion | tuple[torch.Tensor, torch.Tensor | None] | None = None,
    names: Sequence[str] | None = None,
    stats: LatentStatistics | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> ProjectionResult:
    """Invert ``images [N, 3, R, R]`` in [-1, 1] by optimisation (see the module doc).

    Args:
        G: the generator (set to eval mode with gradients off: nothing of it is optimised).
        images: the targets at the generator's resolution.
        space, steps: shorthands overriding ``settings``.
        settings: :class:`ProjectionSettings` (default: NVlabs-like, W+).
        perceptual: ``d(x, y) -> [B]`` on [-1, 1] images with a ``min_size`` (LPIPS-like); None
            when ``settings.perceptual`` is 0, else required (see :func:`perceptual_network`).
        init: codes to start from (an :class:`Inversion` or ``(ws, F)``), e.g. an encoder's.
        names: labels of the images (messages, result keys); default ``"0"``, ``"1"``, ...
        stats: :func:`latent_statistics` of ``G`` (computed when None; pass it to reuse it).
        on_step: called as ``on_step(step, steps)`` after every step.
    """
    s = settings or ProjectionSettings()
    s = s.with_overrides([f"{k}={v}" for k, v in (("space", space), ("steps", steps)) if v is not None])
    n = images.shape[0]
    if images.ndim != 4 or tuple(images.shape[1:]) != (G.img_channels, G.resolution, G.resolution):
        raise ValueError(f"images must be [N, {G.img_channels}, {G.resolution}, {G.resolution}], got "
                         f"{list(images.shape)}")
    if s.perceptual > 0 and perceptual is None:
        raise ValueError("the objective has a perceptual term: pass perceptual= (or settings.perceptual=0)")
    names = [str(x) for x in (names if names is not None else range(n))]
    stats = stats or latent_statistics(G, s.w_avg_samples, s.seed)
    G = G.eval().requires_grad_(False)
    x = images.detach().to(stats.w_avg.device).float()
    levels = pyramid_levels(x, getattr(perceptual, "min_size", 1), s.perceptual_scales) if s.perceptual > 0 else 0
    gen = torch.Generator().manual_seed(s.seed + 1)

    w_opt, f_opt = _start_codes(G, s, stats, n, init)
    w_opt.requires_grad_(True)
    groups = [{"params": [w_opt], "base_lr": s.lr}]
    if f_opt is not None:
        f_opt.requires_grad_(True)
        groups.append({"params": [f_opt], "base_lr": s.feature_lr or s.lr * _feature_spread(G, s, stats)})
    noise = [v.to(x).requires_grad_(True) for v in G.sample_noise(n, gen)] if s.noise_maps else []
    if noise:
        groups.append({"params": noise, "base_lr": s.lr})
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999), lr=s.lr)

    def terms(w: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ws = w.expand(n, G.num_ws, G.w_dim)
        y = G.synthesize_from(s.k, f_opt, ws, noise if noise else "const")
        parts = {"mse": (y - x).square().flatten(1).mean(1)}
        if levels:
            parts["perceptual"] = multiscale_distance(perceptual, x, y, levels)
        if noise:
            parts["noise_reg"] = noise_regularization(noise)
        total = s.mse * parts["mse"] + s.perceptual * parts.get("perceptual", 0) + s.noise_reg * parts.get("noise_reg", 0)
        return y, {"total": total, **parts}

    ok = torch.ones(n, dtype=torch.bool)
    failed: dict[str, str] = {}
    w_start = w_opt.detach().clone()
    f_start = None if f_opt is None else f_opt.detach().clone()
    with torch.no_grad():
        start = terms(w_opt)[1]["total"].tolist()
    t0 = time.perf_counter()
    with torch.enable_grad():  # also when called under no_grad (evaluation loops)
        for step in range(s.steps):
            t = step / s.steps
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * learning_rate_factor(t, s.lr_rampup, s.lr_rampdown)
            scale = stats.w_std * s.noise_start * max(0.0, 1.0 - t / s.noise_ramp) ** 2
            _, parts = terms(w_opt + torch.randn(w_opt.shape, generator=gen).to(w_opt) * scale)
            total = parts["total"]
            finite = torch.isfinite(total).cpu()
            for i in torch.nonzero(ok & ~finite).flatten().tolist():
                values = ", ".join(f"{k} {float(v[i].detach()):.4g}" for k, v in parts.items())
                failed[names[i]] = f"{names[i]}: non-finite loss at step {step} ({values}); image stopped"
            ok &= finite
            if not ok.any():
                break
            opt.zero_grad(set_to_none=True)
            # a failed image's term leaves the sum: the others' gradients are untouched by it
            torch.where(ok.to(total.device), total, total.new_zeros(())).sum().backward()
            opt.step()
            if noise:
                with torch.no_grad():
                    for v in noise:  # NVlabs: back to zero mean, unit variance per map and image
                        v -= v.mean((1, 2, 3), keepdim=True)
                        v *= v.square().mean((1, 2, 3), keepdim=True).rsqrt()
            if on_step is not None:
                on_step(step + 1, s.steps)
    with torch.no_grad():
        keep = ok.to(w_opt.device).view(n, *[1] * (w_opt.ndim - 1))
        w_opt.copy_(torch.where(keep, w_opt, w_start))  # failed images: back to their start
        if f_opt is not None:
            f_opt.copy_(torch.where(keep.view(n, 1, 1, 1), f_opt, f_start))
        y, parts = terms(w_opt)
    seconds = (time.perf_counter() - t0) / n
    ws = w_opt.detach().expand(n, G.num_ws, G.w_dim).clone()
    losses = {name: {"start": start[i], **{k: float(v[i]) for k, v in parts.items()}}
              for i, name in enumerate(names) if ok[i]}
    return ProjectionResult(ws, None if f_opt is None else f_opt.detach().clone(), s.k, names, ok, failed,
                            losses, seconds, [v.detach().clone() for v in noise] or None, y.detach())


def _feature_spread(G: Generator, s: ProjectionSettings, stats: LatentStatistics, samples: int = 256) -> float:
    """``sigma_F / sigma_w``: per-element std of ``G_K(w)`` over seeded samples, over w's per-dim
    spread ``w_std / sqrt(w_dim)`` (measured once per layer and seed, then cached in ``stats``)."""
    key = (s.k, s.seed)
    if key not in stats.feature_spreads:
        with torch.no_grad():
            sigma_f = float(G.features_at(s.k, mapped_codes(G, samples, s.seed + 2)).float().std())
        stats.feature_spreads[key] = sigma_f / (stats.w_std / math.sqrt(G.w_dim))
    return stats.feature_spreads[key]


class Projector(Encoder):
    """Projection behind the :class:`Encoder` interface, so everything that evaluates encoders
    (``invkit bench``, :func:`invkit.cli.eval.evaluate`) evaluates it too: :meth:`encode` runs
    :func:`project` on the batch (gradients enabled inside, whatever the caller's mode) and
    returns ``(ws, F)``; ``F`` is None outside ``w+f`` (``feature_branch`` says which). Images
    stopped by a non-finite loss keep their start codes; ``failed`` maps their position among all
    the images encoded so far to the message."""

    def __init__(self, generator: Generator, settings: ProjectionSettings, perceptual: nn.Module | None,
                 init_encoder: Encoder | None = None):
        super().__init__()
        if settings.noise_maps:
            raise ValueError("a Projector returns (ws, F) only: optimised noise maps would be lost")
        self.settings = settings
        self.num_ws, self.w_dim, self.k = generator.num_ws, generator.w_dim, settings.k
        self.feature_shape = generator.layer(settings.k).shape
        self.feature_branch = settings.space == "w+f"
        self.generator_fingerprint = generator.fingerprint()
        # plain attributes, not submodules: the generator and networks are not the projector's weights
        self.__dict__.update(_G=generator, _perceptual=perceptual, _init=init_encoder)
        self.stats = latent_statistics(generator, settings.w_avg_samples, settings.seed)
        self.failed: dict[int, str] = {}
        self.encoded = 0

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        init = self._init.encode(images) if self._init is not None else None
        names = [str(self.encoded + i) for i in range(images.shape[0])]
        res = project(self._G, images, settings=self.settings, perceptual=self._perceptual, init=init,
                      names=names, stats=self.stats)
        self.failed.update({int(name): msg for name, msg in res.failed.items()})
        self.encoded += len(names)
        return res.ws, res.features


def perceptual_network(name: str = "auto", generator: Generator | None = None, generator_source: str | None = None,
                       fallback: str = "vgg", device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """A perceptual distance ``d(x, y) -> [B]`` (images in [-1, 1]) and its label.

    ``name``: ``"alex"`` / ``"vgg"``, LPIPS with its ImageNet trunk (zoo weights); a registered
    recipe, the perceptual network of that recipe's objective (its own loss's when it brings one,
    e.g. ``toy``: toy-LPIPS; else LPIPS as its ``loss_networks`` say); ``"auto"``, the recipe that
    ``generator_source`` names when it names one (``-g toy``), else ``fallback``.
    """
    from . import plugins
    from .nets.lpips import LPIPS

    if name == "auto":
        name = str(generator_source) if str(generator_source) in plugins.recipes() else fallback
    if name in ("alex", "vgg"):
        net, label = LPIPS(name), f"LPIPS ({name}, ImageNet trunk)"
    elif name in plugins.recipes():
        from .recipe import get_recipe

        recipe, obj = get_recipe(name), plugins.recipes().get(name).obj
        if hasattr(obj, "loss"):
            if generator is None:
                raise ValueError(f"recipe {name!r}: its perceptual network needs the generator")
            net = obj.loss(generator, recipe).lpips
        else:
            net = LPIPS(recipe.loss_networks.lpips_net, trunk=recipe.loss_networks.lpips_trunk)
        label = getattr(net, "label", f"{type(net).__name__} (recipe {name})")
    else:
        known = ", ".join(["alex", "vgg", *plugins.list_recipes()])
        raise ValueError(f"unknown perceptual network {name!r}; choose from {known}, or auto")
    return net.to(device).eval().requires_grad_(False), label


def settings_dict(settings: ProjectionSettings) -> dict:
    """The settings as plain JSON data (for reports and codes' metadata)."""
    return asdict(settings)
