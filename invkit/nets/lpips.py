"""LPIPS perceptual distance (Zhang et al. 2018) in plain torch, without torchvision.

Reassembles what ``lpips.LPIPS(net=..., version="0.1")`` computes:

1. scale the inputs (in [-1, 1]) with LPIPS's fixed per-channel shift/scale;
2. run an ImageNet trunk (AlexNet or VGG16 ``features``) and tap 5 ReLU outputs;
3. unit-normalise every tap along channels, square the difference of the two images' taps;
4. weight the channels with the calibrated linear heads (1x1 convs, non-negative, no bias),
   average over space and sum over the 5 taps.

The calibrated heads are the files the installed ``lpips`` distribution ships
(``lpips/weights/v0.1/{alex,vgg}.pth``); they are located through the distribution's metadata,
never by importing ``lpips`` (which imports torchvision). The trunks' ImageNet weights are
torchvision's published state dicts (``features.*`` keys), fetched through the model zoo
(``alexnet-imagenet``, ``vgg16-imagenet``); ``trunk="random"`` builds randomly initialised
trunks for tests.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..io.checkpoint import read_state_dict

Net = Literal["alex", "vgg"]

#: Layer list of torchvision's ``features`` Sequential: ("C", out, kernel, stride, pad), ("R",),
#: ("M", kernel, stride). Indices match torchvision so its state dicts load key for key.
_ALEX_FEATURES = [("C", 64, 11, 4, 2), ("R",), ("M", 3, 2), ("C", 192, 5, 1, 2), ("R",), ("M", 3, 2),
                  ("C", 384, 3, 1, 1), ("R",), ("C", 256, 3, 1, 1), ("R",), ("C", 256, 3, 1, 1), ("R",)]
_VGG16_FEATURES: list[tuple] = []
for _block, (_width, _convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
    if _block:
        _VGG16_FEATURES.append(("M", 2, 2))
    for _ in range(_convs):
        _VGG16_FEATURES += [("C", _width, 3, 1, 1), ("R",)]

#: Per trunk: the layer list, the indices whose outputs LPIPS taps (relu1..relu5 for AlexNet,
#: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 for VGG16), the zoo entry of the ImageNet weights.
TRUNKS: dict[str, tuple[list[tuple], tuple[int, ...], str]] = {
    "alex": (_ALEX_FEATURES, (1, 4, 7, 9, 11), "alexnet-imagenet"),
    "vgg": (_VGG16_FEATURES, (3, 8, 15, 22, 29), "vgg16-imagenet"),
}

# LPIPS v0.1 input scaling (applied to [-1, 1] images).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class Trunk(nn.Module):
    """An ImageNet ``features`` stack with torchvision's module indices; ``forward`` returns the
    5 tapped activations ``[B, C_i, H_i, W_i]``."""

    def __init__(self, net: Net):
        super().__init__()
        layers, self.taps, _ = TRUNKS[net]
        mods: list[nn.Module] = []
        ch = 3
        for spec in layers[: max(self.taps) + 1]:
            if spec[0] == "C":
                mods.append(nn.Conv2d(ch, spec[1], spec[2], spec[3], spec[4]))
                ch = spec[1]
            elif spec[0] == "R":
                mods.append(nn.ReLU())
            else:
                mods.append(nn.MaxPool2d(spec[1], spec[2]))
        self.features = nn.Sequential(*mods)
        self.channels = tuple(self.features[i - 1].out_channels for i in self.taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs

    def load_torchvision(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the ``features.*`` entries of a torchvision AlexNet/VGG16 state dict (the
        classifier is ignored; LPIPS does not use it)."""
        wanted = set(self.state_dict())
        feats = {k: v for k, v in state.items() if k in wanted}
        missing = wanted - set(feats)
        if missing:
            raise ValueError(f"{source}: not a torchvision {type(self).__name__} state dict for this trunk "
                             f"(missing {sorted(missing)[:4]})")
        self.load_state_dict(feats)


def heads_file(net: Net, version: str = "0.1") -> Path:
    """The calibrated linear heads shipped in the installed ``lpips`` distribution, found from
    its metadata (or its import spec) without importing it."""
    rel = f"lpips/weights/v{version}/{net}.pth"
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("lpips")
        candidates.append(Path(str(dist.locate_file(rel))))
    except importlib.metadata.PackageNotFoundError:
        pass
    # find_spec of a top-level package locates it without executing its __init__.
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / f"weights/v{version}/{net}.pth")
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in candidates) or "no lpips distribution installed"
    raise FileNotFoundError(f"LPIPS linear heads {rel} not found ({where}); install the `lpips` package")


def load_heads(net: Net, version: str = "0.1", path: str | os.PathLike | None = None) -> list[torch.Tensor]:
    """The 5 calibrated channel weights ``[1, C_i, 1, 1]`` (keys ``lin{i}.model.1.weight``)."""
    path = Path(path) if path is not None else heads_file(net, version)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LPIPS linear heads not found")
    # The shipped files were saved from CUDA tensors: map to CPU.
    state = read_state_dict(path, "LPIPS linear heads")
    try:
        return [state[f"lin{i}.model.1.weight"].float() for i in range(5)]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: not an LPIPS linear-head file (expected lin0..lin4.model.1.weight)") from None


def load_trunk_weights(net: Net, path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """torchvision ImageNet weights for ``net``: ``path`` if given, else through the zoo
    (``INVKIT_WEIGHTS_DIR``, ``INVKIT_ZOO_ALEXNET_IMAGENET`` / ``..._VGG16_IMAGENET``, cache,
    download). A missing file raises ``FileNotFoundError`` naming it."""
    from ..io import zoo

    entry = zoo.get(TRUNKS[net][2])
    if path is None:
        try:
            path = zoo.fetch(entry.name)
        except zoo.ZooError as exc:
            raise FileNotFoundError(
                f"LPIPS {net} trunk needs {entry.file_name} (torchvision ImageNet weights, {entry.url}): {exc}. "
                f"Place the file in INVKIT_WEIGHTS_DIR, or build LPIPS(trunk='random') for tests"
            ) from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LPIPS {net} trunk weights ({entry.file_name}) not found")
    return read_state_dict(path, f"torchvision {net} ImageNet weights")


def normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit L2 norm along channels (LPIPS's ``normalize_tensor``, same epsilon placement)."""
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS distance between two image batches.

    Args:
        net: "alex" (the default of ``lpips.LPIPS`` and what the FS paper uses) or "vgg".
        trunk: "imagenet" (torchvision weights through the zoo), "random" (tests), or a path to
            a torchvision state dict.
        version: LPIPS heads version ("0.1"; "0.0" skips the input scaling, as in lpips).
        heads_path: use this linear-head file instead of the one the lpips distribution ships.

    The module is frozen (no parameter requires grad) and stays in eval mode; gradients still
    flow to the inputs.
    """

    def __init__(self, net: Net = "alex", trunk: str | os.PathLike = "imagenet", version: str = "0.1",
                 heads_path: str | os.PathLike | None = None):
        super().__init__()
        if net not in TRUNKS:
            raise ValueError(f"unknown LPIPS trunk {net!r}; choose from {sorted(TRUNKS)}")
        self.net_name = net
        self.version = version
        self.trunk = Trunk(net)
        if str(trunk) == "imagenet":
            self.trunk.load_torchvision(load_trunk_weights(net), TRUNKS[net][2])
        elif str(trunk) != "random":
            self.trunk.load_torchvision(load_trunk_weights(net, trunk), str(trunk))
        heads = load_heads(net, version, heads_path)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.trunk.channels)
        for lin, w in zip(self.lins, heads):
            if tuple(w.shape) != tuple(lin.weight.shape):
                raise ValueError(f"LPIPS head shape {tuple(w.shape)} does not fit the {net} trunk")
            lin.weight.data.copy_(w)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # A fixed metric: never switch to training behaviour.
        return super().train(False)

    @property
    def min_size(self) -> int:
        """The smallest input side the trunk accepts (AlexNet's pooling needs 31 px)."""
        return 31 if self.net_name == "alex" else 16

    def forward(self, x: torch.Tensor, y: torch.Tensor, per_layer: bool = False):
        """``x, y [B, 3, H, W]`` in [-1, 1] -> distance ``[B]`` (with ``per_layer``, also the
        list of the 5 layer contributions ``[B]``)."""
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs equal shapes, got {list(x.shape)} and {list(y.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"LPIPS-{self.net_name} needs images of at least {self.min_size} px, got {list(x.shape[-2:])}")
        if self.version == "0.1":
            x, y = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        b = x.shape[0]
        layers = []
        # One trunk pass over both batches (the trunk has no batch-dependent layers).
        for feat, lin in zip(self.trunk(torch.cat([x, y])), self.lins):
            a, c = normalize_channels(feat[:b]), normalize_channels(feat[b:])
            layers.append(lin((a - c) ** 2).mean((1, 2, 3)))
        total = torch.stack(layers).sum(0)
        return (total, layers) if per_layer else total
