"""The ``toy`` recipe: the whole Feature-Style method on a domain that ships with invkit.

Everything here runs offline on a CPU. The shipped assets (``recipes/assets``) are:

=================================== ============================================================
``toy_generator.safetensors``       a StyleGAN2 (64 px) fit to the renderer of :mod:`.toy_domain`
                                    by :mod:`.toy_fit`
``toy_encoder.safetensors``         a Feature-Style encoder for it, trained by the training
                                    engine through this recipe (``invkit train toy``)
``toy_attributes.safetensors``      :class:`.toy_attributes.AttributeNet`, the attribute reader
                                    (judges edits; its features give the "toy-LPIPS" distance)
``toy_direction_*.safetensors``     InterFaceGAN and SeFa directions with calibrated strengths
                                    (:mod:`.toy_directions`)
=================================== ============================================================

The registry entry (:class:`ToyRecipeFactory`) gives ``invkit`` what a recipe needs beyond its
settings: the real training images (``invkit train toy`` needs no ``--data``), the recipe's own
objective (toy-LPIPS instead of AlexNet LPIPS), the shipped encoder (``-e toy``) and the demo
(:mod:`.toy_demo`). ``docs/demo.md`` gives the commands that produce each file.

Perceptual distance: LPIPS needs ImageNet AlexNet/VGG weights that cannot be downloaded here, so
both the training objective's perceptual term and the demo's perceptual metric use
:class:`ToyPerceptual` ("toy-LPIPS": the LPIPS formula on the attribute net's features, uniform
channel weights). It is labelled as such wherever it is printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..generator import Generator
from ..hookspecs import hookimpl
from ..recipe import EncoderSpec, Recipe, Schedule
from . import toy_attributes, toy_domain

GENERATOR_FILE = "toy_generator.safetensors"
ENCODER_FILE = "toy_encoder.safetensors"
ATTRIBUTE_NET_FILE = "toy_attributes.safetensors"
#: The generator layer F replaces (see :func:`toy_recipe`).
TOY_K = 5
#: Real training images of the recipe: rendered seeds ``0 .. TRAIN_IMAGES - 1``.
TRAIN_IMAGES = 20_000


# ---- assets -------------------------------------------------------------------------------------
def assets_dir() -> Path:
    """The folder of the shipped toy assets (inside the installed package)."""
    return Path(str(resources.files("invkit.recipes").joinpath("assets")))


def asset(name: str) -> Path:
    """A shipped asset's path; a clear error if the package was installed without it."""
    path = assets_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: toy asset missing (reinstall invkit, or rebuild it: see docs/demo.md)")
    return path


# ---- the recipe ---------------------------------------------------------------------------------
def toy_recipe() -> Recipe:
    """The ``toy`` recipe: a small IResNet encoder at 64 px for the shipped toy generator.

    K = 5 is ``b16.conv1``, the second conv at 16x16 (F is 64 x 16 x 16), the paper's layer
    index; the encoder's feature branch reads its 16x16 backbone stage (stage 2 at a 64 px
    input). Earlier toy encoders used K = 3 (8x8), which leaves every detail finer than 8 px
    to the W+ code. The objective is the paper's
    (MSE on synthetic G(w), the perceptual term on both reconstructions at 64 and 32 px, the
    feature term) with toy-LPIPS as the perceptual network, whose attribute net file is
    ``loss_networks.lpips_trunk`` (``lpips_net`` is unused), plus ``loss.mse_real``: a pixel term
    on both reconstructions of every image. toy-LPIPS alone is too weak a perceptual signal at
    this size to pull G(w, F) onto the pixels (without the pixel term the demo's G(w, F) stayed
    several dB below its target).

    The feature term weighs 3, not the paper's 0.01: Eq. 1 edits F by ``G_K(w̃) − G_K(w)``,
    which only carries an edit over when F stays close to ``G_K(w)``. At 0.01 the toy encoder's F
    drifted to a cosine of 0.57 with ``G_K(w)`` and added glasses came out as faint smudges
    (84 % flipped at best); at 3 the cosine is 0.93 and 98 % flip. Heavier weights tie F tighter
    still (10: 0.97) but cost perceptual quality (docs/demo.md).
    """
    from ..losses import LossWeights
    from ..recipe import LossNetworks

    return Recipe(
        name="toy",
        generator=str(assets_dir() / GENERATOR_FILE),
        k=TOY_K,
        description="procedural cartoon faces, 64 px StyleGAN2 shipped with invkit (the demo domain)",
        loss=LossWeights(mse=1.0, lpips=0.2, feature=3.0, identity=0.0, parsing=0.0, mse_real=1.0),
        loss_networks=LossNetworks(lpips_trunk=str(assets_dir() / ATTRIBUTE_NET_FILE), lpips_scales=2),
        schedule=Schedule(batch_real=8, batch_synthetic=4, epochs=4, iters_per_epoch=1000, lr=1e-3,
                          lr_drop_epochs=1, lr_drop_factor=10.0, optimizer="ranger"),
        encoder=EncoderSpec(depths=(1, 1, 1, 1), widths=(32, 48, 64, 96), stem_width=16, input_size=64,
                            pool_size=3),
        blend_warmup_steps=300,
        checkpoint_every=250,
        sample_every=500,
        log_every=50,
        keep_last=2,
        num_samples=8,
        seed=0,
        num_workers=0,
    )


class ToyPerceptual(nn.Module):
    """"toy-LPIPS": the LPIPS formula on :class:`toy_attributes.AttributeNet` features.

    Drop-in for :class:`invkit.nets.lpips.LPIPS` in :class:`invkit.losses.FeatureStyleLoss`:
    ``forward(x, y) -> [B]`` for images in [-1, 1], frozen, ``min_size`` 16 px.
    """

    min_size = 16
    label = "toy-LPIPS"

    def __init__(self, net: toy_attributes.AttributeNet):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ToyPerceptual:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"toy-LPIPS needs equal shapes, got {list(x.shape)} and {list(y.shape)}")
        if x.shape[-1] != toy_domain.RESOLUTION:  # the net reads 64 px; the pyramid levels are brought back
            size = (toy_domain.RESOLUTION, toy_domain.RESOLUTION)
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = nn.functional.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return toy_attributes.feature_distance(self.net, x, y)


def load_attribute_net(path: str | os.PathLike | None = None) -> toy_attributes.AttributeNet:
    return toy_attributes.load_attribute_net(path or asset(ATTRIBUTE_NET_FILE))


def toy_loss(generator: Generator, recipe: Recipe) -> nn.Module:
    """The recipe's objective with toy-LPIPS as its perceptual network: the attribute net file is
    ``recipe.loss_networks.lpips_trunk`` (the shipped one when that names no file)."""
    from ..losses import FeatureStyleLoss

    trunk = recipe.loss_networks.lpips_trunk
    net = load_attribute_net(trunk if Path(trunk).is_file() else None)
    return FeatureStyleLoss(ToyPerceptual(net), recipe.loss, lpips_scales=recipe.loss_networks.lpips_scales)


def training_data(recipe: Recipe | None = None) -> torch.utils.data.Dataset:
    """The recipe's real images: rendered seeds ``0 .. TRAIN_IMAGES - 1`` (never the held-out
    ones), cached in memory as uint8 once rendered (about 250 MB at most)."""
    return toy_domain.ToyFaces(TRAIN_IMAGES, 0, cache=True, with_attributes=False)


def train_encoder(out: str | os.PathLike, overrides: list[str] | None = None, max_steps: int | None = None,
                  progress: bool = True, report: Callable[[str], None] = print):
    """Train (or resume) the toy encoder in ``out`` with the training engine: what
    ``invkit train toy --out OUT [--set KEY=VALUE ...]`` does. Returns the engine's ``TrainResult``;
    the finished encoder is ``out/encoder.safetensors``."""
    from ..training import train

    recipe = toy_recipe().with_overrides(overrides or [])
    return train(recipe, training_data(recipe), recipe.generator, out, loss=toy_loss, device="cpu",
                 progress=progress, max_steps=max_steps, report=report)


class ToyRecipeFactory:
    """What the ``toy`` registry entry holds. Calling it gives the :class:`Recipe`; the optional
    attributes that ``invkit`` looks for on a recipe entry (docs/plugins.md) are all here:

    * ``training_data(recipe)``: real images when ``invkit train`` gets no ``--data``;
    * ``loss(generator, recipe)``: the objective, instead of the paper's AlexNet-LPIPS one;
    * ``pretrained(kind)``: the shipped ``"generator"`` / ``"encoder"`` file, so ``-g toy`` and
      ``-e toy`` work wherever a generator or encoder is taken;
    * ``demo(out_dir, log=...)``: what ``invkit demo`` runs;
    * ``directions()`` and ``samples(n)``: the shipped directions and held-out renders that
      ``invkit ui`` offers.
    """

    def __call__(self) -> Recipe:
        return toy_recipe()

    @staticmethod
    def training_data(recipe: Recipe) -> torch.utils.data.Dataset:
        return training_data(recipe)

    @staticmethod
    def loss(generator: Generator, recipe: Recipe) -> nn.Module:
        return toy_loss(generator, recipe)

    @staticmethod
    def pretrained(kind: str) -> Path:
        files = {"generator": GENERATOR_FILE, "encoder": ENCODER_FILE}
        if kind not in files:
            raise KeyError(f"the toy recipe ships no {kind!r} (it ships: {', '.join(files)})")
        return asset(files[kind])

    @staticmethod
    def directions() -> list:
        """The demo's directions (``toy_direction_*``), each with its calibrated strength."""
        from .toy_directions import load_directions

        return list(load_directions(assets_dir()).values())

    @staticmethod
    def samples(n: int = 8) -> list[tuple[str, torch.Tensor]]:
        """``n`` held-out renders (seeds from ``toy_domain.HELD_OUT_START``, never trained on):
        ``(name, image [3, 64, 64] in [-1, 1])`` each."""
        from .toy_directions import rendered

        images, _ = rendered(n, toy_domain.HELD_OUT_START)
        return [(f"held-out seed {toy_domain.HELD_OUT_START + i}", image) for i, image in enumerate(images)]

    @staticmethod
    def demo(out_dir: str | os.PathLike = "invkit-demo", log: Callable[[str], None] = print, **kwargs) -> dict[str, Any]:
        from .toy_demo import run_demo

        return run_demo(out_dir, log=log, **kwargs)


@hookimpl
def register_recipes(register):
    register("toy", ToyRecipeFactory(), description="procedural cartoon faces (64 px); `invkit demo` runs it")


