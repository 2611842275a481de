"""The process's open-file limit, raised at start: every connection is a descriptor.

Linux starts services with a soft RLIMIT_NOFILE of 1024 (systemd's default ``LimitNOFILE``
is 1024 soft, 524288 hard), which a site server facing every PC of a company outgrows; past
it, ``accept`` fails and every new announce with it. The soft limit may be raised up to the
hard one without privileges, so the server does that at start and says what it got. A hard
limit too low is the operator's to raise (``LimitNOFILE=`` in the unit, see
docs/site-server.md). POSIX only: Windows has no such limit on sockets.
"""

from __future__ import annotations

import logging

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]  # Windows has no resource module

log = logging.getLogger("p2pdist.tracker")

WANTED = 65536  # enough for the per-address cap to matter before descriptors run out
UNBOUNDED_TARGET = 1 << 20  # what "unlimited" hard limits are taken to allow (Linux nr_open)


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard limit; (before, after), or None off POSIX."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNBOUNDED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        for candidate in (target, 10240):  # 10240: macOS refuses more than OPEN_MAX
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
                break
            except (ValueError, OSError):
                continue
    after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if after != soft:
        log.info("open file limit raised from %d to %d", soft, after)
    if after != resource.RLIM_INFINITY and after < WANTED:
        log.warning("open file limit is %d: each connection takes one; raise LimitNOFILE (see docs/site-server.md)", after)
    return soft, after
