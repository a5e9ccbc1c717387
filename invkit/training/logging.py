"""What a run reports while it trains: the JSON-lines log, the progress bar, and the
SIGINT/SIGTERM handler that turns a Ctrl-C into a clean stop."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..io import atomic


class JsonlLog:
    """Append-only JSON-lines log; on resume, lines beyond the resumed step are dropped (that
    part of the interrupted run is replayed and logged again)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
            atomic.write_text(path, "".join(f"{line}\n" for line in kept))
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


_WEIGHTED_TERMS = ("mse", "mse_real", "lpips", "feature", "identity", "parsing")


def active_terms(losses: dict[str, float], weights: Any = None) -> dict[str, float]:
    """The loss terms worth showing: ``total`` and each weighted term (not the per-
    reconstruction parts such as ``lpips_w``, which stay in log.jsonl), without terms the
    recipe does not use (weight 0, or exactly 0.0: e.g. identity without ArcFace weights, mse
    without synthetic images). A loss of another shape shows all its non-zero terms."""
    names = [n for n in _WEIGHTED_TERMS if n in losses] if "total" in losses and any(
        n in losses for n in _WEIGHTED_TERMS) else [n for n in losses if n != "total"]
    out = {"total": losses["total"]} if "total" in losses else {}
    for n in names:
        if losses[n] == 0.0 or (weights is not None and getattr(weights, n, 1.0) == 0):
            continue
        out[n] = losses[n]
    return out


def log_line(step: int, total: int, losses: dict[str, float], lr: float, sec_per_step: float,
             weights: Any = None) -> str:
    """``step 120/5000  total 0.1234  mse 0.0123  ...  lr 1e-04  0.85 s/step``."""
    terms = "  ".join(f"{n} {v:.4g}" for n, v in active_terms(losses, weights).items())
    return f"step {step}/{total}  {terms}  lr {lr:.3g}  {sec_per_step:.3g} s/step"


@contextmanager
def progress_bar(enabled: bool, total: int, start: int) -> Iterator[Callable[..., None]]:
    """Progress on stderr; yields ``update(step, line=None)``, called every step and with a
    :func:`log_line` every log interval. In a terminal: a rich bar (steps, ETA) showing the
    latest line. Without one (batch logs, pipes): each line printed as it comes, whole, and
    nothing in between."""
    if not enabled:
        yield lambda step, text=None: None
        return
    from rich.console import Console

    if not Console(stderr=True).is_terminal:
        import sys

        def plain(step: int, text: str | None = None) -> None:
            if text is not None:
                print(text, file=sys.stderr, flush=True)

        yield plain
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
        console=Console(stderr=True), refresh_per_second=2,
    )
    with progress:
        task = progress.add_task("train", total=total, completed=start, losses="")

        def update(step: int, text: str | None = None) -> None:
            if text is None:
                progress.update(task, completed=step)
            else:
                progress.update(task, completed=step, losses=text)

        yield update


class StopFlag:
    """SIGINT/SIGTERM request a clean stop (a checkpoint at the next step boundary)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = 0  # the signal that asked for the stop
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
