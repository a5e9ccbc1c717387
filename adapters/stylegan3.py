"""The ``stylegan3`` adapter plugin (entry point ``invkit.adapters.stylegan3``): reads StyleGAN3
checkpoint files (NVlabs pickles through :mod:`invkit.adapters.nvlabs`, torch files holding
``state_dict`` + ``init_kwargs``) and registers the adapter.

The network is :class:`StyleGAN3Generator` (:mod:`invkit.adapters.stylegan3_network`); import it
from here: ``from invkit.adapters.stylegan3 import StyleGAN3Generator, from_nvlabs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from invkit.hookspecs import hookimpl
from invkit.io.checkpoint import CheckpointError

from .stylegan3_network import ADAPTER_NAME, StyleGAN3Generator, from_config, from_nvlabs
from .stylegan3_schedule import normalize_kwargs


def _checkpoint_layout(obj: Any) -> tuple[dict, dict] | None:
    """``(state_dict, init_kwargs)`` from a torch file in the reference-vector layout
    (``{'state_dict', 'config': {'init_kwargs'}}``) or ``{'state_dict', 'init_kwargs'}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), Mapping):
        return None
    kwargs = obj.get("init_kwargs")
    if kwargs is None and isinstance(obj.get("config"), Mapping):
        kwargs = obj["config"].get("init_kwargs")
    if not isinstance(kwargs, Mapping):
        return None
    return dict(obj["state_dict"]), dict(kwargs)


def _is_stylegan3_state(state_dict: Mapping[str, Any]) -> bool:
    return "synthesis.input.freqs" in state_dict and "synthesis.input.transform" in state_dict


def load(checkpoint, device: str | torch.device = "cpu") -> StyleGAN3Generator:
    """Adapter entry point: an NVlabs network pickle (read without executing its code) or a
    torch file holding ``state_dict`` and ``init_kwargs`` -> generator on ``device``."""
    if checkpoint.format == "pickle":
        from .nvlabs import read_network

        net = read_network(checkpoint)
        state_dict, init_kwargs = net.state_dict, net.init_kwargs
        if not _is_stylegan3_state(state_dict):
            raise CheckpointError(
                f"{checkpoint.path}: the network ({getattr(net, 'module_name', '?')}."
                f"{getattr(net, 'class_name', '?')}) is not a StyleGAN3 generator"
            )
    elif checkpoint.format in ("torch-zip", "torch-legacy"):
        layout = _checkpoint_layout(checkpoint.torch_object())
        if layout is None or not _is_stylegan3_state(layout[0]):
            raise CheckpointError(
                f"{checkpoint.path}: not a StyleGAN3 checkpoint (expected a dict with 'state_dict' "
                "holding synthesis.input.* keys and 'init_kwargs')"
            )
        state_dict, init_kwargs = layout
    else:
        raise CheckpointError(f"{checkpoint.path}: cannot read a {checkpoint.format} file as StyleGAN3")
    try:
        G = from_nvlabs(state_dict, init_kwargs)
    except (ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{checkpoint.path}: {exc}") from None
    return G.to(device)


# --------------------------------------------------------------------------------------------
# Plugin hooks
# --------------------------------------------------------------------------------------------
@hookimpl
def register_generators(register):
    register(
        ADAPTER_NAME,
        load,
        from_config=from_config,
        description="NVlabs StyleGAN3 (Alias-Free GAN), T and R configs: network pickles or state dicts",
    )


@hookimpl
def identify_checkpoint(checkpoint):
    """Claim torch files in the ``{'state_dict', 'init_kwargs'}`` layout whose keys are StyleGAN3's
    (NVlabs pickles are identified by the ``nvlabs`` plugin's reader)."""
    if checkpoint.format not in ("torch-zip", "torch-legacy"):
        return None
    try:
        layout = _checkpoint_layout(checkpoint.torch_object())
    except Exception:  # not ours to report: another plugin or the loader will
        return None
    if layout is not None and _is_stylegan3_state(layout[0]):
        return ADAPTER_NAME
    return None


__all__ = [
    "ADAPTER_NAME", "StyleGAN3Generator", "from_config", "from_nvlabs", "identify_checkpoint", "load",
    "normalize_kwargs", "register_generators",
]
