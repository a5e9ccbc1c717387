"""``invkit recipes``: the registered training recipes, as a table or one recipe as JSON."""

from __future__ import annotations

from rich.table import Table

from .. import plugins
from ..recipe import Recipe, get_recipe
from ._output import keep_whole, print_json, print_table


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the training recipes (or print one as JSON)")
    p.add_argument("name", nargs="?", help="print this recipe (name or .json file) as JSON")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with NAME: apply overrides before printing (repeatable)")
    p.add_argument("--pattern", default="*", help="only names matching this shell pattern")
    p.add_argument("--json", action="store_true", help="list the recipes as JSON (each one in full)")
    p.set_defaults(func=run)


def _objective(r: Recipe) -> str:
    w = r.loss
    extra = [f"id {w.identity:g}"] if w.identity else []
    extra += [f"parse {w.parsing:g}"] if w.parsing else []
    eq = "Eq. 8" if extra else "Eq. 5"
    return f"{eq}: mse {w.mse:g}, lpips {w.lpips:g}, feat {w.feature:g}" + "".join(f", {e}" for e in extra)


def _preprocess(r: Recipe) -> str:
    p = r.preprocess
    parts = [f"resize {p.resize[0]}x{p.resize[1]}" if p.resize else "resize to G"]
    if p.pad_to:
        parts.append(f"pad {p.pad_to[0]}x{p.pad_to[1]}")
    if p.align != "none":
        parts.append(f"{p.align}-aligned")
    if p.hflip:
        parts.append("hflip")
    return ", ".join(parts)


def _schedule(r: Recipe) -> str:
    s = r.schedule
    return (f"{s.batch_real}+{s.batch_synthetic}, {s.epochs}x{s.iters_per_epoch}, lr {s.lr:g} "
            f"(/{s.lr_drop_factor:g} last {s.lr_drop_epochs}), {s.optimizer}")


def run(args) -> int:
    if args.name:
        recipe = get_recipe(args.name).with_overrides(args.overrides)
        print(recipe.to_json())
        return 0
    if args.json:
        return _json(args.pattern)
    table = Table(title="invkit training recipes")
    for col in ("name", "generator", "K", "objective", "preprocessing", "schedule (batch, steps, lr, opt)", "plugin"):
        table.add_column(col, overflow="fold")
    registry = plugins.recipes()
    for name in registry.names(args.pattern):
        entry = registry.get(name)
        try:
            r = entry.obj()
            if not isinstance(r, Recipe):
                raise TypeError(f"returned a {type(r).__name__}, not a Recipe")
        except Exception as exc:  # one broken recipe must not hide the others
            table.add_row(name, f"[red]broken: {exc}[/red]", "", "", "", "", entry.plugin)
            continue
        table.add_row(name, r.generator, str(r.k), _objective(r), _preprocess(r), _schedule(r),
                      f"{entry.plugin} ({entry.distribution})")
    print_table(keep_whole(table, "name"))
    return 0


def _json(pattern: str) -> int:
    registry, out = plugins.recipes(), []
    for name in registry.names(pattern):
        entry = registry.get(name)
        row = {"name": name, "plugin": entry.plugin, "distribution": entry.distribution,
               "description": entry.description, "recipe": None, "error": None}
        try:
            r = entry.obj()
            if not isinstance(r, Recipe):
                raise TypeError(f"returned a {type(r).__name__}, not a Recipe")
            row["recipe"] = r.to_dict()
        except Exception as exc:  # one broken recipe must not hide the others
            row["error"] = f"{type(exc).__name__}: {exc}"
        out.append(row)
    print_json(out)
    return 0
