"""Frozen value records for the short-lived commands, without importing ``dataclasses``.

``import dataclasses`` imports inspect, and with it ast, dis and tokenize; each decorated class
then compiles its methods from source. On the wrapper's path (started for every SMS program
run, on every PC of a branch at once) and ``p2pdist status`` that was a quarter of what a start
cost (and of ``p2pdist create``, a command timed against mktorrent's). A ``Record`` subclass
gets what ``@dataclass(frozen=True)`` would give it, from its annotations and class-level
defaults: positional or keyword construction, equality, hashing, ``repr`` and immutability,
``__post_init__`` checks, plus ``replace`` and ``as_dict``; ``class X(Record, order=True)``
orders by the fields, and ``hidden=("name",)`` keeps a field out of the repr. Type checkers see
a frozen dataclass (``dataclass_transform``). Modules that only long-lived programs import keep ``dataclasses``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs a start what it saves: checkers treat this name as True
if TYPE_CHECKING:
    from typing import Any, Self, dataclass_transform
else:

    def dataclass_transform(**_options: object) -> object:
        return lambda cls: cls


@dataclass_transform(frozen_default=True)
class Record:
    """Base of a frozen record; fields are the annotated names, in order, parents' first."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}
    _shown: tuple[str, ...] = ()

    def __init_subclass__(cls, *, order: bool = False, hidden: tuple[str, ...] = (), **options: Any) -> None:
        super().__init_subclass__(**options)
        hints = cls.__dict__.get("__annotations__", {})
        own = [name for name, hint in hints.items() if not str(hint).startswith(("ClassVar", "typing.ClassVar"))]
        fields = cls._fields + tuple(name for name in own if name not in cls._fields)
        defaults = dict(cls._defaults)
        for name in own:
            defaults.pop(name, None)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
        seen_default = False
        for name in fields:
            if name in defaults:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{cls.__name__}: field {name!r} without a default follows one with a default")
        cls._fields, cls._defaults = fields, defaults
        cls._shown = tuple(name for name in fields if name not in hidden)
        if order:
            for name, compare in _ORDER.items():
                setattr(cls, name, compare)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, {len(args)} given")
        values = dict(zip(fields, args))
        for name, value in kwargs.items():
            if name not in fields:
                raise TypeError(f"{type(self).__name__}() got an unexpected argument {name!r}")
            if name in values:
                raise TypeError(f"{type(self).__name__}() got {name!r} twice")
            values[name] = value
        for name in fields:
            if name not in values:
                if name not in self._defaults:
                    raise TypeError(f"{type(self).__name__}() is missing the argument {name!r}")
                values[name] = self._defaults[name]
        setter = object.__setattr__  # one by one, in field order: the instances share one key table
        for name in fields:
            setter(self, name, values[name])
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # same class

    def __hash__(self) -> int:
        return hash((self.__class__, self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{type(self).__name__}({inner})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return type(self)(**{**{name: getattr(self, name) for name in self._fields}, **changes})

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, shallow (every field of a record here is a plain value)."""
        return {name: getattr(self, name) for name in self._fields}


def _comparison(name: str) -> Any:
    def compare(self: Record, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(getattr(self._values(), name)(other._values()))

    compare.__name__ = name
    return compare


_ORDER = {name: _comparison(name) for name in ("__lt__", "__le__", "__gt__", "__ge__")}
