"""Package states and problem kinds: the one vocabulary of the agent, its control API, the
wrapper, the agents' reports and the site server's console.

An admin rolling a package out asks "which PCs are stuck, and why": the answer must be a
short word the page can count and a script can match, not a log line to read. So every
problem an agent can see while getting a package has one ``Problem`` kind, owned here and
nowhere else; the one-line message beside it carries the detail (a URL, an HTTP status).

Kinds are listed most blocking first: when a package has several problems at once (the
distribution point ignores Range *and* the tracker is unreachable), its status names the
first. The site server maps a kind it does not know (a newer agent) to ``other``, so the set
of labels it keeps and exports stays bounded.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where one package version is on its way into the cache."""

    FETCHING = "fetching-torrent"  # asking the repository for the signed torrent
    CHECKING = "checking"  # hashing what is on disk (start, restart, the check before a run)
    DOWNLOADING = "downloading"
    COMPLETE = "complete"  # every piece verified, files under their final names
    ERROR = "error"  # stopped: the problem says why (and the agent retries where that helps)


class Problem(StrEnum):
    """Why a package is not (yet) in the cache; ``FIXES`` says who can do what about it."""

    NOT_PUBLISHED = "not-published"
    SIGNATURE = "signature"
    TORRENT_REFUSED = "torrent-refused"
    DISK_FULL = "disk-full"
    STORAGE = "storage"
    RANGE_UNSUPPORTED = "range-unsupported"
    WEBSEED_REFUSED = "webseed-refused"
    WEBSEED_UNREACHABLE = "webseed-unreachable"
    TRACKER_REFUSED = "tracker-refused"
    TRACKER_UNREACHABLE = "tracker-unreachable"
    REPOSITORY_UNREACHABLE = "repository-unreachable"
    OTHER = "other"


FIXES: dict[Problem, str] = {
    Problem.NOT_PUBLISHED: "publish the package (p2pdist publish), or remove p2pdist-wrapper from the program",
    Problem.SIGNATURE: "sign the torrent with the repository key the agents trust (p2pdist sign), then publish it",
    Problem.TORRENT_REFUSED: "re-create and publish the torrent: the message says what the agent refused",
    Problem.DISK_FULL: "free space on the agent's cache drive or lower cache.max_bytes; the agent resumes by itself",
    Problem.STORAGE: "check the agent's cache folder permissions; the agent retries by itself",
    Problem.RANGE_UNSUPPORTED: "let the distribution point's web server answer Range requests (HTTP 206)",
    Problem.WEBSEED_REFUSED: "check the web seed URL and the distribution point's web server (the message has the HTTP status)",
    Problem.WEBSEED_UNREACHABLE: "check that the PC reaches the distribution point's web server",
    Problem.TRACKER_REFUSED: "read the site server's reason in the message",
    Problem.TRACKER_UNREACHABLE: "check that the PC reaches the site server; peers already known keep serving",
    Problem.REPOSITORY_UNREACHABLE: "check that the PC reaches the site server",
    Problem.OTHER: "see the agent's log",
}

_RANK = {kind: rank for rank, kind in enumerate(Problem)}


def problem_kind(text: object) -> Problem:
    """A kind from its text; anything unknown (a newer agent, junk) is ``OTHER``."""
    try:
        return Problem(str(text))
    except ValueError:
        return Problem.OTHER


def most_blocking(problems: list[tuple[Problem, str]]) -> tuple[Problem, str] | None:
    """The problem to show first among several (``Problem`` order), or None."""
    return min(problems, key=lambda item: _RANK[item[0]], default=None)
