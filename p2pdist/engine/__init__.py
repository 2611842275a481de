"""The BitTorrent engine as a library: a session, its torrents, their peers and web seeds.

It knows nothing of the daemon (``p2pdist.agent``): no cache, leases, control API or reports.
``p2pdist get`` and ``p2pdist seed`` (``engine.cli``) drive it directly; the agent drives it for
every package of a PC.
"""
