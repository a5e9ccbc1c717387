"""Argument parsing helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import math


def parse_int_ranges(text: str, max_count: int = 1_000_000) -> list[int]:
    """``"0-3,7,10-11"`` -> ``[0, 1, 2, 3, 7, 10, 11]`` (inclusive ranges, at most
    ``max_count`` values: a typo like ``0-99999999999`` is an error, not a memory exhaustion)."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                if b - a + 1 + len(out) > max_count:
                    raise OverflowError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except OverflowError:
            raise ValueError(f"range {text!r} holds more than {max_count} values") from None
        except ValueError:
            raise ValueError(f"bad range {part!r} (expected N or A-B)") from None
        if len(out) > max_count:
            raise ValueError(f"range {text!r} holds more than {max_count} values")
    if not out:
        raise ValueError(f"empty range {text!r}")
    return out


def parse_float_steps(text: str) -> list[float]:
    """``"-3:3:7"`` -> 7 evenly spaced values from -3 to 3; ``"1.5"`` -> ``[1.5]``;
    ``"-2,0,2"`` -> a list."""
    if ":" in text:
        try:
            a, b, n = text.split(":")
            lo, hi, count = float(a), float(b), int(n)
        except ValueError:
            raise ValueError(f"bad steps {text!r} (expected START:STOP:COUNT)") from None
        if count < 1:
            raise ValueError(f"bad steps {text!r}: COUNT must be >= 1")
        values = [lo + (hi - lo) * i / max(count - 1, 1) for i in range(count)]
    else:
        try:
            values = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"bad number list {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"bad number list {text!r}: NaN and Inf are not allowed")
    return values


def default_threads() -> int:
    """Torch CPU threads for a command on this machine now: the cores this process may use,
    less the ones other processes keep busy (1-minute load average), at least 1.

    torch's default (every core) oversubscribes a loaded machine, where its threads then wait
    on each other: on 2 shared cores that was 5-15x slower than one thread.
    """
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def positive_int(text: str) -> int:
    """argparse ``type`` for counts and sizes: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def finite_float(text: str) -> float:
    """argparse ``type`` for strengths, truncation and the like: a finite number (no NaN/Inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


#: The most seeds one command renders (a huge ``--seeds`` range would exhaust memory first).
MAX_SEEDS = 100_000


def check_outputs(outputs, overwrite: bool, inputs=()) -> None:
    """Refuse to write ``outputs`` (paths; None entries skipped) before any work is done.

    * an existing output (also a dangling or live symbolic link) needs ``overwrite``;
    * an output that is one of the ``inputs`` (the same file, however it is spelled) or that is
      not a regular file (folder, device, FIFO) is refused even with ``overwrite``;
    * two outputs may not be the same file.

    Raises:
        FileExistsError: one line naming the path.
    """
    import os
    from pathlib import Path

    seen: dict[str, Path] = {}
    for out in outputs:
        if out is None:
            continue
        out = Path(out)
        real = os.path.realpath(out)
        for given in inputs:
            if given is not None and os.path.realpath(given) == real:
                raise FileExistsError(f"{out}: is also an input ({given}); refusing to write over it")
        if real in seen:
            raise FileExistsError(f"{out}: named twice as an output (also {seen[real]})")
        seen[real] = out
        if os.path.lexists(out):
            if out.is_dir() and not out.is_symlink():
                raise FileExistsError(f"{out}: is a folder; expected a file path")
            if not overwrite:
                raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
            if out.exists() and not out.is_file():
                raise FileExistsError(f"{out}: is not a regular file; refusing to replace it")
