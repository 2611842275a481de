"""A hand-written option loop that stops at the command, shared by the wrapper and the simulator.

The wrapper sits in front of an installer's command line, so everything from the first word that
is not a ``--option`` on belongs to the installer and must come through untouched: ``/i``,
``/qn``, ``-x`` and even words that look like our own options. argparse's intermixed and
REMAINDER parsing both guess at that boundary; this loop draws it by one rule: options start with
``--``, ``--`` alone ends them, and the first other word starts the command.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2pdist.errors import UsageError
from p2pdist.records import Record


class Scanned(Record):
    """Options in the order given, and how many words of argv they took (``--`` included)."""

    options: tuple[tuple[str, str | None], ...]
    consumed: int

    def value(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.options)


def scan_options(
    argv: Sequence[str],
    *,
    with_value: frozenset[str],
    flags: frozenset[str] = frozenset(),
    repeatable: frozenset[str] = frozenset(),
) -> Scanned:
    """Read ``--name value``, ``--name=value`` and ``--flag`` words up to the command.

    Raises UsageError for an unknown option, a missing value, a value given to a flag, or an
    option given twice (unless it is in ``repeatable``).
    """
    found: list[tuple[str, str | None]] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("--"):
            break
        name, equals, inline = word.partition("=")
        if name in flags:
            if equals:
                raise UsageError(f"{name} takes no value")
            value: str | None = None
            index += 1
        elif name in with_value:
            if equals:
                value = inline
                index += 1
            elif index + 1 < len(argv):
                value = argv[index + 1]
                index += 2
            else:
                raise UsageError(f"{name} needs a value")
        else:
            raise UsageError(f"unknown option {name!r} (options come before the command; '--' ends them)")
        if name not in repeatable and any(key == name for key, _ in found):
            raise UsageError(f"{name} given twice")
        found.append((name, value))
    return Scanned(tuple(found), index)


def parse_int(name: str, text: str, *, low: int, high: int) -> int:
    try:
        number = int(text, 10)
    except ValueError:
        raise UsageError(f"{name} wants a whole number, not {text!r}") from None
    if not low <= number <= high:
        raise UsageError(f"{name} must be between {low} and {high}, not {number}")
    return number


def parse_seconds(name: str, text: str, *, high: float) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"{name} wants a number of seconds, not {text!r}") from None
    if not 0 <= seconds <= high:  # also rejects nan
        raise UsageError(f"{name} must be between 0 and {high:g} seconds, not {text}")
    return seconds
