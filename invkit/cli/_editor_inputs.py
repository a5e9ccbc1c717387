"""``invkit directions NAME`` for editors from other distributions: options built from the
editor's declared ``inputs`` (:class:`invkit.editor.EditorInput`), values converted back into
``fit`` keywords."""

from __future__ import annotations

import argparse

from .. import plugins
from ._args import parse_int_ranges

_PREFIX = "input__"


def _inputs(obj) -> tuple:
    from ..editor import EditorInput

    inputs = tuple(getattr(obj, "inputs", ()) or ())
    bad = [repr(i) for i in inputs if not isinstance(i, EditorInput)]
    if bad:
        raise TypeError(f"inputs must be invkit.editor.EditorInput, got {', '.join(bad)}")
    return inputs


def add_plugin_editors(kinds, builtins: tuple[str, ...], output_args, run) -> None:
    """One sub-parser per registered editor that has no hand-written one."""
    for entry in plugins.editors().entries():
        if entry.name in builtins:
            continue
        p = kinds.add_parser(entry.name, help=f"{entry.description or 'a plugin editor'} "
                                              f"(from {entry.distribution})")
        try:
            inputs = _inputs(entry.obj)
            for inp in inputs:
                _add(p, inp)
            output_args(p)
        except (argparse.ArgumentError, TypeError, ValueError) as exc:
            _broken(p, entry, exc)
            continue
        p.set_defaults(func=run, editor_inputs=inputs)


def _broken(p, entry, exc: Exception) -> None:
    def fail(args) -> int:
        raise ValueError(f"editor {entry.name!r} ({entry.distribution}) declares unusable inputs: {exc}")

    p.set_defaults(func=fail)
    if not any(a.dest == "rest" for a in p._actions):
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _add(p, inp) -> None:
    opt = "--" + inp.name.replace("_", "-")
    help_ = inp.help or inp.name
    if inp.default is not None and inp.kind != "flag":
        help_ += f" (default {inp.default})"
    common = {"dest": _PREFIX + inp.name, "help": help_}
    names = [opt]
    if inp.kind == "generator":
        names += ["-g"] if inp.name == "generator" else []
        p.add_argument(*names, required=inp.required, metavar="CHECKPOINT", **common)
        _once(p, "--adapter", help="force a generator adapter instead of detecting it")
        _once(p, "--device", default="cpu", help="torch device to load the generator on (default cpu)")
    elif inp.kind == "codes":
        p.add_argument(opt, required=inp.required, metavar="FILE", **common)
    elif inp.kind == "labels":
        p.add_argument(opt, required=inp.required, metavar="CSV", **common)
        _once(p, "--attribute", required=inp.required, help="the CSV column holding the labels")
    elif inp.kind == "directions":
        p.add_argument(opt, nargs="+", required=inp.required, metavar="FILE", **common)
    elif inp.kind == "rows":
        p.add_argument(opt, required=inp.required, metavar="ROWS", **common)
    elif inp.kind == "flag":
        p.add_argument(opt, action="store_true", default=None, **common)
    else:
        kind = {"int": int, "float": float, "str": str}[inp.kind]
        p.add_argument(opt, type=kind, required=inp.required, choices=inp.choices, **common)


def _once(p, opt: str, **kwargs) -> None:
    if not any(opt in a.option_strings for a in p._actions):
        p.add_argument(opt, **kwargs)


def fit_inputs(args, load_generator, load_codes, load_direction, read_labels):
    """``(fit keywords, the generator or None, the codes or None)`` from parsed options; an
    option that was not given is left out, so ``fit``'s own default applies."""
    values, G, codes, labels = {}, None, None, []
    for inp in args.editor_inputs:
        v = getattr(args, _PREFIX + inp.name, None)
        if v is None:
            continue
        if inp.kind == "generator":
            v = G = load_generator(v, adapter=args.adapter, device=args.device)
        elif inp.kind == "codes":
            v = codes = load_codes(v)
        elif inp.kind == "directions":
            v = [load_direction(x) for x in v]
        elif inp.kind == "rows":
            v = parse_int_ranges(v)
        elif inp.kind == "labels":
            labels.append(inp)
            continue
        values[inp.name] = v
    for inp in labels:
        path = getattr(args, _PREFIX + inp.name)
        if codes is None:
            raise ValueError(f"editor {args.editor!r}: --{inp.name} needs the editor's codes input")
        if not args.attribute:
            raise ValueError(f"editor {args.editor!r}: --{inp.name} needs --attribute COLUMN")
        values[inp.name] = read_labels(path, args.attribute, codes.names)
    return values, G, codes
