"""The StyleGAN2 adapter reproduces the official rosinality and NVlabs stylegan2-ada outputs.

Reference: ``$INVKIT_VECTORS/{rosinality_stylegan2,nvlabs_stylegan2_ada}/public/`` (see
``../shared/vectors/README.md`` §5.3 for the keys), compared at atol = rtol = 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from conftest import load_reference

import invkit
from invkit.adapters.stylegan2 import StyleGAN2Generator
from invkit.adapters.stylegan2_formats import (
    from_nvlabs,
    from_rosinality,
    nvlabs_kwargs,
    to_nvlabs,
    to_rosinality,
)

TOL = {"atol": 1e-4, "rtol": 1e-4}
ROS = "rosinality_stylegan2"
NV = "nvlabs_stylegan2_ada"


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, **TOL, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module")
def ros(vectors_root):
    G_file = load_reference(vectors_root, ROS, "G")
    vec = load_reference(vectors_root, ROS, "vectors")
    G = from_rosinality(G_file["state_dict"], vec["latent_avg"])
    return G, vec, G_file


@pytest.fixture(scope="module")
def nv(vectors_root):
    G_file = load_reference(vectors_root, NV, "G")
    vec = load_reference(vectors_root, NV, "vectors")
    G = from_nvlabs(G_file["state_dict"], G_file["config"]["init_kwargs"])
    return G, vec, G_file


# ---- mapping ---------------------------------------------------------------------------------
@torch.no_grad()
def test_rosinality_mapping(ros):
    G, vec, _ = ros
    x = vec["z"] * torch.rsqrt(vec["z"].square().mean(1, keepdim=True) + 1e-8)
    close(x, vec["mapping.style.0"], "PixelNorm")
    for i, fc in enumerate(G.mapping_net.fcs):
        x = fc(x)
        close(x, vec[f"mapping.style.{i + 1}"], f"style.{i + 1}")
    close(G.mapping(vec["z"])[:, 0], vec["w"], "w")
    close(G.mapping(vec["z"], 1.0), vec["ws_psi1.0"], "ws psi 1.0")
    close(G.mapping(vec["z"], 0.7), vec["ws_psi0.7"], "ws psi 0.7")
    assert G.num_ws == vec["ws_psi1.0"].shape[1]


@torch.no_grad()
def test_nvlabs_mapping(nv):
    G, vec, _ = nv
    x = vec["z"] * torch.rsqrt(vec["z"].square().mean(1, keepdim=True) + 1e-8)
    for i, fc in enumerate(G.mapping_net.fcs):
        x = fc(x)
        close(x, vec[f"mapping.fc{i}"], f"mapping.fc{i}")
    close(G.mapping(vec["z"])[:, 0], vec["w"], "w")
    close(G.mapping(vec["z"], 1.0), vec["ws_psi1.0"], "ws psi 1.0")
    close(G.mapping(vec["z"], 0.7), vec["ws_psi0.7"], "ws psi 0.7")
    close(G.w_avg, vec["w_avg"], "w_avg")


# ---- images ----------------------------------------------------------------------------------
@torch.no_grad()
def test_rosinality_images(ros):
    G, vec, _ = ros
    close(G.synthesize(vec["ws_psi1.0"], "const"), vec["img_psi1.0"], "image psi 1.0")
    close(G.synthesize(vec["ws_psi0.7"], "const"), vec["img_psi0.7"], "image psi 0.7")
    close(G.synthesize(vec["ws_psi1.0"], "none"), vec["img_psi1.0_noise_zero"], "image, zero noise")
    zeros = [torch.zeros(1, 1, c.resolution, c.resolution) for c in G.convs]
    close(G.synthesize(vec["ws_psi1.0"], zeros), vec["img_psi1.0_noise_zero"], "image, explicit zeros")
    # End to end from z, as rosinality's G([z], truncation=0.7, truncation_latent=latent_avg) does.
    close(G(vec["z"], truncation_psi=0.7), vec["img_psi0.7"], "forward(z)")


@torch.no_grad()
def test_nvlabs_images(nv):
    G, vec, _ = nv
    assert G.conv_clamp == 256.0  # the public set uses ffhq.pkl's clamp (never reached there)
    close(G.synthesize(vec["ws_psi1.0"], "const"), vec["img_psi1.0"], "image psi 1.0")
    close(G.synthesize(vec["ws_psi0.7"], "const"), vec["img_psi0.7"], "image psi 0.7")
    close(G.synthesize(vec["ws_psi1.0"], "none"), vec["img_psi1.0_noise_none"], "image, no noise")


# ---- every layer -----------------------------------------------------------------------------
def _rosinality_feature_keys(G: StyleGAN2Generator) -> list[str]:
    """Layer index -> rosinality module (README §5.3): 0 input, 1 conv1, k >= 2 convs.{k-2}."""
    return ["feat.input", "feat.conv1"] + [f"feat.convs.{j}" for j in range(len(G.convs) - 1)]


@torch.no_grad()
def test_rosinality_every_layer(ros):
    G, vec, _ = ros
    ws = vec["ws_psi1.0"]
    keys = _rosinality_feature_keys(G)
    assert len(keys) == len(G.layers)
    for k, key in enumerate(keys):
        F = G.features_at(k, ws)
        assert tuple(F.shape[1:]) == G.layers[k].shape
        close(F, vec[key], f"layer {k} ({key})")
    # ToRGB layers: rosinality's `.conv` (no bias) + bias = NVlabs torgb; `to_rgbs.k` = accumulated img.
    trace = G.trace(ws)
    rgb_names = ["to_rgb1"] + [f"to_rgbs.{b}" for b in range(len(G.torgbs) - 1)]
    for b, name in enumerate(rgb_names):
        r = 4 * 2 ** b
        bias = G.torgbs[b].bias.reshape(1, -1, 1, 1)
        close(trace[f"b{r}.torgb"] - bias, vec[f"feat.{name}.conv"], f"{name}.conv")
        close(trace[f"b{r}:img"], vec[f"feat.{name}"], name)


@torch.no_grad()
def test_nvlabs_every_layer(nv):
    G, vec, _ = nv
    ws = vec["ws_psi1.0"]
    const = nv[2]["state_dict"]["synthesis.b4.const"]
    close(G.features_at(0, ws), const.expand(ws.shape[0], -1, -1, -1), "layer 0 (b4.const)")
    for k in range(1, len(G.layers)):
        key = f"feat.synthesis.{G.layers[k].name}"
        close(G.features_at(k, ws), vec[key], f"layer {k} ({key})")
    trace = G.trace(ws)
    for key in vec["layer_order"]:
        close(trace[key[len("feat.synthesis."):]], vec[key], key)


@torch.no_grad()
@pytest.mark.parametrize("family", [ROS, NV])
def test_replacing_own_features_is_identity(family, ros, nv):
    G, vec, _ = ros if family == ROS else nv
    ws, img = vec["ws_psi0.7"][:1], vec["img_psi0.7"][:1]  # one seed keeps it fast
    for k in range(len(G.layers)):
        close(G.synthesize_from(k, G.features_at(k, ws), ws), img, f"synthesize_from({k})")


# ---- the two families are one network --------------------------------------------------------
@torch.no_grad()
def test_nvlabs_weights_through_rosinality_layout(nv):
    """NVlabs tensors re-keyed into rosinality's layout (README §4.4, no flip of the upsampling
    conv) give the NVlabs images: one network serves both families."""
    G, vec, G_file = nv
    G2 = from_rosinality(to_rosinality(G), G.w_avg)
    close(G2.synthesize(vec["ws_psi1.0"]), vec["img_psi1.0"], "re-keyed image")
    sd, _ = to_nvlabs(G2)
    assert list(sd) == list(G_file["state_dict"])
    for key, value in G_file["state_dict"].items():
        assert torch.equal(sd[key], value), key


@torch.no_grad()
def test_rosinality_writer_reproduces_reference_layout(ros):
    G, _, G_file = ros
    sd = to_rosinality(G)
    assert list(sd) == list(G_file["state_dict"])
    for key, value in G_file["state_dict"].items():
        assert torch.equal(sd[key], value), key


@torch.no_grad()
def test_flat_init_kwargs_layout(nv):
    """The stylegan3 repo's StyleGAN2 takes the synthesis kwargs flat; same network results."""
    G, vec, G_file = nv
    nested = G_file["config"]["init_kwargs"]
    mapping_kw, synthesis_kw = nvlabs_kwargs(nested)
    flat = {k: v for k, v in nested.items() if k != "synthesis_kwargs"}
    flat.update(synthesis_kw, fused_modconv_default="inference_only", magnitude_ema_beta=-1)
    G2 = from_nvlabs(G_file["state_dict"], flat)
    assert G2.config == G.config
    close(G2.synthesize(vec["ws_psi1.0"]), vec["img_psi1.0"], "flat kwargs image")


# ---- reference files through the public loader -----------------------------------------------
@torch.no_grad()
def test_load_generator_reads_reference_files(vectors_root):
    vec = load_reference(vectors_root, ROS, "vectors")
    ckpt = vectors_root / ROS / "public" / f"{ROS}_public_ckpt.pt"  # convert_weight.py layout
    G = invkit.load_generator(ckpt)
    assert isinstance(G, StyleGAN2Generator) and G.adapter_name == "stylegan2"
    close(G.w_avg, vec["latent_avg"], "latent_avg")
    close(G(vec["z"], truncation_psi=0.7), vec["img_psi0.7"], "rosinality ckpt image")

    vec = load_reference(vectors_root, NV, "vectors")
    G = invkit.load_generator(vectors_root / NV / "public" / f"{NV}_public_G.pt")
    close(G(vec["z"], truncation_psi=0.7), vec["img_psi0.7"], "NVlabs _G.pt image")
