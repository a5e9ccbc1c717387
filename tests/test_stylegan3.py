"""StyleGAN3 adapter: the layer schedule against the official full-size tables, the resampling
ops against scipy, the alias-free equivariances, configuration handling and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from invkit.adapters.stylegan3 import StyleGAN3Generator, from_nvlabs, normalize_kwargs
from invkit.adapters.stylegan3_schedule import synthesis_schedule
from invkit.ops.upfirdn import design_lowpass_filter, filtered_lrelu, upfirdn2d

TINY = {
    "z_dim": 16,
    "w_dim": 16,
    "c_dim": 0,
    "img_resolution": 32,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 256,
    "channel_max": 16,
    "magnitude_ema_beta": 0.999,
}
TINY_R = {**TINY, "conv_kernel": 1, "use_radial_filters": True}


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _tiny(config: dict, seed: int = 0) -> StyleGAN3Generator:
    torch.manual_seed(seed)
    G = StyleGAN3Generator(config).eval()
    # Official init leaves every bias at zero and the input affine weight at 0; perturb so the
    # tests see a non-degenerate network.
    for name, p in G.named_parameters():
        if name.endswith("bias") or name == "synthesis.input.affine.weight":
            p.add_(torch.randn_like(p) * 0.1)
    return G


# ---- the schedule, as data from the official full-size configurations ---------------------
def _official_tables(vectors_root) -> dict:
    path = vectors_root / "official_tables" / "official_sg3.json"
    if not path.is_file():
        pytest.skip(f"official table missing: {path}")
    return {k: v for k, v in json.loads(path.read_text()).items() if "layers" in v}


def test_schedule_matches_every_official_table(vectors_root):
    tables = _official_tables(vectors_root)
    assert {(t["config"]["img_resolution"], t["config"].get("use_radial_filters", False)) for t in tables.values()} >= {
        (1024, False), (1024, True), (256, False), (256, True)
    }
    for title, table in tables.items():
        spec_in, specs = synthesis_schedule(normalize_kwargs(table["config"]))
        rows = table["layers"]
        assert rows[0]["module"] == "synthesis.input"
        assert [spec_in.channels, spec_in.size, spec_in.size] == rows[0]["out_shape"], title
        assert [f"synthesis.{s.name}" for s in specs] == [r["module"] for r in rows[1:]], title
        assert [s.name for s in specs] == table["layer_names"], title
        for s, r in zip(specs, rows[1:]):
            where = f"{title} {s.name}"
            assert [s.in_channels, s.in_size, s.in_size] == r["in_shape"], where
            assert [s.out_channels, s.out_size, s.out_size] == r["out_shape"], where
            assert [s.in_sampling_rate, s.out_sampling_rate] == r["sampling_rate"], where
            assert [s.in_cutoff, s.out_cutoff] == pytest.approx(r["cutoff"], rel=1e-12), where
            assert (s.up_factor, s.down_factor, s.up_taps, s.down_taps) == (
                r["up"], r["down"], r["up_taps"], r["down_taps"]
            ), where
            assert (s.is_critically_sampled, s.is_torgb, s.down_radial) == (
                r["critically_sampled"], r["torgb"], r["down_radial"]
            ), where
            # The padding must turn in_size into exactly out_size through conv, up, FIRs, down.
            conv_out = s.in_size + s.conv_kernel - 1  # the conv pads by kernel - 1 on each side
            width = conv_out * s.up_factor + s.padding[0] + s.padding[1] - (s.up_taps - 1) - (s.down_taps - 1)
            assert (width + s.down_factor - 1) // s.down_factor == s.out_size, where


def test_state_dict_shapes_match_every_official_table(vectors_root):
    """Built on the meta device (no memory), every key and shape equals the official ones."""
    for title, table in _official_tables(vectors_root).items():
        with torch.device("meta"):
            G = StyleGAN3Generator(table["config"])
        ours = {k: list(v.shape) for k, v in G.state_dict().items()}
        assert ours == table["state_dict"], title
        assert G.num_ws == table["num_ws"]
        assert [list(li.shape) for li in G.layers] == [r["out_shape"] for r in table["layers"]], title


# ---- resampling ops --------------------------------------------------------------------------
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2), (3, 1)])
def test_upfirdn2d_equals_scipy_upfirdn(up, down):
    """Full-convolution padding makes our op equal scipy.signal.upfirdn along both axes."""
    gen = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    f = torch.randn(7, generator=gen, dtype=torch.float64)  # asymmetric: checks the flip too
    taps = f.numel()
    pad = (taps - 1, taps - up, taps - 1, taps - up)
    ours = upfirdn2d(x, f, up=up, down=down, padding=pad)
    ref = scipy.signal.upfirdn(f.numpy(), x.numpy(), up=up, down=down, axis=3)
    ref = scipy.signal.upfirdn(f.numpy(), ref, up=up, down=down, axis=2)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)
    # The 2-D branch with the outer-product kernel gives the same result.
    ours_2d = upfirdn2d(x, torch.outer(f, f), up=up, down=down, padding=pad)
    np.testing.assert_allclose(ours_2d.numpy(), ref, atol=1e-12)
    # gain multiplies the output, and negative padding crops.
    torch.testing.assert_close(upfirdn2d(x, f, up=up, down=down, padding=pad, gain=4.0), ours * 4)
    cropped = upfirdn2d(x, f, up=up, padding=(-1, 0, 0, -2))
    full = upfirdn2d(x, f, up=up)
    torch.testing.assert_close(cropped, full[:, :, : full.shape[2] - 2, 1:])


def test_filtered_lrelu_without_filters_is_biased_lrelu_with_clamp():
    x = torch.randn(2, 4, 5, 5) * 3
    b = torch.randn(4)
    out = filtered_lrelu(x, None, None, b, gain=2.0, slope=0.1, clamp=1.5)
    ref = (F.leaky_relu(x + b.view(1, -1, 1, 1), 0.1) * 2.0).clamp(-1.5, 1.5)
    torch.testing.assert_close(out, ref)
    assert out.abs().max() == 1.5  # the clamp was hit


def test_filtered_lrelu_keeps_band_limited_signals_in_place():
    """On a positive band-limited signal lrelu is linear, so up x2 -> lrelu -> down x2 must return
    ``gain * (x + b)`` with each frequency scaled by ``|H_up| * |H_down|`` and *no phase shift*:
    the StyleGAN3 padding keeps the samples where they were (36 px in, 36 px out, 1x1 conv)."""
    fs_in, cutoff, half_width = 16, 2.0, 6.0  # the first layer of every official config
    fu = design_lowpass_filter(12, cutoff, 2 * half_width, 2 * fs_in)
    fd = design_lowpass_filter(12, cutoff, 2 * half_width, 2 * fs_in)
    nu = 1.5  # cycles per unit, inside the passband
    cols = torch.arange(36, dtype=torch.float64)
    x = (3 + torch.sin(2 * np.pi * nu * cols / fs_in)).expand(1, 1, 36, 36)
    out = filtered_lrelu(x, fu.double(), fd.double(), torch.tensor([0.5], dtype=torch.float64),
                         up=2, down=2, padding=(11, 10, 11, 10), gain=2.0, clamp=None)
    assert out.shape == x.shape
    _, hu = scipy.signal.freqz(fu.numpy(), worN=[nu], fs=2 * fs_in)
    _, hd = scipy.signal.freqz(fd.numpy(), worN=[nu], fs=2 * fs_in)
    expected = 2.0 * (3.5 + abs(hu[0]) * abs(hd[0]) * torch.sin(2 * np.pi * nu * cols / fs_in))
    m = 6  # the filters see the zero padding near the borders
    torch.testing.assert_close(out[0, 0, m:-m, m:-m], expected[m:-m].expand(36 - 2 * m, -1), atol=1e-5, rtol=0)


def test_lowpass_filters_of_the_official_schedule_pass_and_stop_their_bands():
    """Every filter of the 256-px StyleGAN3-T config: unit DC gain, symmetric, >= 0.9 up to
    ``cutoff - half_width`` and <= 0.05 from the stopband ``cutoff + half_width`` on."""
    config = normalize_kwargs({**TINY, "img_resolution": 256, "channel_base": 32768, "channel_max": 512})
    _, specs = synthesis_schedule(config)
    checked = 0
    for s in specs:
        for taps, cutoff, half_width in ((s.up_taps, s.in_cutoff, s.in_half_width),
                                         (s.down_taps, s.out_cutoff, s.out_half_width)):
            f = design_lowpass_filter(taps, cutoff, 2 * half_width, s.tmp_sampling_rate)
            if taps == 1:
                assert f is None
                continue
            assert f.shape == (taps,)
            assert f.sum().item() == pytest.approx(1.0, abs=1e-6)
            assert torch.equal(f, f.flip(0))
            freqs, response = scipy.signal.freqz(f.numpy(), worN=4096, fs=s.tmp_sampling_rate)
            response = np.abs(response)
            assert response[freqs <= max(cutoff - half_width, 0)].min() > 0.9, s.name
            assert response[freqs >= cutoff + half_width].max() < 0.05, s.name
            checked += 1
    assert checked == 2 * (len(specs) - 1)


@pytest.mark.parametrize("numtaps", [12, 13])
def test_radial_filter_is_symmetric_normalised_and_nearly_isotropic(numtaps):
    f = design_lowpass_filter(numtaps, cutoff=8.0, width=8.0, fs=64, radial=True)
    assert f.shape == (numtaps, numtaps)
    assert torch.isfinite(f).all()
    assert f.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(f, f.T)
    torch.testing.assert_close(f, f.flip(0))
    # Frequency response along an axis and along the diagonal agree (rotation invariance).
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / 64
    for rho in (2.0, 4.0, 12.0):
        along = np.sum(f.numpy() * np.cos(2 * np.pi * rho * x)[None, :])
        diag = np.sum(f.numpy() * np.cos(2 * np.pi * rho / np.sqrt(2) * (x[None, :] + x[:, None])))
        assert along == pytest.approx(diag, abs=0.03)


# ---- the network's alias-free properties --------------------------------------------------------
def test_stylegan3_r_is_exactly_equivariant_to_90_degree_rotation():
    G = _tiny(TINY_R)
    ws = G.mapping(torch.randn(2, G.z_dim))
    img = G.synthesize(ws)
    G.set_input_transform(angle_deg=90)
    rotated = G.synthesize(ws)
    torch.testing.assert_close(rotated, torch.rot90(img, 1, (2, 3)), atol=1e-5, rtol=0)
    assert (rotated - img).abs().max() > 1e-2


def test_stylegan3_t_is_equivariant_to_translation_by_whole_input_samples():
    G = _tiny(TINY)
    ws = G.mapping(torch.randn(1, G.z_dim))
    img = G.synthesize(ws)
    shift = int(G.resolution / G.synthesis.input.sampling_rate)  # output pixels per input sample
    G.set_input_transform(translate=(shift / G.resolution, 0.0))
    moved = G.synthesize(ws)
    m = 8  # border pixels see content that was outside the canvas
    # float32 noise of the sine arguments only (~1e-5 here), while the shift itself moves
    # pixels by ~1e-2 (the random tiny network's images are small and smooth).
    torch.testing.assert_close(moved[..., m:-m, m:-m], torch.roll(img, shift, 3)[..., m:-m, m:-m], atol=5e-5, rtol=0)
    assert (moved - img)[..., m:-m, m:-m].abs().max() > 2e-3
    G.set_input_transform()
    torch.testing.assert_close(G.synthesize(ws), img, atol=0, rtol=0)


# ---- configuration, loading and the Generator contract -------------------------------------
def test_flat_and_nested_kwargs_build_the_same_network():
    nested = {k: v for k, v in TINY_R.items() if k in ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels", "mapping_kwargs")}
    nested["synthesis_kwargs"] = {k: v for k, v in TINY_R.items() if k not in nested}
    assert normalize_kwargs(nested) == normalize_kwargs(TINY_R)
    G = _tiny(TINY_R)
    G2 = from_nvlabs(G.state_dict(), nested)
    ws = G.mapping(torch.randn(2, G.z_dim), truncation_psi=0.5)
    torch.testing.assert_close(G2.synthesize(ws), G.synthesize(ws), atol=0, rtol=0)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown StyleGAN3 synthesis kwargs.*'fancy'"):
        normalize_kwargs({**TINY, "fancy": 1})
    with pytest.raises(ValueError, match="lack 'img_resolution'"):
        normalize_kwargs({k: v for k, v in TINY.items() if k != "img_resolution"})
    with pytest.raises(NotImplementedError, match="c_dim=10"):
        normalize_kwargs({**TINY, "c_dim": 10})


def test_from_nvlabs_names_the_mismatching_key():
    G = _tiny(TINY)
    sd = dict(G.state_dict())
    name = G.layers[4].name
    bad = {**sd, f"synthesis.{name}.weight": torch.zeros(3, 3, 1, 1)}
    with pytest.raises(ValueError, match=f"synthesis.{name}.weight"):
        from_nvlabs(bad, TINY)
    missing = {k: v for k, v in sd.items() if k != "synthesis.input.freqs"}
    with pytest.raises(ValueError, match="missing.*synthesis.input.freqs"):
        from_nvlabs(missing, TINY)
    # Weights of another resolution do not fit: the layer names encode the sizes.
    with pytest.raises(ValueError, match="unexpected"):
        from_nvlabs(sd, {**TINY, "img_resolution": 64})


def test_noise_arguments():
    G = _tiny(TINY)
    ws = G.mapping(torch.randn(1, G.z_dim))
    assert G.sample_noise(1) == []
    torch.testing.assert_close(G.synthesize(ws, noise_mode=[]), G.synthesize(ws, "none"), atol=0, rtol=0)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesize(ws, noise_mode="bogus")
    with pytest.raises(ValueError, match="no noise inputs"):
        G.synthesize(ws, noise_mode=[torch.zeros(1, 1, 4, 4)])


def test_layer_indices_and_range_errors():
    G = _tiny(TINY)
    ws = G.mapping(torch.randn(1, G.z_dim))
    assert G.layers[0].name == "input" and G.layers[0].w_index == 0
    assert [li.name for li in G.layers[1:]] == G.synthesis.layer_names
    assert G.num_ws == len(G.layers) == 16
    for k in (0, 1, len(G.layers) - 1):
        assert tuple(G.features_at(k, ws).shape[1:]) == G.layers[k].shape
    with pytest.raises(ValueError, match="out of range"):
        G.features_at(len(G.layers), ws)
    with pytest.raises(ValueError, match="must be"):
        G.synthesize_from(3, torch.zeros(1, 1, 2, 2), ws)
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesize(ws[:, :-1])


def test_truncation_cutoff_only_moves_the_first_rows():
    G = _tiny(TINY)
    z = torch.randn(2, G.z_dim)
    full, cut = G.mapping(z), G.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], G.w_avg.expand(2, 3, -1))
    torch.testing.assert_close(cut[:, 3:], full[:, 3:], atol=0, rtol=0)


def test_blend_mixes_linearly():
    G = _tiny(TINY)
    ws = G.mapping(torch.randn(2, G.z_dim))
    k = 5
    own = G.features_at(k, ws)
    other = torch.randn_like(own)
    half = G.synthesize_from(k, other, ws, blend=0.5)
    torch.testing.assert_close(half, G.synthesize_from(k, 0.5 * own + 0.5 * other, ws))
    per_image = G.synthesize_from(k, other, ws, blend=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(per_image[0], G.synthesize(ws)[0])
    torch.testing.assert_close(per_image[1], G.synthesize_from(k, other, ws)[1])


def test_style_affines_reproduce_the_layer_styles():
    G = _tiny(TINY)
    affines = G.style_affines()
    assert [a.name for a in affines] == G.synthesis.layer_names
    assert [a.w_index for a in affines] == list(range(1, G.num_ws))
    w = torch.randn(3, G.w_dim)
    for a, layer in zip(affines, G.synthesis.layer_modules()):
        assert a.weight.shape == (layer.spec.in_channels, G.w_dim)
        torch.testing.assert_close(w @ a.weight.T + a.bias, layer.affine(w))
    A, b = G.input_affine()
    assert A.shape == (4, G.w_dim) and b.shape == (4,)


def test_gradients_flow_to_ws_and_replaced_features():
    """The encoder is trained through synthesize_from: both inputs must receive gradients."""
    G = _tiny(TINY_R)
    with torch.enable_grad():
        ws = G.mapping(torch.randn(1, G.z_dim)).detach().requires_grad_(True)
        feat = G.features_at(3, ws).detach().requires_grad_(True)
        G.synthesize_from(3, feat, ws).square().mean().backward()
    assert torch.isfinite(ws.grad).all() and torch.isfinite(feat.grad).all()
    assert ws.grad[:, 4:].abs().sum() > 0 and feat.grad.abs().sum() > 0
    assert ws.grad[:, :4].abs().sum() == 0  # layers up to 3 were replaced, their w has no effect


def test_checkpoint_identification_and_loading_errors(tmp_path):
    import invkit
    from invkit.adapters import stylegan3
    from invkit.io.checkpoint import CheckpointError, CheckpointFile

    G = _tiny(TINY)
    ours = tmp_path / "sg3.pt"
    torch.save({"state_dict": G.state_dict(), "init_kwargs": TINY}, ours)
    assert stylegan3.identify_checkpoint(CheckpointFile(ours)) == "stylegan3"
    loaded = invkit.load_generator(ours)
    ws = G.mapping(torch.randn(1, G.z_dim))
    torch.testing.assert_close(loaded.synthesize(ws), G.synthesize(ws), atol=0, rtol=0)

    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"synthesis.b4.const": torch.zeros(4, 4, 4)}, "init_kwargs": {}}, other)
    assert stylegan3.identify_checkpoint(CheckpointFile(other)) is None
    with pytest.raises(CheckpointError, match="other.pt: not a StyleGAN3 checkpoint"):
        invkit.load_generator(other, adapter="stylegan3")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ours.read_bytes()[:2000])
    assert stylegan3.identify_checkpoint(CheckpointFile(truncated)) is None
    with pytest.raises(CheckpointError, match="truncated.pt"):
        invkit.load_generator(truncated, adapter="stylegan3")

    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": G.state_dict(), "init_kwargs": {**TINY, "conv_kernel": 1}}, wrong)
    with pytest.raises(CheckpointError, match=r"wrong.pt: state dict key 'synthesis.L0_36_16.weight' has shape"):
        invkit.load_generator(wrong)
    resized = tmp_path / "resized.pt"
    torch.save({"state_dict": G.state_dict(), "init_kwargs": {**TINY, "channel_max": 8}}, resized)
    with pytest.raises(CheckpointError, match=r"resized.pt: .*missing \['synthesis.L0_36_8.weight'"):
        invkit.load_generator(resized)
