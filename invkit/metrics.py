"""Reconstruction and identity metrics: MSE, PSNR, SSIM, LPIPS, ID similarity and video IC.

Conventions:

* The pixel functions (:func:`mse`, :func:`psnr`, :func:`ssim`) take images ``[B, C, H, W]`` on
  any scale and a ``data_range`` (max - min of that scale), exactly like scikit-image; they
  return one value per image ``[B]``.
* The evaluators (:class:`ReconstructionMetrics`) receive images in invkit's [-1, 1] range,
  clamp them (as saving to 8-bit would) and map them to [0, 1] (:func:`to_unit`) before the
  pixel metrics, so MSE is reported on the [0, 1] scale and PSNR uses ``data_range = 1``.
  (MSE on the [-1, 1] scale, as some papers report, is exactly 4x larger.)
* Means over a data set are accumulated image by image (:class:`MeanAccumulator`), so any batch
  size gives the same numbers, including a last batch that is smaller than the others.

Identity similarity is the cosine of face-recognition embeddings. The paper's network is ArcFace
(:class:`ArcFaceEmbedder`, weights from the zoo entry ``arcface-r50``). When those weights are not
available, :class:`DlibFaceDescriptor` offers dlib's 128-d ResNet face descriptor (shipped by
``face-recognition-models``): a *different network*, whose numbers are not comparable to ArcFace
ones; its results are labelled ``id_dlib`` instead of ``id``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

ALL_METRICS = ("mse", "psnr", "ssim", "lpips", "id", "fid")


# ---- pixel metrics ---------------------------------------------------------------------------
def to_unit(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` images -> ``[0, 1]``, clamped (out-of-range generator outputs count as the
    8-bit image they would be saved as)."""
    return images.clamp(-1, 1).add(1).mul(0.5)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"metrics need two [B, C, H, W] tensors of the same shape, got "
                         f"{list(x.shape)} and {list(y.shape)}")


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: ``[B, C, H, W] x2 -> [B]`` (on the inputs' own scale)."""
    _check_pair(x, y)
    return (x.double() - y.double()).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``10 log10(data_range^2 / MSE)`` -> ``[B]``.

    Identical images give ``inf`` (as scikit-image does)."""
    err = mse(x, y)
    return 10 * torch.log10(data_range**2 / err)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian ``[size]`` (float64) of Wang et al.'s SSIM window."""
    if size % 2 != 1:
        raise ValueError(f"SSIM window size must be odd, got {size}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``[N, 1, H, W]`` keeping only positions where the whole
    window fits (scikit-image filters with reflection and then crops the same border away)."""
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image -> ``[B]``.

    The standard definition: an 11x11 Gaussian window with sigma 1.5, population (not sample)
    statistics, constants ``(k1 R)^2`` and ``(k2 R)^2`` with ``R = data_range``, the SSIM map
    averaged over positions where the window lies inside the image and then over channels. This
    is scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R, channel_axis=-1)``. Computed in float64.
    """
    _check_pair(x, y)
    b, c, h, w = x.shape
    if min(h, w) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size} px, got {h}x{w}")
    g = gaussian_window(win_size, sigma).to(x.device)
    x = x.double().reshape(b * c, 1, h, w)
    y = y.double().reshape(b * c, 1, h, w)
    # One filter pass over the five moment images at once.
    moments = _blur_valid(torch.cat([x, y, x * x, y * y, x * y]), g).chunk(5)
    mx, my, mxx, myy, mxy = moments
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return smap.reshape(b, c, -1).mean(2).mean(1)


# ---- accumulators ----------------------------------------------------------------------------
@dataclass
class MeanAccumulator:
    """Running mean / std of per-image values of several metrics.

    ``update(name, values)`` takes a ``[B]`` tensor (or sequence) of per-image values; results
    do not depend on how the data were cut into batches. Infinite values (PSNR of identical
    images) are counted separately and left out of the mean.
    """

    sums: dict[str, float] = field(default_factory=dict)
    sq_sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    infinite: dict[str, int] = field(default_factory=dict)

    def update(self, name: str, values: torch.Tensor | Sequence[float]) -> None:
        v = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten()
        if torch.isnan(v).any():
            raise ValueError(f"metric {name!r} produced NaN")
        finite = v[torch.isfinite(v)]
        self.sums[name] = self.sums.get(name, 0.0) + float(finite.sum())
        self.sq_sums[name] = self.sq_sums.get(name, 0.0) + float((finite**2).sum())
        self.counts[name] = self.counts.get(name, 0) + int(finite.numel())
        self.infinite[name] = self.infinite.get(name, 0) + int(v.numel() - finite.numel())

    def mean(self, name: str) -> float:
        n = self.counts.get(name, 0)
        if n == 0:
            return math.inf if self.infinite.get(name) else math.nan
        return self.sums[name] / n

    def std(self, name: str) -> float:
        n = self.counts.get(name, 0)
        if n < 2:
            return math.nan
        m = self.sums[name] / n
        return math.sqrt(max(self.sq_sums[name] / n - m * m, 0.0) * n / (n - 1))

    def names(self) -> list[str]:
        return list(self.counts)

    def summary(self) -> dict[str, dict[str, float | int]]:
        """``{name: {"mean", "std", "n"}}`` (plus ``"n_infinite"`` when any value was inf)."""
        out: dict[str, dict[str, float | int]] = {}
        for name in self.counts:
            entry: dict[str, float | int] = {"mean": self.mean(name), "std": self.std(name), "n": self.counts[name]}
            if self.infinite.get(name):
                entry["n_infinite"] = self.infinite[name]
            out[name] = entry
        return out


# ---- identity embeddings ---------------------------------------------------------------------
@runtime_checkable
class IdentityEmbedder(Protocol):
    """A face-recognition network: ``embed(images [B, 3, H, W] in [-1, 1]) -> [B, D]``.

    ``metric_name`` is the key its similarities are reported under (``"id"`` for ArcFace only),
    ``label`` a human-readable description of the network."""

    metric_name: str
    label: str

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of ``[B, D]`` embeddings -> ``[B]``."""
    return F.cosine_similarity(a.double(), b.double(), dim=1)


class ArcFaceEmbedder:
    """ArcFace (insightface IResNet) embeddings, the paper's identity metric.

    Wraps :class:`invkit.nets.arcface.ArcFace`; the weights come from the zoo entry ``arcface-r50``
    (or ``path``). Inputs are FFHQ-aligned faces in [-1, 1]. ArcFace was trained on tight
    112x112 face crops, so the inner face region of the FFHQ crop is cut out first (rows
    35..223, columns 32..220 of a 256 px crop, scaled to the input size; the crop the pSp/e4e
    identity loss uses) and then resized by the network.
    """

    metric_name = "id"
    # (top, bottom, left, right) of the inner face as fractions of the FFHQ crop side.
    FACE_REGION = (35 / 256, 223 / 256, 32 / 256, 220 / 256)

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu", crop: bool = True) -> None:
        from .io import zoo
        from .nets.arcface import ArcFace

        if path is None:
            try:
                path = str(zoo.fetch("arcface-r50"))
            except Exception as exc:  # noqa: BLE001 - any failure to obtain the file reads the same
                raise FileNotFoundError(f"ArcFace weights unavailable (zoo entry 'arcface-r50'): {exc}") from None
        weights = path
        self.net = ArcFace.from_file(weights).to(device).eval()
        self.device = torch.device(device)
        self.crop = crop
        self.label = f"ArcFace ({weights})"

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float()
        if self.crop:
            h, w = x.shape[-2:]
            t, b, left, r = self.FACE_REGION
            x = x[:, :, round(t * h):round(b * h), round(left * w):round(r * w)]
        return self.net(x).float()


def _face_model_file(name: str) -> str:
    """Path of a ``face-recognition-models`` data file, found through the distribution's file
    list (no ``pkg_resources``, which setuptools >= 81 no longer ships)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("face-recognition-models")
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            "face-recognition-models is not installed; install the faces extra: pip install 'invkit[faces]'"
        ) from None
    for f in dist.files or []:
        if f.name == name:
            return str(dist.locate_file(f))
    raise RuntimeError(f"face-recognition-models does not contain {name}")


class DlibFaceDescriptor:
    """dlib's 128-d ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``).

    A DIFFERENT network from ArcFace: similarities from it are reported as ``id_dlib`` and are
    not comparable to the paper's ArcFace ID numbers. It exists so identity can be measured
    offline. Each image's face is located with dlib's HOG detector; when none is found (common
    for small or heavily edited crops) the box an FFHQ-aligned face occupies is used instead,
    so every image gets an embedding.
    """

    metric_name = "id_dlib"
    label = "dlib face descriptor (ResNet, 128-d; NOT ArcFace)"
    # Where the face box of an FFHQ-aligned crop lies, as fractions of the crop side (measured
    # with dlib's detector on aligned crops of skimage's astronaut photo).
    ALIGNED_BOX = (0.26, 0.37, 0.77, 0.88)

    def __init__(self, upsample: int = 0) -> None:
        import dlib

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(_face_model_file("shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(_face_model_file("dlib_face_recognition_resnet_model_v1.dat"))
        self.upsample = upsample

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from .io.images import to_uint8

        arrays = to_uint8(images)
        out = []
        for arr in arrays:
            arr = np.ascontiguousarray(arr)
            h, w = arr.shape[:2]
            dets = self.detector(arr, self.upsample)
            if len(dets):
                rect = max(dets, key=lambda r: r.area())
            else:
                x0, y0, x1, y1 = self.ALIGNED_BOX
                rect = self._dlib.rectangle(int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h))
            shape = self.shape(arr, rect)
            out.append(np.asarray(self.net.compute_face_descriptor(arr, shape), dtype=np.float32))
        return torch.from_numpy(np.stack(out))


def load_identity_embedder(
    which: str = "auto", device: str | torch.device = "cpu", path: str | None = None,
    notes: list[str] | None = None,
) -> IdentityEmbedder:
    """``"arcface"``, ``"dlib"`` or ``"auto"`` (ArcFace when its weights can be had, else the
    dlib descriptor). The fallback is said in one line: appended to ``notes`` when given (the
    commands print it and record it in their JSON report), else logged as a warning."""
    if which == "arcface":
        return ArcFaceEmbedder(path, device)
    if which == "dlib":
        return DlibFaceDescriptor()
    if which != "auto":
        raise ValueError(f"unknown identity network {which!r} (arcface, dlib, auto)")
    try:
        return ArcFaceEmbedder(path, device)
    except (ImportError, FileNotFoundError, ValueError) as exc:
        note = (f"ArcFace unavailable ({' '.join(str(exc).split())}); identity measured with dlib's "
                f"face descriptor instead (a different network, reported as 'id_dlib')")
        if notes is not None:
            notes.append(note)
        else:
            import logging

            logging.getLogger(__name__).warning("%s", note)
        return DlibFaceDescriptor()


@torch.no_grad()
def id_similarity(embedder: IdentityEmbedder, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the identity embeddings of ``x`` and ``y`` (``[B, 3, H, W]`` in
    [-1, 1]) -> ``[B]``."""
    _check_pair(x, y)
    return cosine(embedder.embed(x), embedder.embed(y))


class IdentityConsistency:
    """Video identity consistency (IC): the mean cosine similarity of every later frame's
    identity embedding to frame 0's. Streams: only frame 0's embedding is kept.

    ``update(embeddings [B, D])`` with frames in order; :meth:`value` is the mean over frames
    1..T-1 (frame 0 compared with itself is left out), NaN with fewer than two frames.
    """

    def __init__(self) -> None:
        self.reference: torch.Tensor | None = None
        self.acc = MeanAccumulator()

    def update(self, embeddings: torch.Tensor) -> None:
        e = embeddings.detach().cpu().double()
        if self.reference is None:
            self.reference = e[:1]
            e = e[1:]
        if len(e):
            self.acc.update("ic", cosine(e, self.reference.expand_as(e)))

    def value(self) -> float:
        return self.acc.mean("ic")

    @property
    def frames(self) -> int:
        return self.acc.counts.get("ic", 0) + (self.reference is not None)


def identity_consistency(embeddings: torch.Tensor) -> float:
    """IC of one video's per-frame embeddings ``[T, D]`` (see :class:`IdentityConsistency`)."""
    ic = IdentityConsistency()
    ic.update(embeddings)
    return ic.value()


# ---- the evaluator ---------------------------------------------------------------------------
def parse_metrics(text: str | Iterable[str]) -> list[str]:
    """``"mse,psnr,ssim"`` -> a checked list of metric names."""
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [n for n in names if n not in ALL_METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(ALL_METRICS)}")
    if not names:
        raise ValueError("no metrics requested")
    return list(dict.fromkeys(names))


class ReconstructionMetrics:
    """Accumulates paired-image metrics over a data set, batch by batch.

    Args:
        metrics: names among ``mse, psnr, ssim, lpips, id`` (``fid`` is a set-level metric, see
            :mod:`invkit.nets.fid`, and is ignored here).
        lpips: an object with ``forward(x, y) -> [B]`` on [-1, 1] images (``invkit.nets.lpips.LPIPS``);
            built with AlexNet on first use when None and ``"lpips"`` is requested.
        identity: an :class:`IdentityEmbedder`; ``load_identity_embedder("auto")`` when None and
            ``"id"`` is requested (its results appear under its ``metric_name``).
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("mse", "psnr", "ssim"),
        lpips: torch.nn.Module | None = None,
        identity: IdentityEmbedder | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.metrics = [m for m in parse_metrics(metrics) if m != "fid"]
        self.device = torch.device(device)
        self.lpips = lpips
        if "lpips" in self.metrics and self.lpips is None:
            from .nets.lpips import LPIPS

            self.lpips = LPIPS(net="alex").to(self.device).eval()
        self.identity = identity
        if "id" in self.metrics and self.identity is None:
            self.identity = load_identity_embedder("auto", self.device)
        self.acc = MeanAccumulator()

    @torch.no_grad()
    def update(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add one batch of pairs (``[B, 3, H, W]`` in [-1, 1]); returns the per-image values."""
        _check_pair(real, fake)
        real = real.to(self.device).float().clamp(-1, 1)
        fake = fake.to(self.device).float().clamp(-1, 1)
        values: dict[str, torch.Tensor] = {}
        ur, uf = to_unit(real), to_unit(fake)
        if "mse" in self.metrics:
            values["mse"] = mse(ur, uf)
        if "psnr" in self.metrics:
            values["psnr"] = psnr(ur, uf, 1.0)
        if "ssim" in self.metrics:
            values["ssim"] = ssim(ur, uf, 1.0)
        if "lpips" in self.metrics:
            values["lpips"] = self.lpips(real, fake).flatten()
        if "id" in self.metrics:
            values[self.identity.metric_name] = id_similarity(self.identity, real, fake)
        for name, v in values.items():
            self.acc.update(name, v)
        return values

    def summary(self) -> dict[str, dict[str, float | int]]:
        return self.acc.summary()
