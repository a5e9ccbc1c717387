"""Small, seeded generators with non-trivial random weights for tests and examples.

Nothing here is trained: the point is a real network of the real layout, small enough for a
2-core CPU, whose every parameter matters (no zero biases, no zero noise strengths, a ``w_avg``
away from zero), so that a test comparing two code paths cannot pass by accident.
"""

from __future__ import annotations

import torch

__all__ = ["tiny_stylegan2"]


def _channel_table(resolution: int, max_channels: int) -> list[int]:
    """Channels per block 4..resolution: ``max_channels`` up to 16 px, then halving (>= 8)."""
    out, r = [], 4
    while r <= resolution:
        out.append(max(8, min(max_channels, max_channels * 16 // r)))
        r *= 2
    return out


@torch.no_grad()
def tiny_stylegan2(resolution: int = 32, w_dim: int = 32, max_channels: int = 32, n_mlp: int = 2,
                   seed: int = 0, img_channels: int = 3, conv_clamp: float | None = None):
    """A random :class:`~invkit.adapters.stylegan2.StyleGAN2Generator` (``adapter_name``
    ``"stylegan2"``, so ``invkit.save_generator`` / ``load_generator`` round-trip it).

    Weights follow the official initialisation under ``seed`` and are then perturbed as the
    reference vectors were (``../shared/vectors/README.md`` §5.3): mapping biases += N(0, 0.1)
    effective, affine biases += N(0, 0.1), conv/ToRGB biases = N(0, 0.1), noise strengths =
    N(0, 0.2), ``w_avg`` = mean of the mapping over 4096 z + N(0, 0.05). The global RNG is left
    untouched. Returned in ``eval()`` mode with gradients off, on the CPU, float32.
    """
    from invkit.adapters.stylegan2 import StyleGAN2Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = StyleGAN2Generator(
            z_dim=w_dim, w_dim=w_dim, resolution=resolution,
            channels=_channel_table(resolution, max_channels), img_channels=img_channels,
            mapping_dims=[w_dim] * (n_mlp + 1), conv_clamp=conv_clamp,
        )
    gen = torch.Generator().manual_seed(seed + 1000)

    def normal(shape, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std

    for fc in G.mapping_net.fcs:
        fc.bias += normal(fc.bias.shape, 0.1 / fc.lr_mul)
    for conv in G.convs:
        conv.affine.bias += normal(conv.affine.bias.shape, 0.1)
        conv.bias.copy_(normal(conv.bias.shape, 0.1))
        conv.noise_strength.copy_(normal((), 0.2))
    for torgb in G.torgbs:
        torgb.affine.bias += normal(torgb.affine.bias.shape, 0.1)
        torgb.bias.copy_(normal(torgb.bias.shape, 0.1))
    z = torch.randn(4096, G.z_dim, generator=gen)
    G.w_avg.copy_(G.mapping_net(z).mean(0) + normal(G.w_dim, 0.05))
    return G.eval().requires_grad_(False)
