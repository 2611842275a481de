"""The control client's own HTTP/1.1 answer parsing (it does not import aiohttp)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2pdist.control.client import _parse_answer

from p2pdist.control.schema import AgentUnavailable


def test_content_length_answer() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    assert _parse_answer(raw, "x") == (200, b"{}")


def test_chunked_answer() -> None:
    raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"er\r\n3;x=1\r\nr\":\r\n3\r\n1}\n\r\n0\r\n\r\n"
    assert _parse_answer(raw, "x") == (404, b'{"err":1}\n')


@pytest.mark.parametrize("raw", [b"", b"garbage", b"HTTP/1.1 abc\r\n\r\n", b"SMTP 200\r\n\r\n"])
def test_not_an_http_answer(raw: bytes) -> None:
    with pytest.raises(AgentUnavailable, match="no HTTP answer"):
        _parse_answer(raw, "x")


def test_the_wrapper_does_not_import_aiohttp() -> None:
    code = "import sys, p2pdist.wrapper.__main__; print(any(m.startswith('aiohttp') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stdout + result.stderr
