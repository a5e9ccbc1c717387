"""``invkit invert``: reconstructions and codes that match the Python API, bad images reported
by name and skipped, earlier results never overwritten silently, official encoder files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from invkit.cli import main
from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
from invkit.inversion import Inversion
from invkit.io.images import load_image, save_image, to_uint8
from invkit.loading import save_generator
from invkit.testing import tiny_stylegan2

SMALL = {"depths": (1, 1, 1, 1), "widths": (8, 16, 16, 32), "stem_width": 8}


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # rich wraps long messages at the terminal width


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("invert")
    G = tiny_stylegan2(resolution=32, w_dim=16, max_channels=16)
    g_path = save_generator(G, root / "G.safetensors")
    torch.manual_seed(0)
    enc = FeatureStyleEncoder.for_generator(G, 3, input_size=32, **SMALL)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    e_path = save_encoder(enc, root / "enc.safetensors")
    images = root / "images"
    images.mkdir()
    with torch.no_grad():
        samples = G.synthesize(G.mapping(torch.randn(3, G.z_dim)))
    for i, name in enumerate(["a.png", "b.png", "c.jpg"]):
        save_image(samples[i], images / name)
    # Another size is resized to the generator's resolution on reading.
    Image.fromarray(np.full((48, 40, 3), 90, np.uint8)).save(images / "d.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return {"root": root, "G": G, "enc": enc.eval(), "g": g_path, "e": e_path, "images": images}


def _run(setup, out, *extra):
    return main(["invert", "--generator", str(setup["g"]), "--encoder", str(setup["e"]), "--images",
                 str(setup["images"]), "--out", str(out), "--batch", "2", *extra])


def test_invert_writes_reconstructions_and_codes(setup, capsys):
    out = setup["root"] / "out"
    code = _run(setup, out)
    err = _err(capsys)
    assert code == 1  # one image was skipped
    assert "broken.png" in err and "skipped" in err
    names = ["a", "b", "c", "d"]
    for sub in ("rec_w", "rec_wf"):
        assert sorted(p.stem for p in (out / sub).iterdir()) == names
    codes = Inversion.load(out / "codes.safetensors")
    assert codes.names == names and codes.k == 3
    assert codes.generator_fingerprint == setup["G"].fingerprint()
    assert codes.meta["noise_mode"] == "const"
    # The codes equal the Python API on the same files, and the PNGs are G(w) and G(w, F).
    G, enc = setup["G"], setup["enc"]
    files = [setup["images"] / n for n in ("a.png", "b.png", "c.jpg", "d.png")]
    x = torch.stack([load_image(f, size=G.resolution) for f in files])
    with torch.no_grad():
        ws, feats = enc(x)
        rec_w = G.synthesize(ws)
        rec_wf = G.synthesize_from(3, feats, ws)
    torch.testing.assert_close(codes.ws, ws, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(codes.features, feats, rtol=1e-4, atol=1e-5)
    for i, name in enumerate(names):
        got_w = np.asarray(Image.open(out / "rec_w" / f"{name}.png"))
        got_wf = np.asarray(Image.open(out / "rec_wf" / f"{name}.png"))
        assert np.abs(got_w.astype(int) - to_uint8(rec_w[i]).astype(int)).max() <= 1
        assert np.abs(got_wf.astype(int) - to_uint8(rec_wf[i]).astype(int)).max() <= 1
    assert not np.array_equal(np.asarray(Image.open(out / "rec_w" / "a.png")),
                              np.asarray(Image.open(out / "rec_wf" / "a.png")))


def test_earlier_results_are_not_overwritten(setup, capsys):
    out = setup["root"] / "out2"
    _run(setup, out)
    before = (out / "codes.safetensors").read_bytes()
    assert _run(setup, out) == 1
    assert "--overwrite" in _err(capsys)
    assert (out / "codes.safetensors").read_bytes() == before
    assert _run(setup, out, "--overwrite") == 1  # runs again (and still reports broken.png)


def test_missing_inputs_are_clear_errors(setup, capsys, tmp_path):
    assert main(["invert", "--generator", str(setup["g"]), "--encoder", str(tmp_path / "nope.safetensors"),
                 "--images", str(setup["images"]), "--out", str(tmp_path / "o")]) == 1
    assert "nope.safetensors" in _err(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["invert", "--generator", str(setup["g"]), "--encoder", str(setup["e"]),
                 "--images", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "no images" in _err(capsys)


def test_official_encoder_file(setup, tmp_path):
    """An official-layout state dict (``torch.save`` of ``fs_encoder_v2.state_dict()``) works
    unchanged through the command."""
    G = setup["G"]
    state = {k: v for k, v in setup["enc"].state_dict().items() if k != "w_avg"}
    path = tmp_path / "143_enc.pth"
    torch.save(state, path)
    good = tmp_path / "good"
    good.mkdir()
    for name in ("a.png", "b.png"):
        (good / name).write_bytes((setup["images"] / name).read_bytes())
    out = tmp_path / "out"
    assert main(["invert", "--generator", str(setup["g"]), "--encoder", str(path), "--images", str(good),
                 "--out", str(out), "--k", "3", "--input-size", "32", "--batch", "1"]) == 0
    codes = Inversion.load(out / "codes.safetensors")
    x = torch.stack([load_image(good / n, size=G.resolution) for n in ("a.png", "b.png")])
    with torch.no_grad():
        ws, _ = setup["enc"](x)
    torch.testing.assert_close(codes.ws, ws, rtol=1e-4, atol=1e-5)
