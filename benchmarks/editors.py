"""Editor timings on a StyleGAN2-1024-sized random generator (CPU by default).

Target: SeFa (all layers, and a layer range) in < 1 s. Also times the style-affine accessor, the
generator fingerprint that every direction records, one Eq. 1 edit, GANSpace sampling and an
InterFaceGAN fit on W+ codes. Prints numbers; asserts nothing.

    python benchmarks/editors.py [--threads 1] [--repeat 3] [--skip-slow]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

# The official FFHQ 1024 channel table (4 px .. 1024 px); the adapter reads it from checkpoints.
FFHQ_1024_CHANNELS = [512, 512, 512, 512, 512, 256, 128, 64, 32]


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls (seconds) and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-slow", action="store_true", help="only SeFa (skip edit/GANSpace/InterFaceGAN)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from invkit import plugins
    from invkit.adapters.stylegan2 import StyleGAN2Generator
    from invkit.editing import edit
    from invkit.editors.sefa import factorize, select_affines
    from invkit.inversion import Inversion

    torch.manual_seed(0)
    t0 = time.perf_counter()
    G = StyleGAN2Generator(512, 512, 1024, FFHQ_1024_CHANNELS).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in G.parameters())
    print(f"StyleGAN2 1024: {n_params / 1e6:.1f} M parameters, num_ws {G.num_ws}, "
          f"built in {time.perf_counter() - t0:.1f} s, {torch.get_num_threads()} threads")

    sefa = plugins.editors().get("sefa").obj()
    t_aff, affines = timed(G.style_affines, args.repeat)
    print(f"style_affines()                     {t_aff * 1e3:8.1f} ms  ({len(affines)} affines)")
    for rows in (None, [0, 1, 2, 3]):
        chosen = select_affines(affines, rows)
        t_fac, _ = timed(lambda chosen=chosen: factorize([a.weight for a in chosen], top=10), args.repeat)
        label = "all rows" if rows is None else "rows 0-3"
        print(f"SeFa factorize, {label:<8} ({sum(a.weight.shape[0] for a in chosen):5d} x 512)"
              f" {t_fac * 1e3:8.1f} ms")
    t0 = time.perf_counter()
    G.fingerprint()  # hashing every weight is paid once per loaded generator, then cached
    t_fp_first = time.perf_counter() - t0
    t_fp, _ = timed(lambda: G.fingerprint(), args.repeat)
    print(f"fingerprint (first call)            {t_fp_first * 1e3:8.1f} ms")
    t_fit, dirs = timed(lambda: sefa.fit(generator=G, top=10), args.repeat)
    print(f"fingerprint (cached)                {t_fp * 1e3:8.1f} ms")
    print(f"SeFa fit, all rows, top 10 (end to end) {t_fit * 1e3:5.1f} ms  target < 1000 ms: "
          f"{'OK' if t_fit < 1 else 'SLOW'}")
    if args.skip_slow:
        return

    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim))
        k = 5
        inv = Inversion(ws, G.features_at(k, ws), k, G.fingerprint())
        t_edit, _ = timed(lambda: edit(G, inv, dirs[0], 2.0), 1)
    print(f"Eq. 1 edit, one 1024 px image       {t_edit * 1e3:8.1f} ms")

    ganspace = plugins.editors().get("ganspace").obj()
    with torch.no_grad():
        t_gs, _ = timed(lambda: ganspace.fit(generator=G, components=10, samples=5000), 1)
    print(f"GANSpace fit, 5000 samples          {t_gs * 1e3:8.1f} ms")

    interfacegan = plugins.editors().get("interfacegan").obj()
    n = 2000
    codes = torch.randn(n, G.num_ws, G.w_dim)
    scores = (codes.reshape(n, -1) @ torch.randn(G.num_ws * G.w_dim)).numpy()
    t_ig, (d,) = timed(lambda: interfacegan.fit(codes=codes, labels=scores, ratio=0.25,
                                                generator_fingerprint=G.fingerprint()), 1)
    print(f"InterFaceGAN SVM, {n} W+ codes ({G.num_ws}x512), ratio 0.25  {t_ig * 1e3:8.1f} ms "
          f"(val acc {d.stats['val_accuracy']:.3f})")


if __name__ == "__main__":
    main()
