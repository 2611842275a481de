"""``p2pdist server init DIR``: the files it writes run a server that accepts a publish."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from p2pdist.metainfo.signing import load_private_key, raw_public_key
from p2pdist.tracker.settings import default_data_dir, load_server_settings
from tests.support.processes import run_cli, start_process, stop
from tests.support.ports import free_port
from tests.support.siteserver import signed_torrent


async def test_init_writes_a_server_that_runs_and_accepts_a_publish(tmp_path: Path) -> None:
    folder = tmp_path / 'site "one" \\ two'  # a quote and a backslash must survive the TOML
    port = free_port()
    code, out, err = await run_cli("server", "init", str(folder), "--port", str(port))
    assert code == 0, err
    assert "next:" in out and "p2pdist server --config" in out
    config = folder / "site.toml"
    settings = load_server_settings(config)
    assert settings.data_dir == folder / "data" and settings.listen.port == port
    assert settings.log_file == folder / "logs" / "server.log"
    key = load_private_key(folder / "repository.key")
    assert settings.trusted_keys() == (raw_public_key(key.public_key()),)
    token = settings.token()
    assert len(token) >= 40
    if sys.platform != "win32":
        for secret in ("admin.token", "repository.key"):
            assert stat.S_IMODE(os.stat(folder / secret).st_mode) == 0o600, secret

    process = await start_process("-m", "p2pdist", "server", "--config", str(config), "--host", "127.0.0.1", "-v")
    url = f"http://127.0.0.1:{port}"
    try:
        torrent = tmp_path / "office.torrent"
        torrent.write_bytes(signed_torrent("PS100012", 3, announce=f"{url}/announce", key=key))
        code, out, err = await run_cli("publish", str(torrent), "--server", url, "--token-file", str(folder / "admin.token"))
        assert code == 0 and "published: PS100012 v3" in out, err
    finally:
        assert await stop(process) == 0
    assert "PS100012" in (folder / "logs" / "server.log").read_text()
    assert (folder / "data" / "repository.sqlite3").exists()


async def test_init_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    assert (await run_cli("server", "init", str(folder)))[0] == 0
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    code, _, err = await run_cli("server", "init", str(folder))
    assert code != 0 and "never overwrites" in err and "Traceback" not in err
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


async def test_init_of_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = await run_cli("server", "init", str(blocker / "site"))
    assert code != 0 and "cannot create" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX default")
def test_default_data_folder_is_the_machines_not_a_users() -> None:
    assert default_data_dir() == Path("/var/lib/p2pdist/server")
