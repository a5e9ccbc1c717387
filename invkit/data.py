"""Real training images: an image-folder dataset with a recipe's preprocessing, and a resumable,
shardable stream of batches.

* :class:`ImageFolder` reads every image under a folder (recursively), applies
  :class:`invkit.recipe.Preprocess` (centre-crop to the aspect, resize, pad into the frame) and
  returns ``[3, H, W]`` float tensors in [-1, 1]. Unreadable files are reported (one line naming
  the file) and skipped.
* :class:`ResumableSampler` is torch's :class:`~torch.utils.data.DistributedSampler` (seeded
  shuffling, one shard per rank) that can start an epoch part-way through, so a resumed run
  sees exactly the images the interrupted one would have seen.
* :class:`RealImageStream` turns any source of real images (a folder, a map-style
  :class:`~torch.utils.data.Dataset`, or any iterable of ``[3, H, W]`` / ``[B, 3, H, W]``
  tensors in [-1, 1], e.g. a procedural image generator) into an endless stream of batches
  whose position (:meth:`RealImageStream.state_dict`) is saved in training checkpoints.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from .io.images import IMAGE_SUFFIXES, ImageError, check_image_header, open_image
from .recipe import Preprocess

log = logging.getLogger(__name__)

#: Anything the training engine accepts as real images.
ImageSource = str | os.PathLike | Dataset | Iterable[torch.Tensor]


# ---- preprocessing ---------------------------------------------------------------------------
def preprocess_image(im: Image.Image, pre: Preprocess, resolution: int) -> torch.Tensor:
    """Apply ``pre`` to a PIL image; returns ``[3, H, W]`` float32 in [-1, 1].

    ``H, W`` is ``pre.pad_to`` when set, else ``pre.resize``, else ``(resolution, resolution)``.
    """
    im = im.convert("RGB")
    h, w = pre.resize or (resolution, resolution)
    if pre.fit == "crop":
        im = _center_crop_to_aspect(im, w / h)
    if im.size != (w, h):
        im = im.resize((w, h), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1
    if pre.pad_to is not None:
        x = pad_to_frame(x, pre.pad_to, pre.pad_value)
    return x


def _center_crop_to_aspect(im: Image.Image, aspect: float) -> Image.Image:
    """The largest centred crop of ``im`` with width / height == ``aspect``."""
    w, h = im.size
    if abs(w / h - aspect) < 1e-6:
        return im
    if w / h > aspect:  # too wide
        cw = max(1, round(h * aspect))
        left = (w - cw) // 2
        return im.crop((left, 0, left + cw, h))
    ch = max(1, round(w / aspect))
    top = (h - ch) // 2
    return im.crop((0, top, w, top + ch))


def pad_to_frame(x: torch.Tensor, frame: tuple[int, int], value: float = -1.0) -> torch.Tensor:
    """Centre ``x [..., h, w]`` in a ``frame = (H, W)`` canvas filled with ``value``."""
    h, w = x.shape[-2:]
    fh, fw = frame
    if fh < h or fw < w:
        raise ValueError(f"cannot pad a {h}x{w} image into a {fh}x{fw} frame")
    top, left = (fh - h) // 2, (fw - w) // 2
    return torch.nn.functional.pad(x, (left, fw - w - left, top, fh - h - top), value=value)


# ---- the folder dataset ----------------------------------------------------------------------
def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix; hidden entries skipped), sorted by
    relative path so that the order is the same on every machine."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    files = [
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


class ImageFolder(Dataset):
    """Every image under a folder, preprocessed for training.

    Files whose header cannot be read are dropped when the dataset is built; files that fail
    later (truncated data) are reported and replaced by the next readable file, so a sampler's
    indices stay valid. Every problem is reported once, as one line naming the file, through
    ``report`` (default: a ``logging`` warning).

    Args:
        folder: the image folder (searched recursively).
        preprocess: the recipe's preprocessing.
        resolution: the generator's resolution (the size when ``preprocess.resize`` is None).
        verify: open every file's header up front to drop unreadable ones.
        report: called with one message per bad file.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        preprocess: Preprocess,
        resolution: int,
        verify: bool = True,
        report: Callable[[str], None] | None = None,
    ):
        self.folder = Path(folder)
        self.preprocess = preprocess
        self.resolution = resolution
        self.report = report or log.warning
        self.bad: dict[str, str] = {}
        files = find_images(self.folder)
        if verify:
            good = []
            for path in files:
                problem = _header_problem(path)
                if problem is None:
                    good.append(path)
                else:
                    self._mark_bad(path, problem)
            files = good
        if not files:
            raise ValueError(f"{self.folder}: no readable images (looked for {', '.join(IMAGE_SUFFIXES)})")
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def _mark_bad(self, path: Path, problem: str) -> None:
        key = str(path)
        if key not in self.bad:
            self.bad[key] = problem
            self.report(f"{path}: skipped ({problem})")

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` preprocessed, or raise :class:`OSError`/:class:`ValueError`."""
        return preprocess_image(open_image(self.files[index]), self.preprocess, self.resolution)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self.files) <= index < len(self.files):
            raise IndexError(f"image index {index} out of range ({len(self.files)} images)")
        index %= len(self.files)
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            try:
                return self.load(i)
            except (OSError, ValueError) as exc:  # ImageError is a ValueError
                self._mark_bad(self.files[i], str(exc).removeprefix(f"{self.files[i]}: ") or type(exc).__name__)
        raise ValueError(f"{self.folder}: no readable images left")


def _header_problem(path: Path) -> str | None:
    try:
        check_image_header(path)
    except ImageError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return None


# ---- the resumable sampler -------------------------------------------------------------------
class ResumableSampler(DistributedSampler):
    """:class:`torch.utils.data.DistributedSampler` that can begin an epoch at an offset.

    The permutation of epoch ``e`` depends only on ``seed + e`` (torch's rule), each rank takes
    every ``num_replicas``-th index of it, and ``set_position(e, start)`` skips the first
    ``start`` indices of this rank's share. Works without ``torch.distributed`` when
    ``num_replicas`` and ``rank`` are given.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin at index ``start`` of this rank's share of epoch ``epoch``."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"sampler start {start} outside [0, {self.num_samples}]")
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


# ---- the stream of real batches --------------------------------------------------------------
class _ShardedIterable(IterableDataset):
    """Every ``world``-th item of an iterable (rank ``rank``), flattening batched items, with
    the first ``skip`` items of this rank's share dropped (resume)."""

    def __init__(self, source: Iterable[torch.Tensor], rank: int, world: int, skip: int):
        self.source, self.rank, self.world, self.skip = source, rank, world, skip

    def __iter__(self) -> Iterator[torch.Tensor]:
        items = _flatten(iter(self.source))
        mine = itertools.islice(items, self.rank, None, self.world)
        return itertools.islice(mine, self.skip, None)


def _flatten(items: Iterator[Any]) -> Iterator[torch.Tensor]:
    for item in items:
        if isinstance(item, (tuple, list)):  # (image, label) pairs: keep the image
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"real-image source yielded {type(item).__name__}, expected a tensor")
        if item.ndim == 4:
            yield from item
        elif item.ndim == 3:
            yield item
        else:
            raise ValueError(f"real-image source yielded a tensor of shape {list(item.shape)}, "
                             f"expected [3, H, W] or [B, 3, H, W]")


class RealImageStream:
    """An endless, resumable stream of real-image batches ``[batch, 3, H, W]`` in [-1, 1].

    The stream counts the batches it has handed out; :meth:`state_dict` gives
    ``{"epoch", "batches"}`` (data passes completed, batches into the current pass) and
    :meth:`load_state_dict` restores it, so the next batch after a resume is the one the
    interrupted run would have drawn. Data-loading workers may read ahead; only batches actually
    handed out count.

    Args:
        source: an :class:`ImageFolder`-style map-style dataset (exact, shuffled, sharded by
            :class:`ResumableSampler`) or any iterable of image tensors (taken in order; ranks
            interleave; it is iterated again when it ends; a resume replays and drops the
            consumed items, so it must yield the same sequence every time it is iterated).
        batch_size: real images per batch on this rank.
        seed: shuffling seed (map-style datasets).
        rank, world_size: this process's shard.
        num_workers: DataLoader worker processes.
        device: where batches are moved.
    """

    def __init__(self, source: Dataset | Iterable[torch.Tensor], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 device: str | torch.device = "cpu"):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.source = source
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        self.device = torch.device(device)
        self.map_style = isinstance(source, Dataset) and not isinstance(source, IterableDataset) \
            and hasattr(source, "__len__")
        self.epoch = 0
        self.batches = 0
        self._it: Iterator[torch.Tensor] | None = None
        if self.map_style:
            per_rank = len(source) // world_size
            if per_rank < batch_size:
                raise ValueError(
                    f"only {len(source)} real images for {world_size} process(es) x batch {batch_size}; "
                    f"need at least {batch_size * world_size}"
                )

    @property
    def batches_per_epoch(self) -> int | None:
        """Full batches in one pass over this rank's shard (None for iterables)."""
        if not self.map_style:
            return None
        return (len(self.source) // self.world_size) // self.batch_size

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches, "batch_size": self.batch_size,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("batch_size", self.batch_size) != self.batch_size or \
                state.get("world_size", self.world_size) != self.world_size:
            log.warning("resuming the real-image order with a different batch size or number of "
                        "processes: the data order will differ from the interrupted run")
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self._it = None

    def _open(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        if self.map_style:
            sampler = ResumableSampler(self.source, num_replicas=self.world_size, rank=self.rank,
                                       shuffle=True, seed=self.seed, drop_last=True)
            sampler.set_position(self.epoch, self.batches * self.batch_size)
            loader = DataLoader(self.source, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=False, generator=generator)
        else:
            dataset = _ShardedIterable(self.source, self.rank, self.world_size, self.batches * self.batch_size)
            # workers would each replay the whole iterable: keep iterables in-process
            loader = DataLoader(dataset, batch_size=self.batch_size, drop_last=True, num_workers=0)
        return iter(loader)

    def __iter__(self) -> RealImageStream:
        return self

    def __next__(self) -> torch.Tensor:
        for _attempt in range(2):
            if self._it is None:
                self._it = self._open()
            try:
                batch = next(self._it)
            except StopIteration:
                # a finished pass: start the next one (a reshuffle for map-style datasets; an
                # iterable is iterated again, which fails below if it was a one-shot iterator)
                self._it = None
                if self.batches == 0:
                    break
                self.epoch, self.batches = self.epoch + 1, 0
                continue
            self.batches += 1
            return batch.to(self.device, non_blocking=True).float()
        raise ValueError(f"the real-image source yielded no full batch of {self.batch_size} images"
                         + ("" if self.map_style else " (a one-shot iterator cannot be iterated twice)"))
