"""Fréchet distance against direct computations; feature statistics; the FID Inception's layout."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from invkit.nets import fid


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _direct_frechet(mu1, s1, mu2, s2) -> float:
    """tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2), computed with symmetric eigen-decompositions
    (a different route from scipy.linalg.sqrtm of the non-symmetric product)."""
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("d", [5, 64])
def test_frechet_distance_matches_direct_computation(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_direct_frechet(mu1, s1, mu2, s2), rel=1e-8)
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_sampled_gaussians_give_the_population_distance_and_batching_does_not_matter():
    rng = np.random.default_rng(0)
    d, n = 8, 20000
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 0.5
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    x1 = rng.multivariate_normal(mu1, s1, size=n)
    x2 = rng.multivariate_normal(mu2, s2, size=n)
    stats = []
    for bs in (n, 977, 3):  # the last batch is partial for 977 (20000 = 20*977 + 460)
        st1, st2 = fid.FeatureStatistics(d), fid.FeatureStatistics(d)
        for i in range(0, n, bs):
            st1.update(torch.from_numpy(x1[i:i + bs]))
            st2.update(x2[i:i + bs])
        stats.append((st1, st2))
    for st1, _ in stats:
        np.testing.assert_allclose(st1.mean, x1.mean(0), atol=1e-12)
        np.testing.assert_allclose(st1.covariance, np.cov(x1, rowvar=False), atol=1e-10)
    st1, st2 = stats[1]
    sample_fid = fid.frechet_distance(st1.mean, st1.covariance, st2.mean, st2.covariance)
    population = _direct_frechet(mu1, s1, mu2, s2)
    # Sampling error of the estimate at n = 20000 is a few percent of the distance.
    assert sample_fid == pytest.approx(population, rel=0.05)
    assert sample_fid == pytest.approx(_direct_frechet(x1.mean(0), np.cov(x1, rowvar=False),
                                                       x2.mean(0), np.cov(x2, rowvar=False)), rel=1e-8)


def test_singular_covariances_get_the_eps_offset():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 10))  # fewer samples than dimensions: rank-deficient covariance
    s = np.cov(x, rowvar=False)
    value = fid.frechet_distance(x.mean(0), s, x.mean(0) + 1, s)
    assert np.isfinite(value) and value == pytest.approx(10.0, abs=1e-2)
    with pytest.raises(ValueError, match="mismatched"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    assert scipy.linalg.sqrtm(np.eye(2)).shape == (2, 2)


def test_inception_features_and_weight_loading(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = fid.FIDInceptionV3(input_size=75).eval()  # the real layout; small inputs keep the CPU cost low
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    # The published file has no num_batches_tracked entries; save the same way.
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    loaded = fid.load_fid_inception(path)
    assert loaded.input_size == 299
    loaded.input_size = 75
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        f = loaded(x)
        assert f.shape == (2, fid.FEATURE_DIM)
        assert torch.equal(f, net(x))
        assert (f >= 0).all()  # pool3 averages ReLU outputs
    # The zoo route: INVKIT_WEIGHTS_DIR holding the file.
    monkeypatch.setenv("INVKIT_WEIGHTS_DIR", str(tmp_path))
    from invkit.io import zoo

    assert zoo.fetch("inception-fid") == path
    # Default construction goes through the zoo; a 2048-d sqrtm is too slow for a unit test, so
    # the statistics are checked here and the distance below with a low-dimensional network.
    acc = fid.FIDAccumulator(batch_size=2)
    acc.net.input_size = 75
    acc.update_real(x)
    assert acc.real.n == 2 and np.allclose(acc.real.mean, f.double().mean(0).numpy(), atol=1e-5)


def test_fid_accumulator_end_to_end_with_uneven_batches():
    proj = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6))
    g = torch.Generator().manual_seed(2)
    real = torch.rand(40, 3, 8, 8, generator=g) * 2 - 1
    fake = (real * 0.5 + 0.3).clamp(-1, 1)
    results = []
    for bs in (40, 7):
        acc = fid.FIDAccumulator(net=proj, batch_size=bs)
        for i in range(0, 40, 9):  # chunks of 9: 4 full + one of 4
            acc.update_real(real[i:i + 9])
            acc.update_fake(fake[i:i + 9])
        results.append(acc.compute())
    with torch.no_grad():
        fr, ff = proj(real).double().numpy(), proj(fake).double().numpy()
    direct = _direct_frechet(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert results[0] == pytest.approx(direct, rel=1e-6) and results[1] == pytest.approx(direct, rel=1e-6)
    assert direct > 0.01


def test_missing_or_wrong_weights_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("INVKIT_ZOO_INCEPTION_FID", raising=False)
    with pytest.raises(fid.FIDWeightsError, match="pt_inception-2015-12-05"):
        fid.load_fid_inception()
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(fid.FIDWeightsError, match="not the FID Inception layout"):
        fid.load_fid_inception(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(fid.FIDWeightsError, match="not a readable"):
        fid.load_fid_inception(junk)
