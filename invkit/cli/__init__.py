"""The ``invkit`` command line.

Each sub-command lives in its own module of this package and defines
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Modules are discovered by name, so a
new command is one new file.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys

from rich.console import Console
from rich.markup import escape

# soft_wrap: an error or skip message stays one line however narrow the terminal.
console = Console(stderr=True, soft_wrap=True)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="invkit", description="Style-based GAN inversion and editing (Feature-Style encoder)."
    )
    parser.add_argument("--version", action="version", version=f"invkit {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (anywhere on the line; or INVKIT_DEBUG=1)")
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


def describe_error(exc: BaseException) -> str:
    """One line for an error: the path it concerns first where the error knows it."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}no space left on the device (disk full); nothing was replaced"
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror.lower()}"
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'the request is too large for this machine'}); ask for less (fewer seeds, smaller --batch)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, ValueError, RuntimeError, NotADirectoryError, FileExistsError,
                        PermissionError, IsADirectoryError)):
        return text
    return f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:  # answered before the commands (and torch) are imported
        from .. import __version__

        print(f"invkit {__version__}")
        return 0
    # --debug may come anywhere (before or after the command): the traceback instead of one line
    debug = "--debug" in argv or os.environ.get("INVKIT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    global ARGV
    ARGV = argv
    try:
        return _main(argv, debug)
    except BrokenPipeError:
        # the reader went away (`invkit zoo | head`): stop quietly, as other Unix tools do
        _silence_stdout()
        return 141


ARGV: list[str] = []  # the arguments of the running command (commands may look ahead at them)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests, notebooks)
        pass


def _main(argv: list[str], debug: bool) -> int:
    from ..io.atomic import following_symlinks

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        # --overwrite also allows replacing the file an output symlink points to
        with following_symlinks(bool(getattr(args, "overwrite", False))):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except BrokenPipeError:
        raise  # main() ends quietly: the reader went away, not an error of the command
    except Exception as exc:  # noqa: BLE001 - the one top-level handler: one line, --debug for more
        if debug:
            raise
        console.print(f"[red]error:[/red] {escape(describe_error(exc))}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
