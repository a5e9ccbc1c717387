"""Training-step time and peak memory of the Feature-Style training engine.

    python benchmarks/training.py                       # CPU configs: tiny, small
    python benchmarks/training.py --configs ffhq1024 --device cuda
    python benchmarks/training.py --configs all --steps 5 --device cuda

Every config is the real engine step (:meth:`invkit.training.Trainer.train_step`: synthetic
images drawn on the fly, encoder forward, G(w), G_K(w), G(w, F), the real objective, backward,
Ranger step) on randomly initialised networks of the stated architecture. LPIPS runs its real
AlexNet trunk with random weights (the ImageNet weights cannot be downloaded here; the compute
is the same). ``ffhq1024`` also runs the identity (ArcFace IResNet-50) and parsing (BiSeNet)
losses with random weights, as Eq. 8. Numbers: median seconds per step after warm-up, and the
peak memory of the steps (CUDA: ``max_memory_allocated``; CPU: the process's peak resident set
growth, from ``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from invkit.adapters.stylegan2 import StyleGAN2Generator
from invkit.losses import FeatureStyleLoss, LossWeights
from invkit.nets.lpips import LPIPS
from invkit.recipe import EncoderSpec, LossNetworks, Recipe, Schedule
from invkit.training import DistContext, Trainer


@dataclass(frozen=True)
class Config:
    name: str
    resolution: int
    channels: tuple[int, ...]
    w_dim: int
    k: int
    encoder: EncoderSpec
    batch_real: int
    batch_synthetic: int
    faces: bool = False

    def describe(self) -> str:
        e = self.encoder
        return (f"G {self.resolution}px max {max(self.channels)}ch w{self.w_dim}, K={self.k}; "
                f"E depths {list(e.depths)} widths {list(e.widths)} @{e.input_size}; "
                f"batch {self.batch_real}+{self.batch_synthetic}" + ("; +ID +parsing" if self.faces else ""))


IRESNET50 = EncoderSpec()
CONFIGS = {
    "tiny": Config("tiny", 32, (32, 32, 32, 16), 32, 5,
                   EncoderSpec(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32), stem_width=16, input_size=32), 2, 2),
    "small": Config("small", 64, (128, 128, 128, 64, 32), 128, 5,
                    EncoderSpec(depths=(1, 1, 2, 1), widths=(32, 64, 128, 128), stem_width=32, input_size=64), 2, 2),
    "afhq512": Config("afhq512", 512, (512, 512, 512, 512, 512, 256, 128, 64), 512, 5, IRESNET50, 2, 2),
    "ffhq1024": Config("ffhq1024", 1024, (512, 512, 512, 512, 512, 256, 128, 64, 32), 512, 5, IRESNET50, 2, 2,
                       faces=True),
}


def _peak_rss_reset() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_config(cfg: Config, device: torch.device, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=cfg.w_dim, w_dim=cfg.w_dim, resolution=cfg.resolution, channels=list(cfg.channels))
    G = G.to(device).eval().requires_grad_(False)
    loss_weights = LossWeights() if cfg.faces else LossWeights(identity=0.0, parsing=0.0)
    recipe = Recipe(
        name=f"bench-{cfg.name}", generator="random", k=cfg.k, loss=loss_weights,
        loss_networks=LossNetworks(lpips_trunk="random"),
        schedule=Schedule(batch_real=cfg.batch_real, batch_synthetic=cfg.batch_synthetic, epochs=1,
                          iters_per_epoch=10_000, lr_drop_epochs=0),
        encoder=cfg.encoder, num_workers=0,
    )
    arcface = parser = None
    if cfg.faces:
        from invkit.nets.arcface import ArcFace
        from invkit.nets.bisenet import BiSeNet

        arcface, parser = ArcFace(), BiSeNet()
    loss = FeatureStyleLoss(LPIPS("alex", trunk="random"), recipe.loss, arcface=arcface, parser=parser)
    real = [torch.rand(3, cfg.resolution, cfg.resolution) * 2 - 1 for _ in range(4 * cfg.batch_real)]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(recipe, G, tmp, real, loss=loss, ctx=DistContext(device=device), progress=False)
        n_params = sum(p.numel() for p in trainer.encoder.parameters())
        for _ in range(warmup):
            trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            _peak_rss_reset()
            base = _rss_kib("VmRSS") * 1024
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            peak, total = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_allocated(device)
            growth = peak - base
        else:
            total = _rss_kib("VmHWM") * 1024
            growth = total - base
    return {"config": cfg.name, "describe": cfg.describe(), "params_M": n_params / 1e6,
            "sec_per_step": statistics.median(times), "min_sec": min(times),
            "peak_MiB": total / 2**20, "step_MiB": growth / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,small", help=f"comma list of {', '.join(CONFIGS)} or 'all'")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the tiny configs are below LPIPS-Alex's smallest input at the coarser pyramid levels
    warnings.filterwarnings("ignore", message="multi-scale LPIPS")
    names = list(CONFIGS) if args.configs == "all" else [n.strip() for n in args.configs.split(",")]
    device = torch.device(args.device)
    table = Table(title=f"invkit training step ({device}, {torch.get_num_threads()} CPU threads, "
                        f"{args.steps} timed steps after {args.warmup} warm-up)")
    for col in ("config", "setup", "encoder params (M)", "s/step (median)", "s/step (min)",
                "peak memory (MiB)", "of which during steps (MiB)"):
        table.add_column(col)
    for name in names:
        if name not in CONFIGS:
            print(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}", file=sys.stderr)
            return 2
        r = run_config(CONFIGS[name], device, args.steps, args.warmup)
        table.add_row(r["config"], r["describe"], f"{r['params_M']:.2f}", f"{r['sec_per_step']:.3f}",
                      f"{r['min_sec']:.3f}", f"{r['peak_MiB']:.0f}", f"{r['step_MiB']:.0f}")
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
