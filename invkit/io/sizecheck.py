"""Size checks before allocating: a network described by a file's config is first built on
PyTorch's ``meta`` device (shapes only, no memory) and compared with the file's tensors, so a
small file whose config claims 8192 channels or a 2**20 resolution is refused instead of
allocating gigabytes."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)

from .checkpoint import CheckpointError

#: Elements the network may hold beyond its file's tensors (non-persistent buffers, filters).
SLACK_ELEMENTS = 1 << 24


class _TooLarge(Exception):
    """Raised inside a probe build once it holds more than the file could fill."""


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__


def probe(build: Callable[[], torch.nn.Module], tensors: Mapping[str, torch.Tensor], source: object,
          what: str = "network") -> None:
    """Run ``build()`` on the meta device and check the result against ``tensors``.

    Every tensor the network shares a name with must have the file's shape, and the network may
    hold at most twice the file's elements plus :data:`SLACK_ELEMENTS`.

    Raises:
        CheckpointError: naming ``source``: the config is malformed (wrong types, impossible
            sizes) or claims a network larger than its tensors.
    """
    stored = sum(t.numel() for t in tensors.values())
    budget = {"tensors": 4 * len(tensors) + 1000, "elements": 2 * stored + SLACK_ELEMENTS}

    def count(module, name, value):  # stops a build that outgrows the file while it is built
        if value is None:
            return None
        budget["tensors"] -= 1
        budget["elements"] -= value.numel()
        if budget["tensors"] < 0 or budget["elements"] < 0:
            raise _TooLarge()
        return None

    hooks = [register_module_parameter_registration_hook(count), register_module_buffer_registration_hook(count)]
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            net = build()
    except _TooLarge:
        raise CheckpointError(f"{source}: the {what} config asks for a network much larger than the file's "
                              f"{len(tensors)} tensors of {stored} elements; refused") from None
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, AssertionError, OverflowError,
            ZeroDivisionError, AttributeError, NotImplementedError) as exc:
        raise CheckpointError(f"{source}: the {what} config does not fit the file's tensors "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        for hook in hooks:
            hook.remove()
    own = net.state_dict()
    wrong = [f"{k} {list(t.shape)} != {list(tensors[k].shape)}" for k, t in own.items()
             if k in tensors and tuple(t.shape) != tuple(tensors[k].shape)]
    if wrong:
        raise CheckpointError(f"{source}: the {what} config does not fit the file's tensors "
                              f"(shapes {wrong[:3]})")
    held = sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())
    if held > 2 * stored + SLACK_ELEMENTS:
        raise CheckpointError(f"{source}: the {what} config asks for {held} elements but the file holds "
                              f"{stored}; refused")
