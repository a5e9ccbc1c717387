"""What a run builds from its recipe when the caller passes no encoder or loss: the
Feature-Style encoder of ``recipe.encoder`` and the paper's objective with ``recipe.loss``."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..generator import Generator
from ..recipe import Recipe


def default_encoder(generator: Generator, recipe: Recipe) -> nn.Module:
    """The Feature-Style encoder for ``generator`` described by ``recipe.encoder``."""
    from ..fs_encoder import FeatureStyleEncoder

    return FeatureStyleEncoder.for_generator(generator, recipe.k, **recipe.encoder.kwargs())


def default_loss(generator: Generator, recipe: Recipe) -> nn.Module:
    """The paper's objective with ``recipe.loss`` as weights and ``recipe.loss_networks`` as its
    auxiliary networks (ArcFace and the face parser only when their weight is non-zero)."""
    from ..losses import FeatureStyleLoss
    from ..nets.lpips import LPIPS

    nets = recipe.loss_networks
    arcface = parser = None
    if recipe.loss.identity > 0:
        from ..nets.arcface import ArcFace

        arcface = ArcFace.from_file(nets.arcface) if Path(nets.arcface).is_file() else ArcFace.from_zoo(nets.arcface)
    if recipe.loss.parsing > 0:
        from ..nets.bisenet import BiSeNet

        parser = BiSeNet.from_file(nets.parser) if Path(nets.parser).is_file() else BiSeNet.from_zoo(nets.parser)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)  # lpips_trunk=random: the same trunk for the same run seed
        lpips = LPIPS(nets.lpips_net, trunk=nets.lpips_trunk)
    return FeatureStyleLoss(lpips, recipe.loss, arcface=arcface,
                            parser=parser, lpips_scales=nets.lpips_scales)


def is_factory(obj: Any) -> bool:
    """A ``(generator, recipe) -> loss`` factory rather than a loss function: plain callables
    that take exactly two positional parameters."""
    try:
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) == 2


def encoder_config(encoder: nn.Module) -> dict[str, Any]:
    config = getattr(encoder, "config", None)
    if callable(config):
        config = config()
    try:
        json.dumps(config)
    except TypeError:
        return {}
    return config if isinstance(config, dict) else {}
