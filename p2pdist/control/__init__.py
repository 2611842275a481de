"""The agent's local control API as its callers see it: the schema and a light client.

The wrapper, ``p2pdist status`` and the Windows installer import only this package of the
agent side, so it holds no asyncio server, no aiohttp and no engine.
"""
