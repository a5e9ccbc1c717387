"""invkit-hello: a complete third-party generator adapter for invkit, in one file.

It reads a made-up checkpoint format (a ``torch.save`` dict with a ``"hello_generator"`` state
dict and a ``"hello_config"`` dict) into a small style-based generator, and tells invkit how to
recognise such files. ``docs/plugins.md`` walks through it; the test suite installs it as a
real distribution and loads a generator through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from invkit import Generator, LayerInfo, StyleAffine
from invkit.hookspecs import hookimpl


class HelloGenerator(Generator):
    """A constant 4x4 input followed by ``n_up`` (upsample x2, style-scaled 3x3 conv) layers.

    ws rows: row k-1 styles layer k (k = 1..n_up); the last row styles the ToRGB.
    """

    adapter_name = "hello"

    def __init__(self, z_dim: int = 16, w_dim: int = 16, channels: int = 8, n_up: int = 3):
        super().__init__()
        self.config = {"z_dim": z_dim, "w_dim": w_dim, "channels": channels, "n_up": n_up}
        self.z_dim, self.w_dim, self.img_channels = z_dim, w_dim, 3
        self.num_ws = n_up + 1
        self.resolution = 4 * 2**n_up
        self.map = nn.Sequential(nn.Linear(z_dim, w_dim), nn.LeakyReLU(0.2), nn.Linear(w_dim, w_dim))
        self.const = nn.Parameter(torch.randn(channels, 4, 4))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n_up))
        self.affines = nn.ModuleList(nn.Linear(w_dim, channels) for _ in range(n_up + 1))
        self.to_rgb = nn.Conv2d(channels, 3, 1)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.layers = [LayerInfo(0, "const", (channels, 4, 4), None)] + [
            LayerInfo(k, f"conv{k}", (channels, 4 * 2**k, 4 * 2**k), k - 1) for k in range(1, n_up + 1)
        ]

    def mapping(self, z, truncation_psi=1.0, truncation_cutoff=None):
        w = self.map(z)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws

    def run_synthesis(self, ws, noise_mode="const", *, stop_at=None, replace_at=None, features=None, blend=1.0):
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        for k in range(len(self.layers)):
            if k > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                x = F.leaky_relu(self.convs[k - 1](x) * (1 + self.affines[k - 1](ws[:, k - 1]))[..., None, None], 0.2)
            if k == stop_at:
                return x
            if k == replace_at:
                x = torch.lerp(x, features, blend) if blend != 1.0 else features
        return self.to_rgb(x * (1 + self.affines[-1](ws[:, -1]))[..., None, None])

    def style_affines(self):
        return [StyleAffine(f"affine{i}", i, a.weight, a.bias) for i, a in enumerate(self.affines)]


def _build(config, state_dict, device):
    G = HelloGenerator(**config)
    G.load_state_dict(state_dict)
    return G.to(device)


def load(checkpoint, device):
    """Build a HelloGenerator from a CheckpointFile (read with weights_only=True by invkit)."""
    obj = checkpoint.torch_object()
    return _build(obj["hello_config"], obj["hello_generator"], device)


@hookimpl
def register_generators(register):
    register("hello", load, from_config=_build, description="invkit-hello example generator")


@hookimpl
def identify_checkpoint(checkpoint):
    if checkpoint.format == "torch-zip":
        obj = checkpoint.torch_object()
        if isinstance(obj, dict) and "hello_generator" in obj:
            return "hello"
    return None
