"""``invkit export``: a generator (and its encoder) as ONNX or TorchScript files."""

from __future__ import annotations

from rich.console import Console

from ..exporter import FORMATS, METADATA_NAME, export


def register(sub) -> None:
    p = sub.add_parser("export", help="write ONNX / TorchScript graphs of a generator and encoder")
    p.add_argument("--generator", "-g", required=True, help="checkpoint path, zoo name or URL")
    p.add_argument("--encoder", "-e", help="Feature-Style encoder file (also exports encoder.*)")
    p.add_argument("--k", type=int, default=None,
                   help="layer of generator_from_k<K> (default: the encoder's K, else 5)")
    p.add_argument("--format", "-f", choices=sorted(FORMATS), default="onnx", help="file format to write (default onnx)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args) -> int:
    console = Console(stderr=True, soft_wrap=True)
    meta = export(args.generator, args.out, encoder=args.encoder, k=args.k, format=args.format,
                  overwrite=args.overwrite)
    for name, graph in meta["graphs"].items():
        err = max(graph["max_abs_error_vs_pytorch"].values())
        console.print(f"{name}: {args.out}/{graph['file']} (max |diff| vs PyTorch {err:.1e})", highlight=False)
    console.print(f"metadata: {args.out}/{METADATA_NAME}", highlight=False)
    return 0
