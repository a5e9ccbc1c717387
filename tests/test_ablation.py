"""The paper's ablation B as a recipe switch: ``encoder.feature_branch=false`` trains a W+-only
encoder with the same engine, objective and budget, and its files, codes and edits carry no F."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import TINY_ENCODER, g_images, pixel_loss, tiny_recipe

import invkit
from invkit.editing import edit, mix
from invkit.exporter import ExportError
from invkit.fs_encoder import FeatureStyleEncoder, load_encoder, save_encoder
from invkit.inversion import Inversion
from invkit.io import tensorfile
from invkit.recipe import Recipe, Schedule
from invkit.testing import tiny_stylegan2
from invkit.training import Trainer


@pytest.fixture(scope="module")
def G16():
    return tiny_stylegan2(resolution=16, w_dim=16, max_channels=16, seed=3)


def wplus_recipe(**kw) -> Recipe:
    return tiny_recipe(**kw).with_overrides(["encoder.feature_branch=false"])


def test_the_switch_removes_the_feature_branch_and_its_parameters(G16):
    fs = FeatureStyleEncoder.for_generator(G16, 3, **TINY_ENCODER.__dict__)
    wp = FeatureStyleEncoder.for_generator(G16, 3, **{**TINY_ENCODER.__dict__, "feature_branch": False})
    fs_names = {n for n, _ in fs.named_parameters()}
    wp_names = {n for n, _ in wp.named_parameters()}
    assert wp_names == {n for n in fs_names if not n.startswith("content_layer.")}
    assert any(n.startswith("content_layer.") for n in fs_names)
    ws, feats = wp.eval().encode(g_images(G16, 2, 1))
    assert feats is None and ws.shape == (2, G16.num_ws, G16.w_dim)
    assert wp.config()["feature_branch"] is False and fs.config()["feature_branch"] is True


def test_recipe_switch_parses_and_old_recipes_keep_the_branch():
    r = tiny_recipe()
    assert r.encoder.feature_branch is True
    assert wplus_recipe().encoder.feature_branch is False
    data = r.to_dict()
    del data["encoder"]["feature_branch"]  # a recipe.json written before the switch
    assert Recipe.from_dict(data).encoder.feature_branch is True


def test_a_wplus_run_trains_saves_reloads_and_inverts_without_F(G16, tmp_path):
    r = wplus_recipe()
    out = tmp_path / "run"
    result = Trainer(r, G16, out, g_images(G16, 8, 1), loss=pixel_loss(r), progress=False).run()
    assert result.step == r.schedule.total_steps and not result.interrupted
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # every G(w, F) term is computed on G(w): the two halves of the perceptual term are equal
    assert all(d["feature"] == 0 and d["lpips_w"] == pytest.approx(d["lpips_wf"]) for d in lines)
    _, meta = tensorfile.load(out / "encoder.safetensors")
    assert meta["config"]["feature_branch"] is False
    E = load_encoder(out / "encoder.safetensors", G16)
    assert E.content_layer is None
    x = g_images(G16, 3, 9)
    inv = E.invert(x, ["a", "b", "c"])
    assert inv.features is None and not inv.has_features
    inv.save(tmp_path / "codes.safetensors")
    back = Inversion.load(tmp_path / "codes.safetensors")
    assert back.features is None and torch.equal(back.ws, inv.ws) and back.names == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(G16.synthesize_from(inv.k, None, inv.ws), G16.synthesize(inv.ws), rtol=0, atol=0)
    assert len(Inversion.cat([back[0], back[1:]])) == 3


def test_the_wplus_loss_decreases_on_a_fixed_batch(G16, tmp_path):
    r = wplus_recipe(schedule=Schedule(batch_real=4, batch_synthetic=0, epochs=1, iters_per_epoch=40,
                                       lr=1e-3, optimizer="adam", lr_drop_epochs=0),
                     num_samples=0).with_overrides(["loss.mse_real=1"])
    batch = g_images(G16, 4, 5)
    t = Trainer(r, G16, tmp_path / "run", batch, loss=pixel_loss(r), progress=False)
    totals = [float(t.train_step()["total"]) for _ in range(40)]
    assert sum(totals[-5:]) / 5 < 0.5 * sum(totals[:5]) / 5


def test_encoder_files_without_the_switch_load_with_the_branch(G16, tmp_path):
    enc = FeatureStyleEncoder.for_generator(G16, 3, **TINY_ENCODER.__dict__)
    path = save_encoder(enc, tmp_path / "enc.safetensors")
    tensors, meta = tensorfile.load(path)
    del meta["config"]["feature_branch"]
    tensorfile.save(path, tensors, meta)
    back = load_encoder(path, G16)
    assert back.feature_branch and back.content_layer is not None
    x = g_images(G16, 2, 4)
    torch.testing.assert_close(back.encode(x)[1], enc.eval().encode(x)[1])


def test_codes_without_F_edit_with_w_alone_and_refuse_mixing_and_export(G16, tmp_path):
    E = FeatureStyleEncoder.for_generator(G16, 3, **{**TINY_ENCODER.__dict__, "feature_branch": False})
    inv = E.invert(g_images(G16, 2, 2))
    d = invkit.Direction(torch.randn(G16.w_dim), "w", "d", "test", G16.fingerprint())
    with torch.no_grad():
        torch.testing.assert_close(edit(G16, inv, d, 1.5), G16.synthesize(d.apply(inv.ws, 1.5)))
    with pytest.raises(ValueError, match="style mixing needs feature codes"):
        mix(G16, inv, inv)
    with_f = Inversion(inv.ws, torch.zeros(2, *G16.layer(3).shape), 3, inv.generator_fingerprint)
    with pytest.raises(ValueError, match="with and without feature codes"):
        Inversion.cat([inv, with_f])
    with pytest.raises(ExportError, match="no feature branch"):
        invkit.export(G16, tmp_path / "out", encoder=E)
