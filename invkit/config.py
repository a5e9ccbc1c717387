"""Typed configuration: nested dataclasses <-> plain JSON data and ``key=value`` overrides.

The field annotations are the schema. Supported field types: ``int``, ``float``, ``bool``,
``str``, ``None`` in unions, ``Literal[...]``, fixed-length ``tuple[...]``, ``dict`` and
nested dataclasses (sections). :class:`invkit.recipe.Recipe` is built on this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal


class ConfigError(ValueError):
    """Invalid configuration data or override; the message names the key and the problem."""


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def to_plain(value: Any) -> Any:
    """Plain JSON-serialisable data: dataclasses become dicts, tuples become lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def from_plain(cls: type, data: Any, where: str = "", root: str = "config") -> Any:
    """Build dataclass ``cls`` from plain data, checking every value against its field's type.

    ``where`` is the dotted path of ``data`` (for messages; ``root`` names the top level).
    Unknown keys, mistyped values and missing required fields raise :class:`ConfigError`.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where or root}: expected an object, got {type(data).__name__}")
    hints = field_types(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join((where + '.' if where else '') + u for u in unknown)}")
    kwargs = {}
    for name, tp in hints.items():
        if name not in data:
            continue
        key = f"{where}.{name}" if where else name
        if is_dataclass_type(tp):
            kwargs[name] = from_plain(tp, data[name], key, root)
        else:
            try:
                kwargs[name] = coerce(data[name], tp)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{key}: {exc}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or root}: {exc}") from None


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any) -> Any:
    """Check a JSON value against ``tp`` (int/float/bool/str/None, Literal, tuple, dict, unions)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError(f"expected a list of {len(args)} values, got {value!r}")
        return tuple(coerce(v, a) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise TypeError(f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {_type_name(tp)}")


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(text: str, tp: Any) -> Any:
    """Parse command-line text for a field of type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg)
            except (TypeError, ValueError):
                pass
        raise ValueError(f"cannot read {text!r} as {_type_name(tp)}")
    if origin is Literal:
        if text not in args:
            raise ValueError(f"expected one of {', '.join(map(str, args))}, got {text!r}")
        return text
    if origin is tuple:
        parts: list[Any]
        if text.startswith("["):
            parts = json.loads(text)
            if not isinstance(parts, list):
                raise ValueError(f"expected a list, got {text!r}")
            parts = [json.dumps(p) if not isinstance(p, str) else p for p in parts]
        else:
            parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
        if len(parts) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values, got {text!r}")
        return tuple(parse_value(p, a) for p, a in zip(parts, args))
    if origin is dict or tp is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"expected a JSON object, got {text!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {text!r}")
        return value
    if tp is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
            if not value.is_integer():
                raise ValueError(f"expected an integer, got {text!r}") from None
            return int(value)
    if tp is float:
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if tp is str:
        return text
    raise ValueError(f"unsupported field type {_type_name(tp)}")


def apply_overrides(cls: type, data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``"key=value"`` edits to ``data`` (the plain form of dataclass ``cls``, changed in
    place and returned); dotted keys reach nested sections.

    Values are parsed for the field's type with :func:`parse_value`. Raises
    :class:`ConfigError` naming the override and the problem (with a suggestion for misspelt
    keys).
    """
    root = cls
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        path = key.split(".")
        cls = root
        target = data
        for depth, part in enumerate(path):
            hints = field_types(cls)
            if part not in hints:
                prefix = ".".join(path[:depth])
                names = [f"{prefix}.{n}" if prefix else n for n in hints]
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys here: {', '.join(names)}"
                raise ConfigError(f"override {item!r}: unknown key {key!r}{hint}")
            tp = hints[part]
            if depth < len(path) - 1:
                if not is_dataclass_type(tp):
                    raise ConfigError(f"override {item!r}: {'.'.join(path[:depth + 1])} is not a section")
                cls, target = tp, target[part]
            elif is_dataclass_type(tp):
                sub = ", ".join(f"{key}.{n}" for n in field_types(tp))
                raise ConfigError(f"override {item!r}: {key} is a section; set one of {sub}")
            else:
                try:
                    target[part] = to_plain(parse_value(text.strip(), tp))
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"override {item!r}: {exc}") from None
    return data


def flatten(obj: Any) -> dict[str, Any]:
    """Every field of dataclass instance ``obj`` as ``{"section.name": plain value}``."""
    out: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(f"{prefix}{f.name}.", value)
            else:
                out[prefix + f.name] = to_plain(value)

    walk("", obj)
    return out
