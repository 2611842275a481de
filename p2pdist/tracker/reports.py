"""What an agent tells the site server about its packages: the report codec, shared by both.

One report is one POST of ``{"packages": [entry, ...]}`` (at most ``MAX_ENTRIES``) from one
PC; the PC is its source address (through ``proxies`` as for announces), never a name it sends.
An entry is one package version as the agent's status shows it::

    {"package": "PS100012", "version": 3, "info_hash": "<40 hex>" | null,
     "state": "downloading", "progress": 0.42,
     "error_kind": "range-unsupported" | null, "error": "one line" | null,
     "in_use": false, "completed": false,
     "from_peers": 0, "from_webseed": 0, "uploaded": 0}

Entries carry totals so far and the state now, never increments, so a report sent twice (a
retry after a lost answer) changes nothing: reports are idempotent by construction. An entry
without an info-hash is a package the agent could not get a torrent for (``version`` null when
it asked for the newest): that is how the server learns that PCs ask for a package that was
never published, or was retired. The older single-object form (``info_hash, package, version,
from_peers, from_webseed, uploaded, completed``) is still read, as one entry.

``labels`` turns an entry into the counters it adds to its (package, version, site): the
stores keep those labels per PC so that the next report from that PC takes exactly its old
contribution back, whatever changed in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from p2pdist.errors import RemoteError
from p2pdist.metainfo import normalize_package_id
from p2pdist.outcomes import Problem, State, problem_kind

MAX_ENTRIES = 64  # per report; an agent with more packages sends several
MAX_COUNTER = 2**50  # 1 PiB per package and agent; sums stay inside 64-bit integers
MAX_MESSAGE = 200  # characters of an error's one line kept per PC
UNVERSIONED = -1  # stored version of "the newest" (a fetch that failed before a version was known)

SEEN = "seen"
IN_USE = "in-use"
STATE_LABEL = "state:"
KIND_LABEL = "kind:"


class ReportError(RemoteError, ValueError):
    """A report or entry that does not follow the codec; the message says which field."""


@dataclass(frozen=True)
class ReportEntry:
    package_id: str
    version: int | None
    info_hash: str | None
    state: State
    progress: float = 0.0
    problem: Problem | None = None
    error: str | None = None
    in_use: bool = False
    completed: bool = False  # has completed at least once (state may be "checking" since)
    from_peers: int = 0
    from_webseed: int = 0
    uploaded: int = 0

    @property
    def stored_version(self) -> int:
        return UNVERSIONED if self.version is None else self.version

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package_id,
            "version": self.version,
            "info_hash": self.info_hash,
            "state": str(self.state),
            "progress": round(self.progress, 4),
            "error_kind": None if self.problem is None else str(self.problem),
            "error": self.error,
            "in_use": self.in_use,
            "completed": self.completed,
            "from_peers": self.from_peers,
            "from_webseed": self.from_webseed,
            "uploaded": self.uploaded,
        }

    @classmethod
    def from_json(cls, value: object) -> ReportEntry:
        """Validate one entry; ReportError names the first bad field."""
        if not isinstance(value, dict):
            raise ReportError("a report entry must be a JSON object")
        package = value.get("package")
        if not isinstance(package, str):
            raise ReportError("package must be a PackageID string")
        try:
            package_id = normalize_package_id(package)
        except ValueError as exc:
            raise ReportError(f"package: {exc}") from None
        version = value.get("version")
        if version is not None and not _natural(version, 2**31 - 1):
            raise ReportError("version must be a non-negative integer or null")
        info_hash = value.get("info_hash")
        if info_hash is not None:
            if not isinstance(info_hash, str) or len(info_hash) != 40 or not _hex(info_hash):
                raise ReportError("info_hash must be 40 hex digits or null")
            info_hash = info_hash.lower()
            if version is None:
                raise ReportError("an entry with an info_hash needs its version")
        numbers = {}
        for name in ("from_peers", "from_webseed", "uploaded"):
            number = value.get(name, 0)
            if not _natural(number, MAX_COUNTER):
                raise ReportError(f"{name} must be a non-negative integer")
            numbers[name] = number
        completed = value.get("completed", False)
        in_use = value.get("in_use", False)
        if not isinstance(completed, bool) or not isinstance(in_use, bool):
            raise ReportError("completed and in_use must be true or false")
        if "state" in value:
            try:
                state = State(value["state"])
            except ValueError:
                raise ReportError(f"state must be one of {', '.join(State)}") from None
        else:  # the older form: bytes and completion only
            state = State.COMPLETE if completed else State.DOWNLOADING
        if info_hash is None and state not in (State.FETCHING, State.ERROR):
            raise ReportError("an entry without an info_hash is a package being fetched or refused")
        progress = value.get("progress", 1.0 if state is State.COMPLETE else 0.0)
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not math.isfinite(progress):
            raise ReportError("progress must be a number from 0 to 1")
        kind = value.get("error_kind")
        error = value.get("error")
        if kind is not None and not isinstance(kind, str):
            raise ReportError("error_kind must be a string or null")
        if error is not None and not isinstance(error, str):
            raise ReportError("error must be a string or null")
        problem = problem_kind(kind) if kind is not None else (Problem.OTHER if state is State.ERROR else None)
        return cls(
            package_id, version, info_hash, state, min(1.0, max(0.0, float(progress))), problem,
            _one_line(error) if error else None, in_use, completed or state is State.COMPLETE, **numbers,
        )  # fmt: skip

    def labels(self) -> tuple[str, ...]:
        """The counters this entry adds to its (package, version, site), sorted."""
        found = [SEEN, STATE_LABEL + str(self.state)]
        if self.problem is not None and self.state is not State.COMPLETE:
            found.append(KIND_LABEL + str(self.problem))
        if self.in_use:
            found.append(IN_USE)
        return tuple(sorted(found))


def parse_report(value: object) -> list[object]:
    """The raw entries of a report body (each checked on its own by ``ReportEntry.from_json``,
    so one bad entry does not cost the others)."""
    if isinstance(value, dict) and "packages" in value:
        entries = value["packages"]
        if not isinstance(entries, list):
            raise ReportError("packages must be a list of entries")
        if len(entries) > MAX_ENTRIES:
            raise ReportError(f"a report holds at most {MAX_ENTRIES} entries; send several")
        return entries
    if isinstance(value, dict):
        return [value]  # the older one-package form
    raise ReportError("report must be a JSON object")


def _natural(value: object, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def _hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."
