"""StyleGAN3-T and -R against the official NVlabs outputs (../shared/vectors, public set).

Every tensor the official code produced for seeds 0, 1, 2 -- mapping layers, ``w``, ``ws`` at
psi 1.0 and 0.7, images, and the activation of the synthesis input and of every ``L*`` layer --
must be reproduced to ``atol = rtol = 1e-4`` from the stored state dict and ``init_kwargs``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import load_reference

import invkit
from invkit.adapters.stylegan3 import StyleGAN3Generator, from_nvlabs

FAMILIES = ["nvlabs_stylegan3_t", "nvlabs_stylegan3_r"]
TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module", params=FAMILIES)
def reference(request, vectors_root):
    family = request.param
    G_ref = load_reference(vectors_root, family, "G")
    vectors = load_reference(vectors_root, family, "vectors")
    G = from_nvlabs(G_ref["state_dict"], G_ref["config"]["init_kwargs"]).eval()
    return family, G_ref, vectors, G


def test_mapping_and_truncation(reference):
    _, _, v, G = reference
    ws = G.mapping(v["z"])
    torch.testing.assert_close(ws[:, 0], v["w"], **TOL)
    torch.testing.assert_close(ws, v["ws_psi1.0"], **TOL)
    torch.testing.assert_close(G.mapping(v["z"], truncation_psi=0.7), v["ws_psi0.7"], **TOL)
    torch.testing.assert_close(G.w_avg, v["w_avg"], **TOL)
    # The intermediate mapping layers as well.
    x = v["z"] * (v["z"].square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(G.mapping_network.num_layers):
        x = getattr(G.mapping_network, f"fc{i}")(x)
        torch.testing.assert_close(x, v[f"mapping.fc{i}"], **TOL)


@pytest.mark.parametrize("psi", ["1.0", "0.7"])
def test_images(reference, psi):
    _, _, v, G = reference
    img = G.synthesize(v[f"ws_psi{psi}"])
    torch.testing.assert_close(img, v[f"img_psi{psi}"], **TOL)
    # noise_mode is accepted and has no effect (no noise inputs in StyleGAN3).
    torch.testing.assert_close(G.synthesize(v[f"ws_psi{psi}"], noise_mode="random"), img, atol=0, rtol=0)


def test_layer_table_matches_reference(reference):
    _, G_ref, v, G = reference
    names = ["input"] + list(G_ref["config"]["layer_names"])
    assert [li.name for li in G.layers] == names
    assert [li.w_index for li in G.layers] == list(range(len(names)))
    assert G.num_ws == G_ref["config"]["num_ws"] == len(G.layers)
    for li in G.layers:
        assert tuple(v[f"feat.synthesis.{li.name}"].shape[1:]) == li.shape


def test_every_activation_via_features_at(reference):
    _, _, v, G = reference
    ws = v["ws_psi1.0"]
    for li in G.layers:
        feat = G.features_at(li.index, ws)
        torch.testing.assert_close(feat, v[f"feat.synthesis.{li.name}"], **TOL, msg=lambda m, n=li.name: f"{n}: {m}")


def test_synthesize_from_own_features_is_identity(reference):
    _, _, v, G = reference
    ws = v["ws_psi0.7"][:1]
    img = G.synthesize(ws)
    for li in G.layers:
        again = G.synthesize_from(li.index, G.features_at(li.index, ws), ws)
        torch.testing.assert_close(again, img, **TOL, msg=lambda m, n=li.name: f"{n}: {m}")


def test_synthesize_from_uses_the_features(reference):
    """Replacing layer k changes the image exactly as running the remaining layers on F does."""
    _, _, v, G = reference
    ws_a, ws_b = v["ws_psi1.0"][:1], v["ws_psi1.0"][1:2]
    k = 6
    feat_b = G.features_at(k, ws_b)
    mixed = G.synthesize_from(k, feat_b, ws_a)
    # Layers after k read ws_a; layers up to k were w_b's: compose by hand.
    x = feat_b
    for li in G.layers[k + 1:]:
        x = getattr(G.synthesis, li.name)(x, ws_a[:, li.w_index])
    torch.testing.assert_close(mixed, x * G.synthesis.output_scale, atol=0, rtol=0)
    assert (mixed - G.synthesize(ws_a)).abs().max() > 1e-2
    half = G.synthesize_from(k, feat_b, ws_a, blend=0.0)
    torch.testing.assert_close(half, G.synthesize(ws_a), atol=0, rtol=0)


def test_stored_filters_equal_the_designed_ones(reference):
    """The filters computed from init_kwargs (scipy Kaiser designs) equal the checkpoint's."""
    _, G_ref, _, G = reference
    fresh = StyleGAN3Generator(G_ref["config"]["init_kwargs"])
    stored = G_ref["state_dict"]
    keys = [k for k in stored if k.endswith(("up_filter", "down_filter"))]
    assert len(keys) == 2 * (len(G.layers) - 2)  # every layer but the input and ToRGB
    for key in keys:
        torch.testing.assert_close(fresh.state_dict()[key], stored[key], atol=1e-7, rtol=0)
    radial = [k for k in keys if stored[k].ndim == 2]
    if G.config["use_radial_filters"]:
        non_critical = [s for s in G.schedule if not s.is_critically_sampled]
        assert len(radial) == len(non_critical)
    else:
        assert radial == []


def test_save_load_round_trip(reference, tmp_path):
    _, _, v, G = reference
    path = invkit.save_generator(G, tmp_path / "g.safetensors")
    G2 = invkit.load_generator(path)
    assert isinstance(G2, StyleGAN3Generator)
    assert G2.fingerprint() == G.fingerprint()
    assert G2.config == G.config
    torch.testing.assert_close(G2.synthesize(v["ws_psi1.0"][:1]), v["img_psi1.0"][:1], **TOL)


def test_load_generator_reads_the_reference_checkpoint(reference, vectors_root):
    family, _, v, _ = reference
    path = vectors_root / family / "public" / f"{family}_public_G.pt"
    G = invkit.load_generator(path)
    assert G.adapter_name == "stylegan3"
    torch.testing.assert_close(G(v["z"][:1], truncation_psi=0.7), v["img_psi0.7"][:1], **TOL)
