"""``invkit directions``: compute editing directions and write them as direction files.

::

    invkit directions sefa --generator G.pkl --layers 0-3 --top 10 --out dirs/
    invkit directions interfacegan --codes out/codes.safetensors --labels labels.csv \\
        --attribute smiling --out dirs/
    invkit directions ganspace --generator G.pkl --components 10 --out dirs/

Every editor is taken from the plugin registry (``invkit.plugins.editors()``), the same way a
third-party editor would be: an editor from another distribution gets its options from the
``inputs`` it declares (:class:`invkit.editor.EditorInput`, docs/plugins.md). Each direction is
written to ``<out>/<name>.safetensors``; existing files are never replaced unless
``--overwrite`` is given.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .. import plugins
from ..direction import Direction
from ..editing import fill_strengths, mapped_codes
from ..inversion import Inversion
from ..loading import load_generator
from ._args import parse_int_ranges, positive_int
from ._output import keep_whole, print_table

NAME_COLUMN = "name"
_TRUE = {"true", "yes", "y", "t"}
_FALSE = {"false", "no", "n", "f"}
_MISSING = {"", "nan", "na", "n/a", "none", "?"}


BUILTIN_EDITORS = ("sefa", "interfacegan", "ganspace")  # with hand-written options below


def register(sub) -> None:
    p = sub.add_parser("directions", help="compute editing directions with a registered editor "
                                          "(SeFa, InterFaceGAN, GANSpace, plugins)")
    kinds = p.add_subparsers(dest="editor", metavar="EDITOR", required=True)

    s = kinds.add_parser("sefa", help="closed-form factorization of the style affines (no data needed)")
    _generator_args(s)
    s.add_argument("--layers", default=None,
                   help="ws rows to factorize and edit, e.g. 0-3 (default: all); ToRGB affines are skipped")
    s.add_argument("--top", type=int, default=10, help="number of directions (default 10)")
    s.add_argument("--include-torgb", action="store_true", help="also factorize the ToRGB affines")
    s.add_argument("--normalize", action="store_true",
                   help="unit-normalize each affine row first (as the SeFa authors' code)")
    _common_args(s)
    s.set_defaults(func=run_sefa)

    i = kinds.add_parser("interfacegan", help="linear boundary of an attribute from labelled codes")
    i.add_argument("--codes", required=True, help="codes file written by `invkit invert` (codes.safetensors)")
    i.add_argument("--labels", required=True, help=f"CSV with a '{NAME_COLUMN}' column and one column per attribute")
    i.add_argument("--attribute", required=True, help="the CSV column to fit")
    i.add_argument("--layers", default=None, help="ws rows to fit on and edit (default: all)")
    i.add_argument("--method", default="svm", choices=["svm", "logistic"],
                   help="linear SVM (squared hinge, the default) or logistic regression")
    i.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength (default 1.0)")
    i.add_argument("--ratio", type=float, default=0.02,
                   help="continuous labels: fraction (<1) or count (>=1) taken from each end (default 0.02)")
    i.add_argument("--split", type=float, default=0.7, help="training fraction of each side (default 0.7)")
    i.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    i.add_argument("--condition-on", nargs="+", default=[], metavar="DIRECTION",
                   help="direction files of attributes to keep unchanged (writes a conditioned direction too)")
    _common_args(i, default_space="w+")
    i.set_defaults(func=run_interfacegan)

    g = kinds.add_parser("ganspace", help="principal components of mapped w")
    _generator_args(g)
    g.add_argument("--components", type=positive_int, default=10, help="number of directions (default 10)")
    g.add_argument("--layers", default=None, help="ws rows the directions apply to (default: all)")
    g.add_argument("--samples", type=int, default=20_000, help="number of z to map (default 20000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampled z (default 0)")
    _common_args(g)
    g.set_defaults(func=run_ganspace)
    from . import ARGV

    if ARGV[:1] == ["directions"]:  # plugin editors are only looked up when this command runs
        from ._editor_inputs import add_plugin_editors

        add_plugin_editors(kinds, BUILTIN_EDITORS, _output_args, run_plugin)


def _generator_args(p) -> None:
    p.add_argument("--generator", "-g", required=True, help="generator checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    p.add_argument("--adapter", help="force a generator adapter instead of detecting it")
    p.add_argument("--device", default="cpu", help="torch device to load the generator on (default cpu)")


def _common_args(p, default_space: str = "w") -> None:
    p.add_argument("--space", default=default_space, choices=["w", "w+"],
                   help=f"latent space of the written directions (default {default_space})")
    _output_args(p)


def _output_args(p) -> None:
    p.add_argument("--out", "-o", required=True, help="folder for the direction files")
    p.add_argument("--overwrite", action="store_true", help="replace direction files of the same name")


def _editor(name: str):
    return plugins.editors().get(name).obj()


def _layers(text: str | None) -> list[int] | None:
    return None if text is None else parse_int_ranges(text)


def run_sefa(args) -> int:
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    dirs = _editor("sefa").fit(generator=G, layers=_layers(args.layers), top=args.top, space=args.space,
                               include_torgb=args.include_torgb, normalize=args.normalize)
    fill_strengths(dirs, mapped_codes(G))
    return _write(dirs, args, ("eigenvalue", "explained"))


def run_ganspace(args) -> int:
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    dirs = _editor("ganspace").fit(generator=G, components=args.components, layers=_layers(args.layers),
                                   samples=args.samples, seed=args.seed, space=args.space)
    fill_strengths(dirs, mapped_codes(G))
    return _write(dirs, args, ("std", "explained"))


def run_interfacegan(args) -> int:
    codes = Inversion.load(args.codes)
    labels = read_labels(args.labels, args.attribute, codes.names, codes_path=args.codes)
    conditions = [Direction.load(p) for p in args.condition_on]
    dirs = _editor("interfacegan").fit(
        codes=codes, labels=labels, attribute=args.attribute, space=args.space, layers=_layers(args.layers),
        method=args.method, C=args.C, ratio=args.ratio, split=args.split, seed=args.seed,
        condition_on=conditions,
    )
    fill_strengths(dirs, codes.ws)
    return _write(dirs, args, ("val_accuracy", "train_accuracy", "n_train", "n_val"))


def run_plugin(args) -> int:
    """Any registered editor, its ``fit`` inputs built from its declared ``inputs``."""
    from ._editor_inputs import fit_inputs

    entry = plugins.editors().get(args.editor)
    values, G, codes = fit_inputs(args, load_generator, Inversion.load, Direction.load, read_labels)
    try:
        dirs = entry.obj().fit(**values)
    except TypeError as exc:
        if args.editor_inputs:
            raise
        raise ValueError(f"editor {args.editor!r} ({entry.distribution}) declares no inputs and its fit() "
                         f"failed: {exc} (an editor lists its fit() keywords in Editor.inputs, docs/plugins.md)") from None
    if dirs and all(isinstance(d, Direction) for d in dirs):
        fill_strengths(dirs, codes.ws if codes is not None else mapped_codes(G) if G is not None else None)
    numeric = [k for k, v in (dirs[0].stats.items() if dirs and isinstance(dirs[0], Direction) else ())
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return _write(dirs, args, tuple(numeric[:4]))


def read_labels(path: str | Path, attribute: str, names: list[str], codes_path: str | Path = "codes") -> list[float]:
    """One label per code name from a CSV (``name`` column + attribute columns); NaN where a code
    has no row or an empty cell. Names match exactly, or by file stem (``a.png`` ~ ``a``).

    Values are numbers, or true/false/yes/no. Raises ValueError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if NAME_COLUMN not in columns:
            raise ValueError(f"{path}: no '{NAME_COLUMN}' column (columns: {', '.join(columns) or 'none'})")
        if attribute not in columns:
            attrs = [c for c in columns if c != NAME_COLUMN]
            raise ValueError(f"{path}: no column {attribute!r} (attributes: {', '.join(attrs) or 'none'})")
        table: dict[str, float] = {}
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            name = row[NAME_COLUMN]
            if name in table:
                raise ValueError(f"{path}:{line}: name {name!r} appears twice")
            table[name] = _parse_label(row[attribute], f"{path}:{line}")
    by_stem = {Path(n).stem: v for n, v in table.items()}
    labels = [table.get(n, by_stem.get(Path(n).stem, math.nan)) for n in names]
    if all(math.isnan(v) for v in labels):
        raise ValueError(f"{path}: none of its names match the {len(names)} codes in {codes_path} "
                         f"(e.g. {', '.join(names[:3])})")
    return labels


def _parse_label(text: str, where: str) -> float:
    low = text.lower()
    if low in _MISSING:
        return math.nan
    if low in _TRUE:
        return 1.0
    if low in _FALSE:
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: label {text!r} is not a number or true/false") from None


def _write(dirs: list[Direction], args, stat_keys: tuple[str, ...]) -> int:
    name = getattr(args, "editor", None) or "?"
    who = f"editor {name!r} ({plugins.editors().get(name).distribution if name in plugins.editors() else '?'})"
    if not dirs:
        raise ValueError(f"{who} returned no directions; nothing written to {args.out}")
    bad = [type(d).__name__ for d in dirs if not isinstance(d, Direction)]
    if bad:
        raise ValueError(f"{who} returned {', '.join(sorted(set(bad)))} instead of invkit.Direction objects")
    for d in dirs:
        warning = chance_warning(d)
        if warning:
            d.stats["warning"] = warning
            Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/yellow] {d.name}: {warning}",
                                                       highlight=False)
    out = Path(args.out)
    paths = [out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', d.name)}.safetensors" for d in dirs]
    if not args.overwrite:
        clash = [p.name for p in paths if p.exists()]
        if clash:
            raise ValueError(f"{out}: already holds {', '.join(clash)}; pass --overwrite to replace them")
    for d, p in zip(dirs, paths):
        d.save(p)
    table = Table("file", "space", "ws rows", "strength", *stat_keys,
                  title=f"{len(dirs)} {dirs[0].editor} directions")
    for d, p in zip(dirs, paths):
        stats = [_fmt(d.stats.get(k)) for k in stat_keys]
        table.add_row(p.name, d.space, _rows(d.layers), _fmt(d.strength), *stats)
    print_table(keep_whole(table, "file"))
    return 0


def chance_warning(d: Direction) -> str | None:
    """A warning when a boundary's validation accuracy is within two binomial standard errors
    of chance (0.5), or below 0.6: such a direction is mostly noise."""
    acc, n = d.stats.get("val_accuracy"), d.stats.get("n_val")
    if not isinstance(acc, (int, float)) or math.isnan(acc):
        return None
    margin = max(0.1, 2 * math.sqrt(0.25 / n)) if isinstance(n, int) and n > 0 else 0.1
    if acc >= 0.5 + margin:
        return None
    return (f"validation accuracy {acc:.2f} is at chance level (needs >= {0.5 + margin:.2f} with "
            f"{n} validation codes); the direction is likely noise: check the labels or use more codes")


def _rows(layers: list[int]) -> str:
    if not layers:
        return "all"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ",".join(map(str, layers))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
