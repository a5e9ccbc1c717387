"""Plugin discovery: load every module of the ``invkit`` entry-point group into one pluggy
manager and collect what they register.

Built-in adapters, editors and recipes are entry points of the ``invkit`` distribution itself,
so the core never imports them by name. Set ``INVKIT_DISABLE_PLUGIN_AUTOLOAD=1`` to load only
the built-ins (third-party distributions are then skipped). A plugin that fails to import or to
register is recorded in :func:`broken_plugins` and does not stop the others.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import os
import threading
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .registry import Entry, NameTaken, Registry

GROUP = "invkit"
BUILTIN_DISTRIBUTION = "invkit"
DISABLE_ENV = "INVKIT_DISABLE_PLUGIN_AUTOLOAD"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """A discovered plugin: entry-point name, module, distribution, and the error if broken."""

    name: str
    module: str
    distribution: str
    version: str
    error: str | None = None
    refused: tuple[str, ...] = ()


class _State:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("invkit")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.generators = Registry("generator adapter")
        self.editors = Registry("editor")
        self.recipes = Registry("recipe")


_state: _State | None = None
_lock = threading.Lock()


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _dist_name(ep: metadata.EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "?"


def _entry_points() -> list[metadata.EntryPoint]:
    """The group's entry points, invkit's own first (so a built-in name can never be taken
    over: the first registration of a name wins), then by distribution and name."""
    seen: set[tuple[str, str]] = set()
    eps = []
    for ep in metadata.entry_points(group=GROUP):
        key = (ep.name, ep.value)
        if key not in seen:  # the same distribution can be visible twice on sys.path
            seen.add(key)
            eps.append(ep)
    return sorted(eps, key=lambda ep: (_dist_name(ep) != BUILTIN_DISTRIBUTION, _dist_name(ep), ep.name))


def _registrar(registry: Registry, plugin: PluginInfo, extra_keys: tuple[str, ...] = (),
               refused: list[str] | None = None):
    """The ``register`` callable handed to one plugin's hook: ``register(name, obj, *extra,
    description="")``, where ``extra`` are the kind's optional callables in ``extra_keys`` order
    (``from_config`` for generators), each also accepted by keyword; a positional value after
    them is the description, as in the hookspec signatures. A name already taken is refused
    (appended to ``refused``, one line naming both distributions); the plugin's other names
    stay registered."""

    def register(name: str, obj, *args, **kwargs) -> None:
        names = (*extra_keys, "description")
        if len(args) > len(names):
            raise TypeError(f"too many arguments registering {name!r}: expected at most {len(names) + 2}")
        values = dict(zip(names, args))
        for key in list(kwargs):
            if key not in names:
                raise TypeError(f"unexpected argument {key!r} registering {name!r}")
            if key in values:
                raise TypeError(f"argument {key!r} given twice registering {name!r}")
            values[key] = kwargs.pop(key)
        description = values.pop("description", "") or ""
        entry = Entry(name=name, obj=obj, description=description, plugin=plugin.name,
                      distribution=plugin.distribution, extra={k: v for k, v in values.items() if v is not None})
        try:
            registry.add(entry)
        except NameTaken as exc:
            if refused is None:
                raise
            refused.append(str(exc))
            log.warning("invkit: %s", exc)

    return register


def _load() -> _State:
    state = _State()
    disabled = _autoload_disabled()
    for ep in _entry_points():
        dist = _dist_name(ep)
        version = ep.dist.version if ep.dist is not None else "?"
        if disabled and dist != BUILTIN_DISTRIBUTION:
            continue
        info = PluginInfo(ep.name, ep.value, dist, version)
        try:
            module = ep.load()
            state.pm.register(module, name=f"{dist}:{ep.name}")
        except Exception as exc:  # a broken plugin must not take the others down
            state.plugins.append(
                PluginInfo(ep.name, ep.value, dist, version, f"{type(exc).__name__}: {exc}")
            )
            continue
        refused: list[str] = []
        try:
            _collect(state, module, info, refused)
        except Exception as exc:
            state.pm.unregister(module)
            state.plugins.append(
                PluginInfo(ep.name, ep.value, dist, version, f"{type(exc).__name__}: {exc}", tuple(refused))
            )
            continue
        state.plugins.append(PluginInfo(ep.name, ep.value, dist, version, None, tuple(refused)))
    return state


def _collect(state: _State, module, info: PluginInfo, refused: list[str]) -> None:
    """Run one plugin's registration hooks, so errors are attributed to that plugin."""
    caller = state.pm.subset_hook_caller  # call only this module's implementations
    others = [p for p in state.pm.get_plugins() if p is not module]
    caller("register_generators", others)(
        register=_registrar(state.generators, info, ("from_config",), refused)
    )
    caller("register_editors", others)(register=_registrar(state.editors, info, refused=refused))
    caller("register_recipes", others)(register=_registrar(state.recipes, info, refused=refused))


def state() -> _State:
    """The loaded plugin state (loaded once per process, thread-safe)."""
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _load()
    return _state


def reload() -> None:
    """Forget everything loaded and discover plugins again (tests, new installs)."""
    global _state
    with _lock:
        _state = None


def plugin_manager() -> pluggy.PluginManager:
    return state().pm


def plugins() -> list[PluginInfo]:
    """Every discovered plugin, loaded or broken."""
    return list(state().plugins)


def broken_plugins() -> list[PluginInfo]:
    return [p for p in state().plugins if p.error]


def refusals() -> list[str]:
    """One line per name a plugin tried to take from another (the newcomer was refused)."""
    return [line for p in state().plugins for line in p.refused]


def generators() -> Registry:
    return state().generators


def editors() -> Registry:
    return state().editors


def recipes() -> Registry:
    return state().recipes


def list_generators(pattern: str = "*") -> list[str]:
    """Names of the registered generator adapters matching ``pattern``."""
    return generators().names(pattern)


def list_editors(pattern: str = "*") -> list[str]:
    return editors().names(pattern)


def list_recipes(pattern: str = "*") -> list[str]:
    return recipes().names(pattern)
