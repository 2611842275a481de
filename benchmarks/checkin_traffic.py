"""Report and check-in traffic per agent per hour, with and without pre-staging orders.

A real site server (the aiohttp application on 127.0.0.1, SQLite ledger and orders in a temp
folder) with 20 published packages, and in front of it a TCP relay that counts every byte
each way. The agent's own ``Reporter`` (aiohttp, one new connection per report, as reports
are minutes apart) runs one simulated hour: a report at each ``report_interval`` (300 s), the
first one full (the hourly ``report_refresh``), the others carrying what changed, here nothing:
the idle check-ins through which an agent hears its site's pre-staging orders.

Cases (``no-packages``: an agent with nothing cached and no order, so only empty check-ins;
the others hold 20 complete packages, as in console_load.py):

* ``no-orders``: the site has no order;
* ``one-order``: one standing order the agent acted on (it sends the orders' tag back, so the
  server leaves the list out);
* ``32-orders-acted``: the most one answer carries, acted on;
* ``32-orders-pending``: 32 orders the agent cannot act on (e.g. its disk is full), so every
  answer carries them all: the bound.

Counted: HTTP request and answer bytes (headers and bodies), not TCP/IP headers (about 0.5 KB
more per connection).

    .venv/bin/python benchmarks/checkin_traffic.py

Prints one line per case and writes benchmarks/results/checkin_traffic.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pdist.control.schema import PackageStatus
from p2pdist.agent.prestage import read_answer
from p2pdist.agent.reporting import Reporter
from p2pdist.metainfo.signing import generate_key, raw_public_key
from p2pdist.tracker.prestage import Order
from p2pdist.tracker.server import start
from p2pdist.tracker.settings import LimitSettings, ListenSettings, ServerSettings, SiteSettings
from p2pdist.tracker.web import STATE, build_app
from console_load import make_torrents, package_id

INTERVAL, HOUR = 300, 3600
PACKAGES = 20


class Relay:
    """127.0.0.1:<port> -> the server, counting bytes each way."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.up = self.down = 0
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, upward: bool) -> None:
            for _ in range(100_000):  # bounded: far more chunks than one report needs
                data = await source.read(65536)
                if not data:
                    break
                if upward:
                    self.up += len(data)
                else:
                    self.down += len(data)
                sink.write(data)
                await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False), return_exceptions=True)


def statuses(hashes: list[str]) -> list[PackageStatus]:
    size = 50 << 20
    return [
        PackageStatus(package_id(n), 1, h, f"package-{n}", "complete", 1.0, size, bytes_from_peers=size * 9 // 10,
                      bytes_from_webseed=size - size * 9 // 10, uploaded=size, completed_at="2026-03-02T08:00:00Z")  # fmt: skip
        for n, h in enumerate(hashes)
    ]


async def one_hour(url: str, relay: Relay, mine: list[PackageStatus], acts: bool) -> dict[str, int]:
    now = [0.0]
    relay.up = relay.down = relay.connections = 0
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        reporter: Reporter

        def heard(answer: object) -> None:  # what the agent does: adopt the tag once it acted on the orders
            _, _, tag = read_answer(answer)
            if acts:
                reporter.orders_tag = tag

        reporter = Reporter(http, url, lambda: mine, refresh=HOUR, clock=lambda: now[0], on_answer=heard)
        for tick in range(HOUR // INTERVAL):
            now[0] = tick * INTERVAL
            await reporter.report()
    return {"reports": reporter.reports, "connections": relay.connections, "sent": relay.up, "received": relay.down,
            "bytes_per_hour": relay.up + relay.down}  # fmt: skip


async def run() -> dict[str, object]:
    key = generate_key()
    torrents = make_torrents(PACKAGES, key, random.Random(7))
    with tempfile.TemporaryDirectory(prefix="p2pdist-checkin-") as folder:
        settings = ServerSettings(
            listen=ListenSettings(host="127.0.0.1", port=0), data_dir=Path(folder), admin_token="bench",
            public_keys=(raw_public_key(key.public_key()).hex(),), sites=(SiteSettings("HQ", ("127.0.0.0/8",)),),
            limits=LimitSettings(announce_rate=0), public_url="http://127.0.0.1",
        )  # fmt: skip
        app = build_app(settings)
        server = await start(app, settings.listen, "127.0.0.1", 0)
        try:
            state = app[STATE]
            hashes = [state.repository.publish(t, time.time(), announce_url="http://127.0.0.1/announce")[0].info_hash for t in torrents]
            relay = Relay(int(server.url.rsplit(":", 1)[1]))
            url = f"http://127.0.0.1:{await relay.start()}/api/report"
            mine = statuses(hashes)
            results: dict[str, object] = {}
            results["no-packages"] = await one_hour(url, relay, [], acts=True)
            results["no-orders"] = await one_hour(url, relay, mine, acts=True)
            base = Order(package_id(0), 1, "HQ", time.time() - 60, time.time() - 60)
            await state.prestage.put(base)
            results["one-order"] = await one_hour(url, relay, mine, acts=True)
            for n in range(1, 32):
                await state.prestage.put(replace(base, package_id=package_id(n % PACKAGES), version=None if n >= PACKAGES else 1,
                                                 site="HQ", at=base.at - n))  # fmt: skip
            results["32-orders-acted"] = await one_hour(url, relay, mine, acts=True)
            results["32-orders-pending"] = await one_hour(url, relay, mine, acts=False)
        finally:
            await server.stop()
    return results


def main() -> int:
    results = asyncio.run(run())
    for case, figures in results.items():
        print(f"{case}: {figures['bytes_per_hour']} bytes/agent/hour ({figures['reports']} reports, "  # type: ignore[index]
              f"{figures['sent']} sent, {figures['received']} received)")  # type: ignore[index]
    out = ROOT / "benchmarks" / "results" / "checkin_traffic.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
