"""One PC of the libtorrent reference swarm: the same signed torrent, tracker and web seed.

``lt_client.py TORRENT SAVE_DIR LISTEN_ADDRESS`` inside a client namespace. Prints JSON lines:
``ready``; after a line on stdin (the common start) progress samples; ``done`` when every piece
is verified; ``final`` with the totals when stdin says ``stop`` or closes. Stock libtorrent
settings except what a LAN client in a namespace needs: its own address, no DHT, LSD, UPnP or
NAT-PMP. The torrent is private, so libtorrent takes peers from the tracker only, and it uses
the url-list web seed from the start (libtorrent has no grace period).
"""

from __future__ import annotations

import json
import select
import sys
import time

import libtorrent as lt


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    torrent, save, address = sys.argv[1], sys.argv[2], sys.argv[3]
    session = lt.session({
        "listen_interfaces": f"{address}:6881",
        "outgoing_interfaces": address,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "alert_mask": 0,
    })  # fmt: skip
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save
    emit(ready=time.time())
    sys.stdin.readline()
    handle = session.add_torrent(params)
    done = False
    deadline = time.monotonic() + 3600
    last_sample = 0.0
    while time.monotonic() < deadline:
        status = handle.status()
        now = time.time()
        if not done and status.is_seeding:
            done = True
            emit(done=now, downloaded=status.total_payload_download)
        if now - last_sample >= 0.5:
            last_sample = now
            emit(t=now, progress=status.progress, downloaded=status.total_payload_download, uploaded=status.total_payload_upload, peers=status.num_peers)
        readable, _, _ = select.select([sys.stdin], [], [], 0.05)
        if readable:
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                break
    status = handle.status()
    emit(final=time.time(), downloaded=status.total_payload_download, uploaded=status.total_payload_upload, seeding=status.is_seeding)


if __name__ == "__main__":
    main()
