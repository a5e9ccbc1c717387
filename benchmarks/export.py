"""onnxruntime vs PyTorch CPU time for the graphs ``invkit export`` writes.

Exports each network to ONNX in a temporary folder, then times PyTorch (the library's default fast
path) and onnxruntime on the same inputs, interleaved round by round so that a load change on a
shared machine hits both alike; the ratio is the number to read. Networks: the reference-vector
generators (StyleGAN2-ADA, StyleGAN3-T, -R: 64 px, <= 64 channels), a random 256-px StyleGAN2
(256 channels) and a small Feature-Style encoder. Prints numbers; asserts nothing.

    python benchmarks/export.py [--threads 1] [--rounds 5] [--batch 1 4] [--vectors DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import invkit
from invkit.fs_encoder import FeatureStyleEncoder


def networks(vectors: Path):
    """(name, generator, encoder or None) to benchmark."""
    from invkit.adapters.stylegan2 import StyleGAN2Generator
    from invkit.adapters.stylegan2_formats import from_nvlabs as sg2
    from invkit.adapters.stylegan3 import from_nvlabs as sg3

    for family, build in (("nvlabs_stylegan2_ada", sg2), ("nvlabs_stylegan3_t", sg3), ("nvlabs_stylegan3_r", sg3)):
        path = vectors / family / "public" / f"{family}_public_G.pt"
        if path.is_file():
            ref = torch.load(path, map_location="cpu", weights_only=True)
            yield family, build(ref["state_dict"], ref["config"]["init_kwargs"]).eval(), None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = StyleGAN2Generator(256, 256, 256, [256] * 7).eval()
        enc = FeatureStyleEncoder.for_generator(G, 5, input_size=128, depths=(1, 2, 3, 1),
                                                widths=(32, 64, 128, 256), stem_width=32).eval()
    yield "stylegan2_256px_256ch (+ FS encoder)", G, enc


def pytorch_call(G, enc, graph: str):
    """The PyTorch call an exported graph stands for, taking the same named inputs."""
    if graph == "generator":
        return lambda f: G.synthesize(f["ws"])
    if graph == "encoder":
        return lambda f: enc.encode(f["image"])
    return lambda f: G.synthesize_from(5, f["features"], f["ws"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--vectors", default=os.environ.get("INVKIT_VECTORS", "../shared/vectors"))
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
    print(f"threads {args.threads}, rounds {args.rounds} (median ms per call; ratio = onnxruntime / PyTorch)")
    print(f"{'network':40s} {'graph':20s} {'B':>2s} {'torch ms':>9s} {'ort ms':>9s} {'ratio':>6s}")
    for name, G, enc in networks(Path(args.vectors)):
        with tempfile.TemporaryDirectory() as tmp:
            meta = invkit.export(G, tmp, encoder=enc, k=5, format="onnx")
            for graph, info in meta["graphs"].items():
                session = ort.InferenceSession(str(Path(tmp) / info["file"]), opts, providers=["CPUExecutionProvider"])
                for batch in args.batch:
                    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(batch))
                    with torch.no_grad():
                        ws = G.mapping(z)
                        feeds = {"ws": ws, "features": G.features_at(5, ws),
                                 "image": G.synthesize(ws).clamp(-1, 1)}
                    feeds = {i["name"]: feeds[i["name"]] for i in info["inputs"]}
                    module = pytorch_call(G, enc, graph)
                    np_feeds = {k: v.numpy() for k, v in feeds.items()}
                    t_torch, t_ort = [], []
                    for _ in range(args.rounds + 1):  # the first round warms both up
                        t0 = time.perf_counter()
                        with torch.no_grad():
                            module(feeds)
                        t1 = time.perf_counter()
                        session.run(None, np_feeds)
                        t2 = time.perf_counter()
                        t_torch.append(t1 - t0)
                        t_ort.append(t2 - t1)
                    a, b = statistics.median(t_torch[1:]) * 1e3, statistics.median(t_ort[1:]) * 1e3
                    print(f"{name:40s} {graph:20s} {batch:2d} {a:9.2f} {b:9.2f} {b / a:6.2f}", flush=True)


if __name__ == "__main__":
    main()
