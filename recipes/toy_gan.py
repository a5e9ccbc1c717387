"""Train a small StyleGAN2 on the procedural toy domain (:mod:`invkit.recipes.toy_domain`).

An honest, compact version of the StyleGAN2 recipe (Karras et al. 2020; the ADA code's
defaults where they matter):

* generator: invkit's own StyleGAN2 network (:mod:`invkit.adapters.stylegan2`), trained from
  scratch, with style mixing regularisation (p = 0.9);
* discriminator: the StyleGAN2 residual architecture written here (equalised learning rate,
  [1, 3, 3, 1] blur before every stride-2 conv, minibatch standard deviation, two-layer head);
* losses: non-saturating logistic loss for both players, lazy R1 on real images every
  ``r1_every`` D steps (the learning rate and betas of D adjusted for laziness as in the paper);
* Adam(lr, betas=(0, 0.99)); EMA of the generator with a half-life of ``ema_kimg`` thousand
  images (ramped up over the first steps as in the ADA code); fixed seeds.

Run::

    python -m invkit.recipes.toy_gan --out runs/toy_gan --kimg 300

The run directory receives ``checkpoint.safetensors`` (atomic, every ``--snap-kimg``; a rerun with
the same ``--out`` resumes from it), ``samples_XXXXXX.png`` grids from the EMA generator, and
``log.jsonl``. ``--export PATH`` writes the EMA generator with :func:`invkit.save_generator`; the
shipped ``recipes/assets/toy_generator.safetensors`` was made this way (see ``docs/demo.md``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..generator import Generator
from ..io.images import save_grid
from ..io.tensorfile import load as load_tensors
from ..io.tensorfile import save as save_tensors
from ..loading import save_generator
from . import toy_domain

# --------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------

_LRELU_GAIN = math.sqrt(2.0)


class EqualConv2d(nn.Module):
    """A conv whose weights are stored as N(0, 1) and scaled by ``1/sqrt(fan_in)`` at run time
    (equalised learning rate: every layer learns at the same speed under Adam)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * kernel * kernel)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1.0 / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    # the sqrt(2) gain keeps activations at unit variance, as the equalised init assumes
    return F.leaky_relu(x, 0.2) * _LRELU_GAIN


class BlurDown(nn.Module):
    """Low-pass ``[1, 3, 3, 1]`` FIR filter with the padding that a following stride-2 conv of
    size ``kernel`` needs (the anti-aliased downsampling of StyleGAN2)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum()).expand(channels, 1, 4, 4).contiguous(), persistent=False)
        p = (4 - 2) + (kernel - 1)
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        return F.conv2d(x, self.kernel, groups=x.shape[1])


class DiscriminatorBlock(nn.Module):
    """conv3x3 -> blur + stride-2 conv3x3, plus a blurred stride-2 1x1 skip; ``[B, cin, H, W] ->
    [B, cout, H/2, W/2]``. The residual sum is scaled by 1/sqrt(2) to keep unit variance."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualConv2d(cin, cin, 3, padding=1)
        self.blur = BlurDown(cin, 3)
        self.conv1 = EqualConv2d(cin, cout, 3, stride=2)
        self.skip_blur = BlurDown(cin, 1)
        self.skip = EqualConv2d(cin, cout, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _lrelu(self.conv0(x))
        y = _lrelu(self.conv1(self.blur(y)))
        return (y + self.skip(self.skip_blur(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one channel holding the average standard deviation of features across a group of
    samples (lets D see a lack of variety); ``[B, C, H, W] -> [B, C + 1, H, W]``."""
    b, c, h, w = x.shape
    g = min(group, b)
    if b % g:
        g = 1 if b < 2 else math.gcd(b, g)
    y = x.reshape(g, -1, c, h, w)
    y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [B/g]
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: ``images [B, 3, R, R]`` in [-1, 1] -> logits ``[B]``.

    ``channels`` maps each resolution (R, R/2, ..., 4) to its width.
    """

    def __init__(self, resolution: int = 64, channels: dict[int, int] | None = None, mbstd_group: int = 4):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        channels = channels or {r: 64 for r in (4, 8, 16, 32, 64, 128, 256)}
        self.resolution, self.mbstd_group = resolution, mbstd_group
        self.from_rgb = EqualConv2d(3, channels[resolution], 1)
        blocks, r = [], resolution
        while r > 4:
            blocks.append(DiscriminatorBlock(channels[r], channels[r // 2]))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        c = channels[4]
        self.conv = EqualConv2d(c + 1, c, 3, padding=1)
        self.fc = EqualLinear(c * 16, c)
        self.out = EqualLinear(c, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(_lrelu(self.from_rgb(images)))
        x = _lrelu(self.conv(minibatch_stddev(x, self.mbstd_group)))
        return self.out(_lrelu(self.fc(x.flatten(1)))).squeeze(1)


# --------------------------------------------------------------------------------------------
# Configuration and generator
# --------------------------------------------------------------------------------------------


@dataclass
class ToyGANConfig:
    """Everything that defines a run (stored in the checkpoint; a resumed run must match)."""

    resolution: int = 64
    z_dim: int = 64
    w_dim: int = 64
    n_mlp: int = 4
    g_channels: int = 32
    d_channels: int = 32
    channel_base: int = 512  # width at resolution r: min(channels, channel_base // r), as in NVlabs
    batch: int = 8
    lr: float = 0.0025
    r1_gamma: float = 0.1
    r1_every: int = 16
    style_mixing: float = 0.9
    ema_kimg: float = 2.5
    ema_rampup: float = 0.05
    dataset_size: int = 10_000
    seed: int = 0


def widths(max_channels: int, channel_base: int, resolution: int = 64) -> dict[int, int]:
    """Channels per resolution ``4 .. resolution``: ``min(max_channels, channel_base // r)``
    (at least 8): the high-resolution layers, where a conv costs most, are the narrowest."""
    out, r = {}, 4
    while r <= resolution:
        out[r] = max(8, min(max_channels, channel_base // r))
        r *= 2
    return out


def build_generator(cfg: ToyGANConfig) -> Generator:
    """A freshly initialised StyleGAN2 generator of invkit's adapter for this config."""
    from ..adapters import stylegan2

    width = widths(cfg.g_channels, cfg.channel_base, cfg.resolution)
    return stylegan2.StyleGAN2Generator(
        z_dim=cfg.z_dim, w_dim=cfg.w_dim, resolution=cfg.resolution, channels=[width[r] for r in sorted(width)],
        mapping_dims=[cfg.z_dim] + [cfg.w_dim] * cfg.n_mlp,
    )


def build_discriminator(cfg: ToyGANConfig) -> Discriminator:
    return Discriminator(cfg.resolution, widths(cfg.d_channels, cfg.channel_base, cfg.resolution))


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def sample_ws(G: Generator, batch: int, mixing: float, gen: torch.Generator) -> torch.Tensor:
    """``ws [B, num_ws, w_dim]`` from random z; with probability ``mixing`` rows after a random
    crossover come from a second z (style mixing regularisation)."""
    z = torch.randn(batch, G.z_dim, generator=gen)
    ws = G.mapping(z)
    if mixing > 0 and torch.rand((), generator=gen).item() < mixing:
        cut = int(torch.randint(1, G.num_ws, (), generator=gen))
        ws2 = G.mapping(torch.randn(batch, G.z_dim, generator=gen))
        ws = torch.cat([ws[:, :cut], ws2[:, cut:]], 1)
    return ws


def generator_loss(D: Discriminator, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss ``softplus(-D(G(z)))``."""
    return F.softplus(-D(fake)).mean()


def discriminator_loss(D: Discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Logistic loss ``softplus(D(fake)) + softplus(-D(real))``."""
    return F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()


def r1_penalty(D: Discriminator, real: torch.Tensor) -> torch.Tensor:
    """``E ||grad_x D(x)||^2`` on real images (Mescheder et al. 2018)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

CHECKPOINT_KIND = "toy_gan_checkpoint"


def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "params": {}}
    for pid, st in state["state"].items():
        entry = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{key}"] = value
                entry[key] = "tensor"
            else:
                entry[key] = value
        meta["params"][str(pid)] = entry
    return tensors, meta


def _optimizer_state(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, entry in meta["params"].items():
        state[int(pid)] = {k: (tensors[f"{prefix}.{pid}.{k}"] if v == "tensor" else v) for k, v in entry.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, cfg: ToyGANConfig, G, G_ema, D, opt_g, opt_d, nimg: int, step: int) -> None:
    """Everything needed to resume, in one atomic safetensors file."""
    tensors = {f"G.{k}": v for k, v in G.state_dict().items()}
    tensors.update({f"G_ema.{k}": v for k, v in G_ema.state_dict().items()})
    tensors.update({f"D.{k}": v for k, v in D.state_dict().items()})
    tg, mg = _optimizer_tensors("opt_g", opt_g)
    td_, md = _optimizer_tensors("opt_d", opt_d)
    tensors.update(tg)
    tensors.update(td_)
    save_tensors(path, tensors, {"kind": CHECKPOINT_KIND, "config": asdict(cfg), "nimg": nimg, "step": step,
                                 "opt_g": mg, "opt_d": md})


def load_checkpoint(path: Path, cfg: ToyGANConfig, G, G_ema, D, opt_g, opt_d) -> tuple[int, int]:
    """Restore a run saved by :func:`save_checkpoint`; returns ``(nimg, step)``."""
    tensors, meta = load_tensors(path, kind=CHECKPOINT_KIND)
    if meta["config"] != asdict(cfg):
        changed = sorted(k for k in meta["config"] if meta["config"][k] != asdict(cfg).get(k))
        raise ValueError(f"{path}: saved with a different configuration (differs in {', '.join(changed)})")

    def sub(prefix):
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

    G.load_state_dict(sub("G"))
    G_ema.load_state_dict(sub("G_ema"))
    D.load_state_dict(sub("D"))
    opt_g.load_state_dict(_optimizer_state("opt_g", tensors, meta["opt_g"]))
    opt_d.load_state_dict(_optimizer_state("opt_d", tensors, meta["opt_d"]))
    return int(meta["nimg"]), int(meta["step"])


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


DATASET_KIND = "toy_gan_dataset"


def render_training_set(cfg: ToyGANConfig, cache_dir: Path | None = None) -> torch.Tensor:
    """The training images, seeds ``0 .. dataset_size - 1`` as uint8 ``[N, 3, R, R]`` (the held-out
    seeds of :data:`toy_domain.HELD_OUT_START` are never used). With ``cache_dir`` the rendered set
    is kept there (``dataset.safetensors``) so a resumed run does not render it again."""
    cache = cache_dir / "dataset.safetensors" if cache_dir is not None else None
    if cache is not None and cache.exists():
        tensors, meta = load_tensors(cache, kind=DATASET_KIND)
        if meta["size"] == cfg.dataset_size and meta["resolution"] == cfg.resolution:
            return tensors["images"]
    ds = toy_domain.ToyFaces(cfg.dataset_size, 0, cfg.resolution)
    out = torch.empty(cfg.dataset_size, 3, cfg.resolution, cfg.resolution, dtype=torch.uint8)
    for i in range(cfg.dataset_size):
        out[i] = torch.from_numpy(np.array(toy_domain.render(ds.attributes(i), cfg.resolution))).permute(2, 0, 1)
    if cache is not None:
        save_tensors(cache, {"images": out}, {"kind": DATASET_KIND, "size": cfg.dataset_size,
                                              "resolution": cfg.resolution})
    return out


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for (name, b_ema), b in zip(G_ema.named_buffers(), G.buffers()):
        if not name.endswith("w_avg"):  # the EMA generator's w_avg is measured on it directly
            b_ema.copy_(b)


def train(cfg: ToyGANConfig, out: Path, kimg: float, snap_kimg: float = 5.0, log=print) -> Generator:
    """Train (or resume) until ``kimg`` thousand real images were shown to D; returns G_ema."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    G = build_generator(cfg).train().requires_grad_(True)
    D = build_discriminator(cfg).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    c = cfg.r1_every / (cfg.r1_every + 1)  # lazy regularisation: keep the effective D step the same
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)
    ckpt = out / "checkpoint.safetensors"
    nimg, step = 0, 0
    if ckpt.exists():
        nimg, step = load_checkpoint(ckpt, cfg, G, G_ema, D, opt_g, opt_d)
        log(f"resumed from {ckpt} at {nimg / 1000:.1f} kimg")

    if nimg >= kimg * 1000:
        return G_ema
    t0 = time.time()
    data = render_training_set(cfg, out)
    log(f"rendered {len(data)} training images in {time.time() - t0:.0f}s")
    # every random draw of a step derives from (seed, step), so a resumed run is bit-exact
    gen = torch.Generator()
    fixed_z = torch.randn(32, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 12345))
    next_snap = (nimg // int(snap_kimg * 1000) + 1) * int(snap_kimg * 1000)
    t_last, n_last = time.time(), nimg
    while nimg < kimg * 1000:
        gen.manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(data), (cfg.batch,), generator=gen)
        real = data[idx].float() / 127.5 - 1

        # D step (+ lazy R1)
        with torch.no_grad():
            fake = G.synthesize(sample_ws(G, cfg.batch, cfg.style_mixing, gen), G.sample_noise(cfg.batch, gen))
        loss_d = discriminator_loss(D, real, fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        r1 = torch.zeros(())
        if step % cfg.r1_every == 0:
            r1 = r1_penalty(D, real)
            (r1 * (cfg.r1_gamma / 2) * cfg.r1_every).backward()
        opt_d.step()

        # G step
        D.requires_grad_(False)
        fake = G.synthesize(sample_ws(G, cfg.batch, cfg.style_mixing, gen), G.sample_noise(cfg.batch, gen))
        loss_g = generator_loss(D, fake)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)

        nimg += cfg.batch
        step += 1
        ema_nimg = min(cfg.ema_kimg * 1000, nimg * cfg.ema_rampup)
        update_ema(G_ema, G, 0.5 ** (cfg.batch / max(ema_nimg, 1e-8)))

        if nimg >= next_snap or nimg >= kimg * 1000:
            next_snap += int(snap_kimg * 1000)
            sec_per_kimg = (time.time() - t_last) / max((nimg - n_last) / 1000, 1e-9)
            t_last, n_last = time.time(), nimg
            G_ema.w_avg.copy_(G_ema.compute_w_avg(n=2000, seed=cfg.seed))
            with torch.no_grad():
                save_grid(G_ema(fixed_z), out / f"samples_{nimg // 1000:06d}.png", ncol=8)
            save_checkpoint(ckpt, cfg, G, G_ema, D, opt_g, opt_d, nimg, step)
            record = {"kimg": nimg / 1000, "step": step, "loss_d": loss_d.item(), "loss_g": loss_g.item(),
                      "r1": r1.item(), "sec_per_kimg": sec_per_kimg, "time": time.time()}
            with open(out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
            log(json.dumps(record))
    return G_ema


def export_checkpoint(run_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write the EMA generator of ``run_dir/checkpoint.safetensors`` with :func:`save_generator`
    (its ``w_avg`` measured over 10 000 z), without training or rendering anything."""
    tensors, meta = load_tensors(Path(run_dir) / "checkpoint.safetensors", kind=CHECKPOINT_KIND)
    cfg = ToyGANConfig(**meta["config"])
    return save_run_generator(build_generator(cfg), tensors, "G_ema", cfg.seed, path)


def save_run_generator(G: Generator, tensors: dict[str, torch.Tensor], prefix: str, seed: int,
                       path: str | os.PathLike) -> Path:
    """Load the ``prefix.*`` tensors of a run checkpoint into ``G``, measure its ``w_avg`` over
    10 000 z (``seed``) and write it with :func:`save_generator` (shared by the toy runs)."""
    G.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    G.w_avg.copy_(G.compute_w_avg(n=10_000, seed=seed))
    return save_generator(G.eval().requires_grad_(False), path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invkit.recipes.toy_gan", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="run directory (resumes from its checkpoint)")
    p.add_argument("--kimg", type=float, default=300, help="train until this many thousand real images")
    p.add_argument("--snap-kimg", type=float, default=5, help="checkpoint and sample grid every N kimg")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--export", help="write the EMA generator here (invkit safetensors) when done")
    for f in ToyGANConfig.__dataclass_fields__.values():
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ToyGANConfig(**{k: getattr(args, k) for k in ToyGANConfig.__dataclass_fields__})
    G_ema = train(cfg, Path(args.out), args.kimg, args.snap_kimg, log=lambda m: print(m, flush=True))
    if args.export:
        G_ema.w_avg.copy_(G_ema.compute_w_avg(n=10_000, seed=cfg.seed))
        path = save_generator(G_ema, args.export)
        print(f"exported EMA generator to {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
