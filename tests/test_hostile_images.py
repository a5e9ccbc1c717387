"""Odd and hostile images (made by tests/hostile.py) through the one image reader that every
command uses: decompression bombs refused by name from the header, 16-bit and float images
scaled, EXIF orientation applied, tiny and elongated images refused by a stated policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hostile import exif_rotated_jpeg, float_tiff, png16, png_bomb
from PIL import Image

from invkit.align import load_photo
from invkit.data import ImageFolder
from invkit.io.images import ImageError, iter_image_batches, load_image, open_image
from invkit.recipe import Preprocess


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageError, match=r"bomb.png: declares 20000x20000 pixels.*INVKIT_MAX_IMAGE_PIXELS"):
        load_image(bomb, 32)
    with pytest.raises(ValueError, match="bomb.png: declares"):
        load_photo(bomb)


def test_the_limit_can_be_raised(tmp_path, monkeypatch):
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 20000)
    monkeypatch.setenv("INVKIT_MAX_IMAGE_PIXELS", str(20000 * 20000))
    with pytest.raises(ImageError, match="bomb.png: cannot read image"):  # past the check: truncated data
        load_image(bomb)


def test_a_bomb_in_a_batch_is_skipped_and_the_rest_finishes(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(good)
    files = [png_bomb(tmp_path / "bomb.png"), good]
    errors = []
    batches = list(iter_image_batches(files, 16, 2, lambda p, e: errors.append((p.name, str(e)))))
    assert batches[0].indices == [1] and errors[0][0] == "bomb.png"


def test_training_data_skips_a_bomb(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(folder / "good.png")
    png_bomb(folder / "bomb.png")
    messages: list[str] = []
    ds = ImageFolder(folder, Preprocess(), resolution=16, report=messages.append)
    assert len(ds) == 1 and any("bomb.png: skipped (declares 20000x20000" in m for m in messages)


def test_16_bit_png_is_scaled_not_white(tmp_path):
    x = load_image(png16(tmp_path / "grey16.png", value=1 << 15))
    assert x.shape == (3, 16, 16)
    assert abs(float(x.mean())) < 0.02  # half grey -> 0 in [-1, 1]


def test_float_tiff_is_scaled_not_black(tmp_path):
    x = load_image(float_tiff(tmp_path / "grey.tif", 0.5))
    assert abs(float(x.mean())) < 0.02


def test_float_tiff_with_nan_is_refused(tmp_path):
    with pytest.raises(ImageError, match="nan.tif: float image holds NaN"):
        load_image(float_tiff(tmp_path / "nan.tif", float("nan")))


def test_exif_orientation_is_honoured_by_every_reader(tmp_path):
    path = exif_rotated_jpeg(tmp_path / "rotated.jpg", orientation=6)  # stored 16x8, shown 8x16
    assert open_image(path).size == (8, 16)
    assert load_image(path).shape == (3, 16, 8)
    assert load_photo(path).shape == (16, 8, 3)


@pytest.mark.parametrize("size", [(4, 4), (200, 10)])
def test_tiny_and_elongated_images_are_refused_by_policy(tmp_path, size):
    path = tmp_path / "odd.png"
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)
    with pytest.raises(ImageError, match="odd.png: .* too small or too elongated"):
        load_image(path, 16)


def test_reader_output_is_a_plain_tensor(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.full((10, 12, 3), 255, np.uint8)).save(path)
    x = load_image(path)
    assert x.dtype == torch.float32 and float(x.min()) == 1.0
