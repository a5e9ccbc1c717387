"""The model side of ``invkit ui``: invert an image, edit, mix and export, without Gradio.

A :class:`Session` holds one generator, its encoder, the directions the page offers (one slider
each) and the sample images to pick from. Every page event calls one method here;
:mod:`invkit.ui.page` only lays the page out. What belongs to one visitor (an inverted image, an
encoder they uploaded) is returned as a value that the page keeps in that visitor's state, so one
session serves every browser tab and a visitor's bad file never changes what another one sees.

Editing reuses the inversion (:class:`invkit.editing.PreparedEdit`): ``F`` and ``G_K(w)`` are
kept, so a slider move runs the layers up to K once for ``w̃`` (``G_K(w̃)``, which Eq. 1 needs)
and the layers after K once, and only the layers after K when the sliders leave the rows before
them alone.

Images are tensors ``[1, 3, R, R]`` in [-1, 1] (``R`` the generator's resolution) unless said
otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import preprocess_image
from ..direction import Direction
from ..editing import PreparedEdit, fill_strengths, mapped_codes, mix
from ..encoder import Encoder
from ..generator import Generator, NoiseArg
from ..inversion import Inversion
from ..io.images import ImageError, open_image, save_image
from ..recipe import Preprocess

#: Default pixel limit of an uploaded image (a 40-megapixel photo); larger ones are refused from
#: their header, before anything is decoded.
MAX_PIXELS = 40_000_000
#: The most directions (sliders) one page shows.
MAX_SLIDERS = 32
#: File names of an export.
EDITED_FILE = "edited.png"
CODES_FILE = "codes.safetensors"


class UIError(ValueError):
    """What a visitor gave cannot be used (not an image, too large, an encoder of another
    generator, ...): one line, shown in the page; the server goes on."""


@dataclass
class Inverted:
    """One inverted image, and what every slider move reuses.

    Attributes:
        name: a label (a sample's name, an upload's file name).
        image: the encoder's input ``[1, 3, R, R]`` (after alignment and cropping).
        inversion: its codes ``(w [1, num_ws, w_dim], F [1, C, H, W])``.
        prepared: ``F``, ``G_K(w)`` and the generator's state at K, for fast edits.
        rec_w: ``G(w)``, the reconstruction from the W+ code alone.
        rec_wf: ``G(w, F)``, the Feature-Style reconstruction.
    """

    name: str
    image: torch.Tensor
    inversion: Inversion
    prepared: PreparedEdit
    rec_w: torch.Tensor
    rec_wf: torch.Tensor


class Session:
    """A generator, its encoder, directions and samples, served to every page.

    Args:
        generator: the generator (eval mode).
        encoder: a Feature-Style encoder made for ``generator`` (refused otherwise).
        directions: W or W+ directions of ``generator``; one without a ``strength`` gets two
            standard deviations of mapped codes along it (as ``invkit directions`` records).
        samples: ``(name, image [3, R, R] in [-1, 1])`` pairs to pick from.
        preprocess: how an upload becomes the encoder's input (the encoder's recipe: FFHQ
            alignment for face models, crop and resize); default: centre crop and resize.
        max_pixels: the pixel limit of an upload.
        noise_mode: the generator's noise for every synthesis ("const": reproducible).
        description: one line about the models, shown on the page.
    """

    def __init__(self, generator: Generator, encoder: Encoder, directions: Sequence[Direction] = (),
                 samples: Sequence[tuple[str, torch.Tensor]] = (), preprocess: Preprocess | None = None,
                 max_pixels: int = MAX_PIXELS, noise_mode: NoiseArg = "const", description: str = ""):
        self.G = generator
        self.encoder = self.check_encoder(encoder)
        self.preprocess = preprocess or Preprocess()
        self.max_pixels = max_pixels
        self.noise_mode = noise_mode
        self.description = description
        self.directions = self._checked_directions(directions)
        r = generator.resolution
        self.samples = []
        for name, image in samples:
            if tuple(image.shape) != (3, r, r):
                raise ValueError(f"sample {name!r} is {list(image.shape)}, not a [3, {r}, {r}] image")
            self.samples.append((name, image))
        self._aligner = None

    # ---- checks ---------------------------------------------------------------------------
    def check_encoder(self, encoder: Encoder) -> Encoder:
        """``encoder`` if it was made for this generator, else a :class:`UIError` saying so."""
        fp = self.G.fingerprint()
        if encoder.generator_fingerprint != fp:
            raise UIError(f"the encoder was trained for generator {encoder.generator_fingerprint}, not {fp}: "
                          "pick the encoder made for this generator")
        return encoder

    def load_encoder_file(self, path: str | os.PathLike, name: str | None = None) -> Encoder:
        """An encoder file a visitor gave (invkit ``.safetensors`` or the official state dict),
        read by :func:`invkit.fs_encoder.load_encoder` with this generator, whose fingerprint
        check refuses an encoder of another generator.

        Raises:
            UIError: one line naming the file (``name``): unreadable, not an encoder, or made
                for another generator.
        """
        from ..fs_encoder import load_encoder

        name = name or Path(path).name
        try:
            encoder = load_encoder(path, self.G, device=self.G.w_avg.device)
        except (ValueError, OSError, RuntimeError, KeyError) as exc:  # CheckpointError is a ValueError
            text = " ".join(str(exc).split()).replace(str(path), name)
            raise UIError(text if name in text else f"{name}: {text}") from None
        return self.check_encoder(encoder)

    def _checked_directions(self, directions: Sequence[Direction]) -> dict[str, Direction]:
        if len(directions) > MAX_SLIDERS:
            raise ValueError(f"{len(directions)} directions: the page shows at most {MAX_SLIDERS} (pass fewer)")
        out: dict[str, Direction] = {}
        for d in directions:
            d.check(self.G)
            if d.space == "z":
                raise ValueError(f"direction {d.name!r} lives in Z; the page edits W+ codes (use a W or W+ direction)")
            name, i = d.name, 2
            while name in out:  # two files may carry the same name
                name, i = f"{d.name} ({i})", i + 1
            out[name] = d
        if any(d.strength is None for d in out.values()):
            fill_strengths(list(out.values()), mapped_codes(self.G, 1000))
        return out

    # ---- images ---------------------------------------------------------------------------
    def read_image(self, path: str | os.PathLike, name: str | None = None) -> torch.Tensor:
        """An image file as the encoder's input ``[1, 3, R, R]``: read by invkit's guarded reader
        (decompression bombs, huge, tiny or unreadable files refused from the header), aligned
        when the encoder's recipe expects aligned faces, centre-cropped and resized.

        Raises:
            UIError: one line naming the file (``name``, e.g. the uploaded file's own name).
        """
        name = name or Path(path).name
        try:
            im = open_image(path, max_pixels=self.max_pixels)
        except ImageError as exc:  # the message names the server's temporary path: say the visitor's name
            raise UIError(str(exc).replace(str(path), name)) from None
        if self.preprocess.align == "ffhq":
            im = self._align(im, name)
        x = preprocess_image(im, self.preprocess, self.G.resolution)
        r = self.G.resolution
        if tuple(x.shape) != (3, r, r):
            raise UIError(f"{name}: the recipe's preprocessing gives {list(x.shape)}, not [3, {r}, {r}]")
        return x[None]

    def _align(self, im, name: str):
        """The FFHQ crop of the largest face (dlib landmarks, invkit.align)."""
        import numpy as np
        from PIL import Image

        from ..align import FaceAligner, NoFaceError

        try:
            if self._aligner is None:
                self._aligner = FaceAligner(size=self.G.resolution)
            crop = self._aligner(np.asarray(im)).crop
        except NoFaceError:
            raise UIError(f"{name}: no face found (this encoder reads FFHQ-aligned faces)") from None
        except (ImportError, FileNotFoundError) as exc:
            raise UIError(f"face alignment is unavailable ({exc}); install invkit[faces]") from None
        return Image.fromarray(crop)

    # ---- inversion, editing, mixing ---------------------------------------------------------
    @torch.no_grad()
    def invert(self, image: torch.Tensor, name: str, encoder: Encoder | None = None) -> Inverted:
        """Encode ``image [1, 3, R, R]`` (or ``[3, R, R]``) with ``encoder`` (default: the
        session's) and render ``G(w)`` and ``G(w, F)``."""
        image = image[None] if image.ndim == 3 else image
        inv = (encoder or self.encoder).invert(image.to(self.G.w_avg.device), [name])
        prepared = PreparedEdit(self.G, inv, self.noise_mode)
        rec_w = self.G.synthesize(inv.ws, prepared.noise)
        rec_wf = self.G.synthesize_after(prepared.state, inv.features, inv.ws, prepared.noise)
        return Inverted(name, image, inv, prepared, rec_w, rec_wf)

    def invert_file(self, path: str | os.PathLike, name: str | None = None,
                    encoder: Encoder | None = None) -> Inverted:
        """:meth:`read_image` then :meth:`invert`."""
        name = name or Path(path).name
        return self.invert(self.read_image(path, name), name, encoder)

    def invert_sample(self, index: int, encoder: Encoder | None = None) -> Inverted:
        """Invert sample ``index``."""
        if not 0 <= index < len(self.samples):
            raise UIError(f"no sample {index} (there are {len(self.samples)})")
        name, image = self.samples[index]
        return self.invert(image, name, encoder)

    def edited_codes(self, inverted: Inverted, strengths: Mapping[str, float]) -> torch.Tensor:
        """``w̃ = w + Σ α_i d_i`` ``[1, num_ws, w_dim]`` for ``strengths`` {direction name: α};
        names not in the session are refused, zero strengths skipped."""
        ws = inverted.inversion.ws
        for name, alpha in strengths.items():
            if name not in self.directions:
                raise UIError(f"no direction {name!r} (the page has: {', '.join(self.directions) or 'none'})")
            if alpha:
                ws = self.directions[name].apply(ws, float(alpha))
        return ws

    @torch.no_grad()
    def edit(self, inverted: Inverted, strengths: Mapping[str, float]) -> torch.Tensor:
        """The Eq. 1 edit ``G(w̃, F̃)`` for ``strengths`` {direction name: α} (all directions at
        once: ``w̃`` adds each ``α_i d_i``); equals ``G(w, F)`` when every α is 0."""
        return inverted.prepared.render(self.edited_codes(inverted, strengths))

    @torch.no_grad()
    def mix(self, a: Inverted, b: Inverted) -> tuple[torch.Tensor, torch.Tensor]:
        """Style mixing: ``(G(w_B, F_A), G(w_A, F_B))``: A's structure with B's styles after K,
        and the other way round."""
        return mix(self.G, a.inversion, b.inversion, a.prepared.noise)

    # ---- export ---------------------------------------------------------------------------
    @torch.no_grad()
    def export(self, inverted: Inverted, strengths: Mapping[str, float],
               folder: str | os.PathLike) -> tuple[Path, Path]:
        """Write the edited image (``edited.png``, at the generator's resolution) and its codes
        (``codes.safetensors``: an :class:`~invkit.inversion.Inversion` of ``(w̃, F̃)``, so
        ``G.synthesize_from(k, F̃, w̃)`` renders the edited image; at zero strengths it is the
        inversion itself) into ``folder`` (created). Returns both paths."""
        ws_edit = self.edited_codes(inverted, strengths)
        feats, state = inverted.prepared.codes(ws_edit)
        image = self.G.synthesize_after(state, feats, ws_edit, inverted.prepared.noise)
        src = inverted.inversion
        used = {k: float(v) for k, v in strengths.items() if v}
        meta = {**src.meta, "source": inverted.name, "edit": used, "edit_rule": "paper Eq. 1 (invkit ui)"}
        codes = Inversion(ws_edit.cpu(), feats.cpu(), src.k, src.generator_fingerprint, [_stem(inverted.name)], meta)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return save_image(image[0], folder / EDITED_FILE), codes.save(folder / CODES_FILE)


def _stem(name: str) -> str:
    """A file-name-safe label for an image name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem).strip("_") or "image"
