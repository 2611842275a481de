"""``p2pdist server`` as a real process (config file, TLS, SIGTERM) and ``publish``/``retire``."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from p2pdist.config import ConfigError
from p2pdist.config import toml_value
from p2pdist.tracker.settings import load_server_settings
from tests.support.processes import in_process, run_cli, start_process, stop
from tests.support.ports import free_port
from tests.support.siteserver import PUBLIC_HEX, TOKEN, info_hash_of, signed_torrent
from tests.support.tls import self_signed

SITE_TOML = """
data_dir = {data}
admin_token_file = {token}
public_keys = ["{key}"]
default_site = "Elsewhere"

[listen]
host = "127.0.0.1"
port = {port}
{tls}

[tracker]
interval = 120
min_interval = 60
peer_expiry = 180

[[sites]]
name = "HQ"
subnets = ["127.0.0.0/16"]
seeds = ["127.0.0.200:7000"]

  [[sites.locations]]
  name = "floor-a"
  subnets = ["127.0.1.0/24"]
"""


def write_config(tmp_path: Path, port: int, tls: str = "") -> Path:
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    config = tmp_path / "site.toml"
    config.write_text(SITE_TOML.format(data=toml_value(tmp_path / "data"), token=toml_value(token), key=PUBLIC_HEX, port=port, tls=tls))
    return config


async def test_server_process_publish_retire_and_graceful_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    process = await start_process("-m", "p2pdist.tracker", "--config", str(config))
    url = f"http://127.0.0.1:{port}"
    token_file = str(tmp_path / "admin.token")
    try:
        torrent_path = tmp_path / "office.torrent"
        torrent_path.write_bytes(signed_torrent("PS100012", 7, announce=f"{url}/announce"))
        code, out, err = await run_cli("publish", str(torrent_path), "--server", url, "--token-file", token_file)
        assert code == 0 and "published: PS100012 v7" in out, err
        code, out, err = await in_process(capsys, "publish", str(torrent_path), "--server", url, token="nope")
        assert code == 5 and "server refused (403)" in err
        code, out, err = await in_process(capsys, "publish", str(torrent_path), "--server", url)
        assert code == 2 and "no admin token" in err
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/api/packages") as response:
                assert [p["version"] for p in (await response.json())["packages"]] == [7]
        code, out, err = await run_cli("retire", "PS100012", "--version", "7", "--server", url, "--token-file", token_file)
        assert code == 0 and "retired: PS100012 v7" in out, err
        code, out, err = await in_process(capsys, "retire", "PS100012", "--server", url, token=TOKEN)
        assert code == 5 and "404" in err
        code, _, err = await in_process(capsys, "retire", "junk", "--server", url, token=TOKEN)
        assert code == 2 and "not a PackageID" in err
    finally:
        assert await stop(process) == 0
    code, _, err = await in_process(capsys, "publish", str(torrent_path), "--server", url, token=TOKEN)
    assert code == 5 and "cannot reach" in err


async def test_tls_server_and_cli(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    config = write_config(tmp_path, port, f'tls_cert = "{cert}"\ntls_key = "{key}"')
    process = await start_process("-m", "p2pdist", "server", "--config", str(config))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        torrent = signed_torrent("PS1000AB", 1, announce=f"https://127.0.0.1:{port}/announce")
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(f"https://127.0.0.1:{port}/api/packages", data=torrent, headers=headers, ssl=context) as r:
                assert r.status == 201
            async with session.get(f"https://127.0.0.1:{port}/packages/PS1000AB.torrent", ssl=context) as r:
                assert await r.read() == torrent
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"https://127.0.0.1:{port}/")  # not trusted without the CA
        assert info_hash_of(torrent)
    finally:
        assert await stop(process) == 0


async def test_config_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[tracker]\nintervall = 5\n")
    with pytest.raises(ConfigError, match="intervall"):
        load_server_settings(bad)
    code, _, err = await run_cli("server", "--config", str(bad))
    assert code == 2 and "intervall" in err and "Traceback" not in err
    bad.write_text('[listen]\ntls_cert = "/nonexistent.pem"\n')
    code, _, err = await in_process(capsys, "server", "--config", str(bad))
    assert code == 2 and "tls_key must be set together" in err
    bad.write_text('public_keys = ["abcd"]\n[listen]\nport = 0\n')
    code, _, err = await in_process(capsys, "server", "--config", str(bad))
    assert code == 2 and "public_keys[0]" in err
