"""Output people read: tables that never cut what users copy, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def keep_whole(table: Table, *columns: str) -> Table:
    """Never wrap or cut the cells of ``columns`` (names, files, paths users copy): they get
    their full width and the other columns fold instead. Call after adding the rows."""
    for col in table.columns:
        if str(col.header) in columns:
            cells = list(col.cells)
            widest = max([cell_len(c.plain if isinstance(c, Text) else Text.from_markup(str(c)).plain)
                          for c in cells] + [cell_len(str(col.header))])
            col.no_wrap, col.min_width, col.overflow = True, widest, "ignore"
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    """Print a table. Without a terminal (logs, pipes) it is printed at its natural width,
    never folded at 80 columns."""
    console = console or Console()
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update_width(100_000), table).maximum
        console = Console(file=console.file, width=max(console.width, width), soft_wrap=True)
    console.print(table)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
    sys.stdout.flush()
