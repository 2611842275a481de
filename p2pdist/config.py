"""Settings: frozen dataclasses with embedded defaults, filled from TOML.

Each component declares its own settings dataclasses (the tracker's site map, the agent's cache
and limits); this module only turns a TOML file into them, refusing unknown keys and wrong
types with the key's dotted name, so a typo in ``site.toml`` is one clear line, not a silently
ignored setting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from p2pdist.errors import UsageError

T = TypeVar("T")


class ConfigError(UsageError):
    """A settings file that cannot be read or does not match the settings' shape."""


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_value(text: str | os.PathLike[str]) -> str:
    """``text`` as a TOML basic string, quotes included, that reads back as exactly ``text``.

    Every config the project writes goes through here: a Windows path (``C:\\ProgramData\\...``)
    pasted between plain quotes is an invalid escape, or worse a different string.
    """
    value = os.fspath(text)
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise ValueError(f"{value!r} is not valid Unicode and cannot be written to a TOML file")
    out = ['"']
    for char in value:
        escaped = _TOML_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def load_toml(path: Path | str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from None


def from_mapping(cls: type[T], mapping: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; nested dataclasses, tuples and optionals allowed."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass type; T is not bound to one
    unknown = set(mapping) - set(fields)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown setting(s) {', '.join(sorted(unknown))}")
    values = {name: _convert(hints[name], mapping[name], _join(where, name)) for name in mapping}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value")
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)  # type: ignore[arg-type]  # a type hint here, never an instance
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length, all X
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):  # tuple[X, Y]: exactly one item per position
            raise ConfigError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(item, v, f"{where}[{i}]") for i, (item, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        key_type, item = args
        return {str(k): _convert(item, v, _join(where, str(k))) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string")
        return Path(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool, float):
        if isinstance(value, bool) != (hint is bool) or not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {hint}")


def load_settings(cls: type[T], path: Path | str | None) -> T:
    """Settings from ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        return cls()
    return from_mapping(cls, load_toml(path))
