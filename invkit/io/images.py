"""Image files <-> tensors, and picture grids.

Tensors are ``[B, C, H, W]`` float in [-1, 1] (the generators' raw range); files are 8-bit RGB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

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


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image as ``[3, H, W]`` in [-1, 1]; ``size`` (square int or ``(H, W)``) resizes
    with Lanczos. Raises :class:`ImageError` naming the file when it cannot be read."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None:
                h, w = (size, size) if isinstance(size, int) else size
                if im.size != (w, h):
                    im = im.resize((w, h), Image.LANCZOS)
            arr = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from None
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


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
