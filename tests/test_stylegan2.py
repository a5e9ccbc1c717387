"""Behaviour of the StyleGAN2 network on a tiny random generator: layer table, Feature-Style
replacement semantics, noise modes, truncation, style affines, clamping, save/load."""

from __future__ import annotations

import pytest
import torch

import invkit
from invkit.adapters.stylegan2 import StyleGAN2Generator
from invkit.adapters.stylegan2_layers import layer_table, upsample2x
from invkit.testing import tiny_stylegan2


@pytest.fixture(scope="module")
def G() -> StyleGAN2Generator:
    return tiny_stylegan2(resolution=32, w_dim=32, max_channels=32, seed=0)


@pytest.fixture(scope="module")
def ws(G) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return G.mapping(torch.randn(2, G.z_dim, generator=gen), truncation_psi=0.8)


def random_features(G, k: int, batch: int, seed: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *G.layers[k].shape, generator=gen)


# ---- sizes and layer table -------------------------------------------------------------------
def test_layer_table(G):
    assert G.layers == layer_table(32, G.channels)
    assert G.num_ws == 8 and G.resolution == 32 and G.img_channels == 3
    names = [li.name for li in G.layers]
    assert names == ["b4.const", "b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1",
                     "b32.conv0", "b32.conv1"]
    assert [li.index for li in G.layers] == list(range(8))
    assert [li.w_index for li in G.layers] == [None, 0, 1, 2, 3, 4, 5, 6]
    assert G.layers[5].shape == (32, 16, 16)  # K = 5: the second conv at 16x16, as in the paper
    assert G.layers[7].shape == (16, 32, 32)


def test_paper_numbering_at_1024():
    """At the official 1024 px config, K = 5 is b16.conv1 with a 512x16x16 activation."""
    layers = layer_table(1024, [512, 512, 512, 512, 512, 256, 128, 64, 32])
    assert len(layers) == 18  # = num_ws: 17 conv layers + the constant
    assert layers[5].name == "b16.conv1" and layers[5].shape == (512, 16, 16) and layers[5].w_index == 4
    assert layers[17].name == "b1024.conv1" and layers[17].shape == (32, 1024, 1024)


def test_tiny_generator_is_not_trivial(G):
    assert all(c.noise_strength.abs() > 0 for c in G.convs)
    assert all(c.bias.abs().min() > 0 for c in G.convs)
    assert G.w_avg.abs().min() > 0
    assert tiny_stylegan2(seed=0).fingerprint() == G.fingerprint()
    assert tiny_stylegan2(seed=1).fingerprint() != G.fingerprint()


@torch.no_grad()
def test_features_shapes_and_identity(G, ws):
    img = G.synthesize(ws)
    assert img.shape == (2, 3, 32, 32)
    for k, li in enumerate(G.layers):
        F = G.features_at(k, ws)
        assert tuple(F.shape) == (2, *li.shape)
        torch.testing.assert_close(G.synthesize_from(k, F, ws), img, atol=1e-5, rtol=1e-5)


# ---- Feature-Style replacement semantics -----------------------------------------------------
def reference_walk(G, ws, K, F, torgb_reads_replaced: bool) -> torch.Tensor:
    """A plain re-statement of the two candidate rules, written independently of run_synthesis.

    Official FS: the replaced activation only feeds the next conv; every ToRGB reads its block's
    own conv output. Naive: the replaced activation also feeds the ToRGB."""
    x = G.const.expand(ws.shape[0], -1, -1, -1)
    if K == 0:
        x = F
    img = None
    for j, conv in enumerate(G.convs):
        own = conv(x, ws[:, j], conv.noise_const[None, None])
        x = F if j + 1 == K else own
        if j % 2 == 0:  # block ends: b4.conv1, b8.conv1, ...
            b = j // 2
            y = G.torgbs[b](x if torgb_reads_replaced else own, ws[:, j + 1])
            img = y if img is None else upsample2x(img, G.blur) + y
    return img


@torch.no_grad()
@pytest.mark.parametrize("K", range(8))
def test_fs_semantics_match_official_rule(G, ws, K):
    F = random_features(G, K, ws.shape[0])
    out = G.synthesize_from(K, F, ws)
    torch.testing.assert_close(out, reference_walk(G, ws, K, F, False), atol=1e-5, rtol=1e-5)
    naive = reference_walk(G, ws, K, F, True)
    if K in (1, 3, 5, 7):  # a block's second conv: the naive rule would differ
        assert (out - naive).abs().max() > 1e-2
    else:  # 0 and first convs: no ToRGB reads them directly, both rules agree
        torch.testing.assert_close(out, naive, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_fs_semantics_observable_properties(G, ws):
    img = G.synthesize(ws)
    # K = last layer: no conv consumes it, so F changes nothing.
    K = len(G.layers) - 1
    torch.testing.assert_close(G.synthesize_from(K, random_features(G, K, 2), ws), img)
    # K = 4 (b16.conv0, a first conv): the 16-px ToRGB already sees F.
    F = random_features(G, 4, 2)
    own5 = G.features_at(5, ws)
    new5 = G.run_synthesis(ws, stop_at=5, replace_at=4, features=F)
    assert (new5 - own5).abs().max() > 1e-2


@torch.no_grad()
def test_blend(G, ws):
    K = 3
    own = G.features_at(K, ws)
    F = random_features(G, K, 2)
    torch.testing.assert_close(G.synthesize_from(K, F, ws, blend=0.0), G.synthesize(ws))
    mixed = 0.3 * F + 0.7 * own
    torch.testing.assert_close(G.synthesize_from(K, F, ws, blend=0.3), G.synthesize_from(K, mixed, ws),
                               atol=1e-5, rtol=1e-5)
    per_sample = G.synthesize_from(K, F, ws, blend=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(per_sample[0], G.synthesize(ws)[0])
    torch.testing.assert_close(per_sample[1], G.synthesize_from(K, F, ws)[1])


def test_gradients_reach_ws_and_features(G, ws):
    ws = ws.clone().requires_grad_(True)
    F = random_features(G, 4, 2).requires_grad_(True)
    G.synthesize_from(4, F, ws).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert F.grad is not None and F.grad.abs().sum() > 0


def test_bad_shapes(G, ws):
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesize(ws[:, :3])
    with pytest.raises(ValueError, match="features for layer 5"):
        G.synthesize_from(5, torch.zeros(2, 3, 16, 16), ws)
    with pytest.raises(ValueError, match="out of range"):
        G.features_at(8, ws)
    with pytest.raises(ValueError, match="z must be"):
        G.mapping(torch.zeros(2, 7))


# ---- noise -----------------------------------------------------------------------------------
@torch.no_grad()
def test_noise_modes(G, ws):
    const = G.synthesize(ws, "const")
    r1, r2 = G.synthesize(ws, "random"), G.synthesize(ws, "random")
    assert (r1 - r2).abs().max() > 1e-3 and (r1 - const).abs().max() > 1e-3
    noise = G.sample_noise(2, torch.Generator().manual_seed(3))
    assert [tuple(n.shape) for n in noise] == [(2, 1, c.resolution, c.resolution) for c in G.convs]
    torch.testing.assert_close(G.synthesize(ws, noise), G.synthesize(ws, list(noise)))
    again = G.sample_noise(2, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(noise, again))
    # The explicit list also drives features_at / synthesize_from (FS training on synthetic data).
    F = G.features_at(3, ws, noise)
    torch.testing.assert_close(G.synthesize_from(3, F, ws, noise), G.synthesize(ws, noise), atol=1e-5, rtol=1e-5)
    zeros = [torch.zeros_like(n) for n in noise]
    torch.testing.assert_close(G.synthesize(ws, "none"), G.synthesize(ws, zeros))
    stored = [c.noise_const[None, None] for c in G.convs]
    torch.testing.assert_close(G.synthesize(ws, stored), const)
    with pytest.raises(ValueError, match="expected 7 noise tensors"):
        G.synthesize(ws, noise[:-1])
    with pytest.raises(ValueError, match="noise_mode must be"):
        G.synthesize(ws, "fixed")


# ---- mapping, affines, clamp -----------------------------------------------------------------
@torch.no_grad()
def test_truncation(G):
    z = torch.randn(3, G.z_dim)
    ws1 = G.mapping(z)
    assert torch.equal(ws1, ws1[:, :1].expand_as(ws1))
    torch.testing.assert_close(G.mapping(z, 0.0), G.w_avg.expand(3, G.num_ws, -1))
    torch.testing.assert_close(G.mapping(z, 0.5), G.w_avg + 0.5 * (ws1 - G.w_avg))
    cut = G.mapping(z, 0.5, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, 3:], ws1[:, 3:])
    torch.testing.assert_close(cut[:, :3], G.mapping(z, 0.5)[:, :3])


@torch.no_grad()
def test_style_affines(G, ws):
    affines = G.style_affines()
    assert len(affines) == len(G.convs) + len(G.torgbs)
    names = [a.name for a in affines]
    assert names[:4] == ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1"]
    for a in affines:
        module = G.convs[G.layers.index(next(li for li in G.layers if li.name == a.name)) - 1] \
            if "conv" in a.name else G.torgbs[[f"b{4 * 2 ** b}.torgb" for b in range(len(G.torgbs))].index(a.name)]
        w = ws[:, a.w_index]
        torch.testing.assert_close(w @ a.weight.T + a.bias, module.affine(w))
    assert [a.w_index for a in affines if a.name.endswith("torgb")] == [1, 3, 5, 7]


@torch.no_grad()
def test_conv_clamp():
    Gc = tiny_stylegan2(seed=0, conv_clamp=0.5)
    ws = Gc.mapping(torch.randn(2, Gc.z_dim))
    trace = Gc.trace(ws)
    for name, t in trace.items():
        if ".conv" in name or name.endswith("torgb"):
            assert t.abs().max() <= 0.5 + 1e-6, name
    assert any(t.abs().max() >= 0.5 - 1e-6 for n, t in trace.items() if ".conv" in n)  # it really clamps
    free = tiny_stylegan2(seed=0)
    assert (free.synthesize(ws) - Gc.synthesize(ws)).abs().max() > 1e-2


# ---- saving ----------------------------------------------------------------------------------
@torch.no_grad()
def test_save_load_round_trip(G, ws, tmp_path):
    path = invkit.save_generator(G, tmp_path / "tiny.safetensors")
    H = invkit.load_generator(path)
    assert isinstance(H, StyleGAN2Generator) and H.adapter_name == "stylegan2"
    assert H.config == G.config and H.fingerprint() == G.fingerprint()
    assert torch.equal(H.synthesize(ws), G.synthesize(ws))
    assert torch.equal(H.features_at(4, ws), G.features_at(4, ws))
    forced = invkit.load_generator(path, adapter="stylegan2")  # naming the adapter also works
    assert forced.fingerprint() == G.fingerprint()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@torch.no_grad()
def test_cuda_matches_cpu(G, ws):
    Gc = tiny_stylegan2(seed=0).cuda()
    noise = G.sample_noise(2, torch.Generator().manual_seed(0))
    out = Gc.synthesize(ws.cuda(), [n.cuda() for n in noise]).cpu()
    torch.testing.assert_close(out, G.synthesize(ws, noise), atol=1e-4, rtol=1e-4)
    F = Gc.features_at(5, ws.cuda())
    assert F.is_cuda and Gc.sample_noise(1)[0].is_cuda
