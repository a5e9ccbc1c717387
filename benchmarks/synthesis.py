"""Synthesis speed and memory of the StyleGAN2 / StyleGAN3 adapters, fast path vs reference path.

Each adapter is built at an official full-size configuration with random weights (seeded), and
``G.synthesize(ws)`` is timed for batch 1 and 4 with the fast ops (``invkit.ops.resample``, the
default) and with the reference ops (``invkit.ops.upfirdn``, the test oracle). Every
(config, batch, path) runs in a fresh subprocess so that its peak memory is its own:

* time per image: median of ``--repeat`` timed runs after one warm-up run, divided by the batch
  (a warm-up that takes longer than ``--long`` seconds is itself the single measurement: such
  runs dwarf any first-call cost, and this keeps the full table under ~10 minutes on 2 cores);
* peak memory (CPU): the process's resident-set high-water mark (``resource.getrusage``
  ``ru_maxrss``), total and above the baseline measured after building the model; (CUDA):
  ``torch.cuda.max_memory_allocated``;
* GFLOP/s: FLOPs of the path that ran, counted by ``torch.utils.flop_counter.FlopCounterMode``
  on a copy of the run on the meta device (convolutions and matmuls; the reference path's
  zero-stuffed filtering counts in full, as it is really computed), divided by the median time.

    python benchmarks/synthesis.py                      # the full table (CPU, all threads)
    python benchmarks/synthesis.py --quick              # SG2-256 and SG3-T-256, batch 1
    python benchmarks/synthesis.py --configs sg3-r-256 --batches 1 --json out.json
    python benchmarks/synthesis.py --device cuda --tf32 --bf16 --compile

Prints a table; asserts nothing. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

#: name -> (adapter, official kwargs). StyleGAN2: NVlabs paper256 (channel_base 16384) and
#: config-f (channel_base 32768), channel_max 512, 8 mapping layers, conv_clamp 256 (ffhq.pkl).
#: StyleGAN3: the official -t / -r configs (Appendix A of the vectors README).
CONFIGS: dict[str, tuple[str, dict]] = {
    "sg2-256": ("stylegan2", {"resolution": 256, "channel_base": 16384, "channel_max": 512}),
    "sg2-1024": ("stylegan2", {"resolution": 1024, "channel_base": 32768, "channel_max": 512}),
    "sg3-t-256": ("stylegan3", {"img_resolution": 256, "channel_base": 16384, "channel_max": 512}),
    "sg3-r-256": ("stylegan3", {"img_resolution": 256, "channel_base": 32768, "channel_max": 1024,
                                "conv_kernel": 1, "use_radial_filters": True}),
    "sg3-t-1024": ("stylegan3", {"img_resolution": 1024, "channel_base": 32768, "channel_max": 512}),
    "sg3-r-1024": ("stylegan3", {"img_resolution": 1024, "channel_base": 65536, "channel_max": 1024,
                                 "conv_kernel": 1, "use_radial_filters": True}),
}
DEFAULT_CONFIGS = ["sg2-256", "sg2-1024", "sg3-t-256", "sg3-r-256"]
QUICK_CONFIGS = ["sg2-256", "sg3-t-256"]

#: Official CPU numbers (2 cores, float32, batch 1 unless noted) from the issue, for the table.
OFFICIAL = {
    "sg2-256": "NVlabs ref 0.29 s / 0.5 GB; rosinality 1.09 s / 1.2 GB",
    "sg2-1024": "NVlabs ref 2.66 s / 1.1 GB; rosinality 4.06 s / 3.0 GB",
    "sg3-t-256": "NVlabs ref 14.6 s / 2.2 GB",
    "sg3-r-256": "NVlabs ref 24.3 s / 3.5 GB (batch 4: 130 s / 12.4 GB)",
}


def build(name: str, device: str):
    """A randomly initialised generator at the official config ``name`` (seed 0), eval mode."""
    import torch

    adapter, kw = CONFIGS[name]
    torch.manual_seed(0)
    if adapter == "stylegan2":
        from invkit.adapters.stylegan2 import StyleGAN2Generator

        res = kw["resolution"]
        channels = [min(kw["channel_base"] // (4 * 2**i), kw["channel_max"]) for i in range(res.bit_length() - 2)]
        G = StyleGAN2Generator(512, 512, res, channels, conv_clamp=256.0)
    else:
        from invkit.adapters.stylegan3 import StyleGAN3Generator

        G = StyleGAN3Generator({"z_dim": 512, "w_dim": 512, "img_channels": 3, "c_dim": 0, **kw})
    return G.eval().requires_grad_(False).to(device)


def measure(args: argparse.Namespace) -> dict:
    """Runs in the child process: one (config, batch, impl) measurement."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from invkit import inference
    from invkit.ops import resample

    if args.threads:
        torch.set_num_threads(args.threads)
    resample.set_impl(args.impl)
    cuda = args.device.startswith("cuda")
    G = build(args.config, args.device)
    if args.modconv and hasattr(G, "modconv"):
        G.modconv = args.modconv
    synth = inference.compiled(G.synthesize) if args.compile else G.synthesize
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ws = G.mapping(torch.randn(args.batch, G.z_dim, generator=gen).to(args.device), truncation_psi=0.7)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def run() -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad(), inference.inference_mode(args.device, tf32=args.tf32, bf16=args.bf16):
            synth(ws)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    first = run()  # warm-up: oneDNN / cuDNN pick and JIT-compile kernels per shape
    times = [first] if first > args.long else [run() for _ in range(args.repeat)]
    median = statistics.median(times)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # FLOPs of the same path on the meta device: counted, not computed, and not timed.
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        G.to("meta").synthesize(ws.to("meta"))
    flops = counter.get_total_flops()
    out = {
        "config": args.config, "batch": args.batch, "impl": args.impl, "device": args.device,
        "threads": torch.get_num_threads(), "runs": len(times), "seconds_per_batch": median,
        "seconds_per_image": median / args.batch, "gflop": flops / 1e9, "gflops_per_s": flops / 1e9 / median,
        "modconv": getattr(G, "modconv", None),
    }
    if cuda:
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
        out["memory_source"] = "torch.cuda.max_memory_allocated"
    else:
        peak = peak_rss
        out["peak_bytes"] = peak
        out["synthesis_bytes"] = peak - base_rss
        out["memory_source"] = "getrusage ru_maxrss (fresh process)"
    return out


def child_command(args: argparse.Namespace, config: str, batch: int, impl: str) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--config", config, "--batch", str(batch),
           "--impl", impl, "--device", args.device, "--repeat", str(args.repeat), "--long", str(args.long)]
    for flag in ("tf32", "bf16", "compile"):
        if getattr(args, flag):
            cmd.append(f"--{flag}")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.modconv:
        cmd += ["--modconv", args.modconv]
    return cmd


def gb(n: float) -> str:
    return f"{n / 2**30:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), help=f"default: {DEFAULT_CONFIGS}")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    p.add_argument("--impls", nargs="+", choices=["fast", "reference"], default=["fast", "reference"])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_CONFIGS}, batch 1 only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs after the warm-up (median)")
    p.add_argument("--long", type=float, default=20.0,
                   help="a warm-up longer than this many seconds is the single measurement")
    p.add_argument("--modconv", choices=["auto", "grouped", "stationary"], help="StyleGAN2/3 fast-path strategy")
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 matmuls/convs")
    p.add_argument("--bf16", action="store_true", help="CUDA: bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the synthesis")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0

    configs = args.configs or (QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS)
    batches = [1] if args.quick else args.batches
    rows = []
    header = (f"{'config':11s} {'batch':>5s} {'path':9s} {'s/image':>8s} {'speed-up':>8s} {'peak GB':>8s} "
              f"{'+synth GB':>9s} {'GFLOP/img':>9s} {'GFLOP/s':>8s}")
    print(header)
    print("-" * len(header))
    for config in configs:
        for batch in batches:
            fast_time = None
            for impl in args.impls:
                proc = subprocess.run(child_command(args, config, batch, impl), capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{config:11s} {batch:5d} {impl:9s} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                if impl == "fast":
                    fast_time = row["seconds_per_image"]
                speed = "" if impl == "fast" or fast_time is None else f"{row['seconds_per_image'] / fast_time:.1f}x"
                synth = gb(row["synthesis_bytes"]) if "synthesis_bytes" in row else "-"
                print(f"{config:11s} {batch:5d} {impl:9s} {row['seconds_per_image']:8.3f} {speed:>8s} "
                      f"{gb(row['peak_bytes']):>8s} {synth:>9s} {row['gflop'] / batch:9.1f} "
                      f"{row['gflops_per_s']:8.1f}", flush=True)
        if config in OFFICIAL:
            print(f"{'':11s} official: {OFFICIAL[config]}")
    print("speed-up = reference time / fast time (same run); peak GB = process RSS high-water "
          "(CPU) or max_memory_allocated (CUDA); +synth GB = peak minus the RSS after building the model")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"argv": sys.argv[1:], "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
