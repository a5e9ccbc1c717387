"""Image files <-> tensors, and picture grids.

Tensors are ``[B, C, H, W]`` float in [-1, 1] (the generators' raw range); files are 8-bit RGB.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An unreadable image; the message names the file."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


#: Default for :func:`max_image_pixels` (about 16k x 16k).
DEFAULT_MAX_PIXELS = 1 << 28
#: Images with a side shorter than this are refused (nothing to invert).
MIN_SIDE = 8
#: Images whose long side is more than this many times the short side are refused.
MAX_ASPECT = 8.0


def max_image_pixels() -> int:
    """The most pixels an image may declare: ``INVKIT_MAX_IMAGE_PIXELS`` or
    :data:`DEFAULT_MAX_PIXELS`. Larger images are refused from their header, before decoding
    (a 69-byte PNG can declare 20000 x 20000)."""
    text = os.environ.get("INVKIT_MAX_IMAGE_PIXELS", "")
    try:
        return int(text) if text.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ValueError(f"INVKIT_MAX_IMAGE_PIXELS={text!r} is not an integer") from None


def open_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """The one image reader of every command: the file as an 8-bit RGB PIL image.

    ``max_pixels`` tightens the pixel limit for one caller (``invkit ui`` reads uploads with
    its own, smaller one); the smaller of it and :func:`max_image_pixels` applies.

    Policy:

    * the declared size is checked before decoding: more than that many pixels,
      a side below :data:`MIN_SIDE`, or an aspect ratio beyond :data:`MAX_ASPECT` is refused;
    * the EXIF orientation is applied (as a camera or a viewer shows the photo);
    * 16-bit images (``I;16``, ``I``) are scaled from [0, 65535], float images (``F``, e.g.
      float TIFF) from [0, 1] (clipped; NaN or Inf refused); palette, grey, CMYK and alpha images
      are converted to RGB (alpha dropped); of a multi-frame file the first frame is read.

    Raises:
        ImageError: one line naming the file and the problem.
    """
    return _read(Path(path), decode=True, max_pixels=max_pixels)


def check_image_header(path: str | os.PathLike) -> None:
    """:func:`open_image`'s checks that need only the header (format, declared size, aspect):
    cheap, for scanning a folder. Raises :class:`ImageError`."""
    _read(Path(path), decode=False)


def _read(path: Path, decode: bool, max_pixels: int | None = None) -> Image.Image | None:
    limit = max_image_pixels()
    # Only the environment's limit can be raised with the environment variable.
    hint = "; set INVKIT_MAX_IMAGE_PIXELS to allow more" if max_pixels is None or max_pixels >= limit else ""
    limit = limit if max_pixels is None else min(limit, max_pixels)
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, limit)  # our check below decides
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check decides
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > limit:
                raise ImageError(f"{path}: declares {w}x{h} pixels, more than the limit of {limit} "
                                 f"(a decompression bomb?){hint}")
            if min(w, h) < MIN_SIDE or max(w, h) > MAX_ASPECT * min(w, h):
                raise ImageError(f"{path}: {w}x{h} pixels is too small or too elongated (sides of at "
                                 f"least {MIN_SIDE} px and an aspect ratio of at most {MAX_ASPECT:g}:1 are read)")
            if not decode:
                return None
            im.load()
            return _to_rgb8(ImageOps.exif_transpose(im), path)
    except ImageError:
        raise
    except Image.DecompressionBombError:  # PIL's own guard fired first (its limit is at least ours)
        raise ImageError(f"{path}: declares more pixels than the limit of {limit} (a decompression bomb?){hint}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            MemoryError, EOFError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc or type(exc).__name__})") from None


def _to_rgb8(im: Image.Image, path: Path) -> Image.Image:
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im).astype(np.float64) / 65535.0
    elif im.mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if not np.isfinite(arr).all():
            raise ImageError(f"{path}: float image holds NaN or Inf values")
    else:
        return im.convert("RGB")
    grey = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1), "RGB")


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image (with :func:`open_image`) as ``[3, H, W]`` in [-1, 1]; ``size`` (square int
    or ``(H, W)``) resizes with Lanczos. Raises :class:`ImageError` naming the file."""
    im = open_image(path)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if im.size != (w, h):
            im = im.resize((w, h), Image.LANCZOS)
    arr = np.asarray(im, dtype=np.float32)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1) / 127.5 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[B, C, H, W]`` or ``[C, H, W]`` in [-1, 1] -> ``uint8 [B, H, W, C]`` / ``[H, W, C]``."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def to_pil(image: torch.Tensor) -> Image.Image:
    """One ``[C, H, W]`` image in [-1, 1] as a PIL image (RGB, or L for one channel)."""
    arr = to_uint8(image)
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one ``[C, H, W]`` image (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        to_pil(image).save(tmp, format=_pil_format(path))
    return path


def _pil_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix.lstrip(".").upper() or "PNG")


def make_grid(images: torch.Tensor | Sequence[torch.Tensor], ncol: int | None = None, pad: int = 2) -> torch.Tensor:
    """Tile ``[N, C, H, W]`` images (all the same size) into one ``[C, H', W']`` image with
    ``ncol`` columns (default: all in one row) and a white ``pad``-pixel gutter."""
    if not isinstance(images, torch.Tensor):
        images = torch.stack(list(images))
    n, c, h, w = images.shape
    ncol = min(ncol or n, n)
    nrow = (n + ncol - 1) // ncol
    grid = images.new_ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
    return grid


def save_grid(images: torch.Tensor | Sequence[torch.Tensor], path: str | os.PathLike, ncol: int | None = None) -> Path:
    """:func:`make_grid` then :func:`save_image`."""
    return save_image(make_grid(images, ncol), path)


@dataclass
class ImageBatch:
    """One batch from :func:`iter_image_batches`.

    Attributes:
        images: ``[B, 3, H, W]`` in [-1, 1] (B may be 0 when every file of the chunk failed).
        indices: for each image, its index in the file list.
        attempted: how many files this chunk covered, readable or not (for progress bars).
    """

    images: torch.Tensor
    indices: list[int]
    attempted: int


def iter_image_batches(
    files: Sequence[Path],
    size: int | tuple[int, int] | None,
    batch: int,
    on_error: Callable[[Path, ImageError], None],
) -> Iterator[ImageBatch]:
    """Read ``files`` in chunks of ``batch``; an unreadable file goes to ``on_error`` and is
    skipped, so one bad image never stops a batch job."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        images, indices = [], []
        for offset, path in enumerate(chunk):
            try:
                images.append(load_image(path, size))
                indices.append(start + offset)
            except ImageError as exc:
                on_error(Path(path), exc)
        stacked = torch.stack(images) if images else torch.empty(0, 3, 0, 0)
        yield ImageBatch(stacked, indices, len(chunk))
