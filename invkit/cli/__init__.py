"""The ``invkit`` command line.

Each sub-command lives in its own module of this package and defines
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Modules are discovered by name, so a
new command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from rich.console import Console

# soft_wrap: an error or skip message stays one line however narrow the terminal.
console = Console(stderr=True, soft_wrap=True)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="invkit", description="Style-based GAN inversion and editing (Feature-Style encoder)."
    )
    parser.add_argument("--version", action="version", version=f"invkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{mod.name}").register(sub)
        except ImportError as exc:
            # A command whose optional dependency is missing must not take the others down;
            # it stays listed and says what is missing when used.
            _unavailable(sub, mod.name, exc)
    return parser


def _unavailable(sub, name: str, exc: ImportError) -> None:
    reason = f"`invkit {name}` is unavailable: {exc}"

    def fail(args) -> int:
        console.print(f"[red]error:[/red] {reason}", highlight=False)
        return 1

    p = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=True)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:  # answered before the commands (and torch) are imported
        from .. import __version__

        print(f"invkit {__version__}")
        return 0
    global ARGV
    ARGV = argv
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`invkit zoo | head`): stop quietly, as other Unix tools do
        _silence_stdout()
        return 141


ARGV: list[str] = []  # the arguments of the running command (commands may look ahead at them)


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests, notebooks)
        pass


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except (FileNotFoundError, ValueError, KeyError, RuntimeError, NotADirectoryError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        console.print(f"[red]error:[/red] {msg}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
