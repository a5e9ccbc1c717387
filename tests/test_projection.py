"""invkit.project: per-image optimisation in W, W+ and W+F on a tiny generator (the library)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invkit.config import ConfigError
from invkit.metrics import psnr, to_unit
from invkit.projection import (
    ProjectionSettings,
    latent_statistics,
    learning_rate_factor,
    noise_regularization,
    project,
)
from invkit.testing import tiny_stylegan2

K = 3  # b8.conv1 of the 32 px tiny generator: F is 32 x 8 x 8


class BlurDistance(nn.Module):
    """A cheap stand-in for LPIPS (whose ImageNet trunks cannot be downloaded here): squared
    distance of 2x2-pooled images, ``[B]``; optionally NaN for images brighter than ``nan_above``."""

    min_size = 8

    def __init__(self, nan_above: float | None = None):
        super().__init__()
        self.nan_above = nan_above

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = (F.avg_pool2d(x, 2) - F.avg_pool2d(y, 2)).square().mean((1, 2, 3))
        if self.nan_above is not None:
            d = torch.where(x.mean((1, 2, 3)) > self.nan_above, torch.full_like(d, float("nan")), d)
        return d


@pytest.fixture(scope="module")
def G():
    return tiny_stylegan2(resolution=32, w_dim=32, max_channels=32, seed=1)


@pytest.fixture(scope="module")
def stats(G):
    return latent_statistics(G, 2000)


def targets(G, n: int, seed: int) -> torch.Tensor:
    """Images the generator cannot make exactly: its samples with fresh random noise and a
    bright square pasted on (no code of the constant-noise generator draws either exactly)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = G.synthesize(G.mapping(torch.randn(n, G.z_dim, generator=gen)), G.sample_noise(n, gen))
    x = x.clamp(-1, 1).clone()
    x[:, :, 10:16, 12:20] = 0.8
    return x


def settings(**kw) -> ProjectionSettings:
    return ProjectionSettings(k=K, w_avg_samples=2000, **kw)


def test_learning_rate_rises_then_falls_along_a_cosine():
    f = [learning_rate_factor(t / 100, 0.05, 0.25) for t in range(100)]
    assert f[0] == 0 and f[5] == pytest.approx(1) and f[50] == 1 and f[75] == pytest.approx(1)
    assert all(a <= b for a, b in zip(f[:6], f[1:6])) and all(a >= b for a, b in zip(f[75:], f[76:]))
    assert f[99] < 0.01


@pytest.mark.parametrize("space", ["w", "w+", "w+f"])
def test_each_space_lowers_the_loss_and_raises_psnr_from_its_start(G, stats, space):
    x = targets(G, 3, seed=7)
    res = project(G, x, space, 60, settings=settings(), perceptual=BlurDistance(), stats=stats)
    assert res.ok.all() and not res.failed
    start_img = G.synthesize(stats.w_avg.view(1, 1, -1).expand(3, G.num_ws, -1))
    gain = psnr(to_unit(x), to_unit(res.images)) - psnr(to_unit(x), to_unit(start_img))
    assert (gain > 2).all(), gain
    for name, losses in res.losses.items():
        assert losses["total"] < 0.5 * losses["start"], (name, losses)
    assert res.ws.shape == (3, G.num_ws, G.w_dim)
    if space == "w":  # one code repeated over the rows
        assert torch.equal(res.ws, res.ws[:, :1].expand_as(res.ws))
    assert (res.features is not None) == (space == "w+f")
    inv = res.inversion(G.fingerprint())
    with torch.no_grad():  # the codes render exactly the returned images
        torch.testing.assert_close(G.synthesize_from(inv.k, inv.features, inv.ws), res.images)


def test_wf_beats_wplus_on_the_same_budget(G, stats):
    x = targets(G, 3, seed=11)
    wp = project(G, x, "w+", 80, settings=settings(), perceptual=BlurDistance(), stats=stats)
    wf = project(G, x, "w+f", 80, settings=settings(), perceptual=BlurDistance(), stats=stats)
    for name in wp.losses:
        assert wf.losses[name]["total"] < 0.8 * wp.losses[name]["total"], (wp.losses[name], wf.losses[name])
    assert (psnr(to_unit(x), to_unit(wf.images)) > psnr(to_unit(x), to_unit(wp.images)) + 1).all()


def test_start_codes_are_used_as_given(G, stats):
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ws = G.mapping(torch.randn(2, G.z_dim, generator=gen))
        x = G.synthesize(ws)  # exactly reachable: the codes that made it start at zero loss
    res = project(G, x, "w+f", 3, settings=settings(noise_start=0.0), perceptual=BlurDistance(),
                  init=(ws, None), stats=stats)
    assert all(v["start"] < 1e-8 for v in res.losses.values())
    w_res = project(G, x, "w", 1, settings=settings(lr=1e-6, noise_start=0.0), perceptual=BlurDistance(),
                    init=(ws, None), stats=stats)
    torch.testing.assert_close(w_res.ws[:, 0], ws.mean(1), atol=1e-4, rtol=0)  # W starts at the rows' mean


def test_a_nan_loss_stops_that_image_and_the_others_go_on(G, stats):
    x = targets(G, 3, seed=5)
    x[1] = 1.0  # the NaN-producing distance fires on this bright image only
    s = settings(noise_start=0.0)  # no random draws: batch and single runs take the same path
    res = project(G, x, "w+", 20, settings=s, perceptual=BlurDistance(nan_above=0.9), names=["a", "b", "c"],
                  stats=stats)
    assert res.ok.tolist() == [True, False, True]
    assert list(res.failed) == ["b"] and "b: non-finite loss at step 0" in res.failed["b"]
    assert set(res.losses) == {"a", "c"} and res.inversion(G.fingerprint()).names == ["a", "c"]
    alone = project(G, x[[0, 2]], "w+", 20, settings=s, perceptual=BlurDistance(), stats=stats)
    torch.testing.assert_close(res.ws[[0, 2]], alone.ws, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(res.ws).all()  # the stopped image keeps its start codes


def test_noise_maps_are_optimised_normalised_and_regularised(G, stats):
    smooth = [torch.ones(2, 1, 16, 16)]
    white = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))]
    assert (noise_regularization(smooth) > 1).all() and (noise_regularization(white) < 0.01).all()
    x = targets(G, 2, seed=2)
    res = project(G, x, "w+", 10, settings=settings(noise_maps=True), perceptual=BlurDistance(), stats=stats)
    assert res.noise is not None and len(res.noise) == len(G.sample_noise(1))
    for v in res.noise:
        torch.testing.assert_close(v.mean((1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(v.square().mean((1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    assert all("noise_reg" in v for v in res.losses.values())
    with torch.no_grad():  # the images are those of the optimised maps, not of the constant noise
        torch.testing.assert_close(G.synthesize(res.ws, res.noise), res.images)


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="space must be one of"):
        ProjectionSettings(space="z")
    with pytest.raises(ConfigError, match="steps"):
        ProjectionSettings().with_overrides(["steps=0"])
    with pytest.raises(ConfigError, match="unknown key"):
        ProjectionSettings().with_overrides(["stepz=3"])
    assert ProjectionSettings().with_overrides(["space=w+f", "lr=0.05"]).lr == 0.05


def test_the_public_api_names_it():
    import invkit

    assert invkit.project is project and invkit.ProjectionSettings is ProjectionSettings


def test_a_perceptual_objective_needs_a_network(G):
    with pytest.raises(ValueError, match="perceptual"):
        project(G, targets(G, 1, 0), "w", 2, settings=settings())
