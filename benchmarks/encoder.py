"""Feature-Style encoder forward time and peak memory at 256 px input (IResNet-50, the
StyleGAN2-1024 configuration: 18 heads of 8640 -> 512, F = 512x16x16).

    python benchmarks/encoder.py                      # CPU, batch 1 and 8
    python benchmarks/encoder.py --device cuda        # GPU
    python benchmarks/encoder.py --batches 1,4,8 --repeats 10 --threads 2

Prints one table row per batch size: median and best wall time per forward (``torch.no_grad``,
eval mode), images per second, and peak memory. On CPU, peak memory is the largest resident
set size sampled every millisecond during the forwards minus the resident size just before
them (activations and workspace; the weights, 435 MB in float32, are reported separately). On CUDA it
is ``torch.cuda.max_memory_allocated`` during the forwards minus the memory allocated before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch

from invkit.fs_encoder import FeatureStyleEncoder


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a background thread while active."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.base = rss_bytes()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def measure(enc: FeatureStyleEncoder, batch: int, device: torch.device, repeats: int, warmup: int) -> dict:
    x = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            enc(x)
        sync()
        times = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            for _ in range(repeats):
                t0 = time.perf_counter()
                enc(x)
                sync()
                times.append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            with PeakRSS() as mem:
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    enc(x)
                    times.append(time.perf_counter() - t0)
            peak = mem.peak - mem.base
    med = statistics.median(times)
    return {"batch": batch, "median_ms": med * 1e3, "best_ms": min(times) * 1e3,
            "img_per_s": batch / med, "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    enc = FeatureStyleEncoder(num_ws=18, w_dim=512, k=5, feature_shape=(512, 16, 16)).to(device).eval()
    n_params = sum(p.numel() for p in enc.parameters())
    weights_mb = sum(t.numel() * t.element_size() for t in enc.state_dict().values()) / 2**20
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Feature-Style encoder (IResNet-50, 18 x Linear(8640, 512), F 512x16x16): "
          f"{n_params / 1e6:.1f} M parameters, {weights_mb:.0f} MB of weights")
    print(f"device: {name}; torch {torch.__version__}; input 256x256; {args.repeats} timed runs after {args.warmup} warm-up")
    print(f"{'batch':>5} | {'median ms':>10} | {'best ms':>9} | {'img/s':>8} | {'peak MB':>8}")
    print("-" * 53)
    for b in (int(s) for s in args.batches.split(",")):
        r = measure(enc, b, device, args.repeats, args.warmup)
        print(f"{r['batch']:>5} | {r['median_ms']:>10.1f} | {r['best_ms']:>9.1f} | {r['img_per_s']:>8.2f} | {r['peak_mb']:>8.1f}")


if __name__ == "__main__":
    main()
