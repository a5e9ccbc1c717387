"""StyleGAN2 checkpoint layouts: rosinality (convert_weight.py and train.py), pSp, bare state
dicts, NVlabs-layout torch files (nested and flat kwargs); refusals and broken files.

The files are written by the tests from a tiny random generator through
:func:`to_rosinality` / :func:`to_nvlabs`, whose output is checked key-for-key and bit-for-bit
against the official reference state dicts in ``test_stylegan2_vectors.py``.
"""

from __future__ import annotations

import argparse
import pickle
from types import SimpleNamespace

import pytest
import torch

import invkit
from invkit.adapters import stylegan2_formats as formats
from invkit.adapters.stylegan2 import StyleGAN2Generator
from invkit.adapters.stylegan2_formats import (
    W_AVG_SAMPLES,
    W_AVG_SEED,
    StyleGAN2FormatError,
    from_nvlabs,
    from_rosinality,
    to_nvlabs,
    to_rosinality,
)
from invkit.io.checkpoint import CheckpointError, CheckpointFile
from invkit.loading import identify
from invkit.testing import tiny_stylegan2


@pytest.fixture(scope="module")
def G() -> StyleGAN2Generator:
    return tiny_stylegan2(resolution=16, w_dim=16, max_channels=16, seed=3)


@pytest.fixture(scope="module")
def ws(G) -> torch.Tensor:
    return G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)), 0.7)


def same_generator(H: StyleGAN2Generator, G: StyleGAN2Generator, ws: torch.Tensor, w_avg: bool = True) -> None:
    assert isinstance(H, StyleGAN2Generator) and H.adapter_name == "stylegan2"
    assert H.config == G.config
    with torch.no_grad():
        torch.testing.assert_close(H.synthesize(ws), G.synthesize(ws), atol=1e-6, rtol=1e-6)
    if w_avg:
        assert torch.equal(H.w_avg, G.w_avg)
        assert H.fingerprint() == G.fingerprint()


def save(obj, path):
    torch.save(obj, path)
    return path


# ---- rosinality --------------------------------------------------------------------------------
def test_convert_weight_layout(G, ws, tmp_path):
    path = save({"g_ema": to_rosinality(G), "latent_avg": G.w_avg.clone()}, tmp_path / "ffhq.pt")
    assert identify(CheckpointFile(path)) == "stylegan2"
    same_generator(invkit.load_generator(path), G, ws)


def test_train_py_checkpoint_with_namespace_args(G, ws, tmp_path):
    """train.py stores ``args`` as an argparse.Namespace and no latent_avg."""
    sd = to_rosinality(G)
    args = argparse.Namespace(size=16, latent=16, n_mlp=2, channel_multiplier=2, iter=800000, batch=16)
    ckpt = {"g": sd, "d": {"convs.0.0.weight": torch.zeros(4, 3, 1, 1)}, "g_ema": sd,
            "g_optim": {"state": {}, "param_groups": []}, "d_optim": {"state": {}, "param_groups": []},
            "args": args, "ada_aug_p": 0.0}
    path = save(ckpt, tmp_path / "010000.pt")
    with pytest.raises(pickle.UnpicklingError):  # the layout really needs Namespace allowed
        torch.load(path, weights_only=True)
    H = invkit.load_generator(path)
    same_generator(H, G, ws, w_avg=False)
    # No latent_avg in the file: w_avg is the mean of the mapping over fixed-seed z.
    z = torch.randn(W_AVG_SAMPLES, G.z_dim, generator=torch.Generator().manual_seed(W_AVG_SEED))
    with torch.no_grad():
        expected = G.mapping_net(z).mean(0)
    torch.testing.assert_close(H.w_avg, expected, atol=1e-5, rtol=1e-5)
    assert "computed" in H.w_avg_source
    assert torch.equal(invkit.load_generator(path).w_avg, H.w_avg)  # deterministic


def test_bare_rosinality_state_dict(G, ws, tmp_path):
    path = save(to_rosinality(G), tmp_path / "g_ema_only.pt")
    H = invkit.load_generator(path)
    same_generator(H, G, ws, w_avg=False)


def test_psp_layout(G, ws, tmp_path):
    state = {f"decoder.{k}": v for k, v in to_rosinality(G).items()}
    state["encoder.input_layer.0.weight"] = torch.zeros(64, 3, 3, 3)
    state["encoder.styles.0.convs.0.weight"] = torch.zeros(16, 16, 3, 3)
    opts = {"encoder_type": "GradualStyleEncoder", "output_size": 16, "stylegan_weights": "x.pt"}
    repeated = G.w_avg.expand(G.num_ws, -1).clone()  # some pSp variants store it per w row
    for latent_avg in (G.w_avg.clone(), repeated):
        path = save({"state_dict": state, "latent_avg": latent_avg, "opts": opts}, tmp_path / "psp.pt")
        assert identify(CheckpointFile(path)) == "stylegan2"
        same_generator(invkit.load_generator(path), G, ws)
    bad = repeated.clone()
    bad[3] += 1
    path = save({"state_dict": state, "latent_avg": bad, "opts": opts}, tmp_path / "psp_bad.pt")
    with pytest.raises(StyleGAN2FormatError, match="psp_bad.pt: latent_avg .* differing rows"):
        invkit.load_generator(path)


# ---- NVlabs layout -----------------------------------------------------------------------------
def test_nvlabs_layout_nested_and_flat(G, ws, tmp_path):
    sd, kwargs = to_nvlabs(G)
    assert list(sd)[0] == "synthesis.b4.const" and "mapping.w_avg" in sd
    same_generator(from_nvlabs(sd, kwargs), G, ws)
    flat = {k: v for k, v in kwargs.items() if k != "synthesis_kwargs"} | kwargs["synthesis_kwargs"]
    same_generator(from_nvlabs(sd, flat), G, ws)
    path = save({"state_dict": sd, "init_kwargs": kwargs}, tmp_path / "G.pt")
    same_generator(invkit.load_generator(path), G, ws)
    path = save({"state_dict": sd, "config": {"init_kwargs": flat}}, tmp_path / "G_cfg.pt")
    same_generator(invkit.load_generator(path), G, ws)


def test_conv_clamp_and_fp16_settings_survive(tmp_path, ws):
    Gc = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16, seed=3, conv_clamp=0.25)
    sd, kwargs = to_nvlabs(Gc)
    kwargs["synthesis_kwargs"]["num_fp16_res"] = 4
    H = from_nvlabs(sd, kwargs)
    assert H.conv_clamp == 0.25 and H.config["num_fp16_res"] == 4
    assert next(H.parameters()).dtype == torch.float32  # fp16 settings change nothing here
    with torch.no_grad():
        torch.testing.assert_close(H.synthesize(ws), Gc.synthesize(ws))
    H2 = invkit.load_generator(invkit.save_generator(H, tmp_path / "clamped.safetensors"))
    assert H2.conv_clamp == 0.25


def test_nvlabs_refusals(G):
    sd, kwargs = to_nvlabs(G)
    with pytest.raises(StyleGAN2FormatError, match="conditional generator"):
        from_nvlabs(sd, kwargs | {"c_dim": 10}, source="cond.pkl")
    with pytest.raises(StyleGAN2FormatError, match="cond.pkl: conditional"):
        from_nvlabs(sd | {"mapping.embed.weight": torch.zeros(16, 10)}, kwargs, source="cond.pkl")
    resnet = {**kwargs, "synthesis_kwargs": {**kwargs["synthesis_kwargs"], "architecture": "resnet"}}
    with pytest.raises(StyleGAN2FormatError, match="res.pkl: architecture 'resnet'"):
        from_nvlabs(sd, resnet, source="res.pkl")
    with pytest.raises(StyleGAN2FormatError, match="x.pkl: missing key 'synthesis.b8.conv1.noise_const'"):
        from_nvlabs({k: v for k, v in sd.items() if k != "synthesis.b8.conv1.noise_const"}, kwargs, "x.pkl")
    with pytest.raises(StyleGAN2FormatError, match="x.pkl: unexpected key 'synthesis.b8.conv1.extra'"):
        from_nvlabs(sd | {"synthesis.b8.conv1.extra": torch.zeros(1)}, kwargs, "x.pkl")
    with pytest.raises(StyleGAN2FormatError, match="img_resolution=32"):
        from_nvlabs(sd, kwargs | {"img_resolution": 32}, "x.pkl")
    other = dict(sd)
    other["synthesis.b8.resample_filter"] = torch.ones(4, 4) / 16
    with pytest.raises(StyleGAN2FormatError, match="resample_filter' is not the standard"):
        from_nvlabs(other, kwargs, "x.pkl")


def test_pickle_of_another_family_is_refused(tmp_path, monkeypatch):
    """A pickle goes through the NVlabs reader; a StyleGAN3 network in it is refused by name."""
    from invkit.adapters import nvlabs

    path = tmp_path / "sg3.pkl"
    path.write_bytes(pickle.dumps({"G_ema": None}, protocol=4))
    fake = SimpleNamespace(state_dict={}, init_kwargs={}, class_name="Generator",
                           module_name="training.networks_stylegan3", family="stylegan3")
    monkeypatch.setattr(nvlabs, "read_network", lambda checkpoint: fake)
    with pytest.raises(StyleGAN2FormatError, match="sg3.pkl: holds training.networks_stylegan3"):
        invkit.load_generator(path, adapter="stylegan2")


# ---- rosinality errors -------------------------------------------------------------------------
def test_rosinality_missing_and_unknown_keys(G, tmp_path):
    sd = to_rosinality(G)
    broken = {k: v for k, v in sd.items() if k != "convs.2.noise.weight"}
    path = save({"g_ema": broken, "latent_avg": G.w_avg}, tmp_path / "missing.pt")
    with pytest.raises(StyleGAN2FormatError, match=r"missing.pt: missing key 'convs.2.noise.weight'"):
        invkit.load_generator(path)
    path = save({"g_ema": sd | {"convs.1.skip.weight": torch.zeros(1)}}, tmp_path / "extra.pt")
    with pytest.raises(StyleGAN2FormatError, match=r"extra.pt: unexpected key 'convs.1.skip.weight'"):
        invkit.load_generator(path)
    bad = dict(sd)
    bad["convs.1.conv.weight"] = torch.zeros(1, 8, 16, 3, 3)  # inconsistent channel count
    with pytest.raises(StyleGAN2FormatError, match="shape.*inconsistent"):
        from_rosinality(bad, G.w_avg, source="bad.pt")
    with pytest.raises(StyleGAN2FormatError, match="latent_avg has shape"):
        from_rosinality(sd, torch.zeros(7), source="bad.pt")
    blur = dict(sd)
    blur["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    with pytest.raises(StyleGAN2FormatError, match="blur.kernel' is not the standard"):
        from_rosinality(blur, G.w_avg, source="bad.pt")


# ---- unrelated and broken files ----------------------------------------------------------------
def test_unrelated_torch_file(tmp_path):
    path = save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    assert formats.identify(CheckpointFile(path)) is None
    with pytest.raises(CheckpointError, match="other.pt: no adapter recognises"):
        invkit.load_generator(path)
    with pytest.raises(StyleGAN2FormatError, match="other.pt: not a StyleGAN2 checkpoint"):
        invkit.load_generator(path, adapter="stylegan2")


def test_truncated_and_corrupt_files(G, tmp_path):
    good = save({"g_ema": to_rosinality(G), "latent_avg": G.w_avg}, tmp_path / "good.pt")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: truncated or corrupt"):
        invkit.load_generator(truncated, adapter="stylegan2")
    with pytest.raises(CheckpointError, match="truncated.pt"):
        invkit.load_generator(truncated)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(data[:64] + bytes(len(data) - 64))
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        invkit.load_generator(corrupt, adapter="stylegan2")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: empty file"):
        invkit.load_generator(empty)
    with pytest.raises(StyleGAN2FormatError, match=r"empty.pt: not a StyleGAN2 checkpoint \(file format: empty\)"):
        invkit.load_generator(empty, adapter="stylegan2")
