"""FFHQ-style face alignment, and pasting an (edited) aligned face back into its photo.

The FFHQ protocol (Karras et al., the ``ffhq-dataset`` alignment script):

1. dlib's 68 landmarks; eye centres ``e_l, e_r`` (means of points 36-41 and 42-47), mouth
   corners (points 48 and 54).
2. An oriented square ("quad"): ``x`` points along the eye line corrected by the eye-to-mouth
   direction, its half-side is ``max(2 |e_r - e_l|, 1.8 |eye-to-mouth|)``, its centre
   ``eye_avg + 0.1 eye-to-mouth``.
3. For quality: shrink the photo when the quad is much larger than the output, crop around the
   quad, reflect-pad where the quad leaves the photo and blur the padding towards its median
   colour, sample the quad into a ``transform_size`` square (bilinear) and downsample to the
   output size (Lanczos).

:class:`AlignTransform` keeps the quad in the original photo's coordinates, i.e. the exact map
between crop pixels and photo pixels, so :func:`paste_back` can warp a crop (edited or not) back
into the photo and blend it in with a soft mask.

Coordinates: points are ``(x, y)`` in pixel-centre units (pixel ``(i, j)`` is the point
``(i, j)``), the convention of dlib's landmarks, in the photo and in the crop alike.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

# dlib 68-point index ranges.
EYE_LEFT = slice(36, 42)
EYE_RIGHT = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


class NoFaceError(ValueError):
    """No face was found in an image."""


# ---- landmarks -------------------------------------------------------------------------------
@dataclass
class Face:
    """One detected face.

    Attributes:
        landmarks: ``[68, 2]`` float64 ``(x, y)`` in the photo's pixel-centre coordinates.
        box: the detector's box ``(left, top, right, bottom)`` in photo pixels.
    """

    landmarks: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0)


def face_model_path(name: str) -> Path:
    """A ``face-recognition-models`` data file (``shape_predictor_68_face_landmarks.dat``, ...),
    located through the installed distribution's file list, so no ``pkg_resources`` import is
    needed."""
    from importlib import metadata

    try:
        dist = metadata.distribution("face-recognition-models")
    except metadata.PackageNotFoundError:
        raise RuntimeError("face alignment needs dlib and face-recognition-models: "
                           "pip install 'invkit[faces]'") from None
    for f in dist.files or []:
        if f.name == name:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise RuntimeError(f"face-recognition-models is installed but {name} is missing from it")


class LandmarkDetector:
    """dlib's HOG face detector + 68-point shape predictor.

    The detector is slow on large photos and does not need the detail, so it runs on a copy
    downscaled to at most ``detect_size`` px on the long side (then upsampled ``upsample``
    times by dlib, which finds faces down to ~40 px in the downscaled copy); the landmarks are
    predicted on the full-resolution photo inside the rescaled box.
    """

    def __init__(self, detect_size: int = 640, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise RuntimeError("face alignment needs dlib: pip install 'invkit[faces]'") from None
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(face_model_path("shape_predictor_68_face_landmarks.dat")))
        self.detect_size = detect_size
        self.upsample = upsample

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in ``image`` (``[H, W, 3]`` uint8 RGB), largest first."""
        image = _as_uint8_rgb(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.detect_size / max(h, w))
        small = image
        if scale < 1.0:
            small = np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        faces = []
        for r in self.detector(small, self.upsample):
            box = (int(round(r.left() / scale)), int(round(r.top() / scale)),
                   int(round(r.right() / scale)), int(round(r.bottom() / scale)))
            faces.append(Face(self.landmarks_in(image, box), box))
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def landmarks_in(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 68 landmarks ``[68, 2]`` of the face inside ``box`` (left, top, right, bottom)."""
        shape = self.predictor(_as_uint8_rgb(image), self._dlib.rectangle(*box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


# ---- the FFHQ quad ---------------------------------------------------------------------------
def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square ``[4, 2]`` (top-left, bottom-left, bottom-right, top-right) for
    68 landmarks ``[68, 2]``, in the landmarks' coordinates."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks [68, 2], got {lm.shape}")
    eye_l, eye_r = lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2 - eye_avg
    # The horizontal axis: the eye line, tilted by the eye-to-mouth line turned by -90 degrees,
    # so both cues agree on the face's roll.
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


@dataclass
class AlignTransform:
    """The map between an aligned crop and its photo.

    Attributes:
        quad: ``[4, 2]`` the crop's corners (top-left, bottom-left, bottom-right, top-right) in
            photo pixel-centre coordinates; the corners are the crop's outer pixel *edges*.
        size: the crop's side in pixels.
        image_size: the photo's ``(width, height)``.

    A crop point ``(u, v)`` (pixel-centre units) maps to
    ``c + X (2 (u + 0.5) / size - 1) + Y (2 (v + 0.5) / size - 1)`` with ``c`` the quad's
    centre and ``X, Y`` its half-side vectors.
    """

    quad: np.ndarray
    size: int
    image_size: tuple[int, int]
    meta: dict = field(default_factory=dict)

    @property
    def centre(self) -> np.ndarray:
        return self.quad.mean(0)

    @property
    def axes(self) -> np.ndarray:
        """``[2, 2]`` columns: the half-side vectors X (crop's +u) and Y (crop's +v)."""
        q = self.quad
        return np.stack([(q[3] - q[0]) / 2, (q[1] - q[0]) / 2], axis=1)

    def crop_to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop points ``[N, 2]`` -> photo points ``[N, 2]``."""
        p = np.asarray(points, dtype=np.float64)
        n = 2 * (p + 0.5) / self.size - 1
        return self.centre + n @ self.axes.T

    def image_to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo points ``[N, 2]`` -> crop points ``[N, 2]``."""
        p = np.asarray(points, dtype=np.float64)
        n = (p - self.centre) @ np.linalg.inv(self.axes).T
        return (n + 1) * self.size / 2 - 0.5

    def scaled(self, size: int) -> AlignTransform:
        """The same quad rendered at another crop size."""
        return AlignTransform(self.quad.copy(), int(size), self.image_size, dict(self.meta))

    def to_dict(self) -> dict:
        return {"quad": self.quad.tolist(), "size": self.size, "image_size": list(self.image_size), **self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> AlignTransform:
        extra = {k: v for k, v in d.items() if k not in ("quad", "size", "image_size")}
        return cls(np.asarray(d["quad"], dtype=np.float64), int(d["size"]), tuple(d["image_size"]), extra)


# ---- the crop --------------------------------------------------------------------------------
def align_face(
    image: np.ndarray | Image.Image,
    landmarks: np.ndarray,
    size: int = 1024,
    transform_size: int | None = None,
    enable_padding: bool = True,
) -> tuple[np.ndarray, AlignTransform]:
    """The FFHQ-aligned crop of the face with ``landmarks`` ``[68, 2]``.

    Args:
        image: the photo, ``[H, W, 3]`` uint8 RGB (or a PIL image).
        size: the output side (the generator's resolution).
        transform_size: side of the intermediate bilinear sampling, downsampled to ``size``
            with Lanczos; default ``4 * size`` (4096 for 1024, the FFHQ setting).
        enable_padding: reflect-pad and blur where the quad leaves the photo (FFHQ does).

    Returns:
        ``(crop [size, size, 3] uint8, AlignTransform)``.
    """
    img = Image.fromarray(_as_uint8_rgb(np.asarray(image))) if not isinstance(image, Image.Image) else image.convert("RGB")
    width, height = img.size
    quad = ffhq_quad(landmarks)
    transform = AlignTransform(quad.copy(), int(size), (width, height))
    transform_size = int(transform_size or 4 * size)
    # Work in continuous image coordinates (pixel i spans [i, i+1]) so that resizing and
    # cropping move the quad exactly with the pixels.
    q = quad + 0.5
    qsize = float(np.hypot(*(q[3] - q[0])))

    shrink = int(math.floor(qsize / size * 0.5))
    if shrink > 1:
        new = (max(1, round(width / shrink)), max(1, round(height / shrink)))
        q = q * np.array([new[0] / img.size[0], new[1] / img.size[1]])
        img = img.resize(new, Image.LANCZOS)
        qsize /= shrink

    border = max(int(round(qsize * 0.1)), 3)
    lo = np.floor(q.min(0)).astype(int) - border
    hi = np.ceil(q.max(0)).astype(int) + border
    box = (max(lo[0], 0), max(lo[1], 0), min(hi[0], img.size[0]), min(hi[1], img.size[1]))
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img = img.crop(box)
        q = q - np.array(box[:2])

    if enable_padding:
        lo = np.floor(q.min(0)).astype(int)
        hi = np.ceil(q.max(0)).astype(int)
        pad = np.array([max(-lo[0] + border, 0), max(-lo[1] + border, 0),
                        max(hi[0] - img.size[0] + border, 0), max(hi[1] - img.size[1] + border, 0)])
        if pad.max() > border - 4:
            pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
            img = Image.fromarray(_pad_and_blur(np.asarray(img), pad, qsize))
            q = q + pad[:2]

    out = img.transform((transform_size, transform_size), Image.QUAD, tuple(q.flatten()), Image.BILINEAR)
    if size != transform_size:
        out = out.resize((size, size), Image.LANCZOS)
    return np.asarray(out), transform


def _pad_and_blur(arr: np.ndarray, pad: np.ndarray, qsize: float) -> np.ndarray:
    """Reflect-pad ``arr`` by ``pad`` (left, top, right, bottom) and fade the padding: blurred
    progressively, then blended towards the image's median colour far from the photo."""
    left, top, right, bottom = (int(p) for p in pad)
    img = np.pad(arr.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    # 0 at the photo's edge, rising to 1 at the padded border; negative inside the photo.
    ramp_x = 1.0 - np.minimum(xx.astype(np.float32) / left, (w - 1 - xx).astype(np.float32) / right)
    ramp_y = 1.0 - np.minimum(yy.astype(np.float32) / top, (h - 1 - yy).astype(np.float32) / bottom)
    mask = np.maximum(ramp_x, ramp_y)[..., None]
    blur = qsize * 0.02
    img += (scipy.ndimage.gaussian_filter(img, [blur, blur, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(img), 0, 255))


# ---- paste-back ------------------------------------------------------------------------------
def feathered_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """A ``[size, size]`` float32 mask in [0, 1]: 1 inside, falling smoothly (smoothstep) to 0
    over the outer ``feather`` fraction of the side, so a pasted crop has no visible seam."""
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    edge = np.minimum(t, 1 - t) / max(feather, 1e-6)
    ramp = np.clip(edge, 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.minimum.outer(ramp, ramp).astype(np.float32)


def parsing_mask(crop: np.ndarray, parser=None, dilate: float = 0.03, blur: float = 0.02) -> np.ndarray | None:
    """A soft face mask ``[S, S]`` in [0, 1] from the BiSeNet face parser, or None when its
    weights are not available (zoo entry ``bisenet-face-parsing``).

    The face classes (everything but background, neck, cloth, hat) are dilated by ``dilate``
    and blurred by ``blur`` (fractions of the side) so the blend reaches a little past the
    face outline.
    """
    if parser is None:
        try:
            from .nets.bisenet import BiSeNet

            parser = BiSeNet.from_zoo()
        except (FileNotFoundError, RuntimeError, ImportError):
            return None
    x = torch.from_numpy(np.asarray(crop)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        m = parser.face_mask(x.to(next(parser.parameters()).device))[0, 0].cpu().numpy()
    size = m.shape[0]
    if dilate > 0:
        m = scipy.ndimage.grey_dilation(m, size=max(1, int(round(dilate * size))) * 2 + 1)
    if blur > 0:
        m = scipy.ndimage.gaussian_filter(m, blur * size)
    return np.clip(m, 0, 1).astype(np.float32)


def warp_to_image(crop: np.ndarray, transform: AlignTransform, region: tuple[int, int, int, int] | None = None
                  ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Sample ``crop`` (``[S, S, C]`` any float/uint8, S may differ from ``transform.size``)
    at every photo pixel of ``region`` (default: the quad's bounding box clipped to the photo).

    Returns ``(values [h, w, C] float32 (0 outside the crop), region (x0, y0, x1, y1))``.
    """
    width, height = transform.image_size
    if region is None:
        lo = np.floor(transform.quad.min(0)).astype(int)
        hi = np.ceil(transform.quad.max(0)).astype(int) + 1
        region = (max(lo[0], 0), max(lo[1], 0), min(hi[0], width), min(hi[1], height))
    x0, y0, x1, y1 = region
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0, np.asarray(crop).shape[2]), np.float32), region
    ys, xs = np.mgrid[y0:y1, x0:x1]
    pts = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
    # grid_sample's normalised coordinates (align_corners=False) are exactly the quad's
    # (-1..1) coordinates along its two half-side vectors.
    n = (pts - transform.centre) @ np.linalg.inv(transform.axes).T
    grid = torch.from_numpy(n.reshape(1, y1 - y0, x1 - x0, 2)).float()
    src = torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0).numpy(), region


def paste_back(
    image: np.ndarray,
    crop: np.ndarray,
    transform: AlignTransform,
    mask: np.ndarray | None = None,
    feather: float = 0.1,
) -> np.ndarray:
    """Blend an aligned crop (edited or not) back into its photo.

    Args:
        image: the original photo ``[H, W, 3]`` uint8.
        crop: ``[S, S, 3]`` uint8 in the crop's frame (any S; e.g. the generator's output).
        transform: the :class:`AlignTransform` that made the crop.
        mask: optional soft mask ``[S', S']`` in [0, 1] in the crop's frame (e.g.
            :func:`parsing_mask`); it is multiplied by the feathered square.
        feather: width of the square's soft edge, as a fraction of the side.

    Returns:
        A new ``[H, W, 3]`` uint8 photo; pixels outside the quad are untouched.
    """
    image = _as_uint8_rgb(image)
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"crop must be [S, S, C], got {crop.shape}")
    if (image.shape[1], image.shape[0]) != tuple(transform.image_size):
        raise ValueError(f"photo is {image.shape[1]}x{image.shape[0]} but the transform was made for "
                         f"{transform.image_size[0]}x{transform.image_size[1]}")
    s = crop.shape[0]
    soft = feathered_mask(s, feather)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != (s, s):
            m = np.asarray(Image.fromarray(m).resize((s, s), Image.BILINEAR))
        soft = soft * np.clip(m, 0, 1)
    stacked = np.concatenate([crop.astype(np.float32), soft[..., None]], axis=2)
    warped, (x0, y0, x1, y1) = warp_to_image(stacked, transform)
    out = image.copy()
    if warped.size == 0:
        return out
    alpha = warped[..., 3:4]
    # The warped colour is premultiplied by the warped crop's coverage; undo it where the
    # square's edge meets bilinear zeros so edges do not darken.
    coverage = warp_to_image(np.ones((s, s, 1), np.float32), transform, (x0, y0, x1, y1))[0]
    colour = warped[..., :3] / np.maximum(coverage, 1e-6)
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(region * (1 - alpha) + colour * alpha), 0, 255).astype(np.uint8)
    return out


# ---- whole-photo helper ----------------------------------------------------------------------
@dataclass
class AlignedFace:
    """One photo's alignment: the crop, its transform, and how many faces the photo held."""

    crop: np.ndarray
    transform: AlignTransform
    face: Face
    n_faces: int


class FaceAligner:
    """Detect, pick and align faces: ``FaceAligner(size=1024)(photo) -> AlignedFace``.

    ``choose`` is ``"largest"`` (default) or ``"all"`` (see :meth:`align_all`). Raises
    :class:`NoFaceError` when a photo has no face.
    """

    def __init__(self, size: int = 1024, transform_size: int | None = None, detector: LandmarkDetector | None = None):
        self.size = size
        self.transform_size = transform_size
        self.detector = detector or LandmarkDetector()

    def align_all(self, image: np.ndarray) -> list[AlignedFace]:
        faces = self.detector.detect(image)
        out = []
        for face in faces:
            crop, tf = align_face(image, face.landmarks, self.size, self.transform_size)
            out.append(AlignedFace(crop, tf, face, len(faces)))
        return out

    def __call__(self, image: np.ndarray) -> AlignedFace:
        faces = self.detector.detect(image)
        if not faces:
            raise NoFaceError("no face found")
        crop, tf = align_face(image, faces[0].landmarks, self.size, self.transform_size)
        return AlignedFace(crop, tf, faces[0], len(faces))


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """A photo file as ``[H, W, 3]`` uint8 RGB, read by :func:`invkit.io.images.open_image`
    (EXIF rotation applied, bit depth scaled, bombs refused); errors name the file."""
    from .io.images import open_image

    return np.asarray(open_image(path))
