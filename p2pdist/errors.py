"""Error types that say who is to blame.

A ``LocalError`` means our own code or the local user misused something (a bad argument, an
unwritable directory). A ``RemoteError`` means bytes from elsewhere were bad (a peer, a torrent
file, an announce, an API request): it ends that peer or request only, never the process.
Every parser of remote bytes lets only its documented ``RemoteError`` subclass escape.
"""

from __future__ import annotations


def one_line(text: object, limit: int = 500) -> str:
    """An error's text as one bounded line: remote words (a tracker's reason) may hold anything."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class P2pdistError(Exception):
    """Root of every error p2pdist raises on purpose; ``exit_code`` is what a CLI returns."""

    exit_code = 1


class LocalError(P2pdistError):
    """We, or the local user, asked for something impossible."""


class UsageError(LocalError):
    """Bad command-line arguments."""

    exit_code = 2


class InputError(LocalError):
    """An input file or folder is missing or unreadable."""

    exit_code = 3


class OutputError(LocalError):
    """An output file or folder cannot be written."""

    exit_code = 4


class RemoteError(P2pdistError):
    """Input from outside this process was malformed or hostile."""

    exit_code = 5


class BencodeError(RemoteError):
    """Malformed or over-limit bencoded data; ``offset`` is the byte where decoding stopped."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.reason = message
        self.offset = offset


class MetainfoError(RemoteError):
    """A torrent that decodes but is not a valid, safe v1 torrent."""


class SignatureError(RemoteError):
    """A torrent's signature is missing, malformed or does not verify with a trusted key."""

    exit_code = 6


class ProtocolError(RemoteError):
    """A peer broke the wire protocol; the connection to that peer ends."""
