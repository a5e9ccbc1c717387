"""Name -> component registries filled by plugins (timm's ``register_model`` idea).

Three registries exist: generator adapters, editors and recipes. Each entry remembers which
plugin and distribution registered it, which ``invkit plugins`` shows.
"""

from __future__ import annotations

import difflib
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


class NameTaken(ValueError):
    """A plugin tried to register a name that another plugin already holds."""


class Registry:
    """An ordered name -> :class:`Entry` map for one kind of component.

    The first registration of a name wins and later ones are refused (:class:`NameTaken`), so
    a plugin cannot take over a name: invkit's own plugins are loaded first.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            old = self._entries[entry.name]
            raise NameTaken(
                f"{self.kind} {entry.name!r} from {entry.plugin} ({entry.distribution}) refused: "
                f"the name is taken by {old.plugin} ({old.distribution})"
            )
        self._entries[entry.name] = entry

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint}; registered: {known}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries
