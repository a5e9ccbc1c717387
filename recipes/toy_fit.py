"""Fit a StyleGAN2 generator to the toy renderer (:mod:`invkit.recipes.toy_domain`) by regression.

Adversarial training of a 64 px StyleGAN2 on 2 CPU cores gave soft samples after hours (the
earlier shipped generator, :mod:`.toy_gan`). The renderer, though, is a known deterministic
function of a few attributes, so the generator can be *taught* it directly:

* a latent ``z ~ N(0, I)`` of ``z_dim`` numbers defines an image: the mapping network's first
  step normalises z to ``u = z / rms(z)`` (second moment 1); the first
  ``len(ATTRIBUTE_NAMES)`` entries of ``u`` are turned into uniform numbers by their exact
  marginal CDF (a coordinate of a point uniform on the sphere of radius ``sqrt(z_dim)``), and
  those into attributes with the ranges of :func:`toy_domain.sample_attributes` (glasses when
  the first one exceeds 1/2). The remaining entries carry nothing, so the attribute
  distribution of G's samples is the renderer's (up to the weak coupling of the sphere);
* the unchanged StyleGAN2 network of :mod:`invkit.adapters.stylegan2` (mapping + synthesis,
  const noise) is trained so that ``G(z)`` matches ``render(attributes(z))``: L1 on pixels,
  optionally an L1 on pixel differences (``edge``) and toy-LPIPS
  (:class:`invkit.recipes.toy.ToyPerceptual`), Adam, an EMA of the weights, the learning rate
  annealed linearly to zero over the last ``anneal`` fraction of the run. ``init`` warm-starts
  from any invkit generator file (every tensor of matching name and shape), e.g. a GAN-trained
  one that already draws faces.

The result is an ordinary StyleGAN2 checkpoint (``invkit.save_generator``): nothing downstream
knows it was trained this way. Its W space is organised by the attributes, which is what the
InterFaceGAN directions of the demo then find.

Run (resumable; every random draw derives from (seed, step), so a resumed run is bit-exact;
docs/demo.md gives the exact commands of the shipped generator)::

    python -m invkit.recipes.toy_fit --out runs/toy_fit --kimg 100 --threads 2
    python -m invkit.recipes.toy_fit --out runs/toy_fit --kimg 100 --export recipes/assets/toy_generator.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.special import betainc

from ..generator import Generator
from ..io.images import save_grid
from ..io.tensorfile import load as load_tensors
from ..io.tensorfile import save as save_tensors
from . import toy_domain
from .toy_gan import _optimizer_state, _optimizer_tensors, save_run_generator

CHECKPOINT_KIND = "toy_fit_checkpoint"
#: Fixed seeds of the progress grid and the logged PSNR (held-out range, never trained on).
MONITOR_SEED = toy_domain.HELD_OUT_START + 777


@dataclass
class ToyFitConfig:
    """Everything that defines a run (stored in its checkpoint; a resumed run must match)."""

    z_dim: int = 16
    w_dim: int = 64
    n_mlp: int = 4
    mapping_lr_mul: float = 1.0  # StyleGAN's 0.01 (and 0.1) left the mapping far slower than the regression needs
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64, 32])  # 4, 8, 16, 32, 64 px
    batch: int = 32
    lr: float = 0.003
    perceptual: float = 0.1
    edge: float = 0.0  # L1 on horizontal and vertical pixel differences (sharp edges learn sooner)
    ema_beta: float = 0.998
    kimg: float = 200.0
    anneal: float = 0.25
    seed: int = 0
    init: str = ""  # an invkit generator file whose tensors of matching name and shape start the fit


def latent_to_uniform(z: torch.Tensor, count: int) -> np.ndarray:
    """``z [B, z_dim]`` -> ``[B, count]`` numbers in (0, 1), uniform when z is Gaussian.

    The mapping network sees ``u = z / rms(z)``; ``u_i / sqrt(d)`` squared follows
    Beta(1/2, (d - 1)/2), which gives each coordinate's CDF exactly.
    """
    d = z.shape[1]
    u = (z * torch.rsqrt(z.double().square().mean(1, keepdim=True) + 1e-8)).double().numpy()[:, :count]
    tail = betainc(0.5, (d - 1) / 2, np.minimum(u * u / d, 1.0))
    return 0.5 + 0.5 * np.sign(u) * tail


def latent_to_attributes(z: torch.Tensor) -> list[toy_domain.FaceAttributes]:
    """The renderer attributes that latent rows ``z [B, z_dim]`` stand for (see module docstring)."""
    names = toy_domain.ATTRIBUTE_NAMES
    if z.shape[1] < len(names):
        raise ValueError(f"z_dim must be at least {len(names)}, got {z.shape[1]}")
    p = latent_to_uniform(z, len(names))
    signed = {"smile", "yaw", "x", "y"}
    out = []
    for row in p:
        values = {}
        for name, v in zip(names, row):
            if name in toy_domain.BINARY_ATTRIBUTES:
                values[name] = int(v > 0.5)
            else:
                values[name] = float(2 * v - 1) if name in signed else float(v)
        out.append(toy_domain.FaceAttributes(**values))
    return out


def targets(z: torch.Tensor) -> torch.Tensor:
    """``render(latent_to_attributes(z))``: ``[B, 3, 64, 64]`` in [-1, 1]."""
    return toy_domain.render_batch(latent_to_attributes(z))


def build_generator(cfg: ToyFitConfig) -> Generator:
    from ..adapters import stylegan2

    return stylegan2.StyleGAN2Generator(z_dim=cfg.z_dim, w_dim=cfg.w_dim, resolution=toy_domain.RESOLUTION,
                                        channels=cfg.channels, mapping_dims=[cfg.z_dim] + [cfg.w_dim] * cfg.n_mlp,
                                        mapping_lr_mul=cfg.mapping_lr_mul)


@torch.no_grad()
def warm_start(G: Generator, path: str) -> tuple[int, int]:
    """Copy every tensor of the generator file ``path`` whose name and shape match ``G``'s
    (mapping weights rescaled for a different ``mapping_lr_mul``: equalised-lr layers store
    ``weight / lr_mul``). Returns ``(copied, kept)`` tensor counts."""
    from ..loading import load_generator

    source = load_generator(path)
    scale = source.config.get("mapping_lr_mul", 0.01) / G.config["mapping_lr_mul"]
    own = G.state_dict()
    copied = 0
    for name, tensor in source.state_dict().items():
        if name in own and own[name].shape == tensor.shape and name != "w_avg":
            own[name].copy_(tensor * scale if name.startswith("mapping_net.") else tensor)
            copied += 1
    return copied, len(own) - copied


def learning_rate(cfg: ToyFitConfig, nimg: int) -> float:
    """Constant, then linear to zero over the last ``anneal`` fraction of ``kimg``."""
    total = cfg.kimg * 1000
    start = total * (1 - cfg.anneal)
    if nimg <= start:
        return cfg.lr
    return cfg.lr * max(0.0, (total - nimg) / max(total - start, 1.0))


def edge_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the horizontal and vertical pixel differences of ``a`` and
    ``b`` (``[B, C, H, W]``): an edge term that plain L1 under-weights (a blurred edge costs
    little L1 but most of this)."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], measured on [0, 1] (the scikit-image convention)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).square().mean()
    return float(10 * torch.log10(1 / mse.clamp_min(1e-12)))


def _save(path: Path, cfg: ToyFitConfig, G, G_ema, opt, nimg: int, step: int) -> None:
    tensors = {f"G.{k}": v for k, v in G.state_dict().items()}
    tensors.update({f"G_ema.{k}": v for k, v in G_ema.state_dict().items()})
    t_opt, m_opt = _optimizer_tensors("opt", opt)
    tensors.update(t_opt)
    save_tensors(path, tensors, {"kind": CHECKPOINT_KIND, "config": asdict(cfg), "nimg": nimg, "step": step,
                                 "opt": m_opt})


def _load(path: Path, cfg: ToyFitConfig, G, G_ema, opt) -> tuple[int, int]:
    tensors, meta = load_tensors(path, kind=CHECKPOINT_KIND)
    if meta["config"] != asdict(cfg):
        changed = sorted(k for k in meta["config"] if meta["config"][k] != asdict(cfg).get(k))
        raise ValueError(f"{path}: saved with a different configuration (differs in {', '.join(changed)})")

    def sub(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

    G.load_state_dict(sub("G"))
    G_ema.load_state_dict(sub("G_ema"))
    opt.load_state_dict(_optimizer_state("opt", tensors, meta["opt"]))
    return int(meta["nimg"]), int(meta["step"])


def train(cfg: ToyFitConfig, out: Path, snap_kimg: float = 4.0, log=print, stop_kimg: float | None = None) -> Generator:
    """Train (or resume) to ``cfg.kimg`` thousand images; returns the EMA generator.

    ``stop_kimg`` stops early (with a checkpoint) although the schedule goes on; running again
    continues bit-exactly.
    """
    from .toy import ToyPerceptual, load_attribute_net

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    G = build_generator(cfg).train().requires_grad_(True)
    if cfg.init:
        copied, kept = warm_start(G, cfg.init)
        log(f"warm start from {cfg.init}: {copied} tensors copied, {kept} freshly initialised")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)
    perceptual = ToyPerceptual(load_attribute_net())
    ckpt = out / "checkpoint.safetensors"
    nimg, step = 0, 0
    if ckpt.exists():
        nimg, step = _load(ckpt, cfg, G, G_ema, opt)
        log(f"resumed from {ckpt} at {nimg / 1000:.1f} kimg")
    fixed_z = torch.randn(16, cfg.z_dim, generator=torch.Generator().manual_seed(MONITOR_SEED))
    fixed_target = targets(fixed_z)
    gen = torch.Generator()
    snap = int(snap_kimg * 1000)
    next_snap = (nimg // snap + 1) * snap
    t_last, n_last = time.time(), nimg
    end = cfg.kimg * 1000 if stop_kimg is None else min(cfg.kimg, stop_kimg) * 1000
    while nimg < end:
        gen.manual_seed(cfg.seed * 1_000_003 + step)
        z = torch.randn(cfg.batch, cfg.z_dim, generator=gen)
        target = targets(z)
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, nimg)
        fake = G.synthesize(G.mapping(z), noise_mode="const")
        l1 = (fake - target).abs().mean()
        lp = perceptual(fake, target).mean()
        loss = l1 + cfg.perceptual * lp
        if cfg.edge > 0:
            loss = loss + cfg.edge * edge_l1(fake, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        nimg += cfg.batch
        step += 1
        beta = min(cfg.ema_beta, (1 + step) / (10 + step))  # short warm-up so early snapshots mean something
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - beta)
        if nimg >= next_snap or nimg >= end:
            next_snap += snap
            with torch.no_grad():
                sample = G_ema.synthesize(G_ema.mapping(fixed_z), noise_mode="const")
            save_grid(torch.cat([fixed_target[:8], sample[:8], fixed_target[8:], sample[8:]]).clamp(-1, 1),
                      out / f"samples_{nimg // 1000:06d}.png", ncol=8)
            _save(ckpt, cfg, G, G_ema, opt, nimg, step)
            record = {"kimg": nimg / 1000, "step": step, "l1": l1.item(), "toy_lpips": lp.item(),
                      "lr": learning_rate(cfg, nimg), "ema_psnr_db": psnr(sample, fixed_target),
                      "sec_per_kimg": (time.time() - t_last) / max((nimg - n_last) / 1000, 1e-9), "time": time.time()}
            t_last, n_last = time.time(), nimg
            with open(out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
            log(json.dumps(record))
    return G_ema


def export_checkpoint(run_dir: str | os.PathLike, path: str | os.PathLike, which: str = "G_ema") -> Path:
    """Write the EMA generator (``which="G_ema"``) or the raw trained one (``"G"``, e.g. to warm
    start another run) of ``run_dir/checkpoint.safetensors`` with :func:`save_generator`
    (``w_avg`` measured over 10 000 z)."""
    tensors, meta = load_tensors(Path(run_dir) / "checkpoint.safetensors", kind=CHECKPOINT_KIND)
    cfg = ToyFitConfig(**meta["config"])
    return save_run_generator(build_generator(cfg), tensors, which, cfg.seed, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invkit.recipes.toy_fit", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="run directory (resumes from its checkpoint)")
    p.add_argument("--snap-kimg", type=float, default=4, help="checkpoint and sample grid every N kimg")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--export", help="only write the run's generator here (invkit safetensors)")
    p.add_argument("--export-which", choices=["G_ema", "G"], default="G_ema",
                   help="with --export: the EMA generator (default) or the raw trained one (to warm start a run)")
    p.add_argument("--stop-kimg", type=float, help="stop (with a checkpoint) at this many kimg; run again to go on")
    defaults = ToyFitConfig()
    for name in ToyFitConfig.__dataclass_fields__:  # every config field is an option
        value = getattr(defaults, name)
        if isinstance(value, list):
            p.add_argument("--" + name.replace("_", "-"), type=int, nargs="+", default=value)
        else:
            p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.export:
        path = export_checkpoint(args.out, args.export, args.export_which)
        print(f"exported EMA generator to {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
        return 0
    cfg = ToyFitConfig(**{k: getattr(args, k) for k in ToyFitConfig.__dataclass_fields__})
    train(cfg, Path(args.out), args.snap_kimg, log=lambda m: print(m, flush=True), stop_kimg=args.stop_kimg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
