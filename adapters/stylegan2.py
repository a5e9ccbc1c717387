"""The ``stylegan2`` adapter plugin (entry point ``invkit.adapters.stylegan2``).

It registers the adapter and answers "is this a StyleGAN2 checkpoint?". The pieces, imported in
this order only (no cycles):

* :mod:`invkit.adapters.stylegan2_layers`: resampling, modulated convs, styled convs, ToRGB;
* :mod:`invkit.adapters.stylegan2_network`: :class:`StyleGAN2Generator` (one network for every
  StyleGAN2 checkpoint family; layer numbering and replacement rule in its docstring);
* :mod:`invkit.adapters.stylegan2_formats`: readers and writers of the rosinality, pSp and NVlabs
  layouts.

Import the network from here: ``from invkit.adapters.stylegan2 import StyleGAN2Generator``.
"""

from __future__ import annotations

import torch

from invkit.hookspecs import hookimpl

from .stylegan2_formats import identify, load_checkpoint
from .stylegan2_network import ADAPTER_NAME, StyleGAN2Generator, from_config


def load(checkpoint, device: str | torch.device = "cpu") -> StyleGAN2Generator:
    """Load any StyleGAN2 checkpoint the readers know (rosinality, pSp, NVlabs pickle)."""
    return load_checkpoint(checkpoint).to(device)


@hookimpl
def register_generators(register):
    register(
        ADAPTER_NAME,
        load,
        from_config=from_config,
        description="StyleGAN2 (rosinality / pSp .pt, NVlabs stylegan2-ada and legacy pickles)",
    )


@hookimpl
def identify_checkpoint(checkpoint):
    return identify(checkpoint)


__all__ = ["ADAPTER_NAME", "StyleGAN2Generator", "from_config", "identify_checkpoint", "load", "register_generators"]
