"""The supervised fit of a StyleGAN2 to the toy renderer (:mod:`invkit.recipes.toy_fit`)."""

from __future__ import annotations

import json

import numpy as np
import torch

from invkit import load_generator
from invkit.recipes import toy_domain, toy_fit


def test_latent_coordinates_become_uniform_attributes():
    z = torch.randn(20_000, 16, generator=torch.Generator().manual_seed(0))
    p = toy_fit.latent_to_uniform(z, 9)
    assert p.shape == (20_000, 9) and (p > 0).all() and (p < 1).all()
    for col in p.T:  # each coordinate's exact marginal CDF makes it uniform: every decile ~10 %
        counts = np.histogram(col, bins=10, range=(0, 1))[0] / len(col)
        assert np.abs(counts - 0.1).max() < 0.01


def test_attributes_depend_only_on_what_the_mapping_sees():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    # the mapping normalises z first, so a rescaled z is the same latent
    assert np.allclose(toy_fit.latent_to_uniform(z, 9), toy_fit.latent_to_uniform(3.7 * z, 9), atol=1e-9)
    attrs = toy_fit.latent_to_attributes(z)
    assert all(a.glasses in (0, 1) and -1 <= a.smile <= 1 and 0 <= a.hair <= 1 for a in attrs)


def test_a_short_fit_learns_the_renderer_resumes_exactly_and_exports(tmp_path):
    cfg = toy_fit.ToyFitConfig(channels=[16, 16, 16, 16, 8], w_dim=16, batch=4, kimg=0.16, anneal=0.25,
                               perceptual=0.0)
    torch.set_num_threads(1)
    out = tmp_path / "run"
    toy_fit.train(cfg, out, snap_kimg=0.08, log=lambda m: None)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in log] == [0.08, 0.16]
    assert log[-1]["lr"] == 0.0  # the anneal ends at zero

    # the same run stopped halfway and resumed ends bit-identical
    again = tmp_path / "again"
    toy_fit.train(cfg, again, snap_kimg=0.08, log=lambda m: None, stop_kimg=0.08)
    toy_fit.train(cfg, again, snap_kimg=0.08, log=lambda m: None)
    a = toy_fit.load_tensors(out / "checkpoint.safetensors", kind=toy_fit.CHECKPOINT_KIND)[0]
    b = toy_fit.load_tensors(again / "checkpoint.safetensors", kind=toy_fit.CHECKPOINT_KIND)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)

    G = load_generator(toy_fit.export_checkpoint(out, tmp_path / "g.safetensors"))
    assert G.resolution == toy_domain.RESOLUTION and G.z_dim == cfg.z_dim


def test_fitting_lowers_the_error_against_the_renderer(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_fit.ToyFitConfig(channels=[16, 16, 16, 16, 8], w_dim=16, batch=8, kimg=0.48, perceptual=0.0,
                               lr=0.01, ema_beta=0.0)
    z = torch.randn(16, cfg.z_dim, generator=torch.Generator().manual_seed(toy_fit.MONITOR_SEED))
    target = toy_fit.targets(z)
    torch.manual_seed(cfg.seed)
    untrained = toy_fit.build_generator(cfg)
    with torch.no_grad():
        before = toy_fit.psnr(untrained.synthesize(untrained.mapping(z)), target)
    G = toy_fit.train(cfg, tmp_path / "run", snap_kimg=0.48, log=lambda m: None)
    with torch.no_grad():
        after = toy_fit.psnr(G.synthesize(G.mapping(z)), target)
    assert after > before + 3.0, (before, after)


def test_curve_plot_reads_a_training_log_and_draws_each_term(tmp_path):
    from invkit.recipes import toy_curve

    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "total": 1.0 / s, "mse": 0.0}) for s in range(1, 20)) + "\n")
    curves = toy_curve.read_log(log, "step", ["total", "mse"])
    assert len(curves["total"]) == 19 and curves["mse"] == []  # zeros cannot sit on a log axis
    image = toy_curve.draw(curves, "step", "t")
    pixels = np.asarray(image)
    assert image.size == (720, 420) and (pixels[..., 0] < 100).sum() > 100  # the blue line is drawn
