"""The control API's schema (docs/control-api.md): addresses, errors and what the agent answers.

Shared by the agent's server (``p2pdist.agent.control``) and its light client
(``p2pdist.control.client``), so both read one definition of a package's status and of the
lease answer. Standard library only, and little of it (no typing, dataclasses or pathlib on the
way to an answer): the wrapper imports it on every SMS program start.
"""

from __future__ import annotations

import json
import os
import sys

from p2pdist.errors import LocalError, RemoteError
from p2pdist.records import Record

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

DEFAULT_SOCKET = "/run/p2pdist/agent.sock"
DEFAULT_PORT = 7881
# The Host header sent over the Unix socket (there is no host); the agent accepts it there.
SOCKET_HOST = "p2pdist-agent"
TOKEN_FILE_NAME = "control.token"
MAX_ANSWER = 8 * 1024 * 1024  # a package list of thousands of packages fits


def default_state_dir() -> Path:
    """``%ProgramData%\\p2pdist`` on Windows, ``/var/lib/p2pdist`` on Linux."""
    from pathlib import Path

    if sys.platform == "win32" and os.environ.get("ProgramData"):
        # The folder platformdirs would ask the shell for, without loading ctypes at every
        # wrapper start (the wrapper reads the token file here on Windows).
        return Path(os.environ["ProgramData"], "p2pdist")
    import platformdirs

    site_state = getattr(platformdirs, "site_state_path", platformdirs.site_data_path)
    return Path(site_state("p2pdist", appauthor=False))


def default_token_file() -> Path:
    return default_state_dir() / TOKEN_FILE_NAME


def default_address() -> str:
    if sys.platform == "win32":
        return f"http://127.0.0.1:{DEFAULT_PORT}"
    return f"unix:{DEFAULT_SOCKET}"


class AgentUnavailable(LocalError):
    """No agent answers at the control address (no socket, refused, timed out, no access)."""


class AgentTimeout(AgentUnavailable):
    """The agent took the connection but did not answer within the client's timeout."""


class ControlError(RemoteError):
    """The agent answered with an error; ``status`` is the HTTP status, ``message`` its reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"agent: {message} (HTTP {status})")
        self.status = status
        self.message = message


class PackageStatus(Record):
    """One package version as the agent sees it; times are ISO-8601 UTC strings."""

    package_id: str
    version: int | None = None
    info_hash: str | None = None
    name: str = ""
    state: str = "fetching-torrent"  # fetching-torrent | checking | downloading | complete | error
    progress: float = 0.0
    size: int = 0
    bytes_from_peers: int = 0
    bytes_from_webseed: int = 0
    uploaded: int = 0
    peers: int = 0
    download_rate: int = 0
    upload_rate: int = 0
    path: str | None = None
    error: str | None = None  # one line: why it stopped, or what keeps it from completing
    error_kind: str | None = None  # the error's p2pdist.outcomes.Problem (range-unsupported, ...)
    tracker_error: str | None = None
    in_use: bool = False  # a program runs from it (a live lease)
    unpublished_since: str | None = None  # not-published: when the repository first said so
    last_advertised: str = ""
    completed_at: str | None = None
    seed_until: str = ""

    @property
    def complete(self) -> bool:
        return self.state == "complete" and self.path is not None

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_json(cls, value: object) -> PackageStatus:
        """Lenient on extra keys (a newer agent), strict on the one that must be there."""
        if not isinstance(value, dict) or not isinstance(value.get("package_id"), str):
            raise ControlError(502, "malformed package status from the agent")
        names = cls._fields
        return cls(**{k: v for k, v in value.items() if k in names})


def decode_answer(status: int, payload: bytes, *, text: bool = False) -> Any:
    """An answer's body: the error it says as ControlError, else its text or JSON (None if empty)."""
    if status >= 400:
        raise ControlError(status, _error_message(payload, status))
    if text:
        return payload.decode("utf-8", "replace")
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        raise ControlError(502, "the agent's answer is not JSON") from None


def package_list(answer: Any) -> list[PackageStatus]:
    items = answer.get("packages") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise ControlError(502, "malformed package list from the agent")
    return [PackageStatus.from_json(item) for item in items]


def lease_of(answer: Any) -> str:
    lease = answer.get("lease") if isinstance(answer, dict) else None
    if not isinstance(lease, str):
        raise ControlError(502, "malformed lease answer from the agent")
    return lease


def _error_message(payload: bytes, status: int) -> str:
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return value["error"]
    return payload.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
