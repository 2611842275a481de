"""The site server: a private, site-aware HTTP tracker and the signed torrent repository.

``announce`` is the sans-IO announce/scrape codec the agent shares; it imports nothing but
bencode and errors, so importing this package stays cheap and free of aiohttp.
"""
