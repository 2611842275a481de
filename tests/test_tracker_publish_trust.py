"""Publishing refuses signed torrents that do not point back to this site server.

``p2pdist server`` runs as a real process; torrents signed with the trusted key go to it through
``p2pdist publish`` (a real process too) and the HTTP API. Only a private torrent whose every
tracker URL is the server's own announce URL is published; each refusal is a 422 with one line
saying why, and the CLI prints that line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from p2pdist import bencode
from p2pdist.metainfo import encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import sign_torrent
from tests.support.processes import server_process
from tests.support.siteserver import KEY, TOKEN, info_dict, make_settings, publish, running

OWN = "http://127.0.0.1/announce"  # the process's public_url is http://127.0.0.1


def torrent(version: int, trackers: tuple[tuple[str, ...], ...], private: bool = True) -> bytes:
    raw_info, _ = info_dict("office.msi", "PS100012", version)
    if not private:
        info = bencode.decode(raw_info)
        del info[b"private"]
        raw_info = bencode.encode(info)
    return sign_torrent(parse_metainfo(encode_torrent(raw_info, trackers=trackers)), KEY)


def post(port: int, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/packages", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["error"]


REFUSED = [
    ("not private", torrent(2, ((OWN,),), private=False), "torrent is not private"),
    ("no tracker", torrent(3, ()), f"torrent names no tracker; it must announce to {OWN} only"),
    ("foreign", torrent(4, (("http://tracker.example/announce",),)), "announces to http://tracker.example/announce, which is not this site server"),
    ("foreign tier", torrent(5, ((OWN,), ("udp://tracker.example:6969/announce",))), "announces to udp://tracker.example:6969"),
    ("foreign in tier", torrent(6, ((OWN, "http://10.9.9.9/announce"),)), "announces to http://10.9.9.9/announce"),
    ("other port", torrent(7, (("http://127.0.0.1:1/announce",),)), "not this site server"),
    ("other path", torrent(8, (("http://127.0.0.1/scrape",),)), "not this site server"),
    ("user name", torrent(9, (("http://eve@127.0.0.1/announce",),)), "not this site server"),
    ("query", torrent(10, ((OWN + "?passkey=x",),)), "not this site server"),
]


def test_publish_refuses_what_does_not_point_back_here(tmp_path: Path) -> None:
    with server_process(tmp_path) as (_, port):
        for name, body, reason in REFUSED:
            status, error = post(port, body)
            assert (status, "\n" in error) == (422, False), (name, status, error)
            assert reason in error, (name, error)
        # the CLI shows the server's reason on one line
        path = tmp_path / "foreign.torrent"
        path.write_bytes(REFUSED[2][1])
        token = tmp_path / "token"
        token.write_text(TOKEN)
        cli = subprocess.run([sys.executable, "-m", "p2pdist", "publish", str(path), "--server", f"http://127.0.0.1:{port}",
                              "--token-file", str(token)], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert cli.returncode == 5 and cli.stderr.count("\n") == 1, cli.stderr
        assert "server refused (422): torrent announces to http://tracker.example/announce" in cli.stderr
        # the same host, spelt with its default port and another case, is this server
        assert post(port, torrent(11, (("HTTP://127.0.0.1:80/announce",), (OWN,))))[0] == 201
        packages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/packages", timeout=10).read())
        assert [p["version"] for p in packages["packages"]] == [11]


async def test_plain_http_tier_beside_https_is_refused(tmp_path: Path) -> None:
    """Behind a TLS-terminating proxy: the public URL is https, a plain-http tier is a downgrade."""
    own = "https://sms-hq.example:6969/announce"
    async with running(make_settings(tmp_path, public_url="https://sms-hq.example:6969")) as server:
        downgrade = await publish(server, torrent(1, ((own,), ("http://sms-hq.example:6969/announce",))))
        assert downgrade.status == 422
        assert (await downgrade.json())["error"] == (
            f"torrent has a plain-http tracker http://sms-hq.example:6969/announce; this site server is {own}"
        )
        assert (await publish(server, torrent(2, ((own,),)))).status == 201


@pytest.mark.parametrize("url", ["ftp://sms-hq", "https://", "https://sms-hq:99999", "https://sms-hq/?x=1", "https://u@sms-hq"])
def test_public_url_must_be_a_plain_server_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="public_url"):
        make_settings(tmp_path, public_url=url)
