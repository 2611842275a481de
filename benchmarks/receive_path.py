"""The leecher's Python cost per 16 KiB block, without the kernel: a real ``Torrent`` and
``PeerConnection`` fed piece messages through an in-memory transport.

The loopback benchmark (transfer_speed.py) mixes kernel copies, the seed's CPU and the hash
thread into one number; this one isolates the main thread's work per block (codec, picker,
piece assembly, request refill), which is what the engine's design decides. The seed side is
an in-memory responder that answers every request with the right bytes, so pieces verify. It
has no socket, so this is the codec-buffer path (a copy per block), not the scatter reads a
real fast peer gets (engine/direct.py; transfer_speed.py measures those).

    .venv/bin/python benchmarks/receive_path.py [--size-mib 256] [--rounds 5] [--chunk-kib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import struct
import sys
import time
from collections import deque
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from p2pdist import bencode  # noqa: E402
from p2pdist.engine.peer import PeerConnection  # noqa: E402
from p2pdist.engine.torrent import Torrent  # noqa: E402
from p2pdist.metainfo import encode_torrent, parse_metainfo  # noqa: E402
from p2pdist.storage.memory import NullStorage  # noqa: E402
from p2pdist.wire import messages as m  # noqa: E402
from p2pdist.wire.codec import PeerWire  # noqa: E402

PIECE = 1 << 20
_REQ = struct.Struct(">IBIII")


class Responder:
    """The far end: parses our requests, queues the matching piece messages."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.out: deque[bytes] = deque()
        self.pending = bytearray()
        self.requests = 0
        self.written: list[bytes] = []
        self.handshake_left = m.HANDSHAKE_LEN  # ours comes first and has no length prefix

    # transport API used by PeerConnection: keep the bytes, parse them outside the timed part
    def write(self, chunk: bytes) -> None:
        self.written.append(chunk)

    def is_closing(self) -> bool:
        return False

    def answer(self) -> None:
        for chunk in self.written:
            self.pending += chunk
        self.written.clear()
        if self.handshake_left:
            skip = min(self.handshake_left, len(self.pending))
            del self.pending[:skip]
            self.handshake_left -= skip
        view = memoryview(self.pending)
        pos = 0
        while len(view) - pos >= 4:
            (length,) = struct.unpack_from(">I", view, pos)
            if len(view) - pos < 4 + length:
                break
            if length == 13 and view[pos + 4] == 6:
                _, _, index, begin, size = _REQ.unpack_from(view, pos)
                start = index * PIECE + begin
                self.out.append(struct.pack(">IBII", 9 + size, 7, index, begin) + self.data[start : start + size])
                self.requests += 1
            pos += 4 + length
        view.release()
        del self.pending[:pos]

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def one_round(meta_bytes: bytes, data: bytes, chunk: int) -> dict[str, float]:
    meta = parse_metainfo(meta_bytes)
    torrent = Torrent(meta, NullStorage(meta.info), peer_id=b"-PD0000-" + os.urandom(12))
    await torrent.start()
    wire = PeerWire(peer_id=torrent.peer_id, info_hash=meta.info_hash, layout=torrent.layout, runs=True)
    conn = PeerConnection(wire, torrent, outbound=True, address=("127.0.0.1", 1))
    responder = Responder(data)
    conn.connection_made(responder)  # type: ignore[arg-type]
    torrent.peers.add(conn)
    hello = m.Handshake(meta.info_hash, b"-XX0000-" + os.urandom(12)).encode() + m.HaveAll().encode() + m.Unchoke().encode()
    stream = deque([hello])
    blocks = 0
    blocks_per_piece = torrent.layout.blocks_in_piece(0)
    total_blocks = torrent.picker.remaining_blocks
    cpu = 0.0
    clock = time.thread_time
    wall = time.perf_counter()
    deadline = wall + 120
    while not torrent.completed.is_set():
        if time.perf_counter() > deadline:
            raise RuntimeError("receive path stalled")
        responder.answer()
        while responder.out:
            stream.append(responder.out.popleft())
            blocks += 1
        if not stream:
            await asyncio.sleep(0)  # let the hash results come back
            continue
        # Hand the bytes over as a socket would: up to `chunk` bytes per buffer_updated.
        budget = 4
        # Let the hash thread keep up, as it does between socket reads in a real transfer (the
        # piece buffers then come back to the pool instead of being allocated afresh).
        while (total_blocks - torrent.picker.remaining_blocks) // blocks_per_piece - torrent.have.count > 2:
            await asyncio.sleep(0.0005)  # at most two received pieces waiting for the hash thread
        while stream and budget:
            budget -= 1
            target = conn.get_buffer(chunk)
            room = min(len(target), chunk)
            filled = 0
            while stream and filled < room:
                head = stream[0]
                take = min(len(head), room - filled)
                target[filled : filled + take] = head[:take]
                filled += take
                if take == len(head):
                    stream.popleft()
                else:
                    stream[0] = head[take:]
            started = clock()
            conn.buffer_updated(filled)
            cpu += clock() - started
            responder.answer()
            while responder.out:
                stream.append(responder.out.popleft())
                blocks += 1
        await asyncio.sleep(0)
    wall = time.perf_counter() - wall
    await torrent.stop()
    return {"blocks": blocks, "main_cpu_s": cpu, "wall_s": wall, "us_per_block": cpu / blocks * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk-kib", type=int, default=64, help="bytes per buffer_updated, as a socket read")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "receive_path.json")
    args = parser.parse_args()
    size = args.size_mib << 20
    seed = hashlib.sha256(b"receive-path").digest()
    data = b"".join(i.to_bytes(8, "big") + seed * 2047 + seed[:24] for i in range(size // 65536))
    assert len(data) == size
    hashes = b"".join(hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, size, PIECE))
    meta = encode_torrent(bencode.encode({b"name": b"payload.bin", b"piece length": PIECE, b"length": size, b"pieces": hashes}))
    rows = []
    for number in range(args.rounds):
        row = asyncio.run(one_round(meta, data, args.chunk_kib << 10))
        rows.append(row)
        print(f"round {number + 1}: {row['us_per_block']:.2f} us/block main thread, {size / row['wall_s'] / 1e6:.0f} MB/s wall", file=sys.stderr)
    median = statistics.median(row["us_per_block"] for row in rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"size_mib": args.size_mib, "chunk_kib": args.chunk_kib, "rounds": rows, "median_us_per_block": median}, indent=2))
    print(f"receive path: {median:.2f} us per 16 KiB block on the main thread (median of {args.rounds}; {median * 65536 / 1e6:.2f} s per GiB)")


if __name__ == "__main__":
    main()
