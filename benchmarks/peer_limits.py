"""What hostile hosts on the LAN can make one p2pdist engine hold: a bounded attack on 127.0.0.0/8.

The engine under attack is a child process (a Session with the default EngineSettings on
127.0.0.1), so its RSS and open descriptors are its own, read from /proc. Three attacks:

1. connections: ``--connections`` (10 000) connection attempts, each from its own address
   (127.1.0.0/16) so the session's global cap is what is tested, held open and silent. RSS and
   fds of the seed right after the burst and after its handshake timeout (10 s) passed.
2. flood: a peer unchoked by the seed repeats one valid request, never reading, until it has
   written ``--flood-mib`` (100) MiB or ``--flood-seconds`` passed; when the seed closes it, it
   reconnects (at most ``--max-reconnects``). Peak RSS of the seed during the flood and until it
   settles, and its fds at the end. (Written, not read: what the kernel buffered for a
   connection the seed then reset counts too.)
3. poisoner: a leecher's peer at 127.0.0.2 dials in, answers one piece with garbage, waits for
   the leecher's hash check to fail and reconnects, up to 12 times: the hash failures until
   the leecher refuses it.

The seed's RSS is capped at ``--rss-ceiling-mib`` (the attack stops there and says so). Prints
one line and writes JSON to benchmarks/results/peer_limits.json.

    .venv/bin/python benchmarks/peer_limits.py [--connections 10000] [--flood-mib 100]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from p2pdist import bencode  # noqa: E402
from p2pdist.metainfo import encode_torrent, parse_metainfo  # noqa: E402
from p2pdist.wire import messages as m  # noqa: E402

PIECE = 64 * 1024
POISON_ATTEMPTS = 12


def _meta(size: int, seed: int):
    data = random.Random(seed).randbytes(size)
    hashes = b"".join(hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, size, PIECE))
    info = {b"name": b"pkg.bin", b"piece length": PIECE, b"length": size, b"pieces": hashes, b"private": 1}
    return data, parse_metainfo(encode_torrent(bencode.encode(info)))


SEED_DATA, SEED_META = _meta(4 << 20, 1)
LEECH_DATA, LEECH_META = _meta(1 << 20, 2)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the engine under attack (child process) -------------------------------------------------------


async def _child(role: str) -> None:
    from p2pdist.engine.session import Session
    from p2pdist.engine.settings import EngineSettings
    from p2pdist.storage.memory import MemoryStorage

    session = Session(EngineSettings(listen_host="127.0.0.1", listen_port=0), rng=random.Random(3))
    await session.start()
    if role == "seed":
        torrent = await session.add_torrent(SEED_META, MemoryStorage.from_data(SEED_META.info, SEED_DATA))
    else:
        torrent = await session.add_torrent(LEECH_META, MemoryStorage(LEECH_META.info))
    print(json.dumps({"port": session.port}), flush=True)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "stats":
        print(json.dumps({"hash_failures": torrent.hash_failures, "banned": sorted(torrent.banned)}), flush=True)
    await session.close()


class Child:
    def __init__(self, role: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", role], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=_raise_fd_limit,
        )
        self.port = json.loads(self.proc.stdout.readline())["port"]  # type: ignore[union-attr]

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        try:
            self.proc.stdin.write("stop\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# -- the attacks ----------------------------------------------------------------------------------------


def _msg(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), kind) + payload


async def _connect(host: str, port: int, source: str, rcvbuf: int | None = None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind((source, 0))
        sock.setblocking(False)
        async with asyncio.timeout(10):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def attack_connections(count: int) -> dict:
    seed = Child("seed")
    before = {"rss_mib": seed.rss_mib(), "fds": seed.fds()}
    held: list[socket.socket] = []
    failed = 0
    gate = asyncio.Semaphore(256)

    async def one(n: int) -> None:
        nonlocal failed
        async with gate:
            try:
                held.append(await _connect("127.0.0.1", seed.port, f"127.1.{n // 250}.{n % 250 + 1}"))
            except (OSError, TimeoutError):
                failed += 1

    started = time.monotonic()
    await asyncio.gather(*(one(n) for n in range(count)))
    burst = time.monotonic() - started
    await asyncio.sleep(1.0)
    during = {"rss_mib": seed.rss_mib(), "fds": seed.fds()}
    await asyncio.sleep(11.0)  # past the seed's handshake timeout (10 s)
    after = {"rss_mib": seed.rss_mib(), "fds": seed.fds()}
    for sock in held:
        sock.close()
    seed.stop()
    return {"attempts": count, "connected": len(held), "failed": failed, "burst_seconds": round(burst, 2),
            "idle": before, "after_burst": during, "after_handshake_timeout": after}


async def _unchoked(port: int):
    sock = await _connect("127.0.0.1", port, "127.0.0.1", rcvbuf=4096)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(m.Handshake(SEED_META.info_hash, b"-XX0001-" + os.urandom(12), m.make_reserved(fast=True)).encode() + _msg(0x0F) + _msg(2))
    async with asyncio.timeout(10):
        await reader.readexactly(m.HANDSHAKE_LEN)
        while True:
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            if (await reader.readexactly(length))[:1] == b"\x01":
                return reader, writer


async def attack_flood(mib: int, seconds: float, max_reconnects: int, ceiling: float) -> dict:
    seed = Child("seed")
    chunk = _msg(6, struct.pack(">III", 0, 0, 16384)) * 61_681  # ~1 MiB of one request, repeated
    budget, sent, reconnects, peak, stopped = mib << 20, 0, 0, seed.rss_mib(), "budget"
    deadline = time.monotonic() + seconds
    writer = None
    while sent < budget:
        if time.monotonic() > deadline:
            stopped = "time"
            break
        if writer is None:
            if reconnects > max_reconnects:
                stopped = "reconnects"
                break
            try:
                _, writer = await _unchoked(seed.port)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                reconnects += 1
                continue
        try:
            writer.write(chunk)
            async with asyncio.timeout(10):
                await writer.drain()
            sent += len(chunk)
        except (OSError, TimeoutError):
            writer.close()
            writer = None
            reconnects += 1
        peak = max(peak, seed.rss_mib())
        if peak > ceiling:
            stopped = "rss ceiling"
            break
    # The seed may still be reading what the kernel buffered: sample until its RSS settles.
    last, settle_deadline = -1.0, time.monotonic() + 20.0
    while time.monotonic() < settle_deadline:
        await asyncio.sleep(0.5)
        now = seed.rss_mib()
        peak = max(peak, now)
        if abs(now - last) < 1.0:
            break
        last = now
    result = {"sent_mib": round(sent / (1 << 20), 1), "reconnects": reconnects, "stopped_by": stopped,
              "peak_rss_mib": round(peak, 1), "fds": seed.fds()}
    if writer is not None:
        writer.close()
    seed.stop()
    return result


async def _poison_once(port: int, leech: Child, failures: int) -> bool:
    try:
        sock = await _connect("127.0.0.1", port, "127.0.0.2")
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(m.Handshake(LEECH_META.info_hash, b"-XX0002-" + bytes(12), m.make_reserved(fast=True)).encode())
        async with asyncio.timeout(5):
            await reader.readexactly(m.HANDSHAKE_LEN)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return False
    writer.write(_msg(0x0E) + _msg(1))
    piece = None
    try:
        async with asyncio.timeout(10):
            while leech.stats()["hash_failures"] == failures:
                try:
                    async with asyncio.timeout(0.2):
                        header = await reader.readexactly(4)  # cancel-safe: nothing consumed
                except TimeoutError:
                    continue
                body = await reader.readexactly(struct.unpack(">I", header)[0])
                if body[:1] == b"\x06":
                    index, begin, size = struct.unpack(">III", body[1:13])
                    piece = index if piece is None else piece
                    if index == piece:
                        writer.write(m.Piece(index, begin, b"\xaa" * size).encode())
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        pass
    writer.close()
    return True


async def attack_poisoner() -> dict:
    leech = Child("leech")
    accepted = 0
    for _ in range(POISON_ATTEMPTS):
        if not await _poison_once(leech.port, leech, leech.stats()["hash_failures"]):
            break
        accepted += 1
    stats = leech.stats()
    leech.stop()
    banned = "127.0.0.2" in stats["banned"] or accepted < POISON_ATTEMPTS
    return {"connections_accepted": accepted, "hash_failures": stats["hash_failures"], "banned": banned}


async def main(args: argparse.Namespace) -> dict:
    _raise_fd_limit()
    return {
        "connections": await attack_connections(args.connections),
        "flood": await attack_flood(args.flood_mib, args.flood_seconds, args.max_reconnects, args.rss_ceiling_mib),
        "poisoner": await attack_poisoner(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["seed", "leech"], help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--flood-mib", type=int, default=100)
    parser.add_argument("--flood-seconds", type=float, default=60.0)
    parser.add_argument("--max-reconnects", type=int, default=20_000)
    parser.add_argument("--rss-ceiling-mib", type=float, default=2048.0)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "peer_limits.json")
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args.child))
        sys.exit(0)
    summary = asyncio.run(main(args))
    c, f, p = summary["connections"], summary["flood"], summary["poisoner"]
    print(
        f"peer limits: {c['attempts']} connections -> seed {c['after_burst']['fds']} fds {c['after_burst']['rss_mib']:.0f} MiB, "
        f"{c['after_handshake_timeout']['fds']} fds after the handshake timeout; "
        f"flood {f['sent_mib']} MiB ({f['reconnects']} reconnects) -> peak {f['peak_rss_mib']:.0f} MiB, {f['fds']} fds; "
        f"poisoner: {p['hash_failures']} hash failures, {'banned' if p['banned'] else 'never banned'}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))
