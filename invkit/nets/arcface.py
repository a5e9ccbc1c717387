"""ArcFace face-identity network (insightface IResNet), for the multi-layer identity loss.

Reads insightface's released ``backbone.pth`` (e.g. ``ms1mv3_arcface_r50_fp16/backbone.pth``), a
plain state dict with keys ``conv1.weight, bn1.*, prelu.weight, layer{1..4}.{i}.*, bn2.*,
fc.{weight,bias}, features.*``. Architecture sizes (depths, widths, embedding size, the spatial
size the ``fc`` expects) are read from the tensor shapes, so IResNet-18/34/50/100 files all load.

Inputs are images ``[B, 3, H, W]`` in [-1, 1] (insightface normalises ``(x/255 - 0.5)/0.5``, i.e.
exactly this range), resized to the network's input size (112x112 for the released models).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import CheckpointError, CheckpointFile, load_frozen
from .iresnet import BN_EPS, IRESNET50_DEPTHS, IRESNET_WIDTHS, STEM_WIDTH, IResNet, infer_stages

ZOO_NAME = "arcface-r50"


class ArcFace(IResNet):
    """IResNet trunk + insightface's embedding head (``BN -> flatten -> fc -> BN1d``).

    Args:
        depths / widths / stem_width: the trunk (IResNet-50 by default).
        embedding_dim: size of the identity embedding (512 for the released models).
        input_size: the square input side; the ``fc`` reads ``widths[3] x (input_size/16)^2``
            values (112 -> 7x7).
    """

    def __init__(
        self,
        depths: Sequence[int] = IRESNET50_DEPTHS,
        widths: Sequence[int] = IRESNET_WIDTHS,
        stem_width: int = STEM_WIDTH,
        embedding_dim: int = 512,
        input_size: int = 112,
    ):
        super().__init__(depths, widths, stem_width)
        if input_size % 16:
            raise ValueError(f"ArcFace input_size must be a multiple of 16, got {input_size}")
        self.input_size = int(input_size)
        self.embedding_dim = int(embedding_dim)
        side = input_size // 16
        self.bn2 = nn.BatchNorm2d(self.widths[3], eps=BN_EPS)
        # insightface keeps a Dropout (p=0 at inference) between flatten and fc; no parameters.
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(self.widths[3] * side * side, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=BN_EPS)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, input_size, input_size]`` (bilinear, antialiased when
        shrinking; the official FS code used nearest-neighbour, which aliases)."""
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        return F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                             align_corners=False, antialias=True)

    def multi_level(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The 5 levels of the multi-layer identity loss for images in [-1, 1]: the four stage
        outputs (``[B, widths[i], s/2**(i+1), s/2**(i+1)]`` for ``s = input_size``) and the
        embedding ``[B, embedding_dim]``."""
        outs = self.forward_stages(self.resize(images))
        x = torch.flatten(self.bn2(outs[-1]), 1)
        emb = self.features(self.fc(self.dropout(x)))
        return [*outs, emb]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> identity embedding ``[B, embedding_dim]``
        (not L2-normalised; compare with cosine similarity)."""
        return self.multi_level(images)[-1]

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], source: str = "state dict") -> ArcFace:
        """Build with sizes read from ``state`` (insightface layout) and load it strictly."""
        state = _strip_prefix(state, "module.")
        try:
            depths, widths = infer_stages(state, lambda i: f"layer{i + 1}.")
            stem = int(state["conv1.weight"].shape[0])
            emb, fc_in = (int(s) for s in state["fc.weight"].shape)
        except KeyError as exc:
            raise ValueError(f"{source}: not an insightface IResNet state dict (missing {exc})") from None
        side = round((fc_in / widths[3]) ** 0.5)
        if side * side * widths[3] != fc_in:
            raise ValueError(f"{source}: fc input {fc_in} is not {widths[3]} x side^2")
        net = cls(depths, widths, stem, emb, side * 16)
        return load_frozen(net, state, source, "insightface")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ArcFace:
        """Load insightface's ``backbone.pth`` (``torch.load(weights_only=True)``), frozen and in
        eval mode. A missing file raises ``FileNotFoundError`` naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: ArcFace weights not found (insightface IResNet-50 backbone.pth; download it "
                f"and place it in INVKIT_WEIGHTS_DIR, see `invkit zoo` entry {ZOO_NAME!r})"
            )
        return cls.from_state_dict(load_plain_state_dict(path), str(path))

    @classmethod
    def from_zoo(cls, name: str = ZOO_NAME) -> ArcFace:
        """Load from the model zoo (``INVKIT_WEIGHTS_DIR`` / ``INVKIT_ZOO_ARCFACE_R50`` / cache)."""
        from ..io import zoo

        try:
            path = zoo.fetch(name)
        except zoo.ZooError as exc:
            raise FileNotFoundError(f"ArcFace weights unavailable: {exc}") from None
        return cls.from_file(path)


def load_plain_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``torch.save``d plain state dict (``weights_only=True``; never executes code), with a
    ``module.`` (DataParallel) prefix removed. Errors name the file."""
    obj = CheckpointFile(path).torch_object()
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a plain state dict of tensors")
    return _strip_prefix(obj, "module.")


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state
