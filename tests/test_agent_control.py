"""The control API's guards (token, socket permission, Host, Origin), leases, verify, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from p2pdist.agent import control as control_module
from p2pdist.agent.config import ControlSettings
from p2pdist.agent.control import host_allowed
from p2pdist.control.client import ControlClient
from p2pdist.control.schema import AgentUnavailable, ControlError, PackageStatus
from p2pdist.errors import LocalError
from p2pdist.agent.status_cli import progress_bar, render_table
from tests.support.agents import (
    agent_settings,
    make_package,
    publish,
    read_package,
    running_agent,
    seeder,
    server_state,
    site_server,
    socket_dir,
    wait_state,
)

DAY = 86400.0
NOBODY = 65534


def token_settings(tmp_path: Path, n: int, repository: str, sockets: Path):  # type: ignore[no-untyped-def]
    settings = agent_settings(tmp_path, n, repository, sockets)
    return replace(settings, control=ControlSettings(address="http://127.0.0.1:0", token_file=tmp_path / f"token{n}"))


async def raw(method: str, url: str, headers: dict[str, str], body: object = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, headers=headers, json=body) as reply:
            text = await reply.text()
            return reply.status, (json.loads(text) if text.strip().startswith("{") else {})


@pytest.mark.parametrize(
    ("header", "unix", "allowed"),
    [
        ("localhost", False, True),
        ("localhost:7881", False, True),
        ("127.0.0.1:80", False, True),
        ("[::1]:7881", False, True),
        ("LOCALHOST", False, True),
        ("p2pdist-agent", True, True),
        ("p2pdist-agent", False, False),
        ("evil.example", False, False),
        ("localhost.evil.example", False, False),
        ("127.0.0.1.nip.io", False, False),
        ("127.0.0.1:80:80", False, False),
        ("[::1]x", False, False),
        ("127.0.0.2:7881", False, True),  # any loopback address the agent may listen on
        ("127.255.0.9", False, True),
        ("[0:0:0:0:0:0:0:1]:7881", False, True),
        ("10.0.0.1:7881", False, False),
        ("0.0.0.0:7881", False, False),
        ("::1", False, False),  # IPv6 literals need their brackets in a Host header
        ("", False, False),
        (None, True, False),
    ],
)
def test_host_header_rule(header: str | None, unix: bool, allowed: bool) -> None:
    assert host_allowed(header, unix=unix) is allowed


async def test_a_control_address_on_another_loopback_address_answers_its_clients(tmp_path: Path) -> None:
    """Accepted at start, then it refused the wrapper's own Host header and SMS retried for ever."""
    async with site_server(tmp_path / "server") as server:
        with socket_dir() as sockets:
            settings = replace(
                agent_settings(tmp_path, 7, server.url, sockets),
                control=ControlSettings(address="http://127.0.0.2:0", token_file=tmp_path / "token7"),
            )
            async with running_agent(settings) as (_, client):
                assert client.address.startswith("http://127.0.0.2:")
                assert await client.list() == []


async def test_token_mode_refuses_and_changes_nothing(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100012", 1, 200_000, announce=server.url + "/announce")
        await publish(server, package.torrent)
        with socket_dir() as sockets:
            settings = token_settings(tmp_path, 1, server.url, sockets)
            async with running_agent(settings) as (agent, client):
                token_file = settings.token_file
                assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
                token = token_file.read_text().strip()
                assert len(token) == 64 and int(token, 16) >= 0
                base = client.address
                good = {"Authorization": f"Bearer {token}"}
                ensure = base + "/v1/packages/PS100012/ensure"
                refused = [
                    ({}, 401),
                    ({"Authorization": "Bearer " + "0" * 64}, 401),
                    ({"Authorization": f"Basic {token}"}, 401),
                    ({**good, "Host": "evil.example"}, 421),
                    ({**good, "Host": "localhost.evil.example:80"}, 421),
                    ({**good, "Origin": "http://localhost"}, 403),
                    ({**good, "Origin": "null"}, 403),
                ]
                for headers, expected in refused:
                    status, body = await raw("POST", ensure, headers, {})
                    assert status == expected, (headers, status, body)
                    assert body.get("error")
                for path in ("/metrics", "/v1/packages", "/v1/nothing-here"):
                    assert (await raw("GET", base + path, {}))[0] == 401
                assert agent.packages == {} and agent.fetches == {}
                assert list(settings.cache_dir.iterdir()) == []
                # The same request with the token and a local Host works.
                status, body = await raw("POST", ensure, {**good, "Host": "127.0.0.1:1"}, {})
                assert status == 200 and body["info_hash"] == package.meta.info_hash_hex
                assert (await client.status("PS100012")).info_hash == package.meta.info_hash_hex
                # Refused deletes leave the package alone.
                for headers in ({}, {**good, "Host": "evil"}, {**good, "Origin": "https://x"}):
                    assert (await raw("DELETE", base + "/v1/packages/PS100012", headers))[0] in (401, 403, 421)
                assert list(agent.packages) == [package.meta.info_hash_hex]
                # A request without any Host header (HTTP/1.0 by hand) is refused too.
                host, port = base.removeprefix("http://").split(":")
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(f"GET /v1/packages HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
                assert (await asyncio.wait_for(reader.read(100), 5)).split(b" ")[1] == b"421"
                writer.close()
                # Bad input: a clear 400, never a crash.
                assert (await raw("POST", base + "/v1/packages/NOT-AN-ID/ensure", good, {}))[0] == 400
                assert (await raw("POST", ensure, good, {"version": "3"}))[0] == 400
                assert (await raw("POST", base + "/v1/packages/PS100012/leases", good, {"pid": "x"}))[0] == 400
                assert (await raw("DELETE", base + "/v1/leases/nope", good))[0] == 404
            assert not token_file.exists()  # removed at shutdown
        # The client reports a stopped agent clearly.
        with pytest.raises(AgentUnavailable, match="no control token"):
            await ControlClient(base, token_file=token_file).list()
        token_file.write_text("x\n")
        with pytest.raises(AgentUnavailable, match="no agent at"):
            await ControlClient(base, token_file=token_file).list()


CONNECT_AS_NOBODY = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
s.sendall(b"GET /v1/packages HTTP/1.1\r\nHost: p2pdist-agent\r\nConnection: close\r\n\r\n")
print(s.recv(12).decode())
"""


def connect_as_nobody(path: Path) -> str:
    result = subprocess.run(
        ["/usr/bin/python3", "-c", CONNECT_AS_NOBODY, str(path)], user=NOBODY, group=NOBODY, capture_output=True, text=True, timeout=20
    )
    return result.stdout.strip() or result.stderr.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_unix_socket_is_owner_only(tmp_path: Path) -> None:
    with socket_dir() as sockets:
        settings = agent_settings(tmp_path, 2, "http://127.0.0.1:9", sockets)
        async with running_agent(settings) as (agent, client):
            path = settings.control.socket_path
            mode = os.stat(path).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            assert await client.list() == []
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, connect_as_nobody, path) == "EACCES"
            os.chmod(path, 0o666)  # the control: with the permission opened, the same client gets in
            assert await loop.run_in_executor(None, connect_as_nobody, path) == "HTTP/1.1 200"
            os.chmod(path, 0o600)
            # Host and Origin rules hold on the socket too.
            connector = aiohttp.UnixConnector(path=str(path))
            async with aiohttp.ClientSession(connector=connector) as http:
                for headers, expected in (({"Host": "evil"}, 421), ({"Origin": "http://localhost"}, 403)):
                    async with http.get("http://p2pdist-agent/v1/packages", headers=headers) as reply:
                        assert reply.status == expected
            with pytest.raises(ControlError) as error:
                await client.status("PS100012")
            assert error.value.status == 404
        assert not path.exists()
    with pytest.raises(AgentUnavailable, match="no agent socket"):
        await ControlClient(f"unix:{path}").list()
    with pytest.raises(AgentUnavailable):
        ControlClient("ftp://127.0.0.1")


async def test_leases_protect_packages_and_dead_processes_release_them(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        v1 = make_package("PS100012", 1, 300_000, announce=server.url + "/announce", seed=11)
        v2 = make_package("PS100012", 2, 300_000, announce=server.url + "/announce", seed=12)
        lonely = make_package("PS1000AA", 1, 300_000, announce=server.url + "/announce", seed=13)
        for package in (v1, v2, lonely):
            await publish(server, package.torrent)
        with socket_dir() as sockets:
            async with seeder(tmp_path / "seed", [v1, v2]):
                settings = agent_settings(tmp_path, 3, server.url, sockets)
                async with running_agent(settings) as (agent, client):
                    await client.ensure("PS100012", 1)
                    done = await wait_state(client, "PS100012", "complete")
                    assert done.version == 1
                    # Nobody seeds PS1000AA: it stays incomplete, so it cannot be leased.
                    await client.ensure("PS1000AA")
                    with pytest.raises(ControlError) as not_ready:
                        await client.acquire("PS1000AA", os.getpid())
                    assert not_ready.value.status == 409
                    with pytest.raises(ControlError) as no_process:
                        await client.acquire("PS100012", 2**22 + 12345)
                    assert no_process.value.status == 400
                    child = subprocess.Popen(["sleep", "30"])
                    try:
                        lease = await client.acquire("PS100012", child.pid)
                        assert isinstance(lease, str) and len(lease) == 32
                        with pytest.raises(ControlError) as busy:
                            await client.remove("PS100012")
                        assert busy.value.status == 409
                        # A newer version arrives and completes; the leased older one stays.
                        await client.ensure("PS100012")
                        latest = await wait_state(client, "PS100012", "complete")
                        assert latest.version == 2
                        far = time.time() + 30 * DAY
                        removed = {r.key for r in await agent.cleanup(far)}
                        assert v1.meta.info_hash_hex not in removed
                        assert removed == {v2.meta.info_hash_hex, lonely.meta.info_hash_hex}
                        assert (settings.cache_dir / v1.meta.info_hash_hex / "PS100012" / "setup.exe").exists()
                        assert not (settings.cache_dir / v2.meta.info_hash_hex).exists()
                        # Inside the seeding window nothing goes, leased or not.
                        assert await agent.cleanup(time.time()) == []
                    finally:
                        child.send_signal(signal.SIGKILL)
                        child.wait()
                    # The process is gone: its lease is void and v1 can go.
                    removed = {r.key for r in await agent.cleanup(time.time() + 30 * DAY)}
                    assert v1.meta.info_hash_hex in removed
                    assert not (settings.cache_dir / v1.meta.info_hash_hex).exists()
                    assert not (settings.state_dir / "torrents" / f"{v1.meta.info_hash_hex}.torrent").exists()
                    with pytest.raises(ControlError):
                        await client.release(lease)
                    with pytest.raises(ControlError) as gone:
                        await client.remove("PS1000AA")
                    assert gone.value.status == 404
                    await client.ensure("PS1000AA")
                    assert [s.package_id for s in await client.list()] == ["PS1000AA"]
                    await client.remove("PS1000AA")
                    assert await client.list() == []
                    assert not (settings.cache_dir / lonely.meta.info_hash_hex).exists()


async def test_verify_repairs_and_restart_seeds_again_without_downloading(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100012", 1, 600_000, announce=server.url + "/announce", seed=21)
        await publish(server, package.torrent)
        ih = package.meta.info_hash
        with socket_dir() as sockets:
            async with seeder(tmp_path / "seed", [package]) as (seed,):
                settings = agent_settings(tmp_path, 4, server.url, sockets)
                async with running_agent(settings) as (agent, client):
                    await client.ensure("PS100012")
                    done = await wait_state(client, "PS100012", "complete")
                    lease = await client.acquire("PS100012", os.getpid())
                    ok = await client.verify("PS100012")
                    assert ok.state == "complete" and ok.path == done.path
                    # Damage one byte: verify finds it, the package is not complete until repaired.
                    payload = Path(done.path) / "data" / "payload.bin"
                    with open(payload, "r+b") as handle:
                        handle.seek(1000)
                        handle.write(bytes([handle.read(1)[0] ^ 0xFF]))
                    damaged = await client.verify("PS100012")
                    assert damaged.state != "complete" and damaged.path is None
                    repaired = await wait_state(client, "PS100012", "complete")
                    assert read_package(Path(repaired.path), package) == package.data
                    await client.release(lease)
                    kept = await client.acquire("PS100012", os.getpid())  # outlives the agent
                    counts = await server_state(server).store.counts(ih, server_state(server).store.clock())
                    assert counts["HQ"].seeders == 2
                before = seed.upload_meter.total
                counts = await server_state(server).store.counts(ih, server_state(server).store.clock())
                assert counts["HQ"].seeders == 1  # graceful stop told the tracker
                # Restart on the same folders: complete at once, nothing downloaded again.
                async with running_agent(settings) as (agent, client):
                    again = await wait_state(client, "PS100012", "complete", timeout=10)
                    assert again.bytes_from_peers == repaired.bytes_from_peers
                    assert again.last_advertised == repaired.last_advertised
                    assert seed.upload_meter.total == before
                    assert agent.in_use() == {package.meta.info_hash_hex}
                    assert (await client.status("PS100012")).in_use
                    await client.release(kept)
                    assert agent.in_use() == set()
                    assert not (await client.status("PS100012")).in_use
                    statuses = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "p2pdist", "status", "--agent", client.address, "--json",
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    out, err = await asyncio.wait_for(statuses.communicate(), 30)
                    assert statuses.returncode == 0, err
                    listed = json.loads(out)["packages"]
                    assert [(p["package_id"], p["state"], p["progress"]) for p in listed] == [("PS100012", "complete", 1.0)]
                    table = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "p2pdist", "status", "--agent", client.address,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    out, _ = await asyncio.wait_for(table.communicate(), 30)
                    assert "PS100012" in out.decode() and "[############] 100.0%" in out.decode()
    missing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pdist", "status", "--agent", f"unix:{tmp_path}/none.sock",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(missing.communicate(), 30)
    assert missing.returncode != 0 and b"no agent socket" in err and b"Traceback" not in err


def test_status_table_and_bar() -> None:
    assert progress_bar(0.5) == "[######------]  50.0%"
    assert progress_bar(2.0).startswith("[############]")
    rows = [
        PackageStatus("PS100012", 3, "ab" * 20, "PS100012", "downloading", 0.25, 10 << 20, 1 << 20, 2048, 0, 4, 5000, 10,
                      seed_until="2030-01-04T00:00:00Z"),
        PackageStatus("PS100013", None, None, "PS100013", "error", error="torrent refused: unsigned"),
    ]  # fmt: skip
    text = render_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["PACKAGE", "VER", "STATE"]
    assert "[###---------]  25.0%" in lines[1] and "10.0 MiB" in lines[1] and "2030-01-04 00:00:00" in lines[1]
    assert lines[2].split()[:3] == ["PS100013", "-", "error"]
    assert lines[3] == "PS100013: error: torrent refused: unsigned"
    signed = render_table([rows[1].replace(error_kind="signature")]).splitlines()
    assert signed[1].split()[:4] == ["PS100013", "-", "error", "signature"]
    assert signed[2] == "PS100013: signature: torrent refused: unsigned"
    assert render_table([]) == "no packages\n"
    assert PackageStatus.from_json({**rows[0].to_json(), "new_field": 1}) == rows[0]
    with pytest.raises(ControlError):
        PackageStatus.from_json({"state": "complete"})


async def test_verify_hashes_the_file_now_at_the_path_and_answers_in_bounded_time(tmp_path: Path) -> None:
    """A cached file replaced by another (a new inode) is caught, though the agent held the old
    one open; with ``verify_answer = 0`` every check is answered "checking" first."""
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100016", 1, 600_000, announce=server.url + "/announce", seed=22)
        await publish(server, package.torrent)
        with socket_dir() as sockets:
            async with seeder(tmp_path / "seed", [package]):
                settings = agent_settings(tmp_path, 6, server.url, sockets, verify_answer=0.0)
                async with running_agent(settings) as (agent, client):
                    await client.ensure("PS100016")
                    done = await wait_state(client, "PS100016", "complete")
                    # Just downloaded, every piece hashed on arrival: no second check needed.
                    assert (await client.verify("PS100016")).state == "complete"
                    # A touched file is checked again (its identity moved); that check leaves
                    # the agent holding descriptors of the files it read.
                    payload = Path(done.path) / "data" / "payload.bin"
                    os.utime(payload)
                    async with asyncio.timeout(60):
                        while (answer := await client.verify("PS100016")).state == "checking":
                            await asyncio.sleep(0.05)
                    assert answer.state == "complete"
                    forged = bytearray(payload.read_bytes())
                    forged[5000] ^= 0xFF
                    replacement = payload.with_name("replacement")
                    replacement.write_bytes(bytes(forged))
                    os.replace(replacement, payload)  # a new file at the path: what would run
                    answer = await client.verify("PS100016")
                    assert answer.state == "checking" and answer.path is None  # answered at once
                    async with asyncio.timeout(60):
                        while (answer := await client.verify("PS100016")).state == "checking":
                            await asyncio.sleep(0.05)
                    # The check found the forged byte and the agent fetched that piece again
                    # (the old check hashed the deleted file through its descriptor and passed).
                    repaired = await wait_state(client, "PS100016", "complete")
                    assert read_package(Path(repaired.path), package) == package.data
                    assert (await client.verify("PS100016")).state == "complete"


async def test_status_watch_is_a_live_view_that_ctrl_c_ends(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100012", 1, 200_000, announce=server.url + "/announce", seed=3)
        await publish(server, package.torrent)
        with socket_dir() as sockets:
            async with seeder(tmp_path / "seed", [package]):
                async with running_agent(agent_settings(tmp_path, 5, server.url, sockets)) as (_, client):
                    await client.ensure("PS100012")
                    await wait_state(client, "PS100012", "complete")
                    watch = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "p2pdist", "status", "--watch", "--interval", "0.2", "--agent", client.address,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    assert watch.stdout is not None
                    seen = b""
                    async with asyncio.timeout(30):
                        while seen.count(b"p2pdist status ") < 3:
                            seen += await watch.stdout.read(4096) or b""
                        watch.send_signal(signal.SIGINT)
                        rest, err = await watch.communicate()
                    assert watch.returncode == 0 and b"Traceback" not in err, err
                    frames = (seen + rest).decode().split("p2pdist status ")[1:]
                    assert len(frames) >= 3 and all("PS100012" in frame and "complete" in frame for frame in frames[:3])
                    counted = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "p2pdist", "status", "--watch", "--interval", "0.2", "--count", "2",
                        "--agent", f"unix:{tmp_path}/none.sock", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    async with asyncio.timeout(30):
                        out, err = await counted.communicate()
                    assert counted.returncode == 0, err
                    assert out.decode().count("agent unavailable: no agent socket") == 2  # the view goes on without it
                    bad = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "p2pdist", "status", "--watch", "--interval", "0.01", "--agent", client.address,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    async with asyncio.timeout(30):
                        _, err = await bad.communicate()
                    assert bad.returncode != 0 and b"--interval" in err


async def test_an_agent_that_cannot_listen_writes_no_control_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """install.cmd and the wrapper take the token file's arrival for "the API answers": an agent
    whose control port is taken must not write one, even for a moment, and a crashed agent's
    stale one goes."""
    async with site_server(tmp_path / "server") as server:
        with socket_dir() as sockets, socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            port = squatter.getsockname()[1]
            token_file = tmp_path / "token9"
            token_file.write_text("0" * 64 + "\n")  # left by an agent that crashed
            settings = replace(
                agent_settings(tmp_path, 9, server.url, sockets),
                control=ControlSettings(address=f"http://127.0.0.1:{port}", token_file=token_file),
            )
            seen: list[bool] = []
            real_write = control_module.write_token

            def watched(path: Path, token: str) -> None:  # records any write, then does it
                seen.append(True)
                real_write(path, token)

            monkeypatch.setattr(control_module, "write_token", watched)
            with pytest.raises(LocalError, match=f"control API: cannot listen on 127.0.0.1:{port}"):
                async with running_agent(settings):
                    pass
            assert seen == [] and not token_file.exists()
            # With the port free the token is written once the API listens, and it works.
            squatter.close()
            seen.clear()
            async with running_agent(settings) as (_, client):
                assert seen == [True] and token_file.exists() and await client.list() == []
            assert not token_file.exists()
