"""``invkit zoo``: the known pretrained files, how they are verified and whether they are cached."""

from __future__ import annotations

from rich.table import Table

from ..io import zoo
from ._output import keep_whole, print_json, print_table


def register(sub) -> None:
    p = sub.add_parser("zoo", help="list zoo entries, their sha256 verification and the cache")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = [{"name": e.name, "kind": e.kind, "adapter": e.adapter, "url": e.url, "file": e.file_name,
             "sha256": e.sha256, "verification": e.verification,
             "cached": str(zoo.cache_dir() / e.file_name) if (zoo.cache_dir() / e.file_name).is_file() else None,
             "description": e.description, "defaults": e.defaults} for e in zoo.entries()]
    if args.json:
        print_json({"cache": str(zoo.cache_dir()), "entries": rows})
        return 0
    table = Table(title=f"invkit zoo (cache: {zoo.cache_dir()})")
    for col in ("name", "kind", "adapter", "verified by", "cached", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        check = r["verification"] if r["sha256"] else "[yellow]none (not verified)[/yellow]"
        table.add_row(r["name"], r["kind"], r["adapter"], check, "yes" if r["cached"] else "", r["description"])
    print_table(keep_whole(table, "name"))
    return 0
