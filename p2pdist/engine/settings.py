"""Engine settings: every number with the reason it has its default."""

from __future__ import annotations

from dataclasses import dataclass

from p2pdist import __version__
from p2pdist.engine.targets import parse_networks


@dataclass(frozen=True)
class EngineSettings:
    client_name: str = f"p2pdist/{__version__}"
    listen_host: str = "0.0.0.0"
    listen_port: int = 6881
    # Source address for outgoing connections (peers and tracker); None lets the OS choose.
    bind_host: str | None = None
    # Peers per torrent: a branch office rarely has more; each costs a socket and ~300 KiB buffer.
    max_peers_per_torrent: int = 60
    # Over all torrents; connections past it are refused as they are accepted (reset at once).
    max_connections: int = 300
    # Connections from or to one IP address, per torrent (and handshakes pending at once from
    # one address). BitTorrent's usual one is too strict here: two agents that dial each other
    # at once hold two connections until the handshakes decide which survives, and a few PCs
    # may share an address behind NAT. Tests that run several engines on 127.0.0.1 raise it.
    max_connections_per_address: int = 4
    # Bytes waiting in one connection's send buffer. The upload loop writes one batch (512 KiB)
    # and waits for the socket to drain, so a peer that reads never comes near it; a peer that
    # makes us write (requests, rejects) without reading is closed when it passes this.
    max_send_buffer: int = 1 << 20
    # Never dial ports below this: a tracker or peer could otherwise point every agent of a
    # site at a privileged service (ssh, smtp, a DC) on some host. 0 dials any port.
    min_peer_port: int = 1024
    # Networks we may dial (CIDR); empty = any. The hook for the site's own subnets: a session
    # narrows it further with ``Session.set_site_networks`` once the site server names them.
    peer_networks: tuple[str, ...] = ()
    # Upload slots: 4 regular + 1 optimistic is the classic BitTorrent choice; LAN peers are fast,
    # so a few more slots spread a package through a branch in fewer rounds.
    upload_slots: int = 8
    choke_interval: float = 10.0
    optimistic_interval: float = 30.0
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    # BEP 3 suggests keep-alives every two minutes; peers drop connections silent for longer.
    keepalive_interval: float = 60.0
    inactivity_timeout: float = 150.0
    # A peer that sends nothing for this long while we wait on it is snubbed: its requests go back.
    request_timeout: float = 20.0
    # Requests in flight per peer: enough for bandwidth x delay on a LAN, at most the peer's reqq.
    min_request_queue: int = 16
    max_request_queue: int = 500
    # Read fast peers' blocks straight into their piece buffers (scatter reads, POSIX): saves a
    # copy of every byte on the main thread. False reads everything through the codec's buffer.
    direct_receive: bool = True
    request_queue_seconds: float = 1.0
    upload_rate_limit: int = 0  # bytes/s for the whole session, 0 = unlimited
    download_rate_limit: int = 0
    torrent_upload_rate_limit: int = 0  # bytes/s for each torrent, on top of the session's limit
    torrent_download_rate_limit: int = 0
    # A peer whose data failed hash checks this many times is banned for the session.
    ban_after_failures: int = 2
    tick_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.max_connections_per_address < 1 or self.max_send_buffer < 1:
            raise ValueError("max_connections_per_address and max_send_buffer must be positive")
        if not 0 <= self.min_peer_port < 65536:
            raise ValueError("min_peer_port must be 0-65535")
        try:
            parse_networks(self.peer_networks)
        except ValueError as exc:
            raise ValueError(f"peer_networks: {exc}") from None
