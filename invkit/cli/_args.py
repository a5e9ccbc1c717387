"""Argument parsing helpers shared by the sub-commands."""

from __future__ import annotations


def parse_int_ranges(text: str) -> list[int]:
    """``"0-3,7,10-11"`` -> ``[0, 1, 2, 3, 7, 10, 11]`` (inclusive ranges)."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"bad range {part!r} (expected N or A-B)") from None
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
        return [lo + (hi - lo) * i / max(count - 1, 1) for i in range(count)]
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"bad number list {text!r}") from None


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
