"""Installing p2pdist on a Windows PC: what install.cmd and uninstall.cmd do (docs/windows.md).

``plan`` decides (paths, agent.toml, the firewall and ACL command lines) and is pure, so it is
tested on any system; ``steps`` carries it out on Windows; ``scm`` speaks to the Service
Control Manager; ``__main__`` is the command line the two .cmd files call.
"""
