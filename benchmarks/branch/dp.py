"""The distribution point: a share served over HTTP with range support (the BEP 19 web seed).

Runs inside the HQ namespace: ``dp.py ROOT --host H --port P --stats FILE``. It plays the part
of demo.py's aiohttp static files (GET, single byte ranges), written out here for one thing the
benchmark needs: the body bytes actually sent to each client address. A client that drops a
response half-way (libtorrent does when a peer delivered the piece first) is charged what was
written, not the range it asked for. The counts go to ``--stats`` as JSON at SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from collections import Counter
from pathlib import Path

from aiohttp import web

CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
ROOT: web.AppKey[Path] = web.AppKey("root", Path)
SERVED: web.AppKey[Counter[str]] = web.AppKey("served", Counter)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single-range header; None = whole file; ValueError = 416."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise ValueError(header)
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(size - 1, int(last)) if last else size - 1
    if start > end or start >= size:
        raise ValueError(header)
    return start, end


async def handle(request: web.Request) -> web.StreamResponse:
    root = request.app[ROOT]
    path = (root / request.match_info["path"]).resolve()
    if root not in path.parents or not path.is_file():
        raise web.HTTPNotFound()
    size = path.stat().st_size
    try:
        wanted = byte_range(request.headers.get("Range"), size)
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"}) from None
    start, end = wanted or (0, size - 1)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.headers["Accept-Ranges"] = "bytes"
    response.content_type = "application/octet-stream"
    if wanted:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response.content_length = end - start + 1
    await response.prepare(request)
    served = request.app[SERVED]
    who = request.remote or "?"
    with open(path, "rb") as handle_:
        handle_.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = handle_.read(min(CHUNK, left))
            if not chunk:
                break
            await response.write(chunk)
            served[who] += len(chunk)
            left -= len(chunk)
    await response.write_eof()
    return response


async def serve(root: Path, host: str, port: int, stats: Path) -> None:
    app = web.Application()
    app[ROOT] = root.resolve()
    app[SERVED] = Counter()
    app.router.add_get("/{path:.+}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"listening": f"http://{host}:{port}/"}), flush=True)
    try:
        await stop.wait()
    finally:
        stats.write_text(json.dumps(dict(app[SERVED])))
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.root, args.host, args.port, args.stats))


if __name__ == "__main__":
    main()
