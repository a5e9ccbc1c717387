"""BiSeNet face parser (zllrunning/face-parsing.PyTorch), for the parsing loss and face masks.

Reads the released ``79999_iter.pth`` (19 CelebAMask-HQ classes, see :data:`CLASSES`) with its
exact key names and shapes: a ResNet-18 context path ``cp.resnet.*`` with attention refinement
modules ``cp.arm16/arm32``, heads ``cp.conv_head16/32`` and the global-context ``cp.conv_avg``;
the feature fusion module ``ffm.*``; and three output heads ``conv_out, conv_out16, conv_out32``.

About the spatial path: the released model has none of its own. Its authors replaced BiSeNet's
three-conv spatial path by the ResNet's 1/8-resolution feature (``layer2`` output, "res3b1"),
which the fusion module combines with the upsampled context; there are no ``sp.*`` weights in
the file, and this module follows it (:meth:`BiSeNet.spatial_path`).

Inputs are images in [-1, 1]; they are resized to ``input_size`` (512 for the released model)
and normalised with the ImageNet mean/std the parser was trained with.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import load_frozen
from .arcface import load_plain_state_dict

ZOO_NAME = "bisenet-face-parsing"

#: The 19 labels of the released parser, by index.
CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
           "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """``conv (no bias) -> BN -> ReLU``."""

    def __init__(self, in_ch: int, out_ch: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """torchvision-style ResNet basic block (ReLU after the addition)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if in_ch != out_ch or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + res)


class ResNet18(nn.Module):
    """ResNet-18 without its classifier: ``x -> (feat8, feat16, feat32)``, the outputs of
    ``layer2, layer3, layer4`` at 1/8, 1/16, 1/32 resolution with 128, 256, 512 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = (64, 64, 128, 256, 512)
        for i in range(4):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(chans[i], chans[i + 1], stride),
                                                           BasicBlock(chans[i + 1], chans[i + 1])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """ARM: ``ConvBNReLU`` then a channel attention from the global average (1x1 conv, BN,
    sigmoid) that rescales the features."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))
        return feat * atten


class ContextPath(nn.Module):
    """ResNet-18 + ARMs + global context, upsampled top-down (nearest) to 1/8 resolution.

    Returns ``(feat8, ctx8, ctx16)``: the ResNet 1/8 feature (used as the spatial path), the
    context at 1/8 (128 ch) and at 1/16 (128 ch).
    """

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        glob = self.conv_avg(feat32.mean((2, 3), keepdim=True))
        # Adding a 1x1 map broadcasts exactly like the original's nearest upsampling of it.
        sum32 = self.arm32(feat32) + glob
        up32 = self.conv_head32(F.interpolate(sum32, feat16.shape[2:], mode="nearest"))
        sum16 = self.arm16(feat16) + up32
        up16 = self.conv_head16(F.interpolate(sum16, feat8.shape[2:], mode="nearest"))
        return feat8, up16, up32


class FeatureFusion(nn.Module):
    """FFM: concat spatial and context features, ``ConvBNReLU`` 1x1, then a squeeze-excite style
    attention (global mean -> 1x1 -> ReLU -> 1x1 -> sigmoid) added back residually."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, ks=1, padding=0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * atten + feat


class OutputHead(nn.Module):
    """``ConvBNReLU`` 3x3 then a 1x1 classifier (no bias) to ``n_classes`` logits."""

    def __init__(self, in_ch: int, mid_ch: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """The released face parser.

    Args:
        n_classes: 19 for the released file.
        input_size: images are resized to this square size before parsing (512 released; the
            outputs are returned at that size). ``None`` parses at the given size.
    """

    def __init__(self, n_classes: int = 19, input_size: int | None = 512):
        super().__init__()
        self.n_classes = n_classes
        self.input_size = input_size
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)
        self.conv_out32 = OutputHead(128, 64, n_classes)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> clamp to [0, 1] -> resize to ``input_size`` (bilinear) -> ImageNet norm."""
        x = (images * 0.5 + 0.5).clamp(0, 1)
        if self.input_size is not None and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def spatial_path(self, feat8: torch.Tensor) -> torch.Tensor:
        """The released model's spatial path: the ResNet's 1/8 feature itself (see module doc)."""
        return feat8

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> logits ``(out, out16, out32)``, each
        ``[B, n_classes, S, S]`` (``S = input_size``): the fused head and the two auxiliary
        heads on the 1/8 and 1/16 context (all three are used by the multi-layer parsing loss)."""
        x = self.preprocess(images)
        size = x.shape[2:]
        feat8, ctx8, ctx16 = self.cp(x)
        fused = self.ffm(self.spatial_path(feat8), ctx8)
        outs = (self.conv_out(fused), self.conv_out16(ctx8), self.conv_out32(ctx16))
        return tuple(F.interpolate(o, size, mode="bilinear", align_corners=True) for o in outs)

    @torch.no_grad()
    def parse(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> label map ``[B, H, W]`` (int64 in ``0..n_classes-1``) at the
        input's own size."""
        logits = self(images)[0]
        logits = F.interpolate(logits, images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1)

    def face_mask(self, images: torch.Tensor, exclude: tuple[str, ...] = ("background", "neck", "neck_l",
                                                                        "cloth", "hat")) -> torch.Tensor:
        """A ``[B, 1, H, W]`` float mask (1 = face) of every class except ``exclude``."""
        labels = self.parse(images)
        keep = torch.tensor([c not in exclude for c in CLASSES[: self.n_classes]], device=labels.device)
        return keep[labels].unsqueeze(1).float()

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], source: str = "state dict",
                        input_size: int | None = 512) -> BiSeNet:
        """Build for ``state``'s class count and load it strictly; frozen, eval mode."""
        try:
            n_classes = int(state["conv_out.conv_out.weight"].shape[0])
        except KeyError:
            raise ValueError(f"{source}: not a face-parsing BiSeNet state dict (no conv_out.conv_out.weight)") from None
        net = cls(n_classes, input_size)
        return load_frozen(net, state, source, "BiSeNet")

    @classmethod
    def from_file(cls, path: str | os.PathLike, input_size: int | None = 512) -> BiSeNet:
        """Load ``79999_iter.pth`` (``weights_only=True``); a missing file raises
        ``FileNotFoundError`` naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: face-parsing weights not found (BiSeNet 79999_iter.pth from "
                f"zllrunning/face-parsing.PyTorch; place it in INVKIT_WEIGHTS_DIR, zoo entry {ZOO_NAME!r})"
            )
        return cls.from_state_dict(load_plain_state_dict(path), str(path), input_size)

    @classmethod
    def from_zoo(cls, name: str = ZOO_NAME, input_size: int | None = 512) -> BiSeNet:
        from ..io import zoo

        try:
            path = zoo.fetch(name)
        except zoo.ZooError as exc:
            raise FileNotFoundError(f"face-parsing weights unavailable: {exc}") from None
        return cls.from_file(path, input_size)
