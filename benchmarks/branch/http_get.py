"""One PC of the HTTP-only baseline: fetch every file of the package from the DP, as SMS/BITS does.

``http_get.py BASE_URL OUT_DIR FILE...`` inside a client namespace; waits for a line on stdin
(the common start), then prints ``{"done": unix_time, "bytes": n}``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path


def main() -> None:
    base, out = sys.argv[1], Path(sys.argv[2])
    names = sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"ready": time.time()}), flush=True)
    sys.stdin.readline()
    total = 0
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(base + name, timeout=600) as reply, open(out / name, "wb") as handle:
            shutil.copyfileobj(reply, handle, 1 << 20)
            total += handle.tell()
    print(json.dumps({"done": time.time(), "bytes": total}), flush=True)


if __name__ == "__main__":
    main()
