"""The toy GAN recipe: discriminator shapes, the R1 penalty, exact resume, export through the adapter."""

from __future__ import annotations

import torch

from invkit import load_generator
from invkit.recipes import toy_gan as tg


def _small(**kw) -> tg.ToyGANConfig:
    base = dict(g_channels=16, d_channels=16, channel_base=256, z_dim=16, w_dim=16, n_mlp=2, batch=4,
                dataset_size=8, r1_every=2)
    return tg.ToyGANConfig(**{**base, **kw})


def test_discriminator_shapes_and_minibatch_std():
    D = tg.build_discriminator(_small())
    x = torch.randn(4, 3, 64, 64)
    assert D(x).shape == (4,)
    y = tg.minibatch_stddev(torch.ones(4, 5, 2, 2))
    assert y.shape == (4, 6, 2, 2) and y[:, 5].abs().max() < 1e-3  # identical samples: no spread
    y = tg.minibatch_stddev(torch.randn(4, 5, 2, 2))
    assert y[:, 5].min() > 0.1


def test_r1_penalty_matches_a_hand_computed_gradient():
    torch.manual_seed(0)
    D = tg.build_discriminator(_small())
    x = torch.randn(4, 3, 64, 64)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(xr).sum(), xr)
    expected = g.square().sum(dim=(1, 2, 3)).mean()
    assert torch.allclose(tg.r1_penalty(D, x), expected, rtol=1e-5)


def test_resumed_run_is_bit_exact_and_exports(tmp_path):
    cfg = _small()
    straight = tg.train(cfg, tmp_path / "a", kimg=0.012, snap_kimg=0.004, log=lambda m: None)
    tg.train(cfg, tmp_path / "b", kimg=0.008, snap_kimg=0.004, log=lambda m: None)
    resumed = tg.train(cfg, tmp_path / "b", kimg=0.012, snap_kimg=0.004, log=lambda m: None)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "a" / "log.jsonl").read_text().count("\n") == 3
    path = tg.save_generator(resumed, tmp_path / "g.safetensors")
    G = load_generator(path)
    assert G.adapter_name == "stylegan2" and G.fingerprint() == resumed.fingerprint()


def test_resume_refuses_a_different_config(tmp_path):
    tg.train(_small(), tmp_path, kimg=0.004, snap_kimg=0.004, log=lambda m: None)
    try:
        tg.train(_small(lr=0.001), tmp_path, kimg=0.008, snap_kimg=0.004, log=lambda m: None)
    except ValueError as exc:
        assert "lr" in str(exc) and "checkpoint.safetensors" in str(exc)
    else:
        raise AssertionError("a different configuration was resumed")
