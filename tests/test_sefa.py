"""SeFa against an independent eigendecomposition (numpy / scipy) of the same weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from invkit import plugins
from invkit.editors.sefa import SefaEditor, factorize, select_affines
from invkit.testing import tiny_stylegan2


def _assert_same_axes(ours: torch.Tensor, ref: np.ndarray, atol: float = 1e-5) -> None:
    """Rows of ``ours`` equal rows of ``ref`` up to each row's sign (eigenvectors have none)."""
    ours = ours.double().numpy()
    signs = np.sign((ours * ref).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(ours, ref * signs, atol=atol, rtol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_factorize_matches_numpy_eigh_on_random_matrices(normalize):
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((c, 24)) * s for c, s in ((40, 1.0), (17, 3.0), (9, 0.2))]
    values, vectors = factorize([torch.from_numpy(m) for m in mats], top=6, normalize=normalize)

    A = np.concatenate(mats, axis=0)
    if normalize:
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
    ref_values, ref_vectors = np.linalg.eigh(A.T @ A)
    order = np.argsort(ref_values)[::-1][:6]
    np.testing.assert_allclose(values.numpy(), ref_values[order], rtol=1e-10)
    _assert_same_axes(vectors, ref_vectors[:, order].T)
    # and the defining property: ‖A d‖² is the eigenvalue, larger than for any later axis
    gains = np.linalg.norm(A @ vectors.double().numpy().T, axis=0) ** 2
    np.testing.assert_allclose(gains, values.numpy(), rtol=1e-5)


def test_directions_are_unit_orthogonal_and_sign_canonical():
    rng = np.random.default_rng(1)
    values, vectors = factorize([torch.from_numpy(rng.standard_normal((50, 20)))], top=None)
    assert vectors.shape == (20, 20) and torch.all(values[:-1] >= values[1:])
    torch.testing.assert_close(vectors.double() @ vectors.double().T, torch.eye(20, dtype=torch.float64), atol=1e-6, rtol=0)
    largest = vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True))
    assert torch.all(largest > 0)


def test_sefa_on_a_generator_matches_scipy_svd_of_its_affines():
    G = tiny_stylegan2(resolution=32, w_dim=32)
    editor = plugins.editors().get("sefa").obj()
    assert isinstance(editor, SefaEditor)
    dirs = editor.fit(generator=G, layers=[0, 1, 2, 3], top=5)

    # independent path: the conv affines reading ws rows 0-3, straight from the module weights
    # (equalised-lr gain applied by hand), and the right singular vectors of their stack
    mats = [(conv.affine.weight * conv.affine.weight_gain).double().numpy() for conv in G.convs[:4]]
    _, s, vt = scipy.linalg.svd(np.concatenate(mats, axis=0), full_matrices=False)
    np.testing.assert_allclose([d.stats["eigenvalue"] for d in dirs], s[:5] ** 2, rtol=1e-8)
    _assert_same_axes(torch.stack([d.vector for d in dirs]), vt[:5])

    for i, d in enumerate(dirs):
        assert d.name == f"sefa_{i:02d}" and d.space == "w" and d.editor == "sefa"
        assert d.layers == [0, 1, 2, 3] and d.generator_fingerprint == G.fingerprint()
        assert math.isclose(float(d.vector.norm()), 1.0, rel_tol=1e-6)
        assert d.stats["affines"] == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0"]
    assert sum(d.stats["explained"] for d in dirs) < 1.0


def test_layers_select_affines_by_ws_row_and_skip_torgb():
    G = tiny_stylegan2(resolution=16)
    affines = G.style_affines()
    assert [a.name for a in select_affines(affines, [1])] == ["b8.conv0"]
    assert [a.name for a in select_affines(affines, [1], include_torgb=True)] == ["b4.torgb", "b8.conv0"]
    with pytest.raises(ValueError, match="out of range"):
        SefaEditor().fit(generator=G, layers=[G.num_ws])


def test_wplus_output_is_the_same_edit_as_unit_tensor():
    G = tiny_stylegan2(resolution=16)
    w_dirs = SefaEditor().fit(generator=G, layers=[2, 3], top=2)
    p_dirs = SefaEditor().fit(generator=G, layers=[2, 3], top=2, space="w+")
    for dw, dp in zip(w_dirs, p_dirs):
        assert dp.space == "w+" and dp.vector.shape == (G.num_ws, G.w_dim)
        assert math.isclose(float(dp.vector.norm()), 1.0, rel_tol=1e-6)
        assert torch.count_nonzero(dp.vector[[0, 1, 4, 5]]) == 0
        torch.testing.assert_close(dp.vector[2] * math.sqrt(2), dw.vector)
        ws = G.mapping(torch.randn(2, G.z_dim))
        torch.testing.assert_close(dp.apply(ws, math.sqrt(2)), dw.apply(ws, 1.0))


def test_cli_writes_direction_files_matching_the_api(tmp_path, capsys):
    from invkit import save_generator
    from invkit.cli import main
    from invkit.direction import Direction

    G = tiny_stylegan2(resolution=16)
    ckpt = save_generator(G, tmp_path / "G.safetensors")
    out = tmp_path / "dirs"
    assert main(["directions", "sefa", "--generator", str(ckpt), "--layers", "0-3", "--top", "3",
                 "--out", str(out)]) == 0
    expected = SefaEditor().fit(generator=G, layers=[0, 1, 2, 3], top=3)
    for d in expected:
        loaded = Direction.load(out / f"{d.name}.safetensors")
        assert torch.equal(loaded.vector, d.vector) and loaded.layers == [0, 1, 2, 3]
        assert loaded.generator_fingerprint == G.fingerprint() and loaded.stats == d.stats
    assert sorted(p.name for p in out.iterdir()) == ["sefa_00.safetensors", "sefa_01.safetensors", "sefa_02.safetensors"]
    assert main(["directions", "sefa", "--generator", str(ckpt), "--layers", "40-41", "--out", str(tmp_path / "x")]) == 1
    assert "out of range" in capsys.readouterr().err


def test_stylegan3_torgb_is_left_out_unless_asked():
    from invkit.adapters.stylegan3 import StyleGAN3Generator

    torch.manual_seed(0)
    G = StyleGAN3Generator({"z_dim": 16, "w_dim": 16, "c_dim": 0, "img_resolution": 32, "img_channels": 3,
                            "mapping_kwargs": {"num_layers": 2}, "channel_base": 256, "channel_max": 16})
    affines = G.style_affines()
    assert [a.torgb for a in affines] == [False] * (len(affines) - 1) + [True]
    plain = SefaEditor().fit(generator=G, top=3)
    with_rgb = SefaEditor().fit(generator=G, top=3, include_torgb=True)
    assert affines[-1].name not in plain[0].stats["affines"]
    assert affines[-1].name in with_rgb[0].stats["affines"]
    assert len(with_rgb[0].stats["affines"]) == len(plain[0].stats["affines"]) + 1
    assert not torch.allclose(plain[0].vector, with_rgb[0].vector)
