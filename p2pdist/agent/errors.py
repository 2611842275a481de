"""The control requests the agent refuses, each with the HTTP status the control server answers.

Apart from the daemon so that every part of it (leases, fetching, retention) raises the same
errors without importing the coordinator.
"""

from __future__ import annotations

from p2pdist.errors import RemoteError


class AgentError(RemoteError):
    """A control request the agent refuses; ``status`` is the HTTP status to answer with."""

    status = 400


class BadRequest(AgentError):
    status = 400


class UnknownPackage(AgentError):
    status = 404


class Conflict(AgentError):
    status = 409

