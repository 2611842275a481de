"""The agent daemon: package lifecycle, cache and retention, leases, reports, state, control server, service.

It drives the engine (``p2pdist.engine``) for every package of this PC.
"""
