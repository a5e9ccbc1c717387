"""Feature-Style losses: each term against its definition, the weights, the detached feature
target, gradients reaching the encoder only, and a few optimisation steps that reduce the loss."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from invkit.fs_encoder import FeatureStyleEncoder
from invkit.losses import FeatureStyleLoss, LossWeights, freeze
from invkit.nets.arcface import ArcFace
from invkit.nets.bisenet import BiSeNet
from invkit.nets.lpips import LPIPS
from invkit.testing import tiny_stylegan2

# Tiny images leave out the smallest LPIPS levels on purpose; that warning is tested once below.
pytestmark = pytest.mark.filterwarnings("ignore:multi-scale LPIPS")

SMALL_ENC = {"depths": (1, 1, 1, 1), "widths": (8, 16, 16, 32), "stem_width": 8, "input_size": 32}


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def aux():
    torch.manual_seed(0)
    arc = ArcFace(depths=(1, 1, 1, 1), widths=(8, 16, 16, 32), stem_width=8, embedding_dim=16)
    parser = BiSeNet(input_size=64)
    _randomise_bn(arc, 1)
    _randomise_bn(parser, 2)
    return LPIPS("alex", trunk="random"), arc, parser


def _images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_default_weights_are_the_papers():
    w = LossWeights()
    assert (w.mse, w.lpips, w.feature, w.identity, w.parsing) == (1.0, 0.2, 0.01, 0.1, 0.1)
    assert w.as_dict() == {"mse": 1.0, "lpips": 0.2, "feature": 0.01, "identity": 0.1, "parsing": 0.1,
                           "mse_real": 0.0}  # the pixel term on real images is not in the paper


def test_mse_real_adds_the_pixel_error_of_both_reconstructions_on_every_image(aux):
    x, rec_w, rec_wf = _images(3, seed=1), _images(3, seed=2), _images(3, seed=3)
    feats = torch.zeros(3, 4, 8, 8)
    lpips = aux[0]
    base = FeatureStyleLoss(lpips, LossWeights(identity=0.0, parsing=0.0), lpips_scales=1)
    with_pixels = FeatureStyleLoss(lpips, LossWeights(identity=0.0, parsing=0.0, mse_real=0.5), lpips_scales=1)
    mask = torch.tensor([True, False, False])
    a = base(x, rec_w, rec_wf, feats, feats, mask)
    b = with_pixels(x, rec_w, rec_wf, feats, feats, mask)
    expected = ((rec_w - x).square().mean() + (rec_wf - x).square().mean())
    assert torch.allclose(b["mse_real"], expected) and a["mse_real"] == 0
    assert torch.allclose(b["total"] - a["total"], 0.5 * expected)


def test_total_is_the_weighted_sum_and_every_term_is_logged(aux):
    lp, arc, parser = aux
    x, rec_w, rec_wf = _images(seed=0), _images(seed=1), _images(seed=2)
    feats, target = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    mask = torch.tensor([True, False])
    for weights in (LossWeights(), LossWeights(mse=0.5, lpips=1.0, feature=2.0, identity=0.3, parsing=0.7)):
        out = FeatureStyleLoss(lp, weights, arc, parser)(x, rec_w, rec_wf, feats, target, mask)
        assert {"mse", "lpips", "lpips_w", "lpips_wf", "feature", "identity", "identity_w", "identity_wf",
                "parsing", "parsing_w", "parsing_wf", "total"} <= set(out)
        expected = (weights.mse * out["mse"] + weights.lpips * out["lpips"] + weights.feature * out["feature"]
                    + weights.identity * out["identity"] + weights.parsing * out["parsing"])
        torch.testing.assert_close(out["total"], expected)
        for name in ("lpips", "identity", "parsing"):
            torch.testing.assert_close(out[name], out[f"{name}_w"] + out[f"{name}_wf"])
            assert out[f"{name}_w"] > 0 and out[f"{name}_wf"] > 0
        torch.testing.assert_close(out["feature"], ((feats - target) ** 2).mean())


def test_mse_uses_synthetic_images_and_g_w_only(aux):
    lp = aux[0]
    loss = FeatureStyleLoss(lp)
    x, rec_w, rec_wf = _images(seed=0), _images(seed=1), _images(seed=2)
    f = torch.zeros(2, 4, 2, 2)
    mask = torch.tensor([True, False])
    out = loss(x, rec_w, rec_wf, f, f, mask)
    torch.testing.assert_close(out["mse"], ((rec_w[0] - x[0]) ** 2).mean())
    rec_w2 = rec_w.clone()
    rec_w2[1] = 0.0  # a real image's reconstruction does not enter the MSE
    assert torch.equal(loss(x, rec_w2, rec_wf, f, f, mask)["mse"], out["mse"])
    assert torch.equal(loss(x, rec_w, _images(seed=9), f, f, mask)["mse"], out["mse"])
    assert float(loss(x, rec_w, rec_wf, f, f, None)["mse"]) == 0.0
    assert float(loss(x, rec_w, rec_wf, f, f, torch.tensor([False, False]))["mse"]) == 0.0
    # Without faces networks the face terms are zero.
    assert float(out["identity"]) == 0.0 and float(out["parsing"]) == 0.0


def test_multiscale_lpips_sums_three_halvings(aux):
    lp = aux[0]
    loss = FeatureStyleLoss(lp)
    x, y = _images(2, 128, 3), _images(2, 128, 4)
    expected = 0.0
    xs, ys = x, y
    for _ in range(3):
        expected = expected + lp(xs, ys).mean()
        xs = F.interpolate(xs, scale_factor=0.5, mode="bilinear", align_corners=False)
        ys = F.interpolate(ys, scale_factor=0.5, mode="bilinear", align_corners=False)
    torch.testing.assert_close(loss.multiscale_lpips(x, y), expected)
    # 64 px images: the 16 px level is below AlexNet's minimum and is skipped with a warning.
    small_x, small_y = _images(1, 64, 5), _images(1, 64, 6)
    with pytest.warns(UserWarning, match="too small"):
        got = loss.multiscale_lpips(small_x, small_y)
    half = lp(F.interpolate(small_x, scale_factor=0.5, mode="bilinear"), F.interpolate(small_y, scale_factor=0.5, mode="bilinear"))
    torch.testing.assert_close(got, (lp(small_x, small_y) + half).mean())


def test_feature_target_is_detached(aux):
    loss = FeatureStyleLoss(aux[0], LossWeights(mse=0, lpips=0))
    x = _images(1, 32)
    feats = torch.randn(1, 4, 3, 3, requires_grad=True)
    target = torch.randn(1, 4, 3, 3, requires_grad=True)
    loss(x, x, x, feats, target, None)["total"].backward()
    assert target.grad is None
    torch.testing.assert_close(feats.grad, 0.01 * 2 * (feats - target).detach() / feats.numel())


def test_identity_and_parsing_match_their_definitions(aux):
    lp, arc, parser = aux
    loss = FeatureStyleLoss(lp, arcface=arc, parser=parser)
    x, rec_w = _images(2, 64, 7), _images(2, 64, 8)
    out = loss(x, rec_w, x.clone(), torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1), None)
    # G(w, F) == x: its face terms vanish.
    assert abs(float(out["identity_wf"])) < 1e-5 and abs(float(out["parsing_wf"])) < 1e-5
    a, b = arc.multi_level(x), arc.multi_level(rec_w)
    assert len(a) == 5
    ident = sum(1 - F.cosine_similarity(p.flatten(1), q.flatten(1), dim=1) for p, q in zip(a, b)).mean()
    torch.testing.assert_close(out["identity_w"], ident, rtol=1e-5, atol=1e-6)
    pa, pb = parser(x), parser(rec_w)
    assert len(pa) == 3
    pars = sum(1 - F.cosine_similarity(p.flatten(1), q.flatten(1), dim=1) for p, q in zip(pa, pb)).mean()
    torch.testing.assert_close(out["parsing_w"], pars, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_encoder_only(aux):
    lp, _, _ = aux
    # Fresh, unfrozen aux nets (as the official code leaves them): the loss freezes them.
    arc = ArcFace(depths=(1, 1, 1, 1), widths=(8, 16, 16, 32), stem_width=8, embedding_dim=16)
    parser = BiSeNet(input_size=64)
    assert all(p.requires_grad for p in arc.parameters())
    loss = FeatureStyleLoss(lp, arcface=arc, parser=parser)
    G = freeze(tiny_stylegan2(resolution=32, w_dim=16, max_channels=16))
    k = 3
    enc = FeatureStyleEncoder.for_generator(G, k, **SMALL_ENC).train()
    with torch.no_grad():
        x_syn = G.synthesize(G.mapping(torch.randn(1, G.z_dim)))
    x = torch.cat([x_syn, _images(1, 32, 11)])
    ws, feats = enc(x)
    rec_w = G.synthesize(ws)
    rec_wf = G.synthesize_from(k, feats, ws)
    target = G.features_at(k, ws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 32 px images: one LPIPS level only
        out = loss(x, rec_w, rec_wf, feats, target, torch.tensor([True, False]))
    out["total"].backward()
    grads = {n: p.grad for n, p in enc.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]
    assert all(g.abs().sum() > 0 for n, g in grads.items() if n.startswith(("styles.", "content_layer.1")))
    for net in (G, lp, arc, parser):
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    # The aux networks stay in eval mode even when the loss module is put in training mode.
    loss.train()
    assert not arc.training and not parser.training and not lp.training


def test_a_few_steps_reduce_the_loss(aux):
    lp = aux[0]
    loss = FeatureStyleLoss(lp)
    G = tiny_stylegan2(resolution=32, w_dim=16, max_channels=16)
    k = 3
    torch.manual_seed(0)
    enc = FeatureStyleEncoder.for_generator(G, k, **SMALL_ENC).train()
    with torch.no_grad():
        x = G.synthesize(G.mapping(torch.randn(2, G.z_dim)))
    mask = torch.tensor([True, True])
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    totals = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(6):
            ws, feats = enc(x)
            out = loss(x, G.synthesize(ws), G.synthesize_from(k, feats, ws), feats, G.features_at(k, ws), mask)
            opt.zero_grad()
            out["total"].backward()
            opt.step()
            totals.append(float(out["total"]))
    assert totals[-1] < 0.8 * totals[0], totals
