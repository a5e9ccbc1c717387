"""``invkit ui``'s model side without Gradio or a browser: the demo's session, the fast edit path
against the full Eq. 1 edit, exports, mixing, and the refusals a page must show."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hostile import png_bomb
from PIL import Image

from invkit.editing import edit, mix
from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
from invkit.inversion import Inversion
from invkit.loading import save_generator
from invkit.testing import tiny_stylegan2
from invkit.ui.session import Session, UIError
from invkit.ui.sources import load_session, read_directions

SMALL = {"depths": (1, 1, 1, 1), "widths": (8, 16, 16, 32), "stem_width": 8}


@pytest.fixture(scope="module")
def toy() -> Session:
    return load_session(log=lambda m: None)


@pytest.fixture(scope="module")
def face(toy):
    return toy.invert_sample(0)


def test_the_demo_session_serves_the_shipped_models_directions_and_held_out_samples(toy):
    assert toy.G.resolution == 64 and toy.encoder.k == 5
    assert {"smile", "yaw", "hair", "glasses", "sefa_00"} <= set(toy.directions)
    assert all(d.strength and d.strength > 0 for d in toy.directions.values())
    assert len(toy.samples) == 8 and toy.samples[0][0] == "held-out seed 10000000"
    assert toy.preprocess.align == "none" and "recipe toy" in toy.description


def test_zero_strengths_give_the_reconstruction_bit_for_bit(toy, face):
    assert torch.equal(face.rec_wf, toy.G.synthesize_from(5, face.inversion.features, face.inversion.ws))
    assert torch.equal(face.rec_w, toy.G.synthesize(face.inversion.ws))
    zero = {name: 0.0 for name in toy.directions}
    assert torch.equal(toy.edit(face, zero), face.rec_wf)
    assert torch.equal(toy.edit(face, {}), face.rec_wf)


@pytest.mark.parametrize("name", ["smile", "sefa_01"])
def test_the_fast_edit_equals_the_full_eq1_edit(toy, face, name):
    d = toy.directions[name]
    for alpha in (d.strength, -0.5 * d.strength):
        fast = toy.edit(face, {name: alpha})
        full = edit(toy.G, face.inversion, d, alpha)
        assert torch.equal(fast, full)
        assert (fast - face.rec_wf).abs().max() > 0.05  # the edit does something


def test_several_sliders_add_their_directions(toy, face):
    a, b = toy.directions["smile"], toy.directions["yaw"]
    zero = torch.zeros(1, toy.G.num_ws, toy.G.w_dim)
    both = a.apply(zero, 2.0)[0] + b.apply(zero, -3.0)[0]  # the W+ step of both (W or W+ directions)
    combined = type(a)(both, "w+", "both", "manual", a.generator_fingerprint)
    torch.testing.assert_close(toy.edit(face, {"smile": 2.0, "yaw": -3.0}), edit(toy.G, face.inversion, combined, 1.0),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(UIError, match="no direction 'frown'"):
        toy.edit(face, {"frown": 1.0})


def test_export_writes_the_edited_image_and_codes_that_load_back_as_an_inversion(toy, face, tmp_path):
    strengths = {"smile": 2.0, "hair": -5.0}
    png, codes_path = toy.export(face, strengths, tmp_path / "out")
    assert png.name == "edited.png" and codes_path.name == "codes.safetensors"
    codes = Inversion.load(codes_path)
    assert codes.k == 5 and codes.generator_fingerprint == toy.G.fingerprint()
    assert codes.meta["edit"] == strengths and codes.meta["source"] == face.name
    assert codes.names == ["held-out_seed_10000000"]
    edited = toy.edit(face, strengths)
    torch.testing.assert_close(toy.G.synthesize_from(codes.k, codes.features, codes.ws), edited, atol=1e-5, rtol=0)
    saved = torch.from_numpy(np.array(Image.open(png))).permute(2, 0, 1).float() / 127.5 - 1
    assert saved.shape == (3, 64, 64) and (saved - edited[0].clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6
    zero_png, zero_codes = toy.export(face, {}, tmp_path / "zero")  # no edit: the inversion itself
    assert torch.equal(Inversion.load(zero_codes).ws, face.inversion.ws)


def test_mixing_pairs_one_images_structure_with_the_others_styles(toy, face):
    other = toy.invert_sample(3)
    ab, ba = toy.mix(face, other)
    ref_ab, ref_ba = mix(toy.G, face.inversion, other.inversion)
    assert torch.equal(ab, ref_ab) and torch.equal(ba, ref_ba)
    assert not torch.equal(ab, face.rec_wf)


def test_an_uploaded_image_is_read_cropped_and_inverted(toy, tmp_path):
    from invkit.recipes import toy_domain

    path = tmp_path / "face.png"
    big = toy_domain.render(toy_domain.attributes_for_seed(toy_domain.HELD_OUT_START + 5), 160)
    canvas = Image.new("RGB", (240, 160), "white")  # wider than tall: centre-cropped to the square
    canvas.paste(big, (40, 0))
    canvas.save(path)
    inv = toy.invert_file(path, "face.png")
    assert inv.image.shape == (1, 3, 64, 64) and inv.name == "face.png"
    err = (inv.rec_wf - inv.image).abs().mean()
    assert err < 0.1, err  # the crop is the face the encoder knows: a close reconstruction


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_images_raise_one_line_naming_the_visitors_file(toy, tmp_path):
    text = _write(tmp_path, "upload123", b"this is not an image\n")
    with pytest.raises(UIError, match=r"^notes\.png: cannot read image") as info:
        toy.read_image(text, "notes.png")
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(UIError, match=r"^bomb\.png: declares .*limit of 40000000 \(a decompression bomb\?\)$"):
        toy.read_image(png_bomb(tmp_path / "upload_bomb"), "bomb.png")  # PIL's own guard fires first here
    Image.new("RGB", (4, 4)).save(tmp_path / "tiny.png")
    with pytest.raises(UIError, match="too small"):
        toy.read_image(tmp_path / "tiny.png")
    Image.new("RGB", (400, 400)).save(tmp_path / "big.png")
    small_limit = Session(toy.G, toy.encoder, max_pixels=100_000)
    with pytest.raises(UIError, match="more than the limit of 100000") as info:
        small_limit.read_image(tmp_path / "big.png")
    assert "INVKIT_MAX_IMAGE_PIXELS" not in str(info.value)  # the page's limit, not the environment's


def test_an_encoder_of_another_generator_is_refused_with_the_fingerprint_message(toy, tmp_path):
    other = tiny_stylegan2(resolution=64, w_dim=32, max_channels=32)
    enc = FeatureStyleEncoder.for_generator(other, 5, input_size=32, **SMALL)
    path = save_encoder(enc, tmp_path / "upload_tmp.safetensors")
    with pytest.raises(UIError, match=r"^their_encoder\.safetensors: encoder was trained for generator") as info:
        toy.load_encoder_file(path, "their_encoder.safetensors")
    assert other.fingerprint() in str(info.value) and toy.G.fingerprint() in str(info.value)
    with pytest.raises(UIError, match="not an encoder|cannot|not a"):
        toy.load_encoder_file(_write(tmp_path, "x", b"garbage" * 10), "garbage.pth")
    with pytest.raises(UIError, match="trained for generator"):
        Session(toy.G, enc)
    same = toy.load_encoder_file(save_encoder(toy.encoder, tmp_path / "ok.safetensors"), "ok.safetensors")
    assert torch.equal(toy.invert_sample(1, same).inversion.ws, toy.invert_sample(1).inversion.ws)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    G = tiny_stylegan2(resolution=32, w_dim=32, max_channels=32)
    enc = FeatureStyleEncoder.for_generator(G, 3, input_size=32, **SMALL)
    return save_generator(G, folder / "g.safetensors"), save_encoder(enc, folder / "e.safetensors"), G


def test_other_models_get_sefa_directions_computed_on_the_spot(tiny_files):
    g_path, e_path, G = tiny_files
    lines = []
    session = load_session(g_path, e_path, log=lines.append)
    assert [n for n in session.directions] == [f"sefa_0{i}" for i in range(5)]
    assert all(d.strength > 0 and d.generator_fingerprint == G.fingerprint() for d in session.directions.values())
    assert session.samples == [] and session.preprocess.align == "none"
    assert any("SeFa" in line for line in lines)
    face = session.invert(torch.zeros(3, 32, 32), "grey")
    assert not torch.equal(session.edit(face, {"sefa_00": 2.0}), face.rec_wf)


def test_direction_folders_and_half_given_models_are_checked(tiny_files, tmp_path):
    g_path, e_path, G = tiny_files
    with pytest.raises(ValueError, match="give both --generator and --encoder"):
        load_session(g_path, None)
    with pytest.raises(FileNotFoundError, match="no direction files"):
        load_session(g_path, e_path, directions=tmp_path)
    Inversion(torch.zeros(1, G.num_ws, G.w_dim), torch.zeros(1, *G.layer(3).shape), 3, G.fingerprint()).save(
        tmp_path / "codes.safetensors")
    with pytest.raises(ValueError, match=r"codes\.safetensors: holds a 'inversion', expected a 'direction'"):
        read_directions(tmp_path)
    with pytest.raises(ValueError, match="made for generator"):  # the toy's directions on the tiny generator
        from invkit.recipes.toy import ToyRecipeFactory

        Session(G, load_session(g_path, e_path, log=lambda m: None).encoder, ToyRecipeFactory.directions())


def test_ffhq_recipes_align_uploads_and_say_when_there_is_no_face(tiny_files, tmp_path):
    pytest.importorskip("dlib")
    g_path, e_path, _ = tiny_files
    session = load_session(g_path, e_path, align="ffhq", log=lambda m: None)
    assert "FFHQ-aligned" in session.description
    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "wall.png")
    with pytest.raises(UIError, match=r"wall\.png: no face found"):
        session.read_image(tmp_path / "wall.png")
