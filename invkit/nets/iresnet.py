"""The ArcFace-style improved ResNet ("IResNet") shared by the Feature-Style encoder and ArcFace.

An :class:`IBasicBlock` is the pre-activation-like residual unit of insightface's ArcFace
backbones: ``BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN``, added to the input (or to a
``conv1x1 + BN`` projection of it on the first block of every stage) with no activation after
the addition. Every stage halves the resolution in its first block.

Module and parameter names follow insightface's ``iresnet.py`` (``bn1, conv1, bn2, prelu, conv2,
bn3, downsample.0, downsample.1``) so released state dicts load without renaming. Depths and widths
are configurable: IResNet-50 is depths ``(3, 4, 14, 3)`` with widths ``(64, 128, 256, 512)``;
tests use e.g. depths ``(1, 1, 1, 1)`` and narrow widths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

#: insightface's IResNet-50: blocks per stage and output channels per stage.
IRESNET50_DEPTHS = (3, 4, 14, 3)
IRESNET_WIDTHS = (64, 128, 256, 512)
STEM_WIDTH = 64
BN_EPS = 1e-5


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm always follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """One residual unit: ``[B, in_ch, H, W] -> [B, out_ch, H/stride, W/stride]``.

    The shortcut is the identity, or ``conv1x1(stride) + BN`` when the shape changes.
    Nothing follows the addition (no ReLU/PReLU), unlike a torchvision ResNet block.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def make_stage(in_ch: int, out_ch: int, depth: int, stride: int = 2) -> nn.Sequential:
    """``depth`` blocks; the first changes the width and applies ``stride``."""
    if depth < 1:
        raise ValueError(f"a stage needs at least one block, got depth {depth}")
    blocks = [IBasicBlock(in_ch, out_ch, stride)]
    blocks += [IBasicBlock(out_ch, out_ch) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def make_stem(in_ch: int = 3, width: int = STEM_WIDTH) -> nn.Sequential:
    """``conv3x3 (stride 1, no bias) -> BN -> PReLU``: ``[B, in_ch, H, W] -> [B, width, H, W]``.

    As a ``Sequential`` its parameters are named ``0.*, 1.*, 2.*``, the layout of the official
    Feature-Style encoder's ``conv`` module.
    """
    return nn.Sequential(conv3x3(in_ch, width), nn.BatchNorm2d(width, eps=BN_EPS), nn.PReLU(width))


class IResNet(nn.Module):
    """Stem + four stages, named as in insightface (``conv1, bn1, prelu, layer1..layer4``).

    ``forward_stages(x)`` returns the four stage outputs; for an input ``[B, 3, H, W]`` stage ``i``
    (0-based) is ``[B, widths[i], H / 2**(i+1), W / 2**(i+1)]``. Heads (ArcFace's embedding)
    are added by subclasses.
    """

    def __init__(
        self,
        depths: Sequence[int] = IRESNET50_DEPTHS,
        widths: Sequence[int] = IRESNET_WIDTHS,
        stem_width: int = STEM_WIDTH,
        in_channels: int = 3,
    ):
        super().__init__()
        if len(depths) != 4 or len(widths) != 4:
            raise ValueError(f"IResNet has 4 stages: got depths {list(depths)} and widths {list(widths)}")
        self.depths = tuple(int(d) for d in depths)
        self.widths = tuple(int(w) for w in widths)
        self.stem_width = int(stem_width)
        self.conv1 = conv3x3(in_channels, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width, eps=BN_EPS)
        self.prelu = nn.PReLU(stem_width)
        chans = (stem_width, *self.widths)
        for i in range(4):
            self.add_module(f"layer{i + 1}", make_stage(chans[i], chans[i + 1], self.depths[i]))

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.prelu(self.bn1(self.conv1(x)))
        outs = []
        for stage in self.stages():
            x = stage(x)
            outs.append(x)
        return outs


def infer_stages(state: Mapping[str, torch.Tensor], prefix_of) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Depths and widths of four IResNet stages from a state dict.

    ``prefix_of(i)`` gives the key prefix of stage ``i`` (0-based), e.g. ``"layer1."`` or
    ``"block_1."``. Depth = number of distinct block indices; width = the out-channels of the
    first block's ``conv1``.
    """
    depths, widths = [], []
    for i in range(4):
        prefix = prefix_of(i)
        idx = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
        if not idx or idx != set(range(len(idx))):
            raise KeyError(f"stage {i + 1}: no consecutive blocks under {prefix!r}")
        depths.append(len(idx))
        widths.append(int(state[f"{prefix}0.conv1.weight"].shape[0]))
    return tuple(depths), tuple(widths)
