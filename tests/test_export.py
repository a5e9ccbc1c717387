"""``invkit export`` / ``invkit.export``: ONNX and TorchScript graphs of every generator family.

The generators are files of the real layouts built from the reference vectors: the rosinality
``.pt`` checkpoint, NVlabs stylegan2-ada / stylegan3-T / stylegan3-R pickles and a TF-era
StyleGAN2 pickle (written by the pickle tests' helpers); encoders are an invkit safetensors file
and an official ``143_enc.pth``-layout state dict. Each exported file is checked here
independently of the exporter's own check: onnxruntime and ``torch.jit.load`` at batch sizes 1
and 3 (the trace is made at 2) against PyTorch to 1e-4.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from conftest import load_reference
from test_fs_encoder import SMALL, official_table, random_state
from test_nvlabs_pickles import make_case
from test_tf_pickle import static_kwargs, write_tf_pickle

import invkit
from invkit.adapters.stylegan2 import StyleGAN2Generator
from invkit.exporter import METADATA_NAME, ExportError, export
from invkit.exporter.graphs import MatrixAdaptiveAvgPool2d
from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
from invkit.testing import tiny_stylegan2

TOL = {"atol": 1e-4, "rtol": 1e-4}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _onnxruntime():
    """onnxruntime, or a skip (a failure in CI, where the [export] extra is installed)."""
    try:
        import onnxruntime
    except ImportError:
        if IN_CI:
            pytest.fail("onnxruntime is not installed (the [export] extra)")
        pytest.skip("onnxruntime is not installed (pip install 'invkit[export]')")
    return onnxruntime


def _generator_file(family: str, tmp_path, root):
    if family == "rosinality":
        path = root / "rosinality_stylegan2" / "public" / "rosinality_stylegan2_public_ckpt.pt"
        if not path.is_file():
            load_reference(root, "rosinality_stylegan2", "ckpt")  # skips / fails with the reason
        return path
    if family == "tf-stylegan2":
        ref = load_reference(root, "nvlabs_stylegan2_ada", "G")
        path = tmp_path / "stylegan2-config-f.pkl"
        write_tf_pickle(path, tmp_path / "standins", ref["state_dict"],
                        static_kwargs(ref["config"]["init_kwargs"]), tmp_path / "executed.txt")
        return path
    return make_case(family, tmp_path, root)[0]


def _official_encoder_file(G, k, tmp_path):
    """A random state dict in the official ``143_enc.pth`` layout, sized for ``G`` and layer k."""
    table = official_table(G.num_ws, G.w_dim, G.layer(k).shape[0], SMALL["depths"], SMALL["widths"],
                           SMALL["stem_width"])
    path = tmp_path / "143_enc.pth"
    torch.save(random_state(table), path)
    return path


# family: (K, encoder kind or None)
FAMILIES = {
    "rosinality": (5, "invkit"),
    "stylegan2-ada": (4, None),
    "tf-stylegan2": (3, None),
    "stylegan3-t": (6, None),
    "stylegan3-r": (3, "official"),
}


def _inputs(G, k, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(torch.randn(batch, G.z_dim, generator=gen))
        feats = G.features_at(k, G.mapping(torch.randn(batch, G.z_dim, generator=gen)))
    return ws, feats


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_exports_and_matches_pytorch(family, tmp_path, vectors_root):
    ort = _onnxruntime()
    k, enc_kind = FAMILIES[family]
    path = _generator_file(family, tmp_path, vectors_root)
    G = invkit.load_generator(path)
    encoder = None
    if enc_kind == "invkit":
        encoder = save_encoder(FeatureStyleEncoder.for_generator(G, k, input_size=32, **SMALL), tmp_path / "enc.safetensors")
    elif enc_kind == "official":
        encoder = _official_encoder_file(G, k, tmp_path)
    E = invkit.load_encoder(encoder, generator=G, k=k) if encoder else None

    for fmt in ("onnx", "torchscript"):
        out = tmp_path / fmt
        meta = export(path, out, encoder=encoder, k=k, format=fmt)
        saved = json.loads((out / METADATA_NAME).read_text())
        assert saved == json.loads(json.dumps(meta))
        assert saved["k"] == k and saved["generator"]["fingerprint"] == G.fingerprint()
        assert saved["opset"] == (20 if fmt == "onnx" else None)
        gen_graph = saved["graphs"]["generator"]
        assert gen_graph["inputs"][0]["shape"] == ["batch", G.num_ws, G.w_dim]
        assert gen_graph["outputs"][0]["shape"] == ["batch", G.img_channels, G.resolution, G.resolution]
        assert saved["graphs"][f"generator_from_k{k}"]["inputs"][1]["shape"] == ["batch", *G.layer(k).shape]
        assert ("encoder" in saved["graphs"]) == (E is not None)
        suffix = ".onnx" if fmt == "onnx" else ".pt"
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [METADATA_NAME, f"generator{suffix}", f"generator_from_k{k}{suffix}"]
            + ([f"encoder{suffix}"] if E is not None else []))

        if fmt == "onnx":
            sessions = {n: ort.InferenceSession(str(out / f"{n}.onnx"), providers=["CPUExecutionProvider"])
                        for n in ("generator", f"generator_from_k{k}", "encoder") if (out / f"{n}.onnx").exists()}

            def run(name, feeds, sessions=sessions):
                return [torch.from_numpy(a) for a in sessions[name].run(None, {n: v.numpy() for n, v in feeds.items()})]
        else:
            modules = {n: torch.jit.load(str(out / f"{n}.pt")) for n in ("generator", f"generator_from_k{k}", "encoder")
                       if (out / f"{n}.pt").exists()}

            def run(name, feeds, modules=modules):
                with torch.no_grad():
                    res = modules[name](*feeds.values())
                return list(res) if isinstance(res, tuple) else [res]

        for batch in (1, 3):  # the trace was made at 2
            ws, feats = _inputs(G, k, batch, seed=batch)
            with torch.no_grad():
                torch.testing.assert_close(run("generator", {"ws": ws})[0], G.synthesize(ws), **TOL)
                torch.testing.assert_close(run(f"generator_from_k{k}", {"ws": ws, "features": feats})[0],
                                           G.synthesize_from(k, feats, ws), **TOL)
                if E is not None:
                    img = G.synthesize(ws).clamp(-1, 1)
                    got_ws, got_f = run("encoder", {"image": img})
                    want_ws, want_f = E.encode(img)
                    torch.testing.assert_close(got_ws, want_ws, **TOL)
                    torch.testing.assert_close(got_f, want_f, **TOL)


@pytest.fixture(scope="module")
def tiny():
    return tiny_stylegan2(resolution=16, w_dim=16, max_channels=16)


def test_existing_outputs_are_refused_unless_overwrite(tiny, tmp_path):
    export(tiny, tmp_path, k=2, format="torchscript")
    before = (tmp_path / "generator.pt").stat().st_mtime_ns
    with pytest.raises(ExportError, match=r"generator\.pt exists .*overwrite"):
        export(tiny, tmp_path, k=2, format="torchscript")
    assert (tmp_path / "generator.pt").stat().st_mtime_ns == before
    export(tiny, tmp_path, k=2, format="torchscript", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


class _BatchBaking(StyleGAN2Generator):
    """A generator whose Python loop over the batch a trace cannot follow."""

    def run_synthesis(self, ws, noise_mode="const", **kwargs):
        return torch.cat([super(_BatchBaking, self).run_synthesis(ws[i:i + 1], noise_mode, **kwargs)
                          for i in range(ws.shape[0])])


def test_a_graph_that_bakes_in_the_batch_is_refused_and_nothing_written(tiny, tmp_path):
    G = _BatchBaking(**tiny.config)
    G.load_state_dict(tiny.state_dict())
    with pytest.raises(ExportError, match=r"exported generator .*batch"):
        export(G, tmp_path / "out", k=2, format="torchscript")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_requests_are_refused_in_one_line(tiny, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="unknown export format"):
        export(tiny, tmp_path, format="tflite")
    with pytest.raises(ExportError, match="layer index 99 out of range"):
        export(tiny, tmp_path, k=99, format="torchscript")
    enc = FeatureStyleEncoder.for_generator(tiny, 2, input_size=16, **SMALL)
    with pytest.raises(ExportError, match="built for layer K = 2, not 3"):
        export(tiny, tmp_path, encoder=enc, k=3, format="torchscript")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"needs onnxruntime: pip install 'invkit\[export\]'"):
        export(tiny, tmp_path, format="onnx")
    assert not list(tmp_path.iterdir())


def test_cli_writes_and_refuses_with_the_file_named(tiny, tmp_path, capsys):
    from invkit.cli import main

    ckpt = invkit.save_generator(tiny, tmp_path / "g.safetensors")
    out = tmp_path / "out"
    assert main(["export", "-g", str(ckpt), "--k", "3", "--format", "torchscript", "--out", str(out)]) == 0
    assert (out / "generator_from_k3.pt").is_file() and (out / METADATA_NAME).is_file()
    capsys.readouterr()
    assert main(["export", "-g", str(ckpt), "--k", "3", "--format", "torchscript", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "generator.pt exists" in err


def test_invkit_export_stays_the_function():
    import invkit.cli.export  # noqa: F401
    import invkit.exporter  # noqa: F401

    assert invkit.export is export and callable(invkit.export)


@pytest.mark.parametrize("size", [(5, 7), (9, 9), (16, 12), (3, 3), (2, 4)])
def test_matrix_adaptive_pool_equals_pytorch(size):
    x = torch.randn(2, 4, *size)
    want = torch.nn.AdaptiveAvgPool2d(3)(x)
    np.testing.assert_allclose(MatrixAdaptiveAvgPool2d(3)(x).numpy(), want.numpy(), atol=1e-6)


@pytest.mark.parametrize("size", [((64, 64), (256, 256)), ((36, 36), (16, 16)), ((8, 12), (5, 3))])
def test_traced_antialiased_resize_equals_pytorch(size):
    from invkit.exporter.graphs import traceable

    x = torch.randn(2, 3, *size[0])
    want = torch.nn.functional.interpolate(x, size=size[1], mode="bilinear", antialias=True)
    with traceable():
        got = torch.nn.functional.interpolate(x, size=size[1], mode="bilinear", antialias=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
