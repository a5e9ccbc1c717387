"""Name -> component registries filled by plugins (timm's ``register_model`` idea).

Three registries exist: generator adapters, editors and recipes. Each entry remembers which
plugin and distribution registered it, which ``invkit plugins`` shows.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Attributes:
        name: the public name (``"stylegan2"``, ``"sefa"``, ``"faces"``).
        obj: the registered callable (adapter loader, editor factory, recipe factory).
        description: one line for listings.
        plugin: the entry-point name that registered it.
        distribution: the distribution that ships the plugin (``"invkit"`` for built-ins).
        extra: kind-specific callables (``from_config`` for adapters).
    """

    name: str
    obj: Callable[..., Any]
    description: str = ""
    plugin: str = ""
    distribution: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Registry:
    """An ordered name -> :class:`Entry` map for one kind of component."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            old = self._entries[entry.name]
            raise ValueError(
                f"{self.kind} {entry.name!r} registered twice: by {old.plugin} ({old.distribution}) "
                f"and by {entry.plugin} ({entry.distribution})"
            )
        self._entries[entry.name] = entry

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries
