"""`invkit demo` on the shipped toy assets: the method works on held-out rendered images.

The claims checked here are the ones the report prints:

* G(w, F) reconstructs held-out procedural images (rendered, never generated) better than G(w):
  at least 10 % lower MSE and 25 % lower toy-LPIPS (the shipped models measure 19 % and 35 % on
  the demo's 64 images; the paper's ablation B has 66 % lower LPIPS on faces);
* the conditioned InterFaceGAN glasses direction toggles glasses on at least 80 % of images, as
  judged by the attribute net trained on the renderer's labels, while every other attribute
  moves less than half as far as glasses do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from invkit import load_generator, plugins
from invkit.cli import main as cli_main
from invkit.recipes import toy

#: G(w, F) must beat G(w) by at least these factors (MSE, toy-LPIPS).
MSE_MARGIN = 0.9
LPIPS_MARGIN = 0.75


def _require_shipped_models() -> None:
    """The generator and encoder ship in ``recipes/assets`` (built by ``python -m
    invkit.recipes.toy build-assets``, docs/demo.md). A source tree without them (a partial
    checkout, a rebuild in progress) skips these tests with that reason; in CI it fails."""
    missing = [n for n in (toy.GENERATOR_FILE, toy.ENCODER_FILE) if not (toy.assets_dir() / n).is_file()]
    if missing:
        message = f"toy assets {missing} missing from {toy.assets_dir()} (see docs/demo.md to rebuild them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    _require_shipped_models()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo")
    return out, toy.run_demo(out, n_eval=32, n_show=4, log=lambda m: None)


def test_shipped_assets_are_small_safetensors_that_load_through_the_adapter():
    _require_shipped_models()
    g, e = toy.asset(toy.GENERATOR_FILE), toy.asset(toy.ENCODER_FILE)
    assert g.stat().st_size <= 10e6 and e.stat().st_size <= 20e6
    for path in toy.assets_dir().iterdir():
        assert path.suffix == ".safetensors", path
    G = load_generator(g)
    assert G.adapter_name == "stylegan2" and G.resolution == 64
    from invkit.fs_encoder import load_encoder

    encoder = load_encoder(e, generator=G)  # refuses a generator with another fingerprint
    assert encoder.k == toy.TOY_K


def test_feature_code_beats_w_only_on_held_out_images(demo):
    _, r = demo
    assert r["G(w,F)"]["mse"] < MSE_MARGIN * r["G(w)"]["mse"]
    assert r["G(w,F)"]["toy_lpips"] < LPIPS_MARGIN * r["G(w)"]["toy_lpips"]


def test_glasses_direction_flips_glasses_and_moves_others_less(demo):
    _, r = demo
    g = r["glasses_edit"]
    assert g["flip_rate"] >= 0.8
    assert g["glasses_change"] > 2 * g["max_other_change"]
    # the judge itself reads glasses from rendered inputs reliably
    assert r["glasses_accuracy"]["input"] >= 0.95


def test_report_links_only_existing_pictures(demo):
    out, r = demo
    text = Path(r["report"]).read_text()
    names = re.findall(r"src='([^']+)'", text)
    assert {"reconstruction.png", "edit_glasses.png", "mixing.png"} <= set(names)
    assert any(n.startswith("edit_sefa_") for n in names)
    for n in names:
        assert (out / n).is_file()
    assert "toy-LPIPS" in text and (out / "metrics.json").is_file()


def test_toy_perceptual_is_a_distance():
    net = toy.load_attribute_net()
    d = toy.ToyPerceptual(net)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(d(x, x), torch.zeros(2))
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    dist = d(x, y)
    assert (dist > 0).all()
    dist.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in d.parameters())


def test_cli_finds_the_demo_through_the_registry(tmp_path, capsys, monkeypatch):
    entry = plugins.recipes().get("toy")
    assert callable(getattr(entry.obj, "demo", None)) and entry.obj().name == "toy"
    calls = []
    monkeypatch.setattr(type(entry.obj), "demo",
                        staticmethod(lambda out, log=print: calls.append(out) or {"report": str(out / "r.html")}))
    assert cli_main(["demo", "--out", str(tmp_path / "d")]) == 0
    assert calls == [tmp_path / "d"]
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "r.html")


def test_core_cli_does_not_import_recipes_by_name():
    source = Path(__import__("invkit.cli.demo", fromlist=["x"]).__file__).read_text()
    assert "recipes" not in re.sub(r'""".*?"""', "", source, flags=re.S).replace("plugins.recipes()", "")


def test_missing_asset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="toy_generator.safetensors"):
        toy.run_demo(tmp_path / "out", assets=tmp_path, log=lambda m: None)
