"""The SMS/SCCM wrapper: ``p2pdist-wrapper [--pkg ID] ... <command>`` in front of a program line.

It talks to the agent only through the local control API (``p2pdist.control.client``):
the command runs from the p2pdist cache once the package is complete and re-verified, and SMS
is told to retry (exit 1618 by default) while it is not. See docs/wrapper.md.
"""
