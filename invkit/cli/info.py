"""``invkit info``: sizes, fingerprint and the layer table of a generator checkpoint."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..loading import load_generator
from ._output import print_json, print_table


def register(sub) -> None:
    p = sub.add_parser("info", help="show a generator's sizes and layers (the K you can pick)")
    p.add_argument("generator", help="checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    p.add_argument("--adapter", help="force an adapter instead of detecting it")
    p.add_argument("--json", action="store_true", help="print JSON instead of text and a table")
    p.set_defaults(func=run)


def run(args) -> int:
    G = load_generator(args.generator, adapter=args.adapter)
    info = G.describe()
    if args.json:
        print_json({"source": str(args.generator), **info})
        return 0
    console = Console(soft_wrap=True)  # the path is printed whole, never broken mid-name
    console.print(
        f"[bold]{escape(str(args.generator))}[/bold]: adapter {info['adapter']}, {info['resolution']} px, "
        f"z {info['z_dim']}, w {info['w_dim']}, {info['num_ws']} ws, fingerprint {info['fingerprint']}",
        highlight=False,
    )
    table = Table("K", "layer", "shape (C, H, W)", "w index")
    for layer in info["layers"]:
        table.add_row(str(layer["index"]), layer["name"], " x ".join(map(str, layer["shape"])),
                      "-" if layer["w_index"] is None else str(layer["w_index"]))
    print_table(table, console)
    return 0
