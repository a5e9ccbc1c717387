"""A procedural image domain with known attributes: cartoon faces, 64x64 RGB.

No face dataset can be downloaded on a fresh machine, so invkit's demo trains and evaluates on
images it draws itself. Every image is a deterministic function of a small attribute vector, so
ground truth is known exactly for every attribute:

========== ========== =========================================================================
name       kind       meaning
========== ========== =========================================================================
glasses    binary     round dark-rimmed glasses over the eyes (0 or 1)
smile      continuous mouth curvature in [-1, 1]: -1 frown, 0 straight, 1 broad smile
yaw        continuous head turn in [-1, 1]: the features slide sideways inside the head
x, y       continuous head position in [-1, 1] (fraction of the free margin)
size       continuous head radius in [0, 1] (0 small, 1 large)
skin_hue   continuous hue of the skin in [0, 1) (a full hue circle, kept pale)
bg_hue     continuous hue of the background in [0, 1)
hair       continuous hair amount in [0, 1]: 0 bald, 1 a full cap of hair
========== ========== =========================================================================

Images are drawn with Pillow at ``SUPERSAMPLE`` times the size and reduced with Lanczos, which
anti-aliases every edge (hard aliased edges are not something a StyleGAN2 would produce, and would
make the inversion comparison unfair). Tensors are ``[3, 64, 64]`` float in [-1, 1].
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from PIL import Image, ImageDraw

RESOLUTION = 64
SUPERSAMPLE = 4

#: Attribute names in the fixed order used by :func:`attributes_to_tensor`.
ATTRIBUTE_NAMES = ("glasses", "smile", "yaw", "x", "y", "size", "skin_hue", "bg_hue", "hair")
#: Which attributes are binary (the rest are continuous).
BINARY_ATTRIBUTES = ("glasses",)


@dataclass(frozen=True)
class FaceAttributes:
    """The full description of one image (see the module docstring for ranges)."""

    glasses: int = 0
    smile: float = 0.0
    yaw: float = 0.0
    x: float = 0.0
    y: float = 0.0
    size: float = 0.5
    skin_hue: float = 0.08
    bg_hue: float = 0.6
    hair: float = 0.5

    def replace(self, **changes) -> FaceAttributes:
        """A copy with some attributes changed."""
        return FaceAttributes(**{**asdict(self), **changes})


def sample_attributes(rng: np.random.Generator) -> FaceAttributes:
    """Draw one attribute set; all randomness comes from ``rng`` (so a seed fixes the image)."""
    return FaceAttributes(
        glasses=int(rng.random() < 0.5),
        smile=float(rng.uniform(-1, 1)),
        yaw=float(rng.uniform(-1, 1)),
        x=float(rng.uniform(-1, 1)),
        y=float(rng.uniform(-1, 1)),
        size=float(rng.uniform(0, 1)),
        skin_hue=float(rng.random()),
        bg_hue=float(rng.random()),
        hair=float(rng.uniform(0, 1)),
    )


def attributes_for_seed(seed: int) -> FaceAttributes:
    """The attribute set of image number ``seed`` (``numpy.random.default_rng(seed)``)."""
    return sample_attributes(np.random.default_rng(seed))


def attributes_to_tensor(attrs: FaceAttributes | list[FaceAttributes]) -> torch.Tensor:
    """``[len(ATTRIBUTE_NAMES)]`` (or ``[B, ...]`` for a list) float32, in ``ATTRIBUTE_NAMES`` order."""
    if isinstance(attrs, FaceAttributes):
        return torch.tensor([float(getattr(attrs, n)) for n in ATTRIBUTE_NAMES])
    return torch.stack([attributes_to_tensor(a) for a in attrs])


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _line_width(scale: float, px: float) -> int:
    return max(1, round(px * scale))


def render(attrs: FaceAttributes, resolution: int = RESOLUTION) -> Image.Image:
    """Draw one face as an RGB PIL image of ``resolution`` x ``resolution`` pixels."""
    for f in fields(FaceAttributes):
        if not math.isfinite(float(getattr(attrs, f.name))):
            raise ValueError(f"attribute {f.name} is not finite: {getattr(attrs, f.name)}")
    n = resolution * SUPERSAMPLE
    s = n / 64.0  # every length below is written in 64-px units and scaled by s

    # Background: a soft vertical gradient of one hue, so the background is not a flat colour
    # the generator can trivially copy, but still one colour family.
    top, bottom = np.array(_rgb(attrs.bg_hue, 0.35, 0.95)), np.array(_rgb(attrs.bg_hue, 0.55, 0.7))
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None, None]
    bg = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(bg, (n, n, 3)).copy(), "RGB")
    draw = ImageDraw.Draw(img)

    radius = (15.0 + 6.0 * attrs.size) * s
    margin = n / 2 - radius - 3 * s
    cx = n / 2 + attrs.x * margin * 0.6
    cy = n / 2 + 2 * s + attrs.y * margin * 0.45
    skin = _rgb(attrs.skin_hue, 0.35, 0.95)
    shade = _rgb(attrs.skin_hue, 0.45, 0.75)
    dark = (35, 30, 30)

    # Ears, then the head (a slightly tall ellipse), drawn with an outline in a darker skin tone.
    ear_r = radius * 0.22
    for side in (-1, 1):
        ex = cx + side * radius * (0.97 - 0.12 * side * attrs.yaw)
        draw.ellipse([ex - ear_r, cy - ear_r, ex + ear_r, cy + ear_r], fill=skin, outline=shade,
                     width=_line_width(s, 0.8))
    draw.ellipse([cx - radius, cy - radius * 1.08, cx + radius, cy + radius * 1.08], fill=skin,
                 outline=shade, width=_line_width(s, 0.8))

    # Hair: a cap over the top of the head whose depth grows with `hair`.
    if attrs.hair > 0.05:
        hair_col = _rgb(attrs.skin_hue + 0.5, 0.5, 0.35)
        depth = radius * (0.1 + 0.5 * attrs.hair)
        # The cap is the part of the head's bounding ellipse above the chord at height
        # (top + depth), drawn as a polygon: Pillow's `chord` with small angles draws a stray
        # line across the image.
        a, b = radius * 1.04, radius * 1.08
        ey = cy - radius * 0.06
        half = math.acos(max(-1.0, min(1.0, 1 - depth / b)))
        arc = [(cx + a * math.sin(t), ey - b * math.cos(t))
               for t in np.linspace(-half, half, 64)]
        draw.polygon(arc, fill=hair_col)

    # Facial features slide sideways with yaw (a cheap head turn).
    fx = cx + attrs.yaw * radius * 0.35
    eye_dx, eye_y, eye_r = radius * 0.38, cy - radius * 0.12, radius * 0.11
    for side in (-1, 1):
        ex = fx + side * eye_dx * (1 - 0.15 * side * attrs.yaw)
        draw.ellipse([ex - eye_r, eye_y - eye_r, ex + eye_r, eye_y + eye_r], fill=dark)
        glint = eye_r * 0.35
        draw.ellipse([ex - glint + eye_r * 0.3, eye_y - glint - eye_r * 0.3,
                      ex + glint + eye_r * 0.3, eye_y + glint - eye_r * 0.3], fill=(250, 250, 250))

    # Nose: a small shaded triangle pointing the way the head turns.
    ny = cy + radius * 0.12
    tip = fx + attrs.yaw * radius * 0.12
    draw.polygon([(fx - radius * 0.07, ny - radius * 0.12), (tip + radius * 0.02, ny + radius * 0.1),
                  (fx - radius * 0.1, ny + radius * 0.1)], fill=shade)

    # Mouth: a quadratic arc whose sag is the smile; a filled lip band for visibility.
    my, half_w = cy + radius * 0.5, radius * 0.38
    sag = attrs.smile * radius * 0.22
    pts = []
    for i in range(33):
        t = -1 + 2 * i / 32
        pts.append((fx + t * half_w, my + sag * (1 - t * t) - sag * 0.5))
    draw.line(pts, fill=(150, 40, 50), width=_line_width(s, 1.6), joint="curve")

    if attrs.glasses:
        rim = (20, 20, 25)
        lens_r = eye_r * 2.3
        centres = []
        for side in (-1, 1):
            ex = fx + side * eye_dx * (1 - 0.15 * side * attrs.yaw)
            centres.append(ex)
            # tinted lenses: the eyes show through, darkened
            lens = Image.new("L", img.size, 0)
            ImageDraw.Draw(lens).ellipse([ex - lens_r, eye_y - lens_r, ex + lens_r, eye_y + lens_r], fill=90)
            img.paste((40, 60, 80), mask=lens)
            draw.ellipse([ex - lens_r, eye_y - lens_r, ex + lens_r, eye_y + lens_r], outline=rim,
                         width=_line_width(s, 1.3))
        draw.line([(centres[0] + lens_r, eye_y), (centres[1] - lens_r, eye_y)], fill=rim,
                  width=_line_width(s, 1.2))
        for side, ex in zip((-1, 1), centres):
            x0 = ex + side * lens_r
            draw.line([(x0, eye_y), (cx + side * radius * 0.98, eye_y - radius * 0.05)], fill=rim,
                      width=_line_width(s, 1.0))

    return img.resize((resolution, resolution), Image.LANCZOS)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> ``[3, H, W]`` float32 in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


def render_tensor(attrs: FaceAttributes, resolution: int = RESOLUTION) -> torch.Tensor:
    """:func:`render` as a ``[3, resolution, resolution]`` tensor in [-1, 1]."""
    return pil_to_tensor(render(attrs, resolution))


def render_batch(attrs: list[FaceAttributes], resolution: int = RESOLUTION) -> torch.Tensor:
    """``[B, 3, resolution, resolution]`` in [-1, 1]."""
    return torch.stack([render_tensor(a, resolution) for a in attrs])


#: Seeds at or above this number are held out: the generator, encoder and classifier train only
#: on seeds below it, and the demo and tests evaluate on seeds above it.
HELD_OUT_START = 10_000_000


#: Default memory cap of a :class:`ToyFaces` cache (bytes): 20 000 cached 64 px images fit.
CACHE_BYTES = 512 * 2**20


class ToyFaces(torch.utils.data.Dataset):
    """``len`` images with seeds ``first_seed .. first_seed + len - 1``.

    Item ``i`` is ``(image [3, R, R] in [-1, 1], attributes [len(ATTRIBUTE_NAMES)] float32)``, or
    the image alone with ``with_attributes=False`` (what the encoder training engine reads).
    ``cache=True`` keeps rendered images in memory as uint8 (training revisits them often), up
    to ``cache_bytes`` (default :data:`CACHE_BYTES`); images past that are rendered again when
    revisited, so memory stays bounded whatever ``length`` is.
    """

    def __init__(self, length: int, first_seed: int = 0, resolution: int = RESOLUTION, cache: bool = False,
                 with_attributes: bool = True, cache_bytes: int | None = None):
        if length <= 0:
            raise ValueError(f"dataset length must be positive, got {length}")
        self.length, self.first_seed, self.resolution = length, first_seed, resolution
        self.with_attributes = with_attributes
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None
        per_item = 3 * resolution * resolution + 4 * len(ATTRIBUTE_NAMES) + 256  # pixels, labels, overhead
        self._cache_items = (CACHE_BYTES if cache_bytes is None else cache_bytes) // per_item

    def __len__(self) -> int:
        return self.length

    def attributes(self, index: int) -> FaceAttributes:
        return attributes_for_seed(self.first_seed + index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        index %= self.length
        if self._cache is not None and index in self._cache:
            u8, a = self._cache[index]
            image_t = u8.float() / 127.5 - 1
        else:
            attrs = self.attributes(index)
            image = render(attrs, self.resolution)
            a = attributes_to_tensor(attrs)
            if self._cache is not None and len(self._cache) < self._cache_items:
                self._cache[index] = (torch.from_numpy(np.array(image)).permute(2, 0, 1), a)
            image_t = pil_to_tensor(image)
        return (image_t, a) if self.with_attributes else image_t


def held_out(length: int, resolution: int = RESOLUTION) -> ToyFaces:
    """Images never seen in training (seeds from :data:`HELD_OUT_START`)."""
    return ToyFaces(length, HELD_OUT_START, resolution)


def iterate_batches(batch: int, seed: int = 0, resolution: int = RESOLUTION) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of fresh ``(images [B, 3, R, R], attributes [B, A])`` batches drawn from
    ``numpy.random.default_rng(seed)`` (every batch new: no fixed training set to overfit)."""
    rng = np.random.default_rng(seed)
    while True:
        attrs = [sample_attributes(rng) for _ in range(batch)]
        yield render_batch(attrs, resolution), attributes_to_tensor(attrs)
