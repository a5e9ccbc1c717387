"""GANSpace: PCA of mapped w against numpy's SVD of the same samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invkit import plugins
from invkit.editors.ganspace import GANSpaceEditor, principal_components
from invkit.testing import tiny_stylegan2


def test_components_match_numpy_svd_of_the_same_mapped_samples():
    G = tiny_stylegan2(resolution=16, w_dim=32)
    editor = plugins.editors().get("ganspace").obj()
    assert isinstance(editor, GANSpaceEditor)
    dirs = editor.fit(generator=G, components=4, samples=1500, seed=7, layers=[0, 1, 2])

    # independent path: draw the same z in one call, map, centre, SVD
    z = torch.randn(1500, G.z_dim, generator=torch.Generator().manual_seed(7))
    w = G.mapping(z)[:, 0].double().numpy()
    xc = w - w.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose([d.stats["variance"] for d in dirs], s[:4] ** 2 / (len(w) - 1), rtol=1e-5)
    ours = torch.stack([d.vector for d in dirs]).double().numpy()
    signs = np.sign((ours * vt[:4]).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(ours, vt[:4] * signs, atol=1e-5)

    total = (s ** 2).sum()
    for i, d in enumerate(dirs):
        assert d.name == f"ganspace_{i:02d}" and d.editor == "ganspace" and d.space == "w"
        assert d.layers == [0, 1, 2] and d.generator_fingerprint == G.fingerprint()
        assert math.isclose(float(d.vector.norm()), 1.0, rel_tol=1e-6)
        assert math.isclose(d.stats["explained"], s[i] ** 2 / total, rel_tol=1e-4)
        assert math.isclose(d.stats["std"], math.sqrt(d.stats["variance"]))


def test_same_seed_same_directions_and_layer_restriction():
    G = tiny_stylegan2(resolution=16, w_dim=32)
    a = GANSpaceEditor().fit(generator=G, components=2, samples=600, seed=1, layers=[3, 4])
    b = GANSpaceEditor().fit(generator=G, components=2, samples=600, seed=1, layers=[3, 4], space="w+")
    assert b[0].space == "w+" and b[0].layers == [3, 4]
    torch.testing.assert_close(b[0].vector[3] * math.sqrt(2), a[0].vector)
    ws = G.mapping(torch.randn(3, G.z_dim))
    moved = a[0].apply(ws, 2.0)
    changed = (moved - ws).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [i in (3, 4) for i in range(G.num_ws)]


def test_principal_components_refuses_too_few_samples():
    with pytest.raises(ValueError, match="n >= 2"):
        principal_components(torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        GANSpaceEditor().fit(generator=tiny_stylegan2(resolution=8), samples=1)


def test_cli_writes_layer_restricted_components(tmp_path):
    from invkit import save_generator
    from invkit.cli import main
    from invkit.direction import Direction

    G = tiny_stylegan2(resolution=16)
    ckpt = save_generator(G, tmp_path / "G.safetensors")
    out = tmp_path / "dirs"
    assert main(["directions", "ganspace", "--generator", str(ckpt), "--components", "2", "--samples", "500",
                 "--layers", "4-5", "--space", "w+", "--out", str(out)]) == 0
    expected = GANSpaceEditor().fit(generator=G, components=2, samples=500, layers=[4, 5], space="w+")
    for d in expected:
        loaded = Direction.load(out / f"{d.name}.safetensors")
        assert loaded.space == "w+" and loaded.layers == [4, 5]
        torch.testing.assert_close(loaded.vector, d.vector)
