"""The Feature-Style encoder (Yao et al. 2022): an image -> ``(w in W+, F at layer K)``.

Architecture (parameter names follow the official release, so ``143_enc.pth`` loads as is)::

    x [B, 3, R, R] in [-1, 1]
      -> resize to 256 (R = 256 * 2**n: n bilinear halvings, as the official code; else one
         antialiased bilinear resize)
      -> conv: conv3x3 3->64 + BN + PReLU                                [B, 64, 256, 256]
      -> block_1 .. block_4: IResNet stages (stride 2 each)              64/128/256/512 ch at
                                                                          128/64/32/16 px
    latent branch: each stage output -> adaptive avg-pool 3x3 -> concat on channels
                   (960 x 3 x 3 = 8640 for IResNet-50) -> num_ws independent Linear(8640, w_dim)
                   -> + the generator's w_avg                             ws [B, num_ws, w_dim]
    feature branch (content_layer): block_3 output -> BN -> conv3x3 (no bias) -> BN -> PReLU
                   -> conv3x3 stride s (no bias) -> BN                    F [B, C, H, W]

The official code adds the generator's average latent to the heads' output outside the network
(``w = enc(x) + latent_avg``, with pSp's ``latent_avg``, the FFHQ generator's ``dlatent_avg``); here
it is a buffer ``w_avg`` of the encoder taken from the generator, so ``encode`` returns W+ codes
directly. Inputs are in [-1, 1], as in the official training (no other normalisation).

Feature branch for any layer K with shape ``(C, H, W)``: the first conv maps the stage-3 width to
``C`` (official: 256 -> 512) and the second keeps ``C``. The stage-3 map is ``input_size / 8`` px
(32 at 256). When layer K is at least twice that side (a 16x16 K with a 64 px input), the branch
reads stage 2 instead (``input_size / 4`` px), so F is computed at its own resolution rather than
upsampled from a coarser map; the official layout never meets that case. The second conv has stride 2 when the target is at most half that size (StyleGAN2
K = 5 at 16x16: exactly the official stride-2 branch, no resize), else stride 1; any remaining
size difference (StyleGAN3 layers such as 36x36 or 52x52, an 8x8 target, a non-square layer) is
closed by a bilinear resize of the branch output (antialiased when shrinking). ``feature_stride``
overrides the choice.

A fresh encoder built by :meth:`FeatureStyleEncoder.for_generator` starts its feature branch at the
scale of the activation it replaces: the last BatchNorm's affine weight and bias are set to layer K's
per-channel std and mean (the official code starts at 1 and 0, i.e. unit-variance F). Without this,
a generator whose layer K is far from unit scale (the 64 px toy generator's ``b8.conv1``: std 0.12)
gets an F about 8x too large, which the paper's weak feature term (0.01) and a 5e-4 learning rate
cannot shrink in a short run: G(w, F) then reconstructs worse than G(w).

``feature_branch=False`` builds the paper's ablation B, a W+-only encoder: the same backbone and
latent heads without ``content_layer`` (no parameters for it); :meth:`encode` then returns
``(ws, None)`` and its inversions carry no F (``G(w, F)`` is ``G(w)``). The recipe switch is
``encoder.feature_branch``; files record it in their config (files without it have the branch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import Encoder
from .generator import Generator
from .io import sizecheck, tensorfile
from .io.checkpoint import CheckpointError, CheckpointFile
from .nets.iresnet import (
    BN_EPS,
    IRESNET50_DEPTHS,
    IRESNET_WIDTHS,
    STEM_WIDTH,
    infer_stages,
    make_stage,
    make_stem,
)

ENCODER_KIND = "encoder"
#: The official code's default layer (StyleGAN2 at 1024 px: the 16x16 second conv, 512x16x16).
OFFICIAL_K = 5
OFFICIAL_INPUT_SIZE = 256
#: Largest encoder input side accepted (a file claiming more is refused before anything is
#: allocated: the side sizes every activation, not any stored tensor).
MAX_INPUT_SIZE = 4096


class FeatureStyleEncoder(Encoder):
    """E(x) -> (ws, F) for one generator.

    Args:
        num_ws, w_dim: the generator's W+ shape.
        k: the generator layer F replaces; ``feature_shape`` is that layer's ``(C, H, W)``.
        w_avg: the generator's average w, ``[w_dim]`` (or ``[num_ws, w_dim]``), added to the heads.
        generator_fingerprint: :meth:`Generator.fingerprint` of that generator.
        depths, widths, stem_width: the IResNet backbone (IResNet-50 by default).
        input_size: side the images are resized to (256 in the paper).
        pool_size: adaptive pooling side of the latent branch (3 in the paper).
        feature_stride: stride of the feature branch's second conv (None: chosen, see module doc).
        feature_stage: the backbone stage the feature branch reads, 3 (the official choice) or 2
            (None: 3, unless layer K is at least twice the side of stage 3's map, as for a
            16x16 K with a 64 px input; then stage 2, whose map has K's side).
        feature_branch: False builds the W+-only ablation (no ``content_layer``, F is None).
    """

    def __init__(
        self,
        num_ws: int,
        w_dim: int,
        k: int,
        feature_shape: Sequence[int],
        w_avg: torch.Tensor | None = None,
        generator_fingerprint: str = "",
        depths: Sequence[int] = IRESNET50_DEPTHS,
        widths: Sequence[int] = IRESNET_WIDTHS,
        stem_width: int = STEM_WIDTH,
        input_size: int = OFFICIAL_INPUT_SIZE,
        pool_size: int = 3,
        feature_stride: int | None = None,
        feature_stage: int | None = None,
        feature_branch: bool = True,
    ):
        super().__init__()
        if len(depths) != 4 or len(widths) != 4:
            raise ValueError(f"the backbone has 4 stages: got depths {list(depths)}, widths {list(widths)}")
        if input_size % 8 or not 8 <= input_size <= MAX_INPUT_SIZE:
            raise ValueError(f"input_size must be a multiple of 8 in 8..{MAX_INPUT_SIZE}, got {input_size}")
        self.num_ws, self.w_dim, self.k = int(num_ws), int(w_dim), int(k)
        self.feature_shape = tuple(int(s) for s in feature_shape)
        if len(self.feature_shape) != 3:
            raise ValueError(f"feature_shape must be (C, H, W), got {feature_shape}")
        self.generator_fingerprint = generator_fingerprint
        self.depths = tuple(int(d) for d in depths)
        self.widths = tuple(int(w) for w in widths)
        self.stem_width = int(stem_width)
        self.input_size = int(input_size)
        self.pool_size = int(pool_size)

        self.conv = make_stem(3, stem_width)
        chans = (self.stem_width, *self.widths)
        for i in range(4):
            self.add_module(f"block_{i + 1}", make_stage(chans[i], chans[i + 1], self.depths[i]))

        c, h, w = self.feature_shape
        if feature_stage is None:
            feature_stage = 2 if max(h, w) >= 2 * (self.input_size // 8) else 3
        if feature_stage not in (2, 3):
            raise ValueError(f"feature_stage must be 2 or 3, got {feature_stage}")
        self.feature_stage = int(feature_stage)
        src = self.input_size // 2 ** self.feature_stage
        self.feature_stride = int(feature_stride or (2 if 2 * max(h, w) <= src else 1))
        mid = self.widths[self.feature_stage - 1]
        self.feature_branch = bool(feature_branch)
        self.content_layer = nn.Sequential(
            nn.BatchNorm2d(mid, eps=BN_EPS),
            nn.Conv2d(mid, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c, eps=BN_EPS),
            nn.PReLU(c),
            nn.Conv2d(c, c, 3, self.feature_stride, 1, bias=False),
            nn.BatchNorm2d(c, eps=BN_EPS),
        ) if self.feature_branch else None
        self.avg_pool = nn.AdaptiveAvgPool2d(self.pool_size)
        in_features = sum(self.widths) * self.pool_size ** 2
        self.styles = nn.ModuleList(nn.Linear(in_features, self.w_dim) for _ in range(self.num_ws))
        if w_avg is None:
            w_avg = torch.zeros(self.w_dim)
        w_avg = w_avg.detach().float().clone()
        if w_avg.shape not in ((self.w_dim,), (self.num_ws, self.w_dim)):
            raise ValueError(f"w_avg must be [{self.w_dim}] or [{self.num_ws}, {self.w_dim}], got {list(w_avg.shape)}")
        self.register_buffer("w_avg", w_avg)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def for_generator(cls, generator: Generator, k: int, **kwargs) -> FeatureStyleEncoder:
        """A freshly initialised encoder sized for ``generator`` and its layer ``k``, its F
        starting at that layer's statistics (:meth:`match_feature_statistics`)."""
        enc = cls(generator.num_ws, generator.w_dim, k, generator.layer(k).shape,
                  generator.w_avg, generator.fingerprint(), **kwargs)
        return enc.match_feature_statistics(generator)

    @torch.no_grad()
    def match_feature_statistics(self, generator: Generator, samples: int = 256, seed: int = 0) -> FeatureStyleEncoder:
        """Set the feature branch's last BatchNorm affine (weight, bias) to the per-channel std and
        mean of ``G_K(w)`` over ``samples`` random ``w = mapping(z)`` (noise ``"const"``).

        In train mode the branch then outputs F with exactly those per-channel statistics, so
        ``G(w, F)`` starts as a plausible layer-K activation instead of a unit-variance one. Uses its
        own RNG (``seed``); the global RNG is not touched. Returns ``self`` (untouched without a
        feature branch).
        """
        if self.content_layer is None:
            return self
        gen = torch.Generator().manual_seed(seed)
        device = generator.w_avg.device
        z = torch.randn(samples, generator.z_dim, generator=gen).to(device)
        feats = generator.features_at(self.k, generator.mapping(z)).float()
        bn = self.content_layer[-1]
        # a channel that never varies would get weight 0 and block its gradient: keep it alive
        bn.weight.copy_(feats.std(dim=(0, 2, 3)).clamp_min(1e-3).to(bn.weight.device))
        bn.bias.copy_(feats.mean(dim=(0, 2, 3)).to(bn.bias.device))
        return self

    def config(self) -> dict:
        """JSON-serialisable constructor arguments (without ``w_avg``, which is a tensor)."""
        return {
            "num_ws": self.num_ws, "w_dim": self.w_dim, "k": self.k, "feature_shape": list(self.feature_shape),
            "generator_fingerprint": self.generator_fingerprint, "depths": list(self.depths),
            "widths": list(self.widths), "stem_width": self.stem_width, "input_size": self.input_size,
            "pool_size": self.pool_size, "feature_stride": self.feature_stride,
            "feature_stage": self.feature_stage, "feature_branch": self.feature_branch,
        }

    # ---- forward ------------------------------------------------------------------------
    def resize_input(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, input_size, input_size]``: repeated bilinear halvings when
        the side is ``input_size * 2**n`` (the official preprocessing), else one antialiased
        bilinear resize."""
        s = self.input_size
        h, w = images.shape[-2:]
        if (h, w) == (s, s):
            return images
        ratio = h // s
        if h == w and h % s == 0 and ratio & (ratio - 1) == 0:
            x = images
            while x.shape[-1] > s:
                x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
            return x
        return F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def _fit_features(self, feats: torch.Tensor) -> torch.Tensor:
        size = tuple(self.feature_shape[1:])
        if tuple(feats.shape[-2:]) == size:
            return feats
        shrink = feats.shape[-2] > size[0] or feats.shape[-1] > size[1]
        return F.interpolate(feats, size=size, mode="bilinear", align_corners=False, antialias=shrink)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images [B, 3, H, W]`` in [-1, 1] -> ``(ws [B, num_ws, w_dim], F [B, C, H_K, W_K])``;
        F is None without a feature branch."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        x = self.conv(self.resize_input(images))
        f1 = self.block_1(x)
        f2 = self.block_2(f1)
        f3 = self.block_3(f2)
        feats = None
        if self.content_layer is not None:
            feats = self._fit_features(self.content_layer(f3 if self.feature_stage == 3 else f2))
        f4 = self.block_4(f3)
        # Channel-major flatten of [B, 960, 3, 3]: the order the official heads were trained on.
        pooled = torch.cat([self.avg_pool(f) for f in (f1, f2, f3, f4)], dim=1).flatten(1)
        ws = torch.stack([head(pooled) for head in self.styles], dim=1) + self.w_avg
        return ws, feats


# ---- files --------------------------------------------------------------------------------
def save_encoder(encoder: FeatureStyleEncoder, path: str | os.PathLike) -> Path:
    """Write ``encoder`` as one safetensors file (kind "encoder") with its config as JSON."""
    return tensorfile.save(
        path, dict(encoder.state_dict()),
        {"kind": ENCODER_KIND, "architecture": "feature-style", "config": encoder.config(),
         "generator_fingerprint": encoder.generator_fingerprint},
    )


def from_official_state_dict(
    state: dict[str, torch.Tensor],
    generator: Generator,
    k: int = OFFICIAL_K,
    input_size: int = OFFICIAL_INPUT_SIZE,
    w_avg: torch.Tensor | None = None,
    source: str = "state dict",
) -> FeatureStyleEncoder:
    """Build an encoder from a state dict in the official layout (``conv.*, block_{1..4}.*,
    content_layer.*, styles.*``), sized from its tensor shapes and checked against ``generator``.

    ``w_avg`` defaults to ``generator.w_avg`` (what the official code adds: pSp's ``latent_avg``,
    which for the released FFHQ model is that generator's average w).
    """
    try:
        depths, widths = infer_stages(state, lambda i: f"block_{i + 1}.")
        stem_width = int(state["conv.0.weight"].shape[0])
        feat_c = int(state["content_layer.1.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"{source}: not a Feature-Style encoder state dict (missing {exc})") from None
    heads = sorted({int(key.split(".")[1]) for key in state if key.startswith("styles.")})
    if not heads or heads != list(range(len(heads))):
        raise CheckpointError(f"{source}: no consecutive styles.N heads")
    w_dim, in_features = (int(s) for s in state["styles.0.weight"].shape)
    pool = round((in_features / sum(widths)) ** 0.5)
    if pool * pool * sum(widths) != in_features:
        raise CheckpointError(f"{source}: head input {in_features} is not {sum(widths)} x pool^2")
    layer = generator.layer(k)
    problems = []
    if len(heads) != generator.num_ws:
        problems.append(f"{len(heads)} style heads but the generator has num_ws = {generator.num_ws}")
    if w_dim != generator.w_dim:
        problems.append(f"heads give w_dim {w_dim} but the generator has w_dim {generator.w_dim}")
    if feat_c != layer.shape[0]:
        problems.append(f"feature branch gives {feat_c} channels but layer {k} ({layer.name}) has {layer.shape[0]}")
    if problems:
        raise CheckpointError(f"{source}: encoder does not fit this generator: " + "; ".join(problems))
    enc = FeatureStyleEncoder(
        generator.num_ws, generator.w_dim, k, layer.shape,
        generator.w_avg if w_avg is None else w_avg, generator.fingerprint(),
        depths, widths, stem_width, input_size, pool, feature_stage=3,
    )
    _load_exact(enc, state, source, allowed_missing={"w_avg"})
    return enc


def load_encoder(
    path: str | os.PathLike,
    generator: Generator | None = None,
    k: int | None = None,
    device: str | torch.device = "cpu",
    check_fingerprint: bool = True,
    w_avg: torch.Tensor | None = None,
    input_size: int = OFFICIAL_INPUT_SIZE,
) -> FeatureStyleEncoder:
    """Load a Feature-Style encoder (eval mode).

    Reads invkit's own safetensors files (written by :func:`save_encoder`; ``generator`` is
    optional and, when given, must have the recorded fingerprint unless ``check_fingerprint`` is
    False) and the official release (``143_enc.pth``: a plain ``torch.save`` state dict, read with
    ``weights_only=True``; ``generator`` is required because the file holds neither ``w_avg``
    nor K, and ``k`` defaults to the official 5; ``input_size`` is the official 256 unless the
    file was trained otherwise). ``w_avg`` replaces the average latent added to the heads.
    """
    path = _resolve_encoder(path)
    ckpt = CheckpointFile(path)
    meta = ckpt.invkit_meta()
    if meta is not None:
        if meta.get("kind") != ENCODER_KIND:
            raise CheckpointError(f"{path}: holds an invkit {meta.get('kind')!r}, not an encoder")
        tensors, meta = tensorfile.load(path, kind=ENCODER_KIND)
        cfg = dict(meta["config"])
        cfg.setdefault("feature_stage", 3)  # files written before the option read stage 3
        cfg.setdefault("feature_branch", True)  # files written before the ablation switch have one
        if k is not None and k != cfg["k"]:
            raise ValueError(f"{path}: encoder was trained for layer K = {cfg['k']}, not {k}")
        sizecheck.probe(lambda: FeatureStyleEncoder(**cfg), tensors, path, "encoder")  # before allocating
        enc = FeatureStyleEncoder(**cfg, w_avg=tensors["w_avg"] if w_avg is None else w_avg)
        if w_avg is not None:
            tensors = {**tensors, "w_avg": enc.w_avg}
        _load_exact(enc, tensors, str(path))
        if generator is not None and check_fingerprint and generator.fingerprint() != enc.generator_fingerprint:
            raise ValueError(
                f"{path}: encoder was trained for generator {enc.generator_fingerprint}, not "
                f"{generator.fingerprint()} (pass check_fingerprint=False to use it anyway)"
            )
    else:
        if generator is None:
            raise ValueError(f"{path}: an official encoder state dict needs the generator it belongs to")
        obj = ckpt.torch_object()
        if isinstance(obj, dict) and isinstance(obj.get("enc_state_dict"), dict):
            obj = obj["enc_state_dict"]  # the official training checkpoint wraps the state dict
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: expected a plain encoder state dict")
        if obj and all(key.startswith("module.") for key in obj):
            obj = {key[len("module."):]: v for key, v in obj.items()}
        enc = from_official_state_dict(obj, generator, OFFICIAL_K if k is None else k, input_size, w_avg, str(path))
    return enc.to(device).eval()


def _resolve_encoder(source: str | os.PathLike) -> Path:
    from .loading import resolve

    return resolve(source, kind="encoder")


def _load_exact(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                allowed_missing: set[str] = frozenset()) -> None:
    own = module.state_dict()
    # BatchNorm step counters are unused in eval mode and absent from files of old torch versions.
    missing = sorted(k for k in set(own) - set(state) - set(allowed_missing) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{key} {list(state[key].shape)} != {list(own[key].shape)}"
             for key in own if key in state and state[key].shape != own[key].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source}: encoder tensors do not match (missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}, wrong shapes {wrong[:4]})")
    module.load_state_dict(state, strict=False)
