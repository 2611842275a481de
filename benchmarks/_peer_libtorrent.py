"""One libtorrent peer for benchmarks/transfer_speed.py, with the same protocol as _peer_p2pdist."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import libtorrent as lt


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sys_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["seed", "leech"])
    parser.add_argument("torrent")
    parser.add_argument("data")
    parser.add_argument("--peer", type=int, default=0)
    args = parser.parse_args()
    # Default settings, TCP only on loopback; no DHT/LSD/UPnP (nothing to find on loopback).
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_incoming_utp": False, "enable_outgoing_utp": False,
        # Status alerts only: the leecher learns it finished from torrent_finished_alert
        # instead of polling, so its CPU figure holds libtorrent's work and not the harness's.
        "alert_mask": lt.alert.category_t.status_notification if args.role == "leech" else 0,
    })
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.data
    if args.role == "seed":
        handle = ses.add_torrent(params)
        while not handle.status().is_seeding:
            time.sleep(0.05)
        print(json.dumps({"port": ses.listen_port()}), flush=True)
        start = cpu()
        sys.stdin.readline()
        print(json.dumps({"cpu": cpu() - start, "uploaded": handle.status().total_payload_upload}), flush=True)
        return
    start_cpu, start_sys, start = cpu(), sys_cpu(), time.perf_counter()
    handle = ses.add_torrent(params)
    handle.connect_peer(("127.0.0.1", args.peer))
    first = None
    while first is None:  # poll until the first payload byte, then wait for the alert
        status = handle.status()
        if status.total_payload_download > 0 or status.is_seeding:
            first = time.perf_counter()
        else:
            time.sleep(0.005)
    while not handle.status().is_seeding:
        ses.wait_for_alert(1000)  # status alerts only: torrent_finished_alert ends the wait
        ses.pop_alerts()
    done = time.perf_counter()
    print(json.dumps({"elapsed": done - start, "transfer": done - (first or done), "cpu": cpu() - start_cpu, "sys": sys_cpu() - start_sys}), flush=True)


if __name__ == "__main__":
    main()
