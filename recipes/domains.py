"""The paper's four training domains as recipes: ``faces``, ``cars``, ``cats``, ``dogs``.

Registered through the ``register_recipes`` hook, exactly as a third-party plugin would. Every
recipe uses the paper's schedule (batch 2 real + 2 synthetic, 12 epochs x 10k steps, lr 1e-4
divided by 10 for the last 2 epochs, Ranger), the IResNet-50 encoder at 256 px, layer K = 5 (the
16x16 second convolution, F is 512x16x16) and the official code's 10k-step warm-up of F's
blend. They differ in generator, preprocessing and objective:

* ``faces``: StyleGAN2 FFHQ 1024, FFHQ-aligned inputs, Eq. 8 (Eq. 5 plus the multi-layer
  identity and parsing losses, lambda3 = lambda4 = 0.1).
* ``cars``: StyleGAN2 LSUN cars, whose 512x384 pictures sit in a 512x512 frame: images are
  centre-cropped to 4:3, resized to 384x512 (H x W) and padded with black to 512x512. Eq. 5.
* ``cats`` / ``dogs``: StyleGAN2-ADA AFHQ 512, square images resized to 512. Eq. 5.
"""

from __future__ import annotations

from invkit.hookspecs import hookimpl
from invkit.losses import LossWeights
from invkit.recipe import Preprocess, Recipe

#: The official code blends F in over its first 10k iterations.
BLEND_WARMUP = 10_000


def eq5() -> LossWeights:
    """The paper's objective without the face-specific terms (Eq. 5)."""
    return LossWeights(mse=1.0, lpips=0.2, feature=0.01, identity=0.0, parsing=0.0)


def eq8() -> LossWeights:
    """Eq. 8: Eq. 5 plus the multi-layer identity and face-parsing losses."""
    return LossWeights(mse=1.0, lpips=0.2, feature=0.01, identity=0.1, parsing=0.1)


def _paper_recipe(name: str, generator: str, description: str, loss: LossWeights,
                  preprocess: Preprocess | None = None) -> Recipe:
    """What the four domains share: K = 5, the official F blend warm-up, the paper's schedule."""
    return Recipe(name=name, generator=generator, k=5, description=description, loss=loss,
                  preprocess=preprocess or Preprocess(), blend_warmup_steps=BLEND_WARMUP)


def faces() -> Recipe:
    return _paper_recipe("faces", "stylegan2-ffhq-1024",
                         "StyleGAN2 FFHQ 1024, FFHQ-aligned faces, Eq. 8 (LPIPS + identity + parsing)",
                         eq8(), Preprocess(align="ffhq"))


def cars() -> Recipe:
    return _paper_recipe("cars", "stylegan2-car-config-f",
                         "StyleGAN2 LSUN cars: 384x512 content padded to a 512x512 frame, Eq. 5",
                         eq5(), Preprocess(resize=(384, 512), pad_to=(512, 512), pad_value=-1.0))


def cats() -> Recipe:
    return _paper_recipe("cats", "stylegan2-ada-afhqcat-512", "StyleGAN2-ADA AFHQ cat 512, Eq. 5", eq5())


def dogs() -> Recipe:
    return _paper_recipe("dogs", "stylegan2-ada-afhqdog-512", "StyleGAN2-ADA AFHQ dog 512, Eq. 5", eq5())


@hookimpl
def register_recipes(register):
    for factory in (faces, cars, cats, dogs):
        register(factory.__name__, factory, description=factory().description)
