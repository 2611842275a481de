"""The agent: the BitTorrent engine (session, torrents, peers) and the daemon around it."""
