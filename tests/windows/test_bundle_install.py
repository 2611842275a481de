"""The Windows bundle on a fresh machine: install.cmd, the service, the wrapper, upgrade, uninstall.

It installs machine-wide (Program Files, %windir%, HKLM, the SCM), so it runs only in the
throw-away Wine prefix scripts/test-windows-bundle makes, on the zip scripts/windows-bundle built.
What Wine 8 cannot show (file ACLs, the firewall, failure actions) is skipped with the reason
printed; docs/windows.md lists it.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
import tomllib
import urllib.parse
import urllib.request
import winreg
import zipfile
from pathlib import Path

import pytest
from lane import WINE, Site, wait_for
from lane import run as lane_run

from tests.support.ports import free_port

from p2pdist.bencode import decode
from p2pdist.winsetup import plan, scm

BUNDLE = os.environ.get("P2PDIST_WIN_BUNDLE", "")
pytestmark = pytest.mark.skipif(
    not (BUNDLE and os.environ.get("P2PDIST_FRESH_PREFIX")),
    reason="installs machine-wide: runs only in the fresh prefix of scripts/test-windows-bundle",
)
PACKAGE = "PS1000B1"
HRESULT = 0x80070643  # ERROR_INSTALL_FAILURE as an HRESULT: 2147944003, all 32 bits
INSTALLER = b"@echo off\r\ncd > %1\r\necho %* >> %1\r\necho %PROCESSOR_ARCHITECTURE% >> %1\r\nexit /b 3010\r\n"
CALLER32 = os.environ.get("P2PDIST_WIN_CALLER32", "")  # a 32-bit stand-in for the SMS client


def run(*argv: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """A Windows program with pipes for its streams (a file handle from Wine's shell kills it)."""
    return lane_run(list(argv), text=True, timeout=timeout)


def say_skipped(what: str, reason: str) -> None:
    print(f"\nSKIPPED under Wine: {what}: {reason}", flush=True)


def logs(layout: plan.Layout) -> str:
    """The service host's and the agent's logs, for a failure message."""
    parts = []
    for name in ("service.log", "agent.log"):
        path = Path(layout.log_dir, name)
        parts.append(f"--- {name}\n" + (path.read_text(errors="replace")[-3000:] if path.exists() else "(none)"))
    return "\n".join(parts)


def agent_up(layout: plan.Layout, token: Path) -> bool:
    status = service_status()
    assert status is not None and status.state in (scm.START_PENDING, scm.RUNNING), (status, logs(layout))
    return token.is_file()


def service_status() -> scm.Status | None:
    with scm.Manager() as manager:
        return manager.status(plan.SERVICE)


def registry_install_dir() -> str | None:
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, plan.REGISTRY_KEY, 0, winreg.KEY_READ | 0x0100) as key:
            return str(winreg.QueryValueEx(key, "InstallDir")[0])
    except FileNotFoundError:
        return None


def seeders(site: Site, info_hash_hex: str) -> int:
    """Seeders of one torrent as the site server's scrape (BEP 48) counts them."""
    query = urllib.parse.quote_from_bytes(bytes.fromhex(info_hash_hex))
    with urllib.request.urlopen(f"{site.url}/scrape?info_hash={query}", timeout=30) as answer:
        files = decode(answer.read())[b"files"]
    return int(files[bytes.fromhex(info_hash_hex)][b"complete"]) if files else 0


def test_install_service_wrapper_upgrade_uninstall(site: Site, tmp_path: Path) -> None:
    layout = plan.Layout.for_machine(dict(os.environ))
    assert not Path(layout.install_dir).exists() and service_status() is None, "the prefix is not fresh"
    source = site.publish(PACKAGE, {"install.cmd": INSTALLER, "payload.bin": os.urandom(3 << 20)})
    assert source.is_dir()
    pkg = tmp_path / "sms-package"  # as SMS would hold the bundle in its cache
    with zipfile.ZipFile(BUNDLE) as bundle:
        bundle.extractall(pkg)
    peer_port, control_port = free_port(), free_port()
    agent = f"http://127.0.0.1:{control_port}"

    # -- install ---------------------------------------------------------------------------
    done = run("cmd", "/c", str(pkg / "install.cmd"), site.url, site.key_hex, "--port", str(peer_port), "--control-port", str(control_port),
               "--listen-address", "127.0.0.1")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + logs(layout)
    if "once more" in done.stdout:  # passed on the second start: say why the first one ended
        print(f"\nthe first service start ended at once:\n{done.stdout}{logs(layout)}", flush=True)
    installed = Path(layout.install_dir)
    for name in ("p2pdist-wrapper.exe", "p2pdist.exe", "p2pdist-service.exe", "uninstall.cmd", "python/python.exe"):
        assert (installed / name).is_file(), name
    assert Path(layout.windir_wrapper).is_file()
    assert registry_install_dir() == layout.install_dir
    config = tomllib.loads(Path(layout.config).read_text(encoding="utf-8"))
    assert config["repository"] == site.url and config["public_keys"] == [site.key_hex]
    assert config["engine"]["listen_port"] == peer_port
    with scm.Manager() as manager:
        service = manager.config(plan.SERVICE)
        assert service.start_type == scm.SERVICE_AUTO_START and service.account == "LocalSystem"
        assert service.binary == layout.service_binary
        try:
            reset, actions = manager.failure_actions(plan.SERVICE)
        except OSError as exc:
            assert WINE, exc
            say_skipped("restart on failure", f"Wine 8 stores no failure actions to read back ({exc})")
        else:
            assert actions == [(scm.SC_ACTION_RESTART, delay) for delay in plan.RESTART_DELAYS_MS]
    log = Path(layout.log_dir, "install.log").read_text(encoding="utf-8")
    assert f"icacls {layout.data_dir} /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F" in log
    assert f"netsh advfirewall firewall add rule name={plan.FIREWALL_RULE}" in log and f"localport={peer_port}" in log
    if WINE:
        say_skipped("cache/state ACL (SYSTEM + Administrators)", "Wine 8's icacls is a stub and it keeps no file ACLs")
        say_skipped("firewall rule", "Wine 8's netsh advfirewall accepts the rule and keeps nothing")

    # -- the service through the service manager -------------------------------------------------
    stopped = run("net", "stop", plan.SERVICE)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert wait_for(lambda: (s := service_status()) is not None and s.state == scm.STOPPED, "the service to stop")
    started = run("sc", "start", plan.SERVICE)
    assert started.returncode == 0, started.stdout + started.stderr + logs(layout)
    wait_for(lambda: (s := service_status()) is not None and s.state == scm.RUNNING, "the service to run")
    token = Path(layout.data_dir, "control.token")
    wait_for(lambda: agent_up(layout, token), "the agent's control token", timeout=90)

    # -- the wrapper as an SMS program line: retry first, then the command's own code ------------
    receipt = tmp_path / "receipt.txt"
    line = [layout.windir_wrapper, "--pkg", PACKAGE, "--agent", agent, "install.cmd", str(receipt), "/quiet"]
    first = run(*line, timeout=120)
    assert first.returncode == 1618, first.stdout + first.stderr
    codes = [first.returncode]
    deadline = time.monotonic() + 180
    while codes[-1] == 1618 and time.monotonic() < deadline:
        time.sleep(1.0)
        codes.append(run(*line, timeout=120).returncode)
    assert codes[-1] == 3010, codes
    ran_in, args, machine = receipt.read_text().splitlines()[:3]
    assert Path(ran_in.strip()).parts[-1] == PACKAGE and "p2pdist" in ran_in, ran_in  # the cached copy, not the DP
    assert args.split() == [str(receipt), "/quiet"]
    assert machine.strip() == "AMD64"  # a 64-bit caller: the native view
    if CALLER32:  # the SMS 2003 / SCCM 2007 client is 32-bit: its program line gets the 32-bit view
        receipt32 = tmp_path / "receipt32.txt"
        by32 = run(CALLER32, "p2pdist-wrapper.exe", "--pkg", PACKAGE, "--agent", agent, "install.cmd", str(receipt32), "/quiet")
        assert by32.returncode == 3010, by32.stdout + by32.stderr  # found in %windir% by a 32-bit search
        ran_in32, args32, machine32 = receipt32.read_text().splitlines()[:3]
        assert ran_in32 == ran_in and args32.split() == [str(receipt32), "/quiet"]
        assert machine32.strip() == "x86"  # run by SysWOW64's cmd.exe, as without p2pdist
    else:
        say_skipped("a 32-bit SMS client", os.environ.get("P2PDIST_WIN_NO_CALLER32") or "no 32-bit caller built")
    whole = run(str(installed / "p2pdist-wrapper.exe"), "--pkg", PACKAGE, "--agent", agent, "cmd", "/c", "exit", str(HRESULT - 2**32))
    assert whole.returncode == HRESULT, whole.stderr
    wrapper_log = Path(layout.log_dir, "wrapper.log").read_text(encoding="utf-8")
    assert "outcome=retry exit=1618" in wrapper_log and "outcome=ran exit=3010" in wrapper_log

    # -- upgrade in place: program files replaced, agent.toml, cache and state kept -----------
    dp_before = site.dp.bytes_sent
    toml_before = Path(layout.config).read_bytes()
    upgraded = run("cmd", "/c", str(pkg / "install.cmd"))
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr + logs(layout)
    assert "upgrading" in upgraded.stdout and Path(layout.config).read_bytes() == toml_before
    wait_for(lambda: agent_up(layout, token), "the upgraded agent's control token", timeout=90)
    again = run(layout.windir_wrapper, "--pkg", PACKAGE, "--agent", agent, "install.cmd", str(receipt), timeout=120)
    for _ in range(60):
        if again.returncode != 1618:
            break
        time.sleep(1.0)  # re-checking the cached copy after the restart
        again = run(layout.windir_wrapper, "--pkg", PACKAGE, "--agent", agent, "install.cmd", str(receipt), timeout=120)
    assert again.returncode == 3010 and site.dp.bytes_sent == dp_before  # nothing fetched again

    # -- a service stop is graceful: 'stopped' announced, state saved ---------------------------
    db = sqlite3.connect(Path(layout.data_dir, "agent.sqlite3"))
    try:
        (info_hash,) = db.execute("SELECT info_hash FROM packages WHERE package_id = ?", (PACKAGE,)).fetchone()
    finally:
        db.close()
    wait_for(lambda: seeders(site, info_hash) == 1, "the agent to be a seeder at the tracker")
    stopped = run("net", "stop", plan.SERVICE)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    status = wait_for(lambda: (s := service_status()) is not None and s.state == scm.STOPPED and s, "the service to stop")
    assert status.win32_exit == 0, status
    assert seeders(site, info_hash) == 0  # the agent said "stopped" on its way out
    assert not token.exists()  # the control API closed cleanly
    agent_log = Path(layout.log_dir, "agent.log").read_text(encoding="utf-8")
    assert "stopping" in agent_log
    db = sqlite3.connect(Path(layout.data_dir, "agent.sqlite3"))
    try:
        (state,) = db.execute("SELECT state FROM packages WHERE package_id = ?", (PACKAGE,)).fetchone()
    finally:
        db.close()
    assert state == "complete"

    # -- an agent that cannot start: install.cmd waits for the agent, not only the host, and says why
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", control_port))
        squatter.listen()
        refused = run("cmd", "/c", str(pkg / "install.cmd"))
    assert refused.returncode == 1, refused.stdout + refused.stderr + logs(layout)
    assert "starting it once more" in refused.stdout  # the second start, as failure actions would
    (said,) = refused.stderr.strip().splitlines()
    assert f"control API: cannot listen on 127.0.0.1:{control_port}" in said and "service.log" in said, said
    status = wait_for(lambda: (s := service_status()) is not None and s.state == scm.STOPPED and s, "the service to be stopped")
    assert status.win32_exit == 1067, status  # the host ended unasked: a failure, as Windows counts it

    # -- uninstall: nothing left ---------------------------------------------------------------
    removed = run("cmd", "/c", str(installed / "uninstall.cmd"))
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert service_status() is None
    assert not installed.exists(), list(installed.rglob("*"))[:10]
    assert not Path(layout.windir_wrapper).exists()
    assert registry_install_dir() is None
    assert not Path(layout.data_dir).exists()
