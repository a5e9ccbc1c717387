"""``invkit recipes``: the registered training recipes, as a table or one recipe as JSON."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .. import plugins
from ..recipe import Recipe, get_recipe


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the training recipes (or print one as JSON)")
    p.add_argument("name", nargs="?", help="print this recipe (name or .json file) as JSON")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with NAME: apply overrides before printing (repeatable)")
    p.add_argument("--pattern", default="*", help="only names matching this shell pattern")
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
    Console().print(table)
    return 0
