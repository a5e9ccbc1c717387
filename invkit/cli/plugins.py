"""``invkit plugins``: what is loaded, from which distribution, and what is broken."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .. import plugins
from ._output import keep_whole, print_json, print_table


def register(sub) -> None:
    p = sub.add_parser("plugins", help="list loaded plugins and what they register")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    st = plugins.state()
    kinds = {"generator": st.generators, "editor": st.editors, "recipe": st.recipes}
    provided: dict[str, list[str]] = {}
    for kind, reg in kinds.items():
        for e in reg.entries():
            provided.setdefault(f"{e.distribution}:{e.plugin}", []).append(f"{kind} {e.name}")
    # identify_checkpoint registers nothing, so list it from the hook implementations.
    for impl in st.pm.hook.identify_checkpoint.get_hookimpls():
        provided.setdefault(impl.plugin_name, []).append("checkpoint identification")
    rows = [
        {"plugin": p.name, "module": p.module, "distribution": p.distribution, "version": p.version,
         "provides": provided.get(f"{p.distribution}:{p.name}", []), "error": p.error,
         "refused": list(p.refused)}
        for p in plugins.plugins()
    ]
    if args.json:
        print_json(rows)
        return 0
    table = Table(title="invkit plugins")
    for col in ("plugin", "distribution", "provides", "status"):
        table.add_column(col)
    for r in rows:
        status = f"[red]broken: {r['error']}[/red]" if r["error"] else "[green]ok[/green]"
        if r["refused"]:
            status += "".join(f"\n[yellow]{line}[/yellow]" for line in r["refused"])
        table.add_row(r["plugin"], f"{r['distribution']} {r['version']}", ", ".join(r["provides"]), status)
    print_table(keep_whole(table, "plugin", "distribution"))
    if plugins._autoload_disabled():
        Console().print(f"third-party plugins disabled by {plugins.DISABLE_ENV}")
    return 0
