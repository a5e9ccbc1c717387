"""``invkit project`` (outputs, report, resume, bad images, NaN), the ``report.json`` that
``invkit invert`` writes the same way, and ``invkit bench`` with encoder and projection rows."""

from __future__ import annotations

import json

import pytest
import torch
from test_invert_cli import SMALL, _err, _wide_console, setup  # noqa: F401  (fixtures too)

import invkit.cli.project as project_cli
from invkit.cli import main
from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
from invkit.inversion import Inversion
from invkit.io import tensorfile
from invkit.io.images import load_image

FAST = ["--steps", "4", "--batch", "2", "--set", "perceptual=0", "--set", "w_avg_samples=500"]


@pytest.fixture(scope="module")
def wsetup(setup):  # noqa: F811  (the fixture imported above)
    """``invkit invert``'s test files (a, b, c, d readable, broken.png not) and a W+-only encoder."""
    wplus = FeatureStyleEncoder.for_generator(setup["G"], 3, feature_branch=False, input_size=32, **SMALL)
    return {**setup, "wp": save_encoder(wplus.eval(), setup["root"] / "wplus.safetensors")}


def _project(s, out, *extra):
    return main(["project", "-g", str(s["g"]), "-i", str(s["images"]), "-o", str(out), *FAST, *extra])


def test_project_writes_images_codes_and_report(wsetup, capsys):
    s = wsetup
    out = s["root"] / "wf"
    assert _project(s, out, "--space", "w+f", "--k", "3") == 1  # the broken image
    err = _err(capsys)
    assert "broken.png" in err and "4 images projected" in err
    assert sorted(p.name for p in (out / "rec").iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    assert not (out / "partial").exists()
    codes = Inversion.load(out / "codes.safetensors")
    assert codes.names == ["a", "b", "c", "d"] and codes.k == 3 and codes.features.shape == (4, 16, 8, 8)
    assert codes.meta["projection"]["space"] == "w+f" and codes.meta["projection"]["steps"] == 4
    report = json.loads((out / "report.json").read_text())
    assert report["command"] == "project" and report["n_images"] == 4 and report["seconds_per_image"] > 0
    assert set(report["images"]) == {"a", "b", "c", "d"}
    for v in report["images"].values():
        assert v["seconds"] > 0 and v["losses"]["total"] < v["losses"]["start"]
    assert "broken.png" in report["skipped"][0]["file"] and report["failed"] == {}
    with torch.no_grad():  # the saved image is the codes' image
        rec = s["G"].synthesize_from(3, codes.features[:1], codes.ws[:1])[0].clamp(-1, 1)
    assert (load_image(out / "rec" / "a.png") - rec).abs().max() < 2 / 255 * 2
    assert _project(s, out, "--space", "w+f", "--k", "3") == 1
    assert "holds results of an earlier run" in _err(capsys)
    assert _project(s, out, "--space", "w", "--overwrite") == 1
    assert Inversion.load(out / "codes.safetensors").features is None


def test_optimised_noise_maps_are_saved_with_the_codes(wsetup, capsys):
    out = wsetup["root"] / "noise"
    assert _project(wsetup, out, "--optimize-noise", "--steps", "2") == 1
    tensors, meta = tensorfile.load(out / "noise.safetensors")
    codes = Inversion.load(out / "codes.safetensors")
    assert meta["names"] == codes.names == ["a", "b", "c", "d"]
    shapes = [tuple(v.shape) for v in wsetup["G"].sample_noise(4)]
    assert [tuple(tensors[f"noise_{i}"].shape) for i in range(len(shapes))] == shapes
    noise = [tensors[f"noise_{i}"] for i in range(len(shapes))]
    with torch.no_grad():  # rec/ holds the image of the codes with these maps
        rec = wsetup["G"].synthesize(codes.ws, noise)[0].clamp(-1, 1)
    assert (load_image(out / "rec" / "a.png") - rec).abs().max() < 2 / 255 * 2


def test_an_interrupted_run_resumes_with_the_images_it_has_not_done(wsetup, capsys, monkeypatch):
    out = wsetup["root"] / "resume"
    seen: list[list[str]] = []
    real = project_cli.project

    def interrupted(G, x, **kw):
        seen.append(list(kw["names"]))
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(G, x, **kw)

    monkeypatch.setattr(project_cli, "project", interrupted)
    assert _project(wsetup, out) == 130
    assert seen == [["a", "b"], ["c"]]  # batches of 2 files: [a, b], [broken, c], [d]
    assert sorted(p.name for p in (out / "partial").glob("*.safetensors")) == ["a.safetensors", "b.safetensors"]
    assert not (out / "codes.safetensors").exists()
    assert _project(wsetup, out, "--steps", "5") == 1
    assert "unfinished run with other settings" in _err(capsys)
    seen.clear()
    monkeypatch.setattr(project_cli, "project", lambda G, x, **kw: seen.append(kw["names"]) or real(G, x, **kw))
    assert _project(wsetup, out) == 1  # the broken image again
    assert seen == [["c"], ["d"]] and "resuming: 2 of 5 images already projected" in _err(capsys)
    assert Inversion.load(out / "codes.safetensors").names == ["a", "b", "c", "d"]
    assert set(json.loads((out / "report.json").read_text())["images"]) == {"a", "b", "c", "d"}


def test_a_nan_loss_stops_the_image_by_name(wsetup, capsys, monkeypatch):
    out = wsetup["root"] / "nan"

    class NaNForB(torch.nn.Module):
        min_size = 8

        def forward(self, x, y):  # NaN for the second image of a batch of two: "b" of [a, b]
            d = (x - y).square().mean((1, 2, 3))
            return torch.where(torch.arange(len(d)) == 1, torch.full_like(d, float("nan")), d)

    monkeypatch.setattr(project_cli, "perceptual_network", lambda *a, **kw: (NaNForB(), "nan-test"))
    code = main(["project", "-g", str(wsetup["g"]), "-i", str(wsetup["images"]), "-o", str(out), "--steps", "3",
                 "--batch", "2", "--set", "w_avg_samples=500"])
    assert code == 1
    err = _err(capsys)
    assert "b: non-finite loss at step 0" in err and "not projected" in err
    assert Inversion.load(out / "codes.safetensors").names == ["a", "c", "d"]
    report = json.loads((out / "report.json").read_text())
    assert list(report["failed"]) == ["b"] and report["inverter"]["perceptual"] == "nan-test"


def test_invert_writes_the_same_report(wsetup, capsys):
    for enc, has_f in (("e", True), ("wp", False)):
        out = wsetup["root"] / f"inv-{enc}"
        assert main(["invert", "-g", str(wsetup["g"]), "-e", str(wsetup[enc]), "-i", str(wsetup["images"]),
                     "-o", str(out), "--batch", "2"]) == 1
        report = json.loads((out / "report.json").read_text())
        assert report["command"] == "invert" and report["n_images"] == 4 and report["seconds_per_image"] > 0
        assert report["inverter"]["feature_branch"] is has_f
        assert "broken.png" in report["skipped"][0]["file"]
        losses = report["images"]["a"]["losses"]
        assert (losses["mse_wf"] == losses["mse_w"]) is not has_f  # without F, G(w, F) is G(w)
        assert (Inversion.load(out / "codes.safetensors").features is not None) is has_f


def test_bench_puts_encoders_and_projections_in_one_table(wsetup, capsys):
    s = wsetup
    out = s["root"] / "bench.json"
    code = main(["bench", "-g", str(s["g"]), "-e", f"fs={s['e']}", "-e", f"wp={s['wp']}",
                 "-p", "w+:steps=3,w_avg_samples=500,perceptual=0",
                 "-p", "hybrid=w+f:steps=3,w_avg_samples=500,perceptual=0,init=fs",
                 "-i", str(s["images"]), "--n", "5", "--metrics", "mse,psnr,ssim", "--batch", "2",
                 "--out", str(out)])
    assert code == 1  # broken.png is reported and left out of every row
    report = json.loads(out.read_text())
    assert "broken.png" in report["skipped"][0]["file"]
    rows = report["rows"]
    assert list(rows) == ["fs G(w,F)", "wp G(w)", "w+:steps=3,w_avg_samples=500,perceptual=0 G(w)", "hybrid G(w,F)"]
    for row in rows.values():
        assert row["n"] == 4 and row["seconds_per_image"] > 0 and {"mse", "psnr", "ssim"} <= set(row)
    assert rows["hybrid G(w,F)"]["inverter"]["settings"]["k"] == 3  # K from the initial encoder
    assert rows["hybrid G(w,F)"]["inverter"]["init"] == "fs"
    printed = capsys.readouterr().out
    assert "s/image" in printed and "hybrid G(w,F)" in printed and "wp G(w)" in printed
    assert main(["bench", "-g", str(s["g"]), "-i", str(s["images"]), "--n", "3"]) == 1
    assert "nothing to compare" in _err(capsys)
