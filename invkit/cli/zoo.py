"""``invkit zoo``: the known pretrained files and whether they are cached."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..io import zoo


def register(sub) -> None:
    p = sub.add_parser("zoo", help="list zoo entries and the cache")
    p.set_defaults(func=run)


def run(args) -> int:
    table = Table(title=f"invkit zoo (cache: {zoo.cache_dir()})")
    for col in ("name", "kind", "adapter", "cached", "description"):
        table.add_column(col)
    for e in zoo.entries():
        cached = "yes" if (zoo.cache_dir() / e.file_name).is_file() else ""
        table.add_row(e.name, e.kind, e.adapter, cached, e.description)
    Console().print(table)
    return 0
