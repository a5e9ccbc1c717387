"""The generic Generator API on the example adapter of docs/examples (no StyleGAN needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import invkit

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "invkit-hello" / "invkit_hello.py"


@pytest.fixture()
def G():
    spec = importlib.util.spec_from_file_location("invkit_hello_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    return mod.HelloGenerator().eval()


def test_shapes_and_checks(G):
    ws = G.mapping(torch.randn(2, G.z_dim), truncation_psi=0.5)
    assert ws.shape == (2, G.num_ws, G.w_dim)
    assert G.synthesize(ws).shape == (2, 3, G.resolution, G.resolution)
    for layer in G.layers:
        assert G.features_at(layer.index, ws).shape == (2, *layer.shape)
    with pytest.raises(ValueError, match=r"ws must be \[B, 4, 16\]"):
        G.synthesize(ws[:, :2])
    with pytest.raises(ValueError, match="layer index 9 out of range"):
        G.features_at(9, ws)
    with pytest.raises(ValueError, match="features for layer 2 must be"):
        G.synthesize_from(2, torch.zeros(2, 8, 4, 4), ws)


def test_replacing_a_layer_by_its_own_activation_is_identity(G):
    ws = G.mapping(torch.randn(3, G.z_dim))
    for layer in G.layers:
        F = G.features_at(layer.index, ws)
        torch.testing.assert_close(G.synthesize_from(layer.index, F, ws), G.synthesize(ws))
        # and other features really change the image
        assert not torch.allclose(G.synthesize_from(layer.index, F + 1, ws), G.synthesize(ws))


def test_fingerprint_tracks_weight_changes(G, tmp_path):
    fp = G.fingerprint()
    assert fp == G.fingerprint() and len(fp) == 16
    with torch.no_grad():
        G.const.add_(1e-3)
    assert G.fingerprint() != fp
    G.adapter_name = ""
    with pytest.raises(ValueError, match="no adapter_name"):
        invkit.save_generator(G, tmp_path / "g.safetensors")
    assert not (tmp_path / "g.safetensors").exists()
