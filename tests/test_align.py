"""FFHQ alignment on scikit-image's astronaut photo, the quad geometry, and paste-back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from invkit import align  # noqa: E402

# Where FFHQ puts the eye centres, as fractions of the crop side: the quad is centred on
# eye_avg + 0.1 * eye_to_mouth and its half-side is 2 * |eye_to_eye| (for faces whose eyes are
# wider apart than 0.9x the eye-mouth distance, as here), so the eyes sit 1/8 of the side either
# side of the centre line, and the eye line sits 0.025 * |eye_to_mouth| / |eye_to_eye| of the
# side above the centre; 0.475 for typical proportions (eye-mouth ~ eye-eye).
CANONICAL_EYES = np.array([[0.375, 0.475], [0.625, 0.475]])
TOL_TRANSFORMED = 0.01   # detected landmarks mapped through the crop transform (fraction of side)
TOL_REDETECTED = 0.015   # landmarks detected again on the crop itself



@pytest.fixture(scope="module")
def detector():
    return align.LandmarkDetector()


@pytest.fixture(scope="module")
def astronaut(detector):
    photo = skdata.astronaut()
    return photo, detector.detect(photo)


def _eyes(landmarks: np.ndarray) -> np.ndarray:
    return np.stack([landmarks[align.EYE_LEFT].mean(0), landmarks[align.EYE_RIGHT].mean(0)])


def test_face_is_found_largest_first(astronaut):
    photo, faces = astronaut
    assert len(faces) >= 1
    left, top, right, bottom = faces[0].box
    # Eileen Collins' face is in the upper middle of the 512x512 photo.
    assert 150 < (left + right) / 2 < 290 and 50 < (top + bottom) / 2 < 190
    assert all(faces[0].area >= f.area for f in faces)
    eyes = _eyes(faces[0].landmarks)
    assert 20 < eyes[1, 0] - eyes[0, 0] < 60  # a plausible interocular distance in px


@pytest.mark.parametrize("size", [1024, 256])
def test_crop_size_and_canonical_eye_positions(astronaut, detector, size):
    photo, faces = astronaut
    crop, tf = align.align_face(photo, faces[0].landmarks, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    mapped = tf.image_to_crop(_eyes(faces[0].landmarks)) / size
    assert np.abs(mapped - CANONICAL_EYES).max() < TOL_TRANSFORMED
    again = detector.detect(crop)
    assert len(again) >= 1
    redetected = _eyes(again[0].landmarks) / size
    assert np.abs(redetected - CANONICAL_EYES).max() < TOL_REDETECTED
    # The pixels agree with the transform: re-detected and transformed eyes within 0.5% of the side.
    assert np.abs(redetected - mapped).max() < 0.005


def _region_error(photo, pasted, tf):
    """Mean absolute 8-bit error over photo pixels where the paste weight is 1."""
    weight, (x0, y0, x1, y1) = align.warp_to_image(align.feathered_mask(tf.size)[..., None], tf)
    inside = weight[..., 0] > 0.999
    diff = np.abs(pasted[y0:y1, x0:x1].astype(np.float64) - photo[y0:y1, x0:x1])
    return diff[inside].mean(), inside.sum()


@pytest.mark.parametrize("size,tol", [(1024, 1.5), (256, 3.5)])
def test_warp_back_of_unedited_crop_reproduces_the_photo(astronaut, size, tol):
    """Stated error: mean |difference| over the fully pasted region < 1.5 grey levels for the
    1024 crop (upsampled face, resampled twice) and < 3.5 for the 256 crop (the face is shrunk,
    so fine detail is lost). A 0.5 px misplacement of the quad already costs > 4 levels."""
    photo, faces = astronaut
    crop, tf = align.align_face(photo, faces[0].landmarks, size)
    pasted = align.paste_back(photo, crop, tf)
    err, n = _region_error(photo, pasted, tf)
    assert n > 10000 and err < tol
    shifted = align.AlignTransform(tf.quad + 0.5, tf.size, tf.image_size)
    err_shifted, _ = _region_error(photo, align.paste_back(photo, crop, shifted), tf)
    assert err_shifted > 4.0 and err_shifted > 2 * err


def test_paste_back_touches_only_the_quad_and_honours_the_mask(astronaut):
    photo, faces = astronaut
    crop, tf = align.align_face(photo, faces[0].landmarks, 256, transform_size=512)
    edited = np.zeros_like(crop)
    edited[..., 1] = 255  # a green face
    out = align.paste_back(photo, edited, tf)
    outside = np.ones(photo.shape[:2], bool)
    lo = np.floor(tf.quad.min(0)).astype(int)
    hi = np.ceil(tf.quad.max(0)).astype(int) + 1
    outside[max(lo[1], 0):hi[1], max(lo[0], 0):hi[0]] = False
    assert np.array_equal(out[outside], photo[outside])
    centre = tf.crop_to_image(np.array([[128.0, 128.0]]))[0].round().astype(int)
    assert tuple(out[centre[1], centre[0]]) == (0, 255, 0)
    # A mask that keeps only the crop's left half leaves the right side of the face alone.
    mask = np.zeros((256, 256), np.float32)
    mask[:, :100] = 1
    half = align.paste_back(photo, edited, tf, mask=mask)
    right = tf.crop_to_image(np.array([[190.0, 128.0]]))[0].round().astype(int)
    assert np.array_equal(half[right[1], right[0]], photo[right[1], right[0]])
    left = tf.crop_to_image(np.array([[50.0, 128.0]]))[0].round().astype(int)
    assert half[left[1], left[0], 1] > 250


def test_transform_round_trip_and_serialisation():
    quad = np.array([[10.0, 20.0], [0.0, 120.0], [100.0, 130.0], [110.0, 30.0]])
    tf = align.AlignTransform(quad, 64, (200, 150))
    pts = np.random.default_rng(0).uniform(-5, 70, size=(20, 2))
    np.testing.assert_allclose(tf.image_to_crop(tf.crop_to_image(pts)), pts, atol=1e-9)
    # Crop pixel edges (-0.5 and size - 0.5) land on the quad's corners.
    np.testing.assert_allclose(tf.crop_to_image(np.array([[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5]])), quad[:3], atol=1e-9)
    back = align.AlignTransform.from_dict(tf.to_dict())
    np.testing.assert_array_equal(back.quad, tf.quad)
    assert back.size == 64 and back.image_size == (200, 150)


def test_ffhq_quad_geometry_on_synthetic_landmarks():
    lm = np.zeros((68, 2))
    lm[align.EYE_LEFT] = [40.0, 50.0]
    lm[align.EYE_RIGHT] = [80.0, 50.0]
    lm[align.MOUTH_LEFT] = [50.0, 100.0]
    lm[align.MOUTH_RIGHT] = [70.0, 100.0]
    quad = align.ffhq_quad(lm)
    # eye_to_eye = 40, eye_to_mouth = 50: half-side = max(80, 90) = 90; centre = (60, 55).
    np.testing.assert_allclose(quad.mean(0), [60.0, 55.0])
    np.testing.assert_allclose(quad[0], [60 - 90, 55 - 90])
    np.testing.assert_allclose(np.linalg.norm(quad[3] - quad[0]), 180.0)
    # Rotating the face rotates the quad the same way (about the same point).
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    np.testing.assert_allclose(align.ffhq_quad(lm @ rot.T), quad @ rot.T, atol=1e-9)
    with pytest.raises(ValueError, match="68 landmarks"):
        align.ffhq_quad(lm[:5])


def test_no_face_is_an_error_not_a_silent_skip(detector):
    aligner = align.FaceAligner(size=64, transform_size=64, detector=detector)
    with pytest.raises(align.NoFaceError):
        aligner(np.full((120, 160, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((10, 10), np.float32))


def test_face_model_files_found_without_pkg_resources():
    path = align.face_model_path("shape_predictor_68_face_landmarks.dat")
    assert path.is_file() and path.stat().st_size > 1_000_000


def test_align_cli_reports_every_photo(tmp_path, capsys, monkeypatch):
    import json

    from PIL import Image

    from invkit.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(skdata.astronaut()).save(src / "astronaut.jpg")
    Image.fromarray(np.full((100, 120, 3), 200, np.uint8)).save(src / "blank.png")
    (src / "broken.png").write_bytes(b"nope")
    args = ["align", str(src), str(out), "--size", "64", "--transform-size", "128"]
    assert main(args) == 1  # two photos gave no crop
    err = " ".join(capsys.readouterr().err.split())
    assert "blank.png" in err and "no face found" in err and "broken.png" in err
    assert "1/3 photos aligned" in err
    crop = np.asarray(Image.open(out / "astronaut.png"))
    assert crop.shape == (64, 64, 3)
    manifest = json.loads((out / "alignment.json").read_text())
    entries = manifest["images"]
    assert entries["blank.png"]["status"] == "no_face" and entries["broken.png"]["status"] == "error"
    info = entries["astronaut.jpg"]
    assert info["status"] == "ok" and info["n_faces"] >= 1
    tf = align.AlignTransform.from_dict(info["crops"][0])
    assert tf.size == 64 and tf.image_size == (512, 512)
    # An existing crop is not replaced without --overwrite.
    before = (out / "astronaut.png").read_bytes()
    assert main(args) == 1
    assert "exists" in " ".join(capsys.readouterr().err.split())
    assert (out / "astronaut.png").read_bytes() == before
    with pytest.raises(SystemExit):
        main(["align"])


def test_parsing_mask_dilates_and_softens_the_face_classes(tmp_path, monkeypatch):
    class DiscParser(torch.nn.Module):
        """Labels a central disc as face, like a parser would on an aligned crop."""

        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def face_mask(self, images):
            h, w = images.shape[-2:]
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (0.3 * h) ** 2
            return disc[None, None].float().expand(len(images), 1, h, w)

    crop = np.zeros((100, 100, 3), np.uint8)
    m = align.parsing_mask(crop, DiscParser(), dilate=0.05, blur=0.02)
    assert m.shape == (100, 100) and m.dtype == np.float32
    assert m[50, 50] > 0.99 and m[2, 2] < 0.01
    assert m[50, 50 + 32] > 0.5  # just outside the disc (r = 30): reached by the dilation
    assert 0.05 < m[50, 50 + 37] < 0.95  # the soft edge
    # The real parser's layout runs too (random weights: only shape and range are checked).
    from invkit.nets.bisenet import BiSeNet

    real = align.parsing_mask(crop[:64, :64], BiSeNet(19, input_size=64).eval())
    assert real.shape == (64, 64) and 0 <= real.min() and real.max() <= 1
    # Without the parser's weights there is no parsing mask (paste-back uses the square alone).
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("INVKIT_ZOO_BISENET_FACE_PARSING", raising=False)
    assert align.parsing_mask(crop) is None
