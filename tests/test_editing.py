"""Feature-code editing (paper Eq. 1), style mixing, and the refusals of mismatched codes."""

from __future__ import annotations

import pytest
import torch

import invkit
from invkit.direction import Direction
from invkit.editing import as_wplus, edit, edit_codes, edit_strip, mix
from invkit.inversion import Inversion
from invkit.testing import tiny_stylegan2

K = 3  # b8.conv1 of a 32 px StyleGAN2: reads ws row 2; rows 3.. act after it


@pytest.fixture(scope="module")
def G():
    return tiny_stylegan2(resolution=32, w_dim=32, max_channels=32)


def _inversion(G, n: int = 2, seed: int = 0) -> Inversion:
    """Synthetic (w, F): mapped codes with per-row jitter (real W+) and a perturbed feature code."""
    g = torch.Generator().manual_seed(seed)
    ws = G.mapping(torch.randn(n, G.z_dim, generator=g)) + 0.2 * torch.randn(n, G.num_ws, G.w_dim, generator=g)
    F = G.features_at(K, ws) + 0.3 * torch.randn(n, *G.layer(K).shape, generator=g)
    return Inversion(ws, F, K, G.fingerprint(), [f"img{i}" for i in range(n)])


def _direction(G, layers=(), space="w", seed=1) -> Direction:
    v = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(seed))
    d = Direction(v / v.norm(), "w", "test", "manual", G.fingerprint(), list(layers))
    return as_wplus(d, G.num_ws) if space == "w+" else d


@pytest.mark.parametrize("space", ["w", "w+"])
def test_zero_strength_reproduces_the_inversion_exactly(G, space):
    inv = _inversion(G)
    d = _direction(G, space=space)
    ws_e, F_e = edit_codes(G, inv, d, 0.0)
    assert torch.equal(ws_e, inv.ws) and torch.equal(F_e, inv.features)
    assert torch.equal(edit(G, inv, d, 0.0), G.synthesize_from(K, inv.features, inv.ws))
    strip = edit_strip(G, inv, d, [-2.0, 0.0, 2.0])
    assert torch.equal(strip[:, 1], G.synthesize_from(K, inv.features, inv.ws))
    assert torch.equal(strip[:, 2], edit(G, inv, d, 2.0))


def test_random_noise_is_drawn_once_and_shared(G):
    inv = _inversion(G)
    d = _direction(G)
    torch.manual_seed(123)
    out = edit(G, inv, d, 0.0, noise_mode="random")
    torch.manual_seed(123)
    noise = G.sample_noise(len(inv))
    # if the two G_K calls saw different noise, F̃ would differ from F even at α = 0
    assert torch.equal(out, G.synthesize_from(K, inv.features, inv.ws, noise))
    assert not torch.equal(out, G.synthesize_from(K, inv.features, inv.ws))


def test_feature_code_moves_by_the_generators_own_activation_change(G):
    inv = _inversion(G)
    d = _direction(G)
    ws_e, F_e = edit_codes(G, inv, d, torch.tensor([1.5, -2.0]))
    torch.testing.assert_close(ws_e, inv.ws + torch.tensor([1.5, -2.0]).view(2, 1, 1) * d.vector)
    torch.testing.assert_close(F_e, inv.features + G.features_at(K, ws_e) - G.features_at(K, inv.ws))
    # a pure-w inversion (F = G_K(w)) edits exactly like editing w alone
    pure = Inversion(inv.ws, G.features_at(K, inv.ws), K, G.fingerprint())
    torch.testing.assert_close(edit(G, pure, d, 2.0), G.synthesize(d.apply(inv.ws, 2.0)), atol=1e-5, rtol=1e-5)


def test_layer_restricted_edit_changes_only_its_rows(G):
    inv = _inversion(G)
    rec = G.synthesize_from(K, inv.features, inv.ws)
    late = _direction(G, layers=[4, 5])  # rows read after layer K
    ws_e, F_e = edit_codes(G, inv, late, 3.0)
    changed = (ws_e - inv.ws).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [i in (4, 5) for i in range(G.num_ws)]
    assert torch.equal(F_e, inv.features)  # G_K does not read rows 4-5: F is left alone
    assert (edit(G, inv, late, 3.0) - rec).abs().amax() > 1e-2

    early = _direction(G, layers=[0, 1])  # rows read before layer K
    ws_e, F_e = edit_codes(G, inv, early, 3.0)
    assert ((ws_e - inv.ws).abs().amax(dim=(0, 2)) > 0).tolist() == [i in (0, 1) for i in range(G.num_ws)]
    assert (F_e - inv.features).abs().amax() > 1e-3
    assert (edit(G, inv, early, 3.0) - rec).abs().amax() > 1e-2


def test_sefa_direction_edit_changes_the_image(G):
    inv = _inversion(G)
    (d,) = invkit.plugins.editors().get("sefa").obj().fit(generator=G, layers=[0, 1, 2, 3], top=1)
    rec = G.synthesize_from(K, inv.features, inv.ws)
    diff = [float((edit(G, inv, d, a) - rec).abs().mean()) for a in (1.0, 3.0)]
    assert 0 < diff[0] < diff[1]


def test_mix_swaps_feature_codes_and_styles(G):
    a, b = _inversion(G, seed=0), _inversion(G, seed=1)
    ab, ba = mix(G, a, b)
    assert torch.equal(ab, G.synthesize_from(K, a.features, b.ws))
    assert torch.equal(ba, G.synthesize_from(K, b.features, a.ws))
    aa, _ = mix(G, a, a)
    assert torch.equal(aa, G.synthesize_from(K, a.features, a.ws))
    for img in (G.synthesize_from(K, a.features, a.ws), G.synthesize_from(K, b.features, b.ws)):
        assert (ab - img).abs().amax() > 1e-2
    assert torch.equal(invkit.mix(G, a, b)[0], ab)  # the lazily exported public name


def test_refuses_directions_and_codes_of_another_generator(G):
    other = tiny_stylegan2(resolution=32, w_dim=32, max_channels=32, seed=1)
    inv = _inversion(G)
    with pytest.raises(ValueError, match="made for generator"):
        edit(G, inv, _direction(other), 1.0)
    with pytest.raises(ValueError, match="inversion was made for generator"):
        edit(other, inv, _direction(other), 1.0)
    with pytest.raises(ValueError, match="inversion was made for generator"):
        mix(other, inv, inv)


def test_refuses_incompatible_spaces(G):
    inv = _inversion(G)
    fp = G.fingerprint()
    one_row = Direction(torch.randn(1, G.w_dim), "w+", "w1x", "manual", fp)  # 1×w_dim saved as W+
    with pytest.raises(ValueError, match=f"W\\+ direction 'w1x' has 1 rows, generator has {G.num_ws} ws"):
        edit(G, inv, one_row, 1.0)
    wplus_big = Direction(torch.randn(18, G.w_dim), "w+", "ffhq", "manual", fp)
    with pytest.raises(ValueError, match="has 18 rows"):
        edit(G, inv, wplus_big, 1.0)
    z_dir = Direction(torch.randn(G.z_dim), "z", "zdir", "manual", fp)
    with pytest.raises(ValueError, match="lives in Z"):
        edit(G, inv, z_dir, 1.0)
    wide = Direction(torch.randn(512), "w", "wide", "manual", fp)
    with pytest.raises(ValueError, match="size 512"):
        edit(G, inv, wide, 1.0)
    other_k = Inversion(G.mapping(torch.randn(2, G.z_dim)), G.features_at(5, G.mapping(torch.randn(2, G.z_dim))), 5, fp)
    with pytest.raises(ValueError, match="layer 3 and layer 5"):
        mix(G, inv, other_k)


def test_direction_file_round_trip_keeps_the_guard(G, tmp_path):
    (d,) = invkit.plugins.editors().get("sefa").obj().fit(generator=G, layers=[0, 1], top=1)
    path = d.save(tmp_path / "d.safetensors")
    loaded = Direction.load(path)
    assert loaded.layers == [0, 1] and loaded.editor == "sefa" and loaded.stats["eigenvalue"] == d.stats["eigenvalue"]
    inv = _inversion(G)
    assert torch.equal(edit(G, inv, loaded, 1.0), edit(G, inv, d, 1.0))
    other = tiny_stylegan2(resolution=32, w_dim=32, max_channels=32, seed=2)
    with pytest.raises(ValueError, match="directions only transfer between identical generators"):
        loaded.check(other)


# ---- the command line -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(G, tmp_path_factory):
    """A saved generator, a tiny random Feature-Style encoder for it, images, and a direction."""
    from invkit import save_generator
    from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
    from invkit.io.images import save_image

    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    E = FeatureStyleEncoder.for_generator(G, K, depths=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8,
                                          input_size=32)
    images = root / "images"
    with torch.no_grad():
        for i, img in enumerate(G(torch.randn(3, G.z_dim))):
            save_image(img, images / f"face{i}.png")
    (d,) = invkit.plugins.editors().get("sefa").obj().fit(generator=G, layers=[0, 1, 2], top=1)
    return {"G": save_generator(G, root / "G.safetensors"), "E": save_encoder(E, root / "E.safetensors"),
            "images": images, "direction": d.save(root / "sefa_00.safetensors"), "root": root}


def test_cli_edit_writes_one_strip_per_image_from_images_and_from_codes(G, files, tmp_path):
    from invkit.cli import main
    from invkit.fs_encoder import load_encoder
    from invkit.io.images import load_image

    base = ["edit", "--generator", str(files["G"]), "--direction", str(files["direction"]), "--strength", "-3:3:3"]
    assert main([*base, "--encoder", str(files["E"]), "--images", str(files["images"]), "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["face0.png", "face1.png", "face2.png"]
    strip = load_image(tmp_path / "a" / "face1.png")
    assert strip.shape == (3, 32 + 4, 3 * (32 + 2) + 2)

    # the middle tile (strength 0) is the encoder's reconstruction G(w, F); the others differ from it
    E = load_encoder(files["E"], G)
    inv = E.invert(load_image(files["images"] / "face1.png", size=32)[None], ["face1"])
    rec = G.synthesize_from(K, inv.features, inv.ws)[0]
    tile = lambda j: strip[:, 2:34, 2 + j * 34: 34 + j * 34]  # noqa: E731
    assert (tile(1) - rec.clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6  # 8-bit rounding
    assert (tile(0) - tile(1)).abs().max() > 0.05 and (tile(2) - tile(1)).abs().max() > 0.05

    # the same strips from an `invkit invert` codes file
    codes = E.invert(torch.stack([load_image(p, size=32) for p in sorted(files["images"].iterdir())]),
                     ["face0.png", "face1.png", "face2.png"]).save(tmp_path / "codes.safetensors")
    assert main([*base, "--codes", str(codes), "--out", str(tmp_path / "b")]) == 0
    for name in ("face0.png", "face1.png", "face2.png"):
        a, b = load_image(tmp_path / "a" / name), load_image(tmp_path / "b" / name)
        assert (a - b).abs().max() <= 1 / 127.5 + 1e-6


def test_cli_edit_skips_bad_images_and_refuses_other_generators(G, files, tmp_path, capsys):
    import shutil

    from invkit import save_generator
    from invkit.cli import main

    images = tmp_path / "images"
    shutil.copytree(files["images"], images)
    (images / "broken.png").write_bytes(b"not a png")
    args = ["edit", "--generator", str(files["G"]), "--encoder", str(files["E"]), "--images", str(images),
            "--direction", str(files["direction"]), "--strength", "-1,1", "--out", str(tmp_path / "out")]
    assert main(args) == 1
    assert "broken.png" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face0.png", "face1.png", "face2.png"]
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err  # never replaces silently

    other = save_generator(tiny_stylegan2(resolution=32, w_dim=32, max_channels=32, seed=3), tmp_path / "H.safetensors")
    args[2] = str(other)
    assert main([*args[:-1], str(tmp_path / "out2")]) == 1
    assert "directions only transfer between identical generators" in capsys.readouterr().err.replace("\n", "")


def test_cli_mix_writes_reconstructions_and_both_mixes(G, files, tmp_path):
    from invkit.cli import main
    from invkit.fs_encoder import load_encoder
    from invkit.io.images import load_image

    a, b = files["images"] / "face0.png", files["images"] / "face2.png"
    out = tmp_path / "mix.png"
    assert main(["mix", str(a), str(b), "--generator", str(files["G"]), "--encoder", str(files["E"]),
                 "--out", str(out)]) == 0
    grid = load_image(out)
    assert grid.shape == (3, 36, 4 * 34 + 2)
    E = load_encoder(files["E"], G)
    inv = E.invert(torch.stack([load_image(a, size=32), load_image(b, size=32)]))
    ab, ba = mix(G, inv[0], inv[1])
    tile = lambda j: grid[:, 2:34, 2 + j * 34: 34 + j * 34]  # noqa: E731
    assert (tile(2) - ab[0].clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6
    assert (tile(3) - ba[0].clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6
    assert main(["mix", str(a), str(b), "--generator", str(files["G"]), "--encoder", str(files["E"]),
                 "--out", str(out)]) == 1  # exists


# ---- PreparedEdit: repeated edits reusing F and G_K(w) -----------------------------------------
def _inversion_at(G, k: int, n: int = 2) -> Inversion:
    g = torch.Generator().manual_seed(k)
    ws = G.mapping(torch.randn(n, G.z_dim, generator=g)) + 0.2 * torch.randn(n, G.num_ws, G.w_dim, generator=g)
    F = G.features_at(k, ws) + 0.3 * torch.randn(n, *G.layer(k).shape, generator=g)
    return Inversion(ws, F, k, G.fingerprint())


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 7])  # the constant, block ends (odd), block starts, the last
@pytest.mark.parametrize("noise_mode", ["const", "random"])
def test_prepared_edit_equals_the_full_eq1_edit_bit_for_bit(G, k, noise_mode):
    from invkit.editing import PreparedEdit

    inv = _inversion_at(G, k)
    d = _direction(G, space="w+")
    torch.manual_seed(5)
    prepared = PreparedEdit(G, inv, noise_mode)
    noise = prepared.noise if noise_mode == "random" else "const"
    assert not isinstance(noise, str) or noise == "const"
    for alpha in (0.0, 1.5, -3.0):
        assert torch.equal(prepared.render(d.apply(inv.ws, alpha)), edit(G, inv, d, alpha, noise)), (k, alpha)
    assert torch.equal(prepared.render(inv.ws), G.synthesize_from(k, inv.features, inv.ws, noise))


def test_prepared_edit_state_matches_features_at_and_counts_the_rows_it_reads(G):
    for k in range(len(G.layers)):
        ws = _inversion_at(G, max(k, 1)).ws
        state = G.synthesis_state(k, ws)
        assert torch.equal(state.features, G.features_at(k, ws))
        assert state.rows == (k + 1 if k % 2 else k)
        same = lambda a, b: torch.equal(a.features, b.features) and (  # noqa: E731
            a.carry is b.carry is None or torch.equal(a.carry, b.carry))
        if state.rows < G.num_ws:  # a change of the rows after them leaves the state as it is
            moved = ws.clone()
            moved[:, state.rows:] += 1.0
            assert same(G.synthesis_state(k, moved), state)
        if state.rows:  # a change of the last row it counts does not
            moved = ws.clone()
            moved[:, state.rows - 1] += 1.0
            assert not same(G.synthesis_state(k, moved), state)


def test_prepared_edit_of_late_rows_runs_only_the_layers_after_k(G, monkeypatch):
    from invkit.editing import PreparedEdit

    inv = _inversion(G)  # K = 3: the state reads rows 0..3
    prepared = PreparedEdit(G, inv)
    late = _direction(G, layers=range(4, G.num_ws))
    early = _direction(G, layers=[1])
    calls = []
    real = type(G).synthesis_state
    monkeypatch.setattr(type(G), "synthesis_state", lambda self, *a, **kw: calls.append(a[0]) or real(self, *a, **kw))
    monkeypatch.setattr(type(G), "synthesize_from", lambda *a, **kw: pytest.fail("the full pass ran"))
    out = prepared.render(late.apply(inv.ws, 2.0))
    assert calls == []  # G_K(w̃) = G_K(w): reused, only the layers after K ran
    monkeypatch.undo()
    assert torch.equal(out, edit(G, inv, late, 2.0))
    prepared.render(early.apply(inv.ws, 2.0))  # the early row changes G_K: the state is made again
    assert torch.equal(prepared.render(early.apply(inv.ws, 2.0)), edit(G, inv, early, 2.0))


def test_prepared_edit_falls_back_to_the_full_pass_for_other_adapters():
    from invkit.adapters.stylegan3 import StyleGAN3Generator
    from invkit.editing import PreparedEdit

    torch.manual_seed(0)
    G3 = StyleGAN3Generator({"z_dim": 16, "w_dim": 16, "c_dim": 0, "img_resolution": 32, "img_channels": 3,
                             "mapping_kwargs": {"num_layers": 2}, "channel_base": 256, "channel_max": 16}).eval()
    with torch.no_grad():
        inv = _inversion_at(G3, 3)
        d = _direction(G3, space="w+")
        prepared = PreparedEdit(G3, inv)
        assert prepared.state.rows == G3.num_ws and prepared.state.carry is None
        assert torch.equal(prepared.render(d.apply(inv.ws, 2.0)), edit(G3, inv, d, 2.0))
        with pytest.raises(ValueError, match="edited codes must be"):
            prepared.render(inv.ws[:1])
