"""The fast synthesis paths equal the reference ones.

* ``invkit.ops.resample`` (polyphase / separable / tiled ops) against the plain ops of
  ``invkit.ops.upfirdn`` on random inputs: odd sizes, negative and asymmetric paddings, up/down
  factors 1-4, separable and 2-D filters, flipped filters, clamps, tiny tiles; values and
  gradients.
* Both paths (``invkit.ops.resample.use_impl``) reproduce the public reference vectors of rosinality,
  NVlabs stylegan2-ada and NVlabs stylegan3 -T / -R to 1e-4, including every layer's activation
  and every StyleGAN2 modulated-conv strategy.
* ``invkit.inference``: the CUDA-only switches are no-ops / clear errors on the CPU.
"""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from conftest import load_reference

from invkit import inference
from invkit.ops import resample, upfirdn

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the switch ------------------------------------------------------------------------------
def test_impl_switch():
    assert resample.get_impl() == "fast"
    with resample.use_impl("reference"):
        assert resample.get_impl() == "reference"
    assert resample.get_impl() == "fast"
    with pytest.raises(ValueError, match="unknown resampling implementation 'cuda'"):
        resample.set_impl("cuda")
    with pytest.raises(ValueError, match="unknown resampling implementation"):
        resample.upfirdn2d(torch.zeros(1, 1, 4, 4), None, impl="slow")


def test_reference_impl_is_the_oracle():
    """With impl="reference" the module returns exactly what invkit.ops.upfirdn computes."""
    x, f = torch.randn(2, 3, 9, 7), torch.randn(6)
    got = resample.upfirdn2d(x, f, up=2, padding=(3, 2, 1, 4), gain=4, impl="reference")
    assert torch.equal(got, upfirdn.upfirdn2d(x, f, up=2, padding=(3, 2, 1, 4), gain=4))


# ---- ops against the oracle ------------------------------------------------------------------
def _upfirdn_cases(n: int, seed: int):
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        up, down = rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3])
        taps = rng.choice([1, 2, 3, 4, 5, 6, 8, 12, 24])
        case = {
            "up": up, "down": down, "taps": taps, "ndim": rng.choice([1, 1, 2]),
            "size": (rng.randint(1, 13), rng.randint(1, 13)),
            "padding": tuple(rng.randint(-4, 8) for _ in range(4)),
            "flip": rng.random() < 0.3, "gain": rng.choice([1.0, float(up * up), 2.5]),
        }
        h, w = case["size"]
        left, right, top, bottom = case["padding"]
        if (w * up + left + right - taps) // down < 0 or (h * up + top + bottom - taps) // down < 0:
            continue  # no output
        if w * up + min(left, 0) + min(right, 0) <= 0 or h * up + min(top, 0) + min(bottom, 0) <= 0:
            continue  # cropped away entirely
        cases.append(case)
    return cases


@pytest.mark.parametrize("case", _upfirdn_cases(60, seed=1), ids=lambda c: f"u{c['up']}d{c['down']}t{c['taps']}")
def test_upfirdn2d_matches_reference(case):
    # str hashes are salted per process; crc32 gives every run the same data for a case.
    torch.manual_seed(zlib.crc32(str(case).encode()))
    h, w = case["size"]
    x = torch.randn(2, 3, h, w)
    shape = [case["taps"]] * case["ndim"]
    f = torch.randn(shape) / case["taps"] ** (case["ndim"] / 2)
    args = (f, case["up"], case["down"], case["padding"], case["gain"], case["flip"])
    ref = upfirdn.upfirdn2d(x, *args)
    got = resample.upfirdn2d(x, *args, impl="fast")
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def _filtered_lrelu_cases(n: int, seed: int):
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        up, down = rng.choice([1, 2, 4]), rng.choice([1, 2])
        tu = rng.choice([1, 6, 12, 24]) if up > 1 else rng.choice([1, 3])
        td = rng.choice([1, 6, 12])
        case = {
            "up": up, "down": down, "tu": tu, "td": td, "radial": td > 1 and rng.random() < 0.4,
            "size": (rng.randint(3, 20), rng.randint(3, 20)),
            "padding": tuple(rng.randint(-3, 12) for _ in range(4)),
            "channels": rng.choice([1, 3, 70]), "bias": rng.random() < 0.7,
            "gain": rng.choice([1.0, 2**0.5]), "slope": rng.choice([0.2, 1.0]),
            "clamp": rng.choice([None, 1.0, 256.0]), "tile_bytes": rng.choice([1, 500, 100_000, 10**8]),
        }
        h, w = case["size"]
        left, right, top, bottom = case["padding"]
        if min(w * up + left + right, h * up + top + bottom) - tu - td + 2 < 1:
            continue
        if min(w * up + min(left, 0) + min(right, 0), h * up + min(top, 0) + min(bottom, 0)) <= 0:
            continue
        cases.append(case)
    return cases


@pytest.mark.parametrize("case", _filtered_lrelu_cases(50, seed=2),
                         ids=lambda c: f"u{c['up']}d{c['down']}t{c['tu']}-{c['td']}{'r' if c['radial'] else ''}")
def test_filtered_lrelu_matches_reference(case, monkeypatch):
    # str hashes are salted per process; crc32 gives every run the same data for a case.
    torch.manual_seed(zlib.crc32(str(case).encode()))
    # Tiny tiles exercise the band/halo bookkeeping, huge ones the single-tile case.
    monkeypatch.setattr(resample, "TILE_BYTES", case["tile_bytes"])
    monkeypatch.setattr(resample, "TILE_CHANNELS", 32)
    h, w = case["size"]
    c = case["channels"]
    x = torch.randn(2, c, h, w) * 3
    fu = None if case["tu"] == 1 else torch.randn(case["tu"]) / case["tu"] ** 0.5
    td = case["td"]
    fd = None if td == 1 else (torch.randn(td, td) / td if case["radial"] else torch.randn(td) / td**0.5)
    bias = torch.randn(c) if case["bias"] else None
    args = (fu, fd, bias, case["up"], case["down"], case["padding"], case["gain"], case["slope"], case["clamp"])
    ref = upfirdn.filtered_lrelu(x, *args)
    got = resample.filtered_lrelu(x, *args, impl="fast")
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
    if case["clamp"] == 1.0:
        # the clamp really was exercised: without it the result differs
        unclamped = upfirdn.filtered_lrelu(x, *args[:-1], None)
        assert not torch.allclose(unclamped, ref)


def test_filtered_lrelu_stylegan3_shapes():
    """The exact up/down/padding/filters of a StyleGAN3-R layer pair (x4 up, radial down)."""
    fu = upfirdn.design_lowpass_filter(24, 4.0, 8.0, 64)
    fd = upfirdn.design_lowpass_filter(12, 5.66, 6.0, 64, radial=True)
    x, b = torch.randn(2, 40, 38, 38), torch.randn(40)
    ref = upfirdn.filtered_lrelu(x, fu, fd, b, up=4, down=2, padding=(17, 16, 17, 16), clamp=256.0)
    got = resample.filtered_lrelu(x, fu, fd, b, up=4, down=2, padding=(17, 16, 17, 16), clamp=256.0)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_filtered_lrelu_errors():
    with pytest.raises(ValueError, match=r"expects \[B, C, H, W\]"):
        resample.filtered_lrelu(torch.zeros(3, 8, 8), None, None, None)
    with pytest.raises(ValueError, match="leaves no output"):
        resample.filtered_lrelu(torch.zeros(1, 1, 4, 4), torch.ones(6), torch.ones(6), None, up=2, down=2,
                                padding=(-4, -4, 0, 0))


@pytest.mark.parametrize("clamp", [None, 0.5])
def test_bias_act_values_inplace_and_gradients(clamp):
    x, b = torch.randn(2, 5, 6, 7), torch.randn(5)
    ref = upfirdn.bias_lrelu(x, b, slope=0.2, gain=2**0.5, clamp=clamp)
    y = x.clone()
    got = resample.bias_act(y, b, clamp=clamp, inplace=True)
    torch.testing.assert_close(got, ref)
    assert got.data_ptr() == y.data_ptr()  # really in place
    # With autograd recording, the fast op stays out of place and differentiable.
    xg, bg = x.clone().requires_grad_(), b.clone().requires_grad_()
    resample.bias_act(xg, bg, clamp=clamp, inplace=True).square().sum().backward()
    xr, br = x.clone().requires_grad_(), b.clone().requires_grad_()
    upfirdn.bias_lrelu(xr, br, clamp=clamp).square().sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    torch.testing.assert_close(bg.grad, br.grad)


def test_filtered_lrelu_gradients_match(monkeypatch):
    monkeypatch.setattr(resample, "TILE_BYTES", 2000)
    fu, fd = torch.randn(12) / 3, torch.randn(12) / 3
    x, b = torch.randn(1, 4, 9, 11), torch.randn(4)
    grads = []
    for fn in (upfirdn.filtered_lrelu, resample.filtered_lrelu):
        xx, bb = x.clone().requires_grad_(), b.clone().requires_grad_()
        fn(xx, fu, fd, bb, up=2, down=2, padding=(6, 5, 6, 5), clamp=1.0).sin().sum().backward()
        grads.append((xx.grad, bb.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-5, rtol=1e-5)


# ---- both paths reproduce the public vectors ---------------------------------------------------
IMPLS = ["fast", "reference"]


@pytest.fixture(scope="module")
def sg2_refs(vectors_root):
    from invkit.adapters.stylegan2_formats import from_nvlabs, from_rosinality

    out = {}
    g_file = load_reference(vectors_root, "rosinality_stylegan2", "G")
    vec = load_reference(vectors_root, "rosinality_stylegan2", "vectors")
    out["rosinality_stylegan2"] = (from_rosinality(g_file["state_dict"], vec["latent_avg"]).eval(), vec)
    g_file = load_reference(vectors_root, "nvlabs_stylegan2_ada", "G")
    vec = load_reference(vectors_root, "nvlabs_stylegan2_ada", "vectors")
    out["nvlabs_stylegan2_ada"] = (from_nvlabs(g_file["state_dict"], g_file["config"]["init_kwargs"]).eval(), vec)
    return out


@torch.no_grad()
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("modconv", ["auto", "grouped", "stationary"])
@pytest.mark.parametrize("family", ["rosinality_stylegan2", "nvlabs_stylegan2_ada"])
def test_stylegan2_vectors_both_paths(sg2_refs, family, impl, modconv):
    G, vec = sg2_refs[family]
    G.modconv = modconv
    try:
        with resample.use_impl(impl):
            for psi in ("1.0", "0.7"):
                torch.testing.assert_close(G.synthesize(vec[f"ws_psi{psi}"]), vec[f"img_psi{psi}"], **TOL)
            no_noise = "img_psi1.0_noise_none" if family.startswith("nvlabs") else "img_psi1.0_noise_zero"
            torch.testing.assert_close(G.synthesize(vec["ws_psi1.0"], "none"), vec[no_noise], **TOL)
            if family.startswith("nvlabs"):
                for k in range(1, len(G.layers)):
                    key = f"feat.synthesis.{G.layers[k].name}"
                    torch.testing.assert_close(G.features_at(k, vec["ws_psi1.0"]), vec[key], **TOL)
                trace = G.trace(vec["ws_psi1.0"])
                for key in vec["layer_order"]:
                    torch.testing.assert_close(trace[key[len("feat.synthesis."):]], vec[key], **TOL)
    finally:
        G.modconv = "auto"


def test_stylegan2_fast_path_gradients_match():
    """The fast path is differentiable and gives the reference gradients (inversion needs them)."""
    from invkit.testing import tiny_stylegan2

    G = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16, conv_clamp=256.0)
    ws = G.mapping(torch.randn(2, G.z_dim)).detach()
    grads = []
    for impl in IMPLS:
        w = ws.clone().requires_grad_()
        with resample.use_impl(impl):
            G.synthesize(w).square().sum().backward()
        grads.append(w.grad)
    # Gradients reach ~1e3 here: compare at float32 resolution of that scale.
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6 * grads[1].abs().max().item(), rtol=1e-5)


def test_stylegan2_weight_cache_follows_in_place_updates():
    """The fast path caches ``W · gain`` and ``Σ_k W²`` per conv; an in-place weight update (the
    optimizer / EMA way) must invalidate it, and results must equal the reference path after."""
    from invkit.testing import tiny_stylegan2

    G = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16).eval().requires_grad_(False)
    ws = G.mapping(torch.randn(2, G.z_dim))
    conv = G.convs[1]
    with torch.no_grad():
        G.synthesize(ws)  # fills the caches
        first = conv.fixed_weights()[0]
        assert conv.fixed_weights()[0] is first  # reused while the weight is unchanged
        for c in G.convs:
            c.weight.mul_(1.5).add_(0.1)  # in place: bumps the version counter
        assert conv.fixed_weights()[0] is not first
        torch.testing.assert_close(conv.fixed_weights()[0], conv.weight * conv.weight_gain)
        fast = G.synthesize(ws)
        with resample.use_impl("reference"):
            ref = G.synthesize(ws)
    torch.testing.assert_close(fast, ref, **TOL)


def test_stylegan2_weight_cache_not_used_for_training():
    """While gradients are recorded for the weights, nothing is cached and the weight gradients
    equal the reference path's (GAN training updates these weights)."""
    from invkit.testing import tiny_stylegan2

    G = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16).requires_grad_(True)
    ws = G.mapping(torch.randn(2, G.z_dim)).detach()
    grads = []
    for impl in IMPLS:
        G.zero_grad(set_to_none=True)
        with resample.use_impl(impl):
            G.synthesize(ws).square().sum().backward()
        grads.append([c.weight.grad.clone() for c in G.convs])
    assert all(c._fixed is None for c in G.convs)
    for fast, ref in zip(*grads):
        torch.testing.assert_close(fast, ref, atol=1e-6 * ref.abs().max().item(), rtol=1e-5)
    # A training step in place, then grad-free synthesis: the cache sees the new weights.
    with torch.no_grad():
        G.synthesize(ws)
        for c in G.convs:
            c.weight.sub_(0.01 * c.weight.grad)
        fast = G.synthesize(ws)
        with resample.use_impl("reference"):
            ref = G.synthesize(ws)
    torch.testing.assert_close(fast, ref, **TOL)


@pytest.fixture(scope="module", params=["nvlabs_stylegan3_t", "nvlabs_stylegan3_r"])
def sg3_ref(request, vectors_root):
    from invkit.adapters.stylegan3 import from_nvlabs

    g_file = load_reference(vectors_root, request.param, "G")
    vec = load_reference(vectors_root, request.param, "vectors")
    return from_nvlabs(g_file["state_dict"], g_file["config"]["init_kwargs"]).eval(), vec


@torch.no_grad()
@pytest.mark.parametrize("impl", IMPLS)
def test_stylegan3_vectors_both_paths(sg3_ref, impl):
    G, vec = sg3_ref
    with resample.use_impl(impl):
        for psi in ("1.0", "0.7"):
            torch.testing.assert_close(G.synthesize(vec[f"ws_psi{psi}"]), vec[f"img_psi{psi}"], **TOL)
        for li in G.layers:
            feat = G.features_at(li.index, vec["ws_psi1.0"])
            torch.testing.assert_close(feat, vec[f"feat.synthesis.{li.name}"], **TOL,
                                       msg=lambda m, n=li.name: f"{impl} {n}: {m}")


# ---- inference options -----------------------------------------------------------------------
def test_inference_options_on_cpu():
    from invkit.testing import tiny_stylegan2

    G = tiny_stylegan2(resolution=8, w_dim=8, max_channels=8)
    ws = G.mapping(torch.randn(1, G.z_dim))
    with torch.no_grad(), inference.inference_mode("cpu", tf32=True, bf16=True):
        img = G.synthesize(ws)  # no-ops on the CPU
    assert img.dtype == torch.float32
    with pytest.raises(ValueError, match="needs a CUDA device"):
        with inference.inference_mode("cpu", bf16=True, strict=True):
            pass
    assert inference.psnr_vs_fp32(G, ws, tf32=True, bf16=True) == float("inf")
    assert inference.psnr(torch.zeros(4), torch.full((4,), 0.2)) == pytest.approx(20.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda.is_available"):
            with inference.inference_mode("cuda"):
                pass
