"""`Recipe`: the typed configuration of one Feature-Style encoder training run.

A recipe names the generator it trains for (a zoo name or a path), the layer K that the feature
code replaces, the loss weights, how input images are preprocessed, the optimisation schedule and
the run's bookkeeping (checkpoint / sample / log intervals). Recipes are plain nested dataclasses:
they round-trip through JSON (:meth:`Recipe.to_json`, :meth:`Recipe.from_json`), the training
engine saves one next to every checkpoint, and :meth:`Recipe.with_overrides` applies
command-line edits such as ``schedule.lr=5e-5`` or ``loss.lpips=0.5`` with type checking.

Plugins publish recipes through the ``register_recipes`` hook
(``register("faces", factory, description=...)`` where ``factory()`` returns a :class:`Recipe`);
:func:`get_recipe` looks one up by name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import ConfigError, apply_overrides, flatten, from_plain, to_plain
from .io import atomic
from .losses import LossWeights

RECIPE_FORMAT = 1


@dataclass
class LossNetworks:
    """The auxiliary networks of the objective (frozen during training).

    Attributes:
        lpips_net: LPIPS trunk, ``"alex"`` (the paper) or ``"vgg"``.
        lpips_trunk: ``"imagenet"`` (torchvision's weights through the model zoo), a path to a
            torchvision state dict, or ``"random"`` (tests only: a randomly initialised trunk).
        lpips_scales: levels of the multi-scale LPIPS pyramid (3: scales 1, 1/2, 1/4).
        arcface: zoo name or path of the ArcFace weights (used when ``loss.identity > 0``).
        parser: zoo name or path of the BiSeNet face parser (used when ``loss.parsing > 0``).
    """

    lpips_net: Literal["alex", "vgg"] = "alex"
    lpips_trunk: str = "imagenet"
    lpips_scales: int = 3
    arcface: str = "arcface-r50"
    parser: str = "bisenet-face-parsing"


@dataclass
class Preprocess:
    """How an image file becomes a training input ``[3, H, W]`` in [-1, 1].

    Steps, in order: optional alignment check, ``fit`` to the aspect of ``resize``, resize to
    ``resize`` (H, W), then pad (centred) to ``pad_to`` (H, W) with ``pad_value``.

    Attributes:
        resize: target content size ``(H, W)``; None means the generator's square resolution.
        pad_to: frame size ``(H, W)`` the content is padded into; None means no padding. The
            StyleGAN2 car model, for example, draws 512x384 content in a 512x512 frame.
        pad_value: fill value in [-1, 1] (-1 is black, like the padded LSUN car training set).
        fit: ``"crop"`` centre-crops each image to the aspect of ``resize`` first (no
            distortion); ``"stretch"`` resizes directly.
        align: ``"none"``, or ``"ffhq"`` when the generator was trained on FFHQ-aligned faces;
            training data must then already be aligned (FFHQ itself, or the output of the
            alignment tool), and inference tools align before encoding.
        hflip: randomly mirror real images (an augmentation; off in the paper).
    """

    resize: tuple[int, int] | None = None
    pad_to: tuple[int, int] | None = None
    pad_value: float = -1.0
    fit: Literal["crop", "stretch"] = "crop"
    align: Literal["none", "ffhq"] = "none"
    hflip: bool = False


@dataclass
class Schedule:
    """The optimisation schedule. The defaults are the paper's.

    Attributes:
        batch_real: real images per batch and process.
        batch_synthetic: synthetic images per batch and process (drawn from random z).
        epochs: training epochs (an epoch is ``iters_per_epoch`` steps, not a data pass).
        iters_per_epoch: optimiser steps per epoch.
        lr: learning rate.
        lr_drop_epochs: the last ``lr_drop_epochs`` epochs run at ``lr / lr_drop_factor``.
        lr_drop_factor: the divisor of that drop.
        optimizer: ``"ranger"`` (RAdam + Lookahead, as the official code), ``"radam"`` or
            ``"adam"``.
        betas: Adam moments.
        eps: Adam epsilon.
        weight_decay: L2 weight decay.
        lookahead_k: Lookahead synchronisation period (ranger).
        lookahead_alpha: Lookahead slow-weight step (ranger).
        grad_centralization: subtract each multi-dim gradient's mean (the Ranger variant the
            official code uses); ranger only.
        grad_clip: clip the gradient norm to this value; None: no clipping.
        truncation_psi: truncation of the random z used for synthetic images.
    """

    batch_real: int = 2
    batch_synthetic: int = 2
    epochs: int = 12
    iters_per_epoch: int = 10_000
    lr: float = 1e-4
    lr_drop_epochs: int = 2
    lr_drop_factor: float = 10.0
    optimizer: Literal["ranger", "radam", "adam"] = "ranger"
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1e-5
    weight_decay: float = 0.0
    lookahead_k: int = 6
    lookahead_alpha: float = 0.5
    grad_centralization: bool = True
    grad_clip: float | None = None
    truncation_psi: float = 1.0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.iters_per_epoch

    @property
    def lr_drop_step(self) -> int:
        """The first step that runs at the dropped learning rate."""
        return max(0, self.epochs - self.lr_drop_epochs) * self.iters_per_epoch


@dataclass
class EncoderSpec:
    """Architecture of the Feature-Style encoder to train (an IResNet backbone; the defaults
    are the paper's IResNet-50 at 256 px).

    Attributes:
        depths: residual blocks per stage (IResNet-50: 3, 4, 14, 3).
        widths: output channels per stage.
        stem_width: channels of the stem convolution.
        input_size: the encoder's working resolution (inputs are resized to it; a multiple of 8).
        pool_size: adaptive pooling side of the latent branch.
        feature_stride: stride of the feature branch's last conv (None: chosen from K's size).
        feature_stage: backbone stage the feature branch reads (None: 3, or 2 when K is at least
            twice stage 3's side).
        feature_branch: False trains the paper's ablation B, a W+-only encoder with the same
            backbone, objective and budget: no feature branch, F is None, and every loss term on
            ``G(w, F)`` is computed on ``G(w)`` instead (``--set encoder.feature_branch=false``).
    """

    depths: tuple[int, int, int, int] = (3, 4, 14, 3)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64
    input_size: int = 256
    pool_size: int = 3
    feature_stride: int | None = None
    feature_stage: int | None = None
    feature_branch: bool = True

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``FeatureStyleEncoder.for_generator``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class Recipe:
    """A complete training configuration (saved as ``recipe.json`` next to the checkpoints).

    Attributes:
        name: the recipe's name (``"faces"``).
        generator: zoo name, URL or path of the generator it trains for.
        k: the generator layer the feature code F replaces.
        description: one line for listings.
        loss: the objective's weights (:class:`invkit.losses.LossWeights`: ``mse``,
            ``lpips`` = lambda1, ``feature`` = lambda2, ``identity`` = lambda3, ``parsing`` =
            lambda4; identity and parsing are 0 outside faces, which is the paper's Eq. 5).
        loss_networks: the auxiliary networks of the objective.
        preprocess: image-file preprocessing.
        schedule: optimisation schedule.
        encoder: encoder architecture.
        blend_warmup_steps: F is blended into G's own layer-K activation with a weight that
            rises linearly from 0 to 1 over this many steps (0: full replacement from the
            start; the official code uses 10k).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        sample_every: steps between sample grids (input | G(w) | G(w, F)).
        log_every: steps between JSONL log lines.
        keep_last: how many checkpoints to keep (older ones are deleted).
        num_samples: images per sample grid (half real, half synthetic).
        seed: seed of the data order, synthetic latents and noise, and initialisation.
        num_workers: data-loading worker processes.
    """

    name: str
    generator: str
    k: int
    description: str = ""
    loss: LossWeights = field(default_factory=lambda: LossWeights(identity=0.0, parsing=0.0))
    loss_networks: LossNetworks = field(default_factory=LossNetworks)
    preprocess: Preprocess = field(default_factory=Preprocess)
    schedule: Schedule = field(default_factory=Schedule)
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    blend_warmup_steps: int = 0
    checkpoint_every: int = 2000
    sample_every: int = 1000
    log_every: int = 50
    keep_last: int = 3
    num_samples: int = 8
    seed: int = 0
    num_workers: int = 2

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`RecipeError` naming the first inconsistent setting."""
        s, p = self.schedule, self.preprocess
        checks = [
            (self.k >= 0, "k must be >= 0"),
            (s.batch_real >= 0 and s.batch_synthetic >= 0, "batch sizes must be >= 0"),
            (s.batch_real + s.batch_synthetic > 0, "batch_real + batch_synthetic must be > 0"),
            (s.epochs >= 1 and s.iters_per_epoch >= 1, "epochs and iters_per_epoch must be >= 1"),
            (0 <= s.lr_drop_epochs <= s.epochs, "lr_drop_epochs must be in [0, epochs]"),
            (s.lr > 0 and s.lr_drop_factor > 0, "lr and lr_drop_factor must be > 0"),
            (s.lookahead_k >= 1 and 0 < s.lookahead_alpha <= 1, "lookahead_k >= 1, 0 < lookahead_alpha <= 1"),
            (s.grad_clip is None or s.grad_clip > 0, "grad_clip must be > 0 or none"),
            (self.blend_warmup_steps >= 0, "blend_warmup_steps must be >= 0"),
            (min(self.checkpoint_every, self.sample_every, self.log_every) >= 1, "intervals must be >= 1"),
            (self.keep_last >= 1, "keep_last must be >= 1"),
            (self.num_samples >= 0 and self.num_workers >= 0, "num_samples, num_workers must be >= 0"),
            (-1 <= p.pad_value <= 1, "preprocess.pad_value must be in [-1, 1]"),
            (all(v >= 0 for v in dataclasses.astuple(self.loss)), "loss weights must be >= 0"),
            (self.loss_networks.lpips_scales >= 1, "loss_networks.lpips_scales must be >= 1"),
            (self.encoder.input_size >= 16 and self.encoder.input_size % 8 == 0,
             "encoder.input_size must be a multiple of 8, >= 16"),
            (min(self.encoder.depths) >= 1 and min(self.encoder.widths) >= 1 and self.encoder.stem_width >= 1,
             "encoder depths and widths must be >= 1"),
        ]
        for size_name in ("resize", "pad_to"):
            size = getattr(p, size_name)
            checks.append((size is None or min(size) >= 1, f"preprocess.{size_name} must be positive (H, W)"))
        if p.resize is not None and p.pad_to is not None:
            checks.append((p.pad_to[0] >= p.resize[0] and p.pad_to[1] >= p.resize[1],
                           "preprocess.pad_to must be at least as large as preprocess.resize"))
        for ok, msg in checks:
            if not ok:
                raise RecipeError(f"recipe {self.name!r}: {msg}")

    # ---- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (tuples become lists)."""
        return {"format": RECIPE_FORMAT, **to_plain(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """The inverse of :meth:`to_dict`; unknown or mistyped keys raise :class:`RecipeError`."""
        data = dict(data)
        version = data.pop("format", RECIPE_FORMAT)
        if version != RECIPE_FORMAT:
            raise RecipeError(f"recipe format {version} is not supported (expected {RECIPE_FORMAT})")
        try:
            return from_plain(cls, data, root="recipe")
        except ConfigError as exc:
            raise RecipeError(str(exc)) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RecipeError("a recipe must be a JSON object")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe as JSON (atomically)."""
        path = Path(path)
        atomic.write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"{path}: cannot read recipe ({exc.strerror or exc})") from None
        try:
            return cls.from_json(text)
        except RecipeError as exc:
            raise RecipeError(f"{path}: {exc}") from None

    # ---- overrides ---------------------------------------------------------------------------
    def with_overrides(self, overrides: typing.Iterable[str]) -> Recipe:
        """A copy with ``"key=value"`` edits applied; dotted keys reach nested sections.

        Values are parsed for the field's type: numbers (``1e-4``, ``10_000``), booleans
        (``true/false/yes/no/on/off/1/0``), ``none``/``null`` for optional fields, pairs as
        ``384,512`` or ``[384, 512]``, dicts as JSON. Raises :class:`RecipeError` naming the key
        and the problem (with a suggestion for misspelt keys).
        """
        try:
            data = apply_overrides(Recipe, self.to_dict(), overrides)
        except ConfigError as exc:
            raise RecipeError(str(exc)) from None
        try:
            return Recipe.from_dict(data)
        except RecipeError as exc:
            raise RecipeError(f"after overrides {list(overrides)}: {exc}") from None

    def flat(self) -> dict[str, Any]:
        """Every setting as ``{"schedule.lr": 1e-4, ...}`` (for listings and diffs)."""
        return flatten(self)

    def diff(self, other: Recipe) -> dict[str, tuple[Any, Any]]:
        """``{key: (self_value, other_value)}`` for every setting that differs."""
        a, b = self.flat(), other.flat()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class RecipeError(ConfigError):
    """An invalid recipe or override; the message names the key and the problem."""


def get_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A registered recipe by name (``"faces"``), or a recipe JSON file."""
    from . import plugins

    text = str(name_or_path)
    if text in plugins.recipes():
        entry = plugins.recipes().get(text)
        recipe = entry.obj()
        if not isinstance(recipe, Recipe):
            raise RecipeError(f"recipe {text!r} from plugin {entry.plugin} did not return a Recipe")
        return recipe
    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        return Recipe.load(path)
    known = ", ".join(plugins.list_recipes()) or "none"
    raise KeyError(f"unknown recipe {text!r}; registered: {known} (or pass a recipe .json file)")
