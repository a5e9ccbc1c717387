"""Fréchet Inception Distance: Inception-v3 pool3 features and the Fréchet distance.

The network is the "FID Inception" of pytorch-fid (a port of the TensorFlow graph the original
FID used), rebuilt here in plain torch so no torchvision import is needed. Its module names
follow torchvision's ``Inception3`` so the published weight file
(``pt_inception-2015-12-05-6726825d.pth``, zoo entry ``inception-fid``) loads as is. It differs
from torchvision's ImageNet Inception in the places the TensorFlow graph does: 1008 classes,
average pools that do not count padding, and a max pool in the last block's pool branch.

Features: images ``[B, 3, H, W]`` in [-1, 1] are resized to 299x299 (bilinear) and run up to the
final average pool -> ``[B, 2048]``. FID between two sets is
``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` with unbiased covariances.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import CheckpointError, read_state_dict

FEATURE_DIM = 2048


# ---- the network -----------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, TensorFlow's) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool3(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool divides by the number of real (unpadded) inputs.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool3(x)),
        ], 1)


class InceptionB(nn.Module):
    """35 -> 17 reduction block."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool3(x))], 1)


class InceptionD(nn.Module):
    """17 -> 8 reduction block."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches. ``pool="avg"`` for Mixed_7b; the TensorFlow graph
    uses a max pool in Mixed_7c's pool branch (``pool="max"``)."""

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg_pool3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 up to pool3: ``[B, 3, H, W]`` in [-1, 1] -> ``[B, 2048]``.

    Build it with :func:`load_fid_inception` to get the real weights; a bare instance has random
    weights (useful only for tests of the plumbing). ``input_size`` is the side images are
    resized to: 299 for FID; smaller values (>= 75) only to keep tests cheap.
    """

    def __init__(self, input_size: int = 299) -> None:
        super().__init__()
        if input_size < 75:
            raise ValueError(f"Inception-v3 needs inputs of at least 75 px, got {input_size}")
        self.input_size = int(input_size)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")
        # The classifier is kept so the published state dict loads strictly; FID never uses it.
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class FIDWeightsError(RuntimeError):
    """The FID Inception weights are missing or do not fit; the message says what to do."""


def load_fid_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """The FID Inception with its published weights, in eval mode.

    ``path`` defaults to the zoo entry ``inception-fid`` (cache, ``INVKIT_WEIGHTS_DIR`` or
    download). Loaded with ``weights_only=True``; BatchNorm ``num_batches_tracked`` counters,
    absent from the published file, are not required.
    """
    from ..io import zoo

    if path is None:
        try:
            path = zoo.fetch("inception-fid")
        except zoo.ZooError as exc:
            raise FIDWeightsError(f"FID needs the Inception weights pt_inception-2015-12-05-6726825d.pth: {exc}") from None
    path = Path(path)
    if not path.is_file():
        raise FIDWeightsError(f"{path}: FID Inception weights not found")
    try:
        state = read_state_dict(path, "the FID Inception weights")
    except CheckpointError as exc:  # refused, corrupt, truncated: the same one-line message
        raise FIDWeightsError(f"{path}: not a readable torch state dict ({str(exc).removeprefix(f'{path}: ')})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    net = FIDInceptionV3()
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.startswith("AuxLogits.")]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise FIDWeightsError(
            f"{path}: not the FID Inception layout (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]})"
        )
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return net.to(device).eval().requires_grad_(False)


# ---- statistics and distance -------------------------------------------------------------------
class FeatureStatistics:
    """Running mean and covariance of feature vectors ``[B, D]``, in float64.

    Batch sizes do not matter: the sums are exact up to float64 rounding. ``covariance`` is the
    unbiased estimate (divides by ``n - 1``), as ``numpy.cov`` and pytorch-fid compute it.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.n = 0
        self._sum = np.zeros(0)
        self._outer = np.zeros((0, 0))
        self._shift: np.ndarray | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Add ``[B, D]`` features (D fixed by the first call when not given)."""
        f = torch.as_tensor(features).detach().cpu().double().numpy()
        if f.ndim != 2 or (self.dim is not None and f.shape[1] != self.dim):
            raise ValueError(f"features must be [B, {self.dim or 'D'}], got {list(f.shape)}")
        if len(f) == 0:
            return
        if self._shift is None:
            self.dim = f.shape[1]
            self._sum = np.zeros(self.dim, dtype=np.float64)
            self._outer = np.zeros((self.dim, self.dim), dtype=np.float64)
            # Centring on the first vector keeps the sum of outer products well conditioned.
            self._shift = f[0].copy()
        c = f - self._shift
        self.n += len(c)
        self._sum += c.sum(0)
        self._outer += c.T @ c

    @property
    def mean(self) -> np.ndarray:
        if self.n == 0:
            raise ValueError("no features accumulated")
        return self._sum / self.n + self._shift

    @property
    def covariance(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        m = self._sum / self.n
        return (self._outer - self.n * np.outer(m, m)) / (self.n - 1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``tr((S1 S2)^(1/2))`` comes from ``scipy.linalg.sqrtm``; when the product is singular (fewer
    samples than dimensions) ``eps`` is added to both diagonals, and a numerically complex root
    keeps its real part when the imaginary part is negligible.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: means {mu1.shape}/{mu2.shape}, covariances {s1.shape}/{s2.shape}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all() or any(issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught):
        offset = np.eye(s1.shape[0]) * eps
        root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(root.imag).max():.3g})")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


class FIDAccumulator:
    """FID between a reference set and a generated set, fed batch by batch.

    ``update_real(images)`` / ``update_fake(images)`` take ``[B, 3, H, W]`` in [-1, 1];
    :meth:`compute` returns the distance. Only the running statistics are kept, so memory does
    not grow with the number of images. ``net`` defaults to the FID Inception
    (:func:`load_fid_inception`); any module mapping images to ``[B, D]`` works.
    """

    def __init__(self, net: nn.Module | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        self.device = torch.device(device)
        self.net = net if net is not None else load_fid_inception(device=self.device)
        self.batch_size = batch_size
        self.real = FeatureStatistics()
        self.fake = FeatureStatistics()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.net(images[i:i + self.batch_size].to(self.device)).cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out)

    def update_real(self, images: torch.Tensor) -> None:
        self.real.update(self.features(images))

    def update_fake(self, images: torch.Tensor) -> None:
        self.fake.update(self.features(images))

    def compute(self) -> float:
        return frechet_distance(self.real.mean, self.real.covariance, self.fake.mean, self.fake.covariance)
