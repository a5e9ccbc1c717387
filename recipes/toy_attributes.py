"""A small CNN that reads the toy domain's attributes back from an image, and a perceptual
distance built on its features.

Two jobs in the demo:

* **judge edits**: after moving a code along the "glasses" direction, does the image now show
  glasses, and did smile / pose / colours stay put? The net is trained only on rendered images
  with their exact labels (seeds below :data:`toy_domain.HELD_OUT_START`).
* **a perceptual distance**: LPIPS needs ImageNet-trained AlexNet/VGG trunks, which cannot be
  downloaded here. :func:`feature_distance` applies the LPIPS formula (unit-normalise each
  feature vector over channels, squared difference, spatial mean, sum over layers) to this net's
  conv features with *uniform* channel weights. It is labelled "toy-LPIPS" wherever it is printed:
  it is a perceptual distance for this domain, not the calibrated LPIPS of Zhang et al.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..io.tensorfile import load as load_tensors
from ..io.tensorfile import save as save_tensors
from . import toy_domain

KIND = "toy_attribute_net"
#: Regression targets in output order; hues are predicted as (cos, sin) pairs.
REGRESSED = ("smile", "yaw", "x", "y", "size", "hair")
HUES = ("skin_hue", "bg_hue")


class AttributeNet(nn.Module):
    """``images [B, 3, 64, 64]`` in [-1, 1] -> raw outputs ``[B, 1 + len(REGRESSED) + 2 * len(HUES)]``
    (glasses logit, regressed values, hue cos/sin pairs). :meth:`predict` decodes them."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(w, 2 * w, 3, padding=1), nn.LeakyReLU(0.2),
                          nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.LeakyReLU(0.2),
                          nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.LeakyReLU(0.2)),
        ])
        # position matters (x, y), so the head sees an 8x8 map rather than a global average
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 64, 64), nn.LeakyReLU(0.2),
                                  nn.Linear(64, 1 + len(REGRESSED) + 2 * len(HUES)))
        self.width = width

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output: ``[B, w, 64, 64], [B, 2w, 32, 32], [B, 4w, 16, 16], [B, 4w, 8, 8]``."""
        feats, x = [], images
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)[-1])

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded predictions, each ``[B]``: ``glasses`` a probability in [0, 1], the regressed
        attributes in their native ranges, hues in [0, 1)."""
        out = self(images)
        pred = {"glasses": torch.sigmoid(out[:, 0])}
        for i, name in enumerate(REGRESSED):
            pred[name] = out[:, 1 + i]
        base = 1 + len(REGRESSED)
        for i, name in enumerate(HUES):
            c, s = out[:, base + 2 * i], out[:, base + 2 * i + 1]
            pred[name] = (torch.atan2(s, c) / (2 * math.pi)) % 1.0
        return pred


def _loss(net: AttributeNet, images: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    names = toy_domain.ATTRIBUTE_NAMES
    out = net(images)
    loss = F.binary_cross_entropy_with_logits(out[:, 0], attrs[:, names.index("glasses")])
    for i, name in enumerate(REGRESSED):
        loss = loss + F.mse_loss(out[:, 1 + i], attrs[:, names.index(name)])
    base = 1 + len(REGRESSED)
    for i, name in enumerate(HUES):
        angle = attrs[:, names.index(name)] * 2 * math.pi
        target = torch.stack([angle.cos(), angle.sin()], 1)
        loss = loss + F.mse_loss(out[:, base + 2 * i: base + 2 * i + 2], target)
    return loss


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur and noise, so the net also reads the softer images a small GAN produces."""
    b = images.shape[0]
    blurred = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="bilinear", align_corners=False)
    pick = (torch.rand(b, 1, 1, 1, generator=gen) < 0.3).float()
    images = pick * blurred + (1 - pick) * images
    return images + 0.03 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(images.shape, generator=gen)


def train_attribute_net(steps: int = 3000, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                        log=print) -> AttributeNet:
    """Train on fresh rendered batches (seeds from ``numpy.random.default_rng(seed)``, all below
    the held-out range since they are drawn by ``sample_attributes``, not by seed number)."""
    torch.manual_seed(seed)
    net = AttributeNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    batches = toy_domain.iterate_batches(batch, seed=seed + 1)
    t0 = time.time()
    for step in range(steps):
        images, attrs = next(batches)
        loss = _loss(net, _augment(images, gen), attrs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"attribute net step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    return net.eval().requires_grad_(False)


def save_attribute_net(net: AttributeNet, path: str | os.PathLike) -> Path:
    return save_tensors(path, net.state_dict(), {"kind": KIND, "width": net.width,
                                                 "attributes": ["glasses", *REGRESSED, *HUES]})


def load_attribute_net(path: str | os.PathLike) -> AttributeNet:
    tensors, meta = load_tensors(path, kind=KIND)
    net = AttributeNet(meta["width"])
    net.load_state_dict(tensors)
    return net.eval().requires_grad_(False)


def feature_distance(net: AttributeNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """"toy-LPIPS": the LPIPS formula on :class:`AttributeNet` features with uniform weights.

    ``a, b [B, 3, 64, 64]`` in [-1, 1] -> ``[B]`` (0 for identical images)."""
    total = a.new_zeros(a.shape[0])
    for fa, fb in zip(net.features(a), net.features(b)):
        fa = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
        fb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + (fa - fb).square().sum(1).mean(dim=(1, 2))
    return total


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m invkit.recipes.toy_attributes",
                                description="train the toy-domain attribute net")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = train_attribute_net(args.steps, log=lambda m: print(m, flush=True))
    print(f"saved {save_attribute_net(net, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
