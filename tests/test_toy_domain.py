"""The procedural toy domain: deterministic, and every attribute visibly changes the picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invkit.recipes import toy_domain as td


def test_same_seed_same_image_and_attributes():
    a1, a2 = td.attributes_for_seed(123), td.attributes_for_seed(123)
    assert a1 == a2
    assert torch.equal(td.render_tensor(a1), td.render_tensor(a2))
    assert td.attributes_for_seed(124) != a1


def test_tensor_shape_and_range():
    x = td.render_tensor(td.attributes_for_seed(0))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # anti-aliased: many intermediate colours, not a handful of flat fills
    assert len(np.unique(np.asarray(td.render(td.attributes_for_seed(0))).reshape(-1, 3), axis=0)) > 200


def _diff(base: td.FaceAttributes, **change) -> torch.Tensor:
    """Per-pixel absolute difference map [64, 64] between base and base with `change`."""
    return (td.render_tensor(base) - td.render_tensor(base.replace(**change))).abs().amax(0)


BASE = td.FaceAttributes(glasses=0, smile=0.0, yaw=0.0, x=0.0, y=0.0, size=0.5, skin_hue=0.1,
                         bg_hue=0.6, hair=0.5)


def test_glasses_change_the_eye_region_only():
    d = _diff(BASE, glasses=1)
    changed = d > 0.1
    assert changed.sum() > 60  # the glasses are a clearly visible object
    rows = changed.any(1).nonzero().flatten()
    # the change lives in a horizontal band around the eyes, not in the mouth or hair
    assert rows.max() - rows.min() < 20
    mouth_row = int(32 + 2 + (15 + 3) * 0.5)
    assert not changed[mouth_row + 2:].any()


def test_smile_moves_the_mouth():
    d = _diff(BASE, smile=1.0) > 0.1
    assert d.sum() > 20
    rows = d.any(1).nonzero().flatten()
    assert rows.min() > 32  # lower half of the face
    # frown and smile differ from each other more than from neutral
    frown_vs_smile = (td.render_tensor(BASE.replace(smile=-1)) - td.render_tensor(BASE.replace(smile=1))).abs().sum()
    assert frown_vs_smile > (_diff(BASE, smile=1.0)).sum() * 0.5


@pytest.mark.parametrize("name,value", [("yaw", 1.0), ("x", 1.0), ("y", 1.0), ("size", 1.0), ("hair", 1.0),
                                        ("skin_hue", 0.6), ("bg_hue", 0.1)])
def test_every_attribute_changes_the_image(name, value):
    assert (_diff(BASE, **{name: value}) > 0.1).sum() > 20


def test_position_moves_the_head_centroid():
    def centroid(attrs):
        # the head is the region that differs from the background gradient of the same image
        bg = td.render_tensor(attrs.replace(size=0.0, x=-1, y=-1))  # different head place
        img = td.render_tensor(attrs)
        mask = (img - bg).abs().amax(0) > 0.05
        ys, xs = mask.nonzero(as_tuple=True)
        return xs.float().mean(), ys.float().mean()

    x0, _ = centroid(BASE.replace(x=-1))
    x1, _ = centroid(BASE.replace(x=1))
    assert x1 - x0 > 8


def test_dataset_items_and_held_out_split():
    ds = td.ToyFaces(4, first_seed=7, cache=True)
    img, attrs = ds[2]
    assert img.shape == (3, 64, 64)
    assert torch.equal(attrs, td.attributes_to_tensor(td.attributes_for_seed(9)))
    img2, _ = ds[2]  # from the cache: identical up to the uint8 quantisation already in the PNG
    assert torch.allclose(img, img2, atol=1e-6)
    with pytest.raises(IndexError):
        ds[4]
    assert td.held_out(1).first_seed >= td.HELD_OUT_START


def test_batches_are_deterministic_from_seed():
    x1, a1 = next(td.iterate_batches(3, seed=5))
    x2, a2 = next(td.iterate_batches(3, seed=5))
    assert torch.equal(x1, x2) and torch.equal(a1, a2)
    assert a1.shape == (3, len(td.ATTRIBUTE_NAMES))
    assert set(a1[:, 0].tolist()) <= {0.0, 1.0}


def test_non_finite_attribute_is_refused():
    with pytest.raises(ValueError, match="smile"):
        td.render(BASE.replace(smile=float("nan")))


def test_dataset_cache_is_bounded():
    from invkit.recipes import toy_domain

    per_item = 3 * 64 * 64 + 4 * len(toy_domain.ATTRIBUTE_NAMES) + 256
    ds = toy_domain.ToyFaces(10, cache=True, cache_bytes=3 * per_item)
    first = [ds[i][0] for i in range(10)]
    assert len(ds._cache) == 3  # the rest are rendered again, identically
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))
