"""Legacy TensorFlow StyleGAN2 pickles: converted without TensorFlow and without dnnlib.

The test writes ``(G, D, Gs)`` pickles through a stand-in ``dnnlib.tflib.network.Network`` whose
pickled state has the real layout (version, name, static_kwargs, components, build_module_src,
build_func_name, variables). The TF variables are derived from a StyleGAN2 network's NVlabs
weights by inverting the conversion rules of vectors/README.md §3.2, written out here
independently of the library (transposes, the spatial flip of ``Conv0_up``, ``mod_bias + 1``,
noise ``[1, 1, R, R]`` buffers, ``dlatent_avg``). The converted network must equal the one it
came from: bit-equal state dicts, and images equal to the official reference outputs.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_reference

import invkit
from invkit.adapters import nvlabs
from invkit.adapters.stylegan2_formats import to_nvlabs
from invkit.io.checkpoint import CheckpointError
from invkit.testing import tiny_stylegan2

NETWORK_SRC = '''
    """Stand-in for dnnlib.tflib.network: pickles like the real Network (state via __getstate__)."""

    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

        def __setstate__(self, state):
            self._state = state
'''


@contextlib.contextmanager
def tf_standins(root: Path):
    files = {"dnnlib/__init__.py": "", "dnnlib/tflib/__init__.py": "", "dnnlib/tflib/network.py": NETWORK_SRC}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("dnnlib.tflib.network").Network
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split(".")[0] == "dnnlib":
                del sys.modules[name]
        importlib.invalidate_caches()


def tf_variables(sd: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    """(Gs own, mapping, synthesis) variables in the TF layout, from an NVlabs state dict."""

    def a(key: str) -> np.ndarray:
        return sd[key].numpy()

    def conv(key: str, flip: bool = False) -> np.ndarray:  # [out, in, kh, kw] -> [kh, kw, in, out]
        w = a(key).transpose(2, 3, 1, 0)
        return np.ascontiguousarray(w[::-1, ::-1] if flip else w)

    resolutions = sorted(int(k.split(".")[1][1:]) for k in sd if k.endswith(".torgb.weight"))
    n_mapping = sum(1 for k in sd if k.startswith("mapping.fc") and k.endswith(".weight"))
    mapping = []
    for i in range(n_mapping):
        mapping += [(f"Dense{i}/weight", a(f"mapping.fc{i}.weight").T.copy()), (f"Dense{i}/bias", a(f"mapping.fc{i}.bias"))]
    synthesis = [("noise0", a("synthesis.b4.conv1.noise_const")[None, None])]
    for r in resolutions[1:]:
        log2 = int(math.log2(r))
        synthesis += [(f"noise{2 * log2 - 5}", a(f"synthesis.b{r}.conv0.noise_const")[None, None]),
                      (f"noise{2 * log2 - 4}", a(f"synthesis.b{r}.conv1.noise_const")[None, None])]

    def layer(scope: str, prefix: str, flip: bool) -> list:
        return [(f"{scope}/weight", conv(f"{prefix}.weight", flip)),
                (f"{scope}/mod_weight", a(f"{prefix}.affine.weight").T.copy()),
                (f"{scope}/mod_bias", a(f"{prefix}.affine.bias") - 1),
                (f"{scope}/noise_strength", a(f"{prefix}.noise_strength")),
                (f"{scope}/bias", a(f"{prefix}.bias"))]

    for r in resolutions:
        s, b = f"{r}x{r}", f"synthesis.b{r}"
        if r == 4:
            synthesis += [(f"{s}/Const/const", a(f"{b}.const")[None])]
            synthesis += layer(f"{s}/Conv", f"{b}.conv1", False)
        else:
            synthesis += layer(f"{s}/Conv0_up", f"{b}.conv0", True)
            synthesis += layer(f"{s}/Conv1", f"{b}.conv1", False)
        synthesis += [(f"{s}/ToRGB/weight", conv(f"{b}.torgb.weight")),
                      (f"{s}/ToRGB/mod_weight", a(f"{b}.torgb.affine.weight").T.copy()),
                      (f"{s}/ToRGB/mod_bias", a(f"{b}.torgb.affine.bias") - 1),
                      (f"{s}/ToRGB/bias", a(f"{b}.torgb.bias"))]
    return [("dlatent_avg", a("mapping.w_avg"))], mapping, synthesis


def static_kwargs(init_kwargs: dict) -> dict:
    """What the original StyleGAN2 ``run_training.py`` stores for these sizes."""
    syn = init_kwargs["synthesis_kwargs"]
    return {
        "num_channels": init_kwargs["img_channels"], "resolution": init_kwargs["img_resolution"],
        "label_size": 0, "latent_size": init_kwargs["z_dim"], "dlatent_size": init_kwargs["w_dim"],
        "mapping_layers": init_kwargs["mapping_kwargs"]["num_layers"],
        "fmap_base": syn["channel_base"] // 2, "fmap_max": syn["channel_max"],
        "truncation_psi": 0.5, "dlatent_avg_beta": 0.995,
    }


def armed_source(marker: Path) -> str:
    return f"import os\nopen({str(marker)!r}, 'w').write('executed')\n\ndef G_main(*args, **kwargs):\n    pass\n"


def write_tf_pickle(path: Path, root: Path, sd: dict, kwargs: dict, marker: Path, *, version: int = 4,
                    drop: str | None = None) -> None:
    own, mapping, synthesis = tf_variables(sd)
    synthesis = [(n, v) for n, v in synthesis if n != drop]
    src = armed_source(marker)

    def state(name: str, variables: list, components: dict | None = None, static: dict | None = None) -> dict:
        return {"version": version, "name": name, "static_kwargs": dict(static or {}),
                "components": dict(components or {}), "build_module_src": src, "build_func_name": name,
                "variables": variables}

    with tf_standins(root) as Network:
        def generator(offset: float) -> object:  # G (training weights) differs from Gs by offset
            def shift(vs: list) -> list:
                return [(n, v + np.float32(offset)) for n, v in vs]

            return Network(state("G_main", shift(own), {
                "mapping": Network(state("G_mapping", shift(mapping), static=kwargs)),
                "synthesis": Network(state("G_synthesis_stylegan2", shift(synthesis), static=kwargs)),
            }, kwargs))

        d = Network(state("D_stylegan2", [("4x4/Conv/weight", np.ones((3, 3, 4, 4), np.float32))], static=kwargs))
        data = pickle.dumps((generator(1.0), d, generator(0.0)), protocol=3)  # (G, D, Gs)
    # TF-era pickles were written by numpy 1.x
    path.write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


@pytest.fixture
def no_dnnlib():
    assert not any(n.split(".")[0] == "dnnlib" for n in sys.modules)
    yield
    assert not any(n.split(".")[0] in ("dnnlib", "tensorflow") for n in sys.modules)


SG2_ADA = "nvlabs_stylegan2_ada"
TOL = dict(rtol=1e-4, atol=1e-4)


def test_tf_pickle_matches_the_reference_network(tmp_path, vectors_root, no_dnnlib):
    ref = load_reference(vectors_root, SG2_ADA, "G")
    vectors = load_reference(vectors_root, SG2_ADA, "vectors")
    init = ref["config"]["init_kwargs"]
    pkl, marker = tmp_path / "stylegan2-config-f.pkl", tmp_path / "executed.txt"
    write_tf_pickle(pkl, tmp_path / "standins", ref["state_dict"], static_kwargs(init), marker)

    net = nvlabs.read_network(pkl)
    assert net.source_format == "tf-pickle" and net.family == "stylegan2"
    assert net.module_name == "training.networks" and net.class_name == "Generator"
    assert list(net.state_dict) == list(ref["state_dict"])  # Gs, not G (whose values differ)
    for key, value in ref["state_dict"].items():
        assert torch.equal(net.state_dict[key], value), key
    assert net.init_kwargs == {
        "z_dim": 64, "c_dim": 0, "w_dim": 64, "img_resolution": 64, "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2, "embed_features": None, "layer_features": None,
                           "activation": "lrelu", "lr_multiplier": 0.01, "w_avg_beta": 0.995},
        "synthesis_kwargs": {"channel_base": 2048, "channel_max": 64, "num_fp16_res": 0, "conv_clamp": None,
                             "architecture": "skip", "resample_filter": [1, 3, 3, 1], "use_noise": True,
                             "activation": "lrelu"},
    }

    G = invkit.load_generator(pkl)
    assert G.adapter_name == "stylegan2"
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(vectors["z"], truncation_psi=0.7), vectors["ws_psi0.7"], **TOL)
        img = G.synthesize(vectors["ws_psi1.0"][:1], noise_mode="const")
        torch.testing.assert_close(img, vectors["img_psi1.0"][:1], **TOL)
        img = G.synthesize(vectors["ws_psi1.0"][2:], noise_mode="none")
        torch.testing.assert_close(img, vectors["img_psi1.0_noise_none"][2:], **TOL)
    assert not marker.exists(), "build_module_src was executed"


def test_tf_pickle_of_a_tiny_stylegan2(tmp_path, no_dnnlib):
    """A second configuration: the converted generator draws the same images as its source."""
    source = tiny_stylegan2(resolution=32, w_dim=32, max_channels=32, seed=3)
    sd, init = to_nvlabs(source)
    pkl, marker = tmp_path / "tiny.pkl", tmp_path / "executed.txt"
    write_tf_pickle(pkl, tmp_path / "standins", sd, static_kwargs(init), marker)
    G = invkit.load_generator(pkl)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = source.mapping(z, truncation_psi=0.8)
        torch.testing.assert_close(G.mapping(z, truncation_psi=0.8), ws, **TOL)
        torch.testing.assert_close(G.synthesize(ws), source.synthesize(ws), **TOL)
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(version=3), "version 3 is too old"),
        (dict(drop="8x8/Conv1/mod_bias"), "no variable 'synthesis/8x8/Conv1/mod_bias'"),
        (dict(extra={"fmap_decay": 0.5}), "fmap_decay=0.5 is not supported"),
        (dict(extra={"use_something_new": True}), "unknown TF StyleGAN2 kwarg 'use_something_new'"),
        (dict(extra={"dlatent_size": 32}), "dlatent_size 32 but dlatent_avg has 64"),
    ],
)
def test_tf_pickles_that_cannot_be_converted(change, message, tmp_path, vectors_root):
    ref = load_reference(vectors_root, SG2_ADA, "G")
    kwargs = {**static_kwargs(ref["config"]["init_kwargs"]), **change.pop("extra", {})}
    pkl = tmp_path / "bad.pkl"
    write_tf_pickle(pkl, tmp_path / "standins", ref["state_dict"], kwargs, tmp_path / "m", **change)
    with pytest.raises(CheckpointError) as info:
        invkit.load_generator(pkl)
    assert message in str(info.value) and str(info.value).startswith(f"{pkl}: ")
    assert "\n" not in str(info.value)
