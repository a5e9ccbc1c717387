"""Hostile checkpoints (made by tests/hostile.py): every reader stays linear in the file's size,
allocates nothing a file merely claims, keeps invkit's state unchanged, and fails in one line
that names the file and the problem."""

from __future__ import annotations

import time

import pytest
import torch
from hostile import (
    build_on_allowed_global,
    flip_last_weight_byte,
    refused_global_in_torch_zip,
    rewrite_invkit_meta,
    shared_kwargs_pickle,
    shared_module_pickle,
    stride_zero_checkpoint,
)

import invkit
from invkit.adapters import tf_stylegan2
from invkit.fs_encoder import FeatureStyleEncoder, load_encoder, save_encoder
from invkit.io import safe_pickle
from invkit.io.checkpoint import CheckpointError
from invkit.testing import tiny_stylegan2

SMALL = {"depths": (1, 1, 1, 1), "widths": (8, 16, 16, 32), "stem_width": 8}


@pytest.mark.parametrize("make", [shared_module_pickle, shared_kwargs_pickle])
def test_shared_object_pickles_are_refused_quickly(make, tmp_path):
    path = make(tmp_path / "bomb.pkl")
    assert path.stat().st_size < 20_000
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="bomb.pkl.*expansion bomb"):
        invkit.load_generator(path)
    assert time.monotonic() - start < 120  # without the check: 2**50 paths, never ends


def test_benign_sharing_still_loads():
    shared = [1, 2, 3]
    assert safe_pickle.loads(__import__("pickle").dumps({"a": shared, "b": shared}), safe_pickle.allow_list()) == \
        {"a": [1, 2, 3], "b": [1, 2, 3]}


def test_self_referencing_pickle_is_refused():
    loop: list = []
    loop.append(loop)
    with pytest.raises(safe_pickle.PickleFormatError, match="cycle"):
        safe_pickle.loads(__import__("pickle").dumps(loop), safe_pickle.allow_list())


@pytest.mark.parametrize("name", [("torch._utils", "_rebuild_tensor_v2"), ("numpy", "dtype"),
                                  ("_codecs", "encode"), ("numpy", "ndarray")])
@pytest.mark.parametrize("slots", [None, {"__defaults__": (), "__doc__": "x"}])
def test_build_on_an_allowed_global_changes_nothing(name, slots):
    table = safe_pickle.allow_list()
    target = table[name]
    before = (getattr(target, "__defaults__", None), dict(getattr(target, "__dict__", {}) or {}))
    with pytest.raises(safe_pickle.PickleFormatError):
        safe_pickle.loads(build_on_allowed_global(*name, slots), table, "evil.pkl")
    after = (getattr(target, "__defaults__", None), dict(getattr(target, "__dict__", {}) or {}))
    assert before == after
    # and the validators still work
    t = torch.arange(4.0)
    assert torch.equal(safe_pickle.loads(__import__("pickle").dumps(t), table), t)


def test_build_on_an_allowed_class_changes_nothing():
    from invkit.adapters import nvlabs

    before = dict(vars(tf_stylegan2.TFNetworkRecord))
    data = build_on_allowed_global("dnnlib.tflib.network", "Network", {"own_variables": "hacked"})
    try:
        safe_pickle.loads(data, nvlabs.ALLOWED, "evil.pkl")
    except safe_pickle.PickleFormatError:
        pass
    assert dict(vars(tf_stylegan2.TFNetworkRecord)) == before


def test_stride_zero_tensors_are_refused_before_allocating(tmp_path):
    path = stride_zero_checkpoint(tmp_path / "broadcast.pt")
    with pytest.raises(CheckpointError, match="broadcast.pt.*claims more elements"):
        invkit.load_generator(path)


def test_refused_global_in_a_torch_zip_says_refused(tmp_path):
    path = refused_global_in_torch_zip(tmp_path / "counter.pt")
    with pytest.raises(CheckpointError, match="counter.pt: refused to load.*getcwd") as info:
        invkit.load_generator(path)
    assert "no adapter" not in str(info.value)


@pytest.fixture(scope="module")
def saved_generator(tmp_path_factory):
    G = tiny_stylegan2()
    G.adapter_name = "stylegan2"
    path = tmp_path_factory.mktemp("g") / "g.safetensors"
    invkit.save_generator(G, path)
    return G, path


@pytest.mark.parametrize("edit", [
    lambda d: d["config"].update(channels=[8192] * 4),
    lambda d: d["config"].update(resolution=1 << 20),
    lambda d: d["config"].update(channels="many"),
    lambda d: d["config"].update(w_dim=1 << 30),
])
def test_config_bombs_are_refused_before_allocating(saved_generator, tmp_path, edit):
    path = tmp_path / "g.safetensors"
    path.write_bytes(saved_generator[1].read_bytes())
    rewrite_invkit_meta(path, edit)
    with pytest.raises(CheckpointError, match="g.safetensors: the generator config"):
        invkit.load_generator(path)


def test_bit_flipped_weights_are_refused(saved_generator, tmp_path):
    path = tmp_path / "g.safetensors"
    path.write_bytes(saved_generator[1].read_bytes())
    assert invkit.load_generator(path).fingerprint() == saved_generator[0].fingerprint()
    flip_last_weight_byte(path)
    with pytest.raises(CheckpointError, match="g.safetensors: the weights do not match the fingerprint"):
        invkit.load_generator(path)


def test_encoder_with_huge_widths_is_refused(saved_generator, tmp_path):
    G = saved_generator[0]
    enc = FeatureStyleEncoder.for_generator(G, 3, input_size=32, **SMALL)
    path = save_encoder(enc, tmp_path / "e.safetensors")
    rewrite_invkit_meta(path, lambda d: d["config"].update(widths=[8192] * 4, stem_width=8192))
    with pytest.raises(CheckpointError, match="e.safetensors: the encoder config"):
        load_encoder(path, G)


def test_lpips_and_fid_weight_files_take_the_guarded_path(tmp_path, monkeypatch):
    from invkit.nets import fid, lpips

    evil = refused_global_in_torch_zip(tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(CheckpointError, match="refused to load.*getcwd.*LPIPS linear heads"):
        lpips.load_heads("alex", path=evil)
    monkeypatch.setenv("INVKIT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match="alexnet-owt-7be5be79.pth: refused to load"):
        lpips.load_trunk_weights("alex")
    bomb = stride_zero_checkpoint(tmp_path / "inception.pth")
    with pytest.raises(fid.FIDWeightsError, match="inception.pth: not a readable torch state dict .*claims more elements"):
        fid.load_fid_inception(bomb)


def test_crafted_contents_that_break_an_adapter_name_the_file(tmp_path):
    # a rosinality-looking file whose g_ema is not a state dict: the adapter trips over it
    path = tmp_path / "crafted.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}, "latent_avg": torch.zeros(4)}, path)
    with pytest.raises(CheckpointError, match="crafted.pt: "):
        invkit.load_generator(path, adapter="stylegan2")
