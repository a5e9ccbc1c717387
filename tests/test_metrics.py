"""Pixel metrics against scikit-image, batch-size independence, identity metrics and IC."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invkit import metrics

# SSIM/PSNR are computed in float64 on both sides; the only differences are summation order.
TOL = 1e-8



def _pair(seed: int, shape=(3, 3, 40, 48)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    # y correlated with x, so SSIM is far from 0 and the test covers the structure term.
    y = (0.7 * x + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("seed,data_range", [(0, 1.0), (1, 1.0), (2, 255.0)])
def test_ssim_psnr_match_skimage(seed, data_range):
    x, y = _pair(seed)
    x, y = x * data_range, y * data_range
    ours_ssim = metrics.ssim(x, y, data_range=data_range)
    ours_psnr = metrics.psnr(x, y, data_range=data_range)
    for i in range(len(x)):
        a = x[i].permute(1, 2, 0).numpy()
        b = y[i].permute(1, 2, 0).numpy()
        ref_ssim = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=data_range, channel_axis=-1)
        ref_psnr = peak_signal_noise_ratio(a, b, data_range=data_range)
        assert abs(float(ours_ssim[i]) - ref_ssim) < TOL
        assert abs(float(ours_psnr[i]) - ref_psnr) < TOL * 100
        assert abs(float(metrics.mse(x, y)[i]) - float(np.mean((a - b) ** 2))) < TOL * data_range**2


def test_ssim_single_channel_and_float32_inputs():
    x, y = _pair(3, (2, 1, 32, 32))
    ours = metrics.ssim(x.float(), y.float())
    for i in range(2):
        ref = structural_similarity(x[i, 0].float().numpy(), y[i, 0].float().numpy(), gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert abs(float(ours[i]) - ref) < 1e-6  # the inputs were rounded to float32


def test_ssim_identity_and_errors():
    x, _ = _pair(4)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert math.isinf(float(metrics.psnr(x, x)[0]))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="same shape"):
        metrics.mse(x, x[:, :1])


def test_accumulator_independent_of_batch_size():
    g = torch.Generator().manual_seed(5)
    real = torch.rand(23, 3, 24, 24, generator=g) * 2 - 1
    fake = (real + 0.2 * torch.randn(23, 3, 24, 24, generator=g)).clamp(-1, 1)
    results = []
    for bs in (1, 4, 7, 23):
        ev = metrics.ReconstructionMetrics(["mse", "psnr", "ssim"])
        for i in range(0, len(real), bs):
            ev.update(real[i:i + bs], fake[i:i + bs])
        results.append(ev.summary())
    # Direct per-image means on the [0, 1] scale.
    ur, uf = (real + 1) / 2, (fake + 1) / 2
    direct = {"mse": metrics.mse(ur, uf).mean(), "psnr": metrics.psnr(ur, uf).mean(), "ssim": metrics.ssim(ur, uf).mean()}
    for res in results:
        for name, value in direct.items():
            assert res[name]["n"] == 23
            assert abs(res[name]["mean"] - float(value)) < 1e-9
    assert abs(results[0]["psnr"]["std"] - float(metrics.psnr(ur, uf).std())) < 1e-9


def test_accumulator_counts_infinite_psnr_separately():
    acc = metrics.MeanAccumulator()
    acc.update("psnr", torch.tensor([30.0, math.inf, 40.0]))
    s = acc.summary()["psnr"]
    assert s["mean"] == 35.0 and s["n"] == 2 and s["n_infinite"] == 1
    with pytest.raises(ValueError, match="NaN"):
        acc.update("x", [float("nan")])


def test_parse_metrics():
    assert metrics.parse_metrics("mse, ssim,mse") == ["mse", "ssim"]
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.parse_metrics("mse,psnrr")


class _Embedder:
    """A fixed random projection: a stand-in face network whose outputs we can predict."""

    metric_name = "id"
    label = "random projection"

    def __init__(self, dim_in: int, seed: int = 0):
        self.P = torch.randn(dim_in, 16, generator=torch.Generator().manual_seed(seed))

    def embed(self, images):
        return images.flatten(1) @ self.P


def test_id_similarity_and_identity_consistency_streaming():
    g = torch.Generator().manual_seed(6)
    frames = torch.rand(9, 3, 8, 8, generator=g) * 2 - 1
    emb = _Embedder(3 * 8 * 8)
    e = emb.embed(frames)
    direct = torch.nn.functional.cosine_similarity(e[1:].double(), e[:1].double().expand(8, -1)).mean()
    assert abs(metrics.identity_consistency(e) - float(direct)) < 1e-12
    ic = metrics.IdentityConsistency()
    for chunk in (e[:2], e[2:3], e[3:9]):  # uneven chunks, as a video pipeline delivers them
        ic.update(chunk)
    assert ic.frames == 9
    assert abs(ic.value() - float(direct)) < 1e-12
    sims = metrics.id_similarity(emb, frames, frames)
    assert torch.allclose(sims, torch.ones(9, dtype=torch.float64))
    ev = metrics.ReconstructionMetrics(["id"], identity=emb)
    ev.update(frames, frames.flip(0))
    assert ev.summary()["id"]["n"] == 9


def test_dlib_descriptor_is_labelled_and_tells_a_face_from_a_blank():
    pytest.importorskip("dlib")
    from skimage import data

    from invkit.align import FaceAligner

    photo = data.astronaut()
    crop = FaceAligner(size=256, transform_size=512)(photo).crop
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    net = metrics.DlibFaceDescriptor()
    assert net.metric_name == "id_dlib" and "NOT ArcFace" in net.label
    e = net.embed(torch.cat([x, x.flip(-1), torch.zeros_like(x)]))
    assert e.shape == (3, 128)
    same = float(metrics.cosine(e[:1], e[1:2]))  # a mirrored face is the same person
    blank = float(metrics.cosine(e[:1], e[2:3]))
    # dlib descriptors are not centred, so cosines of unrelated inputs are still high (~0.85).
    assert same > 0.97 and same > blank + 0.05
    ev = metrics.ReconstructionMetrics(["id"], identity=net)
    ev.update(x, x)
    assert "id_dlib" in ev.summary() and "id" not in ev.summary()


def test_arcface_embedder_loads_the_insightface_layout_and_crops_the_inner_face(tmp_path, monkeypatch, caplog):
    from invkit.nets.arcface import ArcFace

    torch.manual_seed(0)
    net = ArcFace(depths=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8, embedding_dim=32).eval()
    path = tmp_path / "backbone.pth"
    torch.save(net.state_dict(), path)
    emb = metrics.ArcFaceEmbedder(str(path))
    assert emb.metric_name == "id"
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        expected = net(x[:, :, 35:223, 32:220])
    assert torch.allclose(emb.embed(x), expected, atol=1e-5)
    # Changing pixels outside the inner face does not change the embedding.
    y = x.clone()
    y[:, :, :30] = 1.0
    assert torch.allclose(emb.embed(y), expected, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="ArcFace weights not found"):
        metrics.ArcFaceEmbedder(path=str(tmp_path / "nope.pth"))
    # auto: the zoo cannot supply ArcFace offline, so dlib stands in, with a warning.
    pytest.importorskip("dlib")
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("INVKIT_ZOO_ARCFACE_R50", raising=False)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one line in notes, not a raw Python warning
        fallback = metrics.load_identity_embedder("auto", notes=notes)
    assert fallback.metric_name == "id_dlib"
    (note,) = notes
    assert note.startswith("ArcFace unavailable (") and "different network" in note and "\n" not in note
    with caplog.at_level("WARNING", logger="invkit.metrics"):
        metrics.load_identity_embedder("auto")
    assert [r.getMessage() for r in caplog.records] == [note]
    monkeypatch.setenv("INVKIT_WEIGHTS_DIR", str(tmp_path))
    assert metrics.load_identity_embedder("auto").metric_name == "id"


# ---- invkit eval / bench ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
    from invkit.io.images import save_image
    from invkit.loading import save_generator
    from invkit.testing import tiny_stylegan2

    root = tmp_path_factory.mktemp("eval")
    G = tiny_stylegan2(resolution=32, w_dim=16, max_channels=16)
    torch.manual_seed(0)
    enc = FeatureStyleEncoder.for_generator(G, 3, input_size=32, depths=(1, 1, 1, 1), widths=(8, 16, 16, 32),
                                            stem_width=8)
    images = root / "images"
    images.mkdir()
    with torch.no_grad():
        samples = G.synthesize(G.mapping(torch.randn(5, G.z_dim)))
    for i in range(5):
        save_image(samples[i], images / f"{i:02d}.png")
    (images / "03_broken.png").write_bytes(b"not an image")  # sorts among the first 5
    return {"G": G, "enc": enc.eval(), "g": save_generator(G, root / "G.safetensors"),
            "e": save_encoder(enc, root / "enc.safetensors"), "images": images, "root": root}


def test_eval_cli_follows_the_protocol(eval_setup, capsys, monkeypatch):
    import json

    from invkit.cli import main
    from invkit.io.images import list_images, load_image

    monkeypatch.setenv("COLUMNS", "300")
    s = eval_setup
    out = s["root"] / "report.json"
    code = main(["eval", "-g", str(s["g"]), "-e", str(s["e"]), "--images", str(s["images"]), "--n", "5",
                 "--metrics", "mse,psnr,ssim", "--batch", "3", "--with-w", "--out", str(out)])
    assert code == 1  # the broken file is among the first 5: reported, the rest evaluated
    report = json.loads(out.read_text())
    assert report["protocol"]["resolution"] == 32 and report["n_evaluated"] == 4
    assert "03_broken.png" in report["skipped"][0]["error"]
    # The same numbers straight from the API.
    files = [p for p in list_images(s["images"])[:5] if "broken" not in p.name]
    x = torch.stack([load_image(p, 32) for p in files])
    with torch.no_grad():
        ws, feats = s["enc"].encode(x)
        rec = s["G"].synthesize_from(3, feats, ws)
    ur, uf = metrics.to_unit(x), metrics.to_unit(rec)
    res = report["results"]["G(w,F)"]
    assert res["ssim"]["mean"] == pytest.approx(float(metrics.ssim(ur, uf).mean()), rel=1e-6)
    assert res["mse"]["mean"] == pytest.approx(float(metrics.mse(ur, uf).mean()), rel=1e-6)
    assert "G(w)" in report["results"] and report["images_per_second"] > 0
    printed = capsys.readouterr().out
    assert "SSIM ↑" in printed and "MSE ↓" in printed and "G(w,F)" in printed


def test_eval_cli_errors_are_clear(eval_setup, capsys, monkeypatch):
    from invkit.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    monkeypatch.setenv("INVKIT_CACHE", str(eval_setup["root"] / "empty-cache"))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    s = eval_setup
    base = ["eval", "-g", str(s["g"]), "-e", str(s["e"]), "--images", str(s["images"]), "--out",
            str(s["root"] / "r.json")]
    assert main(base + ["--n", "50"]) == 1
    assert "holds only 6 images" in capsys.readouterr().err
    assert main(base + ["--metrics", "fid"]) == 1
    assert "pt_inception-2015-12-05" in " ".join(capsys.readouterr().err.split())
    assert main(base + ["--metrics", "ssim,bogus"]) == 1
    assert "unknown metric" in capsys.readouterr().err


def test_bench_cli_table_with_throughput(eval_setup, capsys, monkeypatch):
    import json

    from invkit.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    s = eval_setup
    out = s["root"] / "bench.json"
    code = main(["bench", "-g", str(s["g"]), "-e", f"first={s['e']}", "-e", f"again={s['e']}", "--images",
                 str(s["images"]), "--n", "3", "--metrics", "ssim,psnr,mse", "--out", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["first G(w,F)", "again G(w,F)"]
    assert rows["first G(w,F)"]["ssim"]["mean"] == pytest.approx(rows["again G(w,F)"]["ssim"]["mean"])
    assert rows["first G(w,F)"]["images_per_second"] > 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "PSNR ↑" in printed
