"""The wrapper's own exit codes, and how a child's return code becomes ours.

SMS judges a program only by its exit code, so the wrapper returns the command's code unchanged
and keeps its own few codes apart from what installers use: 0, 1 and other small numbers, the
msiexec 16xx family, 3010/3011 and the HRESULTs. The retry code defaults to 1618
(ERROR_INSTALL_ALREADY_RUNNING), which the SMS client's retry list carries out of the box.

POSIX exit statuses are 8 bits: there a code arrives as ``code & 0xFF`` (1618 shows up as 82,
the wrapper's own codes as 21-25). ``visible`` says what a parent process will actually see.
Windows exit codes are unsigned 32-bit values, while CPython's ``sys.exit`` takes a C ``long``
(32-bit signed there): a code from 2**31 up (an HRESULT such as 0x80070643) must leave as its
negative twin to arrive whole, which ``exit_status`` does.
"""

from __future__ import annotations

import os

RETRY_DEFAULT = 1618
"""Not ready yet (package incomplete, agent down, re-verification failed): SMS tries again later."""

EXIT_USAGE = 7701
"""The wrapper's own options are wrong: the program line in SMS needs fixing."""

EXIT_NO_PACKAGE = 7702
"""No ``--pkg`` and the current directory does not name a PackageID."""

EXIT_NOT_FOUND = 7703
"""The command is neither in the package folder nor on PATH, or it could not be started."""

EXIT_INTERNAL = 7704
"""A fault in the wrapper itself; the log line carries the reason."""

EXIT_NOT_PUBLISHED = 7705
"""The package is not published (never, or retired with no complete cached copy) and has not
been since the grace began: SMS should stop retrying and report the program failed."""

UNPUBLISHED_GRACE = 86400.0
"""Seconds from the agent's first "not published" until the wrapper stops returning the retry
code: a day covers a package published a little after its advertisement."""

WRAPPER_CODES = frozenset({EXIT_USAGE, EXIT_NO_PACKAGE, EXIT_NOT_FOUND, EXIT_INTERNAL, EXIT_NOT_PUBLISHED})

SUCCESS_CODES = (0, 1604, 1641, 3010, 3011)
"""What SMS counts as success (the non-zero ones also ask for a reboot or report a suspended install)."""

MAX_CODE = 2**31 - 1


def from_returncode(returncode: int) -> int:
    """A ``subprocess`` return code as an exit code: a POSIX signal death N becomes 128+N, as shells do."""
    if returncode < 0:
        return 128 - returncode
    return returncode


def exit_status(code: int, *, windows: bool | None = None) -> int:
    """What to hand ``sys.exit`` so that a parent sees ``code``: on Windows codes of 2**31 and
    more as the signed 32-bit value with the same bits."""
    if windows is None:
        windows = os.name == "nt"
    if windows and 2**31 <= code < 2**32:
        return code - 2**32
    return code


def visible(code: int, *, posix: bool | None = None) -> int:
    """The exit status a parent sees for ``code``: the low 8 bits on POSIX, the full value on Windows."""
    if posix is None:
        posix = os.name == "posix"
    return code & 0xFF if posix else code


def check_retry_code(code: int, *, posix: bool | None = None) -> int:
    """Validate a ``--retry-code``: it must look like a failure to SMS and not be one of ours."""
    if not 1 <= code <= MAX_CODE:
        raise ValueError(f"retry code {code} is not between 1 and {MAX_CODE}")
    if code in SUCCESS_CODES:
        raise ValueError(f"retry code {code} is a success code for SMS")
    if code in WRAPPER_CODES:
        raise ValueError(f"retry code {code} is one of the wrapper's own exit codes")
    if visible(code, posix=posix) == 0:
        raise ValueError(f"retry code {code} would read as 0 (success) on this system, where exit codes are 8-bit")
    return code


def check_unpublished_code(code: int, retry_code: int, *, posix: bool | None = None) -> int:
    """Validate an ``--unpublished-code``: a failure for SMS, and not the retry code (which would
    make SMS retry for ever)."""
    if not 1 <= code <= MAX_CODE:
        raise ValueError(f"code {code} is not between 1 and {MAX_CODE}")
    if code in SUCCESS_CODES:
        raise ValueError(f"code {code} is a success code for SMS")
    if code in WRAPPER_CODES - {EXIT_NOT_PUBLISHED}:
        raise ValueError(f"code {code} is one of the wrapper's own exit codes")
    if visible(code, posix=posix) == 0:
        raise ValueError(f"code {code} would read as 0 (success) on this system, where exit codes are 8-bit")
    if visible(code, posix=posix) == visible(retry_code, posix=posix):
        raise ValueError(f"code {code} reads as the retry code {retry_code}: SMS would keep retrying")
    return code
