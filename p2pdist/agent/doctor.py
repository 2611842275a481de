"""``p2pdist doctor``: what stands between this PC and a package, one line per check.

An admin at a PC that keeps answering "not ready" wants the one broken link, not a log to read:
the agent, its token, the peer port, the site server, the key, the tracker, the distribution
point's Range support, the clock and the retry code. Each check is bounded in time, says pass
or FAIL, and on a failure names the fix. Checks that need an earlier one (the key needs a
torrent from the repository) say what they skipped and why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from p2pdist.agent.config import AgentSettings, load_agent_settings
from p2pdist.errors import P2pdistError, one_line

if TYPE_CHECKING:
    import aiohttp

    from p2pdist.metainfo import Metainfo

CHECK_TIMEOUT = 5.0
MAX_CLOCK_SKEW = 300.0  # seconds; announces and signatures do not care, but logs and expiry do

# The SMS/ConfigMgr client's ExecutionFailureRetryErrorCodes out of the box: a program that
# exits with one of these is run again (every 600 s, up to 1008 times).
SMS_DEFAULT_RETRY_CODES = frozenset(
    {4, 5, 8, 13, 14, 39, 51, 53, 54, 55, 59, 64, 65, 67, 70, 71, 85, 86, 87, 112, 128, 170, 267, 999, 1003,
     1203, 1219, 1220, 1222, 1231, 1232, 1238, 1265, 1311, 1323, 1326, 1330, 1618, 1622, 2250}
)  # fmt: skip
SMS_POLICY_QUERY = (
    "(Get-CimInstance -Namespace root\\ccm\\policy\\machine\\actualconfig "
    "-ClassName CCM_SoftwareDistributionClientConfig).ExecutionFailureRetryErrorCodes"
)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser("doctor", help="check what this PC needs to get packages, one line per check")
    doctor.add_argument("--config", type=Path, default=None, help="agent.toml (default: the platform's config path)")
    doctor.add_argument("--package", metavar="PACKAGEID", help="check this package's torrent, tracker and web seed")
    doctor.add_argument("--retry-code", type=int, default=1618, help="the wrapper's retry code in your program lines (1618)")
    doctor.add_argument("--unpublished-code", type=int, default=7705,
                        help="the wrapper's --unpublished-code in your program lines (7705)")  # fmt: skip
    doctor.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    """Print every check; exit 0 when all pass, 1 when any fails."""
    if args.config is None:
        from p2pdist.agent.service import default_config_path

        args.config = default_config_path()
    checks = asyncio.run(
        run_checks(args.config, package=args.package, retry_code=args.retry_code, unpublished_code=args.unpublished_code)
    )
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(not check.ok for check in checks)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'pass' if self.ok else 'FAIL'}  {self.name}: {self.detail}"
        return text + (f" -> {self.fix}" if not self.ok and self.fix else "")


@dataclass
class Findings:
    """What one check learnt that a later one needs."""

    agent_running: bool = False
    torrent: bytes | None = None
    torrent_what: str = ""


async def run_checks(
    config: Path, *, package: str | None = None, retry_code: int = 1618, unpublished_code: int = 7705
) -> list[Check]:
    """Every check, in the order a package travels; never raises for what it finds."""
    checks: list[Check] = []
    try:
        settings = load_agent_settings(config)
    except P2pdistError as exc:
        return [Check("config", False, one_line(exc), f"fix {config}")]
    checks.append(Check("config", True, str(config)))
    found = Findings()
    checks.append(token_check(settings))
    checks.append(await agent_check(settings, found))
    checks.append(peer_port_check(settings, found))
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT)) as http:
        checks.extend(await repository_checks(http, settings, package, found))
        meta = None
        if found.torrent is not None:
            key_check, meta = trust_check(settings, found)
            checks.append(key_check)
        if meta is not None:
            checks.append(await tracker_check(http, meta))
            checks.append(await web_seed_check(http, meta))
    checks.append(retry_code_check(retry_code))
    checks.append(unpublished_code_check(unpublished_code))
    return checks


def token_check(settings: AgentSettings) -> Check:
    control = settings.control
    if control.is_unix:
        path = control.socket_path
        if not path.exists():
            return Check("control socket", False, f"{path} does not exist", "start the agent (systemctl start p2pdist-agent)")
        if not os.access(path, os.R_OK | os.W_OK):
            return Check("control socket", False, f"{path} is not writable by this account", "run as root or a member of the agent's group")
        return Check("control socket", True, str(path))
    token = settings.token_file
    try:
        text = token.read_text().strip()
    except FileNotFoundError:
        return Check("control token", False, f"no token at {token}", "start the agent: it writes the token at start")
    except PermissionError:
        return Check("control token", False, f"{token} is not readable by this account", "run as an administrator")
    except OSError as exc:
        return Check("control token", False, f"cannot read {token}: {exc.strerror}")
    if not text:
        return Check("control token", False, f"{token} is empty", "restart the agent: it writes a new token")
    return Check("control token", True, str(token))


async def agent_check(settings: AgentSettings, found: Findings) -> Check:
    from p2pdist.control.client import ControlClient
    from p2pdist.control.schema import ControlError

    token_file = None if settings.control.is_unix else settings.token_file
    try:
        client = ControlClient(settings.control.address, token_file=token_file, timeout=CHECK_TIMEOUT)
        async with asyncio.timeout(CHECK_TIMEOUT):
            packages = await client.list()
    except ControlError as exc:
        return Check("agent", False, f"answers with an error: {one_line(exc)}", "see the agent's log")
    except (P2pdistError, OSError, TimeoutError) as exc:
        return Check("agent", False, f"not reachable at {settings.control.address}: {one_line(exc) or 'timed out'}",
                     "start the agent service (sc start p2pdist / systemctl start p2pdist-agent)")  # fmt: skip
    found.agent_running = True
    return Check("agent", True, f"running at {settings.control.address}, {len(packages)} package(s)")


def peer_port_check(settings: AgentSettings, found: Findings) -> Check:
    host, port = settings.engine.listen_host, settings.engine.listen_port
    name = f"peer port {port}"
    if port == 0:
        return Check(name, True, "any free port (listen_port = 0)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: fail on a port another socket holds
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        probe.bind((host, port))
    except OSError as exc:
        if found.agent_running and exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)):
            return Check(name, True, f"in use, by the running agent on {host}")
        return Check(name, False, f"cannot listen on {host}:{port}: {exc.strerror}",
                     "stop the program holding it, or set engine.listen_port in agent.toml")  # fmt: skip
    finally:
        probe.close()
    if found.agent_running:
        return Check(name, False, f"free on {host}, so the running agent does not listen there",
                     "restart the agent and read its log for the listen error")  # fmt: skip
    return Check(name, True, f"free on {host}")


async def repository_checks(http: aiohttp.ClientSession, settings: AgentSettings, package: str | None, found: Findings) -> list[Check]:
    import aiohttp

    base = settings.repository_url
    checks: list[Check] = []
    try:
        async with http.get(f"{base}/api/packages", allow_redirects=False) as reply:
            date = reply.headers.get("Date")
            listing = await reply.json(content_type=None) if reply.status == 200 else None
            status = reply.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return [Check("site server", False, f"{base} unreachable: {one_line(exc) or 'timed out'}",
                      "check `repository` in agent.toml, DNS and the firewall (the server's port)")]  # fmt: skip
    if status != 200 or not isinstance(listing, dict) or not isinstance(listing.get("packages"), list):
        return [Check("site server", False, f"{base}/api/packages answered HTTP {status}", "is `repository` the site server's URL?")]
    packages = [p for p in listing["packages"] if isinstance(p, dict)]
    checks.append(Check("site server", True, f"{base}, {len(packages)} package(s) published"))
    checks.append(clock_check(date))
    wanted = package or next((str(p.get("package")) for p in packages if p.get("package")), None)
    if wanted is None:
        checks.append(Check("signed torrent", False, "nothing is published, so key, tracker and web seed are not checked",
                            "publish a package (p2pdist publish), or name one with --package"))  # fmt: skip
        return checks
    url = f"{base}/packages/{quote(wanted)}.torrent"
    try:
        async with http.get(url, allow_redirects=False) as reply:
            body = await reply.content.read(settings.max_torrent_bytes + 1)
            status = reply.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        checks.append(Check("signed torrent", False, f"{url}: {one_line(exc) or 'timed out'}"))
        return checks
    if status != 200:
        checks.append(Check("signed torrent", False, f"{wanted} is not published (HTTP {status})", "publish it, or check the PackageID"))
        return checks
    found.torrent, found.torrent_what = body, wanted
    return checks


def clock_check(date_header: str | None, now: Callable[[], float] = time.time) -> Check:
    if not date_header:
        return Check("clock", True, "the server sent no Date header; skew not measured")
    try:
        server = email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Check("clock", True, f"unreadable Date header {date_header!r}; skew not measured")
    skew = now() - server
    text = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the site server"
    if abs(skew) > MAX_CLOCK_SKEW:
        return Check("clock", False, text, "sync the clock (w32tm /resync, or timedatectl set-ntp true)")
    return Check("clock", True, text)


def trust_check(settings: AgentSettings, found: Findings) -> tuple[Check, Metainfo | None]:
    from p2pdist.metainfo import parse_metainfo
    from p2pdist.metainfo.signing import SignatureStatus, verify_signature

    assert found.torrent is not None
    try:
        meta = parse_metainfo(found.torrent)
        status = verify_signature(meta, settings.trusted_keys())
    except P2pdistError as exc:
        return Check("key", False, f"{found.torrent_what}: {one_line(exc)}"), None
    if status is not SignatureStatus.VALID:
        fix = "set public_keys in agent.toml to the site server's repository.pub"
        return Check("key", False, f"{found.torrent_what}: {status.value}; the agent will refuse it", fix), None
    version = meta.info.package.version if meta.info.package else "?"
    return Check("key", True, f"{found.torrent_what} v{version} is signed by a trusted key"), meta


async def tracker_check(http: aiohttp.ClientSession, meta: Metainfo) -> Check:
    import aiohttp
    import yarl

    from p2pdist.tracker.announce import AnnounceError, TrackerFailure, build_scrape_url, parse_scrape_response

    announce = next(iter(meta.tracker_urls), None)
    try:
        if announce is None:
            raise AnnounceError("no announce URL")
        scrape = build_scrape_url(announce, [meta.info_hash])  # byte-exact, as announces are sent
    except AnnounceError:
        return Check("tracker", False, "the torrent names no announce URL with /announce to scrape")
    try:
        async with http.get(yarl.URL(scrape, encoded=True), allow_redirects=False) as reply:
            body = await reply.content.read(64 * 1024)
            status = reply.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Check("tracker", False, f"{announce} unreachable: {one_line(exc) or 'timed out'}", "check the firewall to the site server")
    try:
        if status != 200:
            raise AnnounceError(f"HTTP {status}")
        parse_scrape_response(body)
    except TrackerFailure as exc:
        return Check("tracker", False, f"refuses: {one_line(exc.reason)}")
    except AnnounceError:
        return Check("tracker", False, f"{scrape.split('?')[0]} answered HTTP {status} without a bencoded reply")
    return Check("tracker", True, f"{announce} answers for this package")


async def web_seed_check(http: aiohttp.ClientSession, meta: Metainfo) -> Check:
    import aiohttp

    from p2pdist.engine.webseed import file_urls

    if not meta.web_seeds:
        return Check("web seed", True, "the torrent names none (peers only)")
    url = file_urls(meta, meta.web_seeds[0])[0]
    try:
        async with http.get(url, headers={"Range": "bytes=0-0"}, allow_redirects=True) as reply:
            status = reply.status
            await reply.content.read(2)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check("web seed", False, f"{url} unreachable: {one_line(exc) or 'timed out'}", "check the distribution point's web server")
    if status == 206:
        return Check("web seed", True, f"{url} answers a Range request (206)")
    if status == 200:
        return Check("web seed", False, f"{url} ignores Range requests (200, whole file)",
                     "enable byte ranges on the distribution point's web server (IIS serves them for static files)")  # fmt: skip
    return Check("web seed", False, f"{url} answered HTTP {status}", "is the package on the distribution point's web share?")


def sms_retry_codes(query: Callable[[], str | None] | None = None) -> tuple[frozenset[int], str]:
    """The SMS client's retry list from its policy where it can be read, else the default list."""
    text = (query or _query_sms_policy)()
    if text:
        codes = frozenset(int(word) for word in text.replace(",", " ").split() if word.isdigit())
        if codes:
            return codes, "the SMS client's policy"
    return SMS_DEFAULT_RETRY_CODES, "the SMS client's default list"


def _query_sms_policy() -> str | None:
    if sys.platform != "win32":
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", SMS_POLICY_QUERY],
            capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            return result.stdout
    return None


def unpublished_code_check(code: int, query: Callable[[], str | None] | None = None) -> Check:
    """The wrapper's code for a package that stays unpublished must not be one SMS retries:
    the point of it is that SMS stops retrying (docs/wrapper.md)."""
    codes, source = sms_retry_codes(query)
    if code not in codes:
        return Check("not-published code", True, f"{code} is not in {source}: SMS reports the program failed")
    return Check("not-published code", False, f"{code} is in {source}: SMS would retry an unpublished package for a week",
                 "use --unpublished-code 7705 (or a code outside the list) in the program line")  # fmt: skip


def retry_code_check(retry_code: int, query: Callable[[], str | None] | None = None) -> Check:
    codes, source = sms_retry_codes(query)
    if retry_code in codes:
        return Check("retry code", True, f"{retry_code} is in {source}")
    return Check("retry code", False, f"{retry_code} is not in {source}: SMS would record a failure, not retry",
                 "use --retry-code 1618 (or a code from the list) in the program line")  # fmt: skip
