"""The branch-office swarm benchmark: an emulated enterprise WAN in network namespaces.

``python benchmarks/branch/run.py --help``; docs/benchmark-branch.md explains the topology,
the fluid lower bound and the figures.
"""
