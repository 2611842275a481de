"""What an installation is: its folders, its agent.toml, and the system commands it runs.

Pure: every path comes in through ``Layout``, so the rules are tested on Linux as on Windows.
"""

from __future__ import annotations

import ipaddress
import ntpath
import re
from dataclasses import dataclass

from p2pdist.config import toml_value
from p2pdist.errors import UsageError
from p2pdist.metainfo.signing import trusted_keys

SERVICE = "p2pdist"
SERVICE_DISPLAY = "p2pdist agent"
SERVICE_DESCRIPTION = "Peer-to-peer distribution of SMS/SCCM packages: downloads, verifies and shares the packages p2pdist-wrapper asks for."
FIREWALL_RULE = "p2pdist-peers"  # no spaces: netsh reads name=VALUE words
REGISTRY_KEY = r"SOFTWARE\p2pdist"
WRAPPER = "p2pdist-wrapper.exe"
DEFAULT_PORT = 6881
RESTART_DELAYS_MS = (60_000, 60_000, 300_000)  # after the 1st, 2nd and later failures
RESTART_RESET_SECONDS = 86_400  # a day without failure starts the count again
SYSTEM_SID = "*S-1-5-18"
ADMINISTRATORS_SID = "*S-1-5-32-544"


class PlanError(UsageError):
    """An argument install.cmd cannot use; the message is the one line the administrator sees."""


@dataclass(frozen=True)
class Layout:
    """Where things go on one machine."""

    install_dir: str  # %ProgramW6432%\p2pdist (the 64-bit Program Files, whatever the caller)
    data_dir: str  # %ProgramData%\p2pdist: agent.toml, state, control token
    cache_dir: str  # the agent's package cache (platformdirs' default, under data_dir)
    windir: str

    @classmethod
    def for_machine(cls, env: dict[str, str], cache_dir: str | None = None) -> Layout:
        program_files = env.get("ProgramW6432") or env.get("ProgramFiles") or r"C:\Program Files"
        program_data = env.get("ProgramData") or env.get("ALLUSERSPROFILE") or r"C:\ProgramData"
        data_dir = ntpath.join(program_data, "p2pdist")
        return cls(
            install_dir=ntpath.join(program_files, "p2pdist"),
            data_dir=data_dir,
            cache_dir=cache_dir or ntpath.join(data_dir, "Cache"),
            windir=env.get("SystemRoot") or env.get("windir") or r"C:\Windows",
        )

    @property
    def config(self) -> str:
        return ntpath.join(self.data_dir, "agent.toml")

    @property
    def log_dir(self) -> str:
        return ntpath.join(self.data_dir, "logs")

    @property
    def python(self) -> str:
        return ntpath.join(self.install_dir, "python", "python.exe")

    @property
    def service_binary(self) -> str:
        return '"' + ntpath.join(self.install_dir, "p2pdist-service.exe") + '"'

    @property
    def windir_wrapper(self) -> str:
        """The wrapper where SMS finds it at once: %windir% is searched for every program line,
        while a new machine PATH reaches the SMS client only after it restarts (services keep the
        environment they started with). Never System32: a 32-bit client sees SysWOW64 there."""
        return ntpath.join(self.windir, WRAPPER)

    def secured_dirs(self) -> tuple[str, ...]:
        """The folders only SYSTEM and Administrators may touch (the cache is inside data_dir
        by default; a cache elsewhere is secured on its own)."""
        inside = self.cache_dir.lower().startswith(self.data_dir.lower().rstrip("\\") + "\\")
        return (self.data_dir,) if inside else (self.data_dir, self.cache_dir)


@dataclass(frozen=True)
class Settings:
    """What install.cmd's arguments say about the agent."""

    repository: str
    public_key: str
    port: int = DEFAULT_PORT
    # The control API's port; only where 7881 is taken: program lines then need --agent.
    control_port: int | None = None
    # The one address peers connect to, on a PC with several networks; None: every address.
    listen_address: str | None = None


_URL = re.compile(r"\Ahttps?://[^\s/\"'<>]+(/[^\s\"'<>]*)?\Z")


def check_settings(
    repository: str, public_key: str, port: int = DEFAULT_PORT, control_port: int | None = None, listen_address: str | None = None
) -> Settings:
    """The arguments, validated so that a typo fails the install instead of the agent's start."""
    if not _URL.match(repository):
        raise PlanError(f"repository URL {repository!r} is not an http:// or https:// URL of the site server")
    key = public_key.strip()
    try:
        trusted_keys((key,), ())
    except Exception as exc:  # ConfigError: the key's own one-line reason
        raise PlanError(f"public key: {exc}") from None
    if not 1024 <= port <= 65535:
        raise PlanError(f"peer port {port} is not between 1024 and 65535 (the site server refuses lower ones)")
    if control_port is not None and not 1 <= control_port <= 65535:
        raise PlanError(f"control port {control_port} is not between 1 and 65535")
    if listen_address is not None:
        try:
            ipaddress.ip_address(listen_address)
        except ValueError:
            raise PlanError(f"listen address {listen_address!r} is not an IP address of this PC") from None
    return Settings(repository.rstrip("/"), key, port, control_port, listen_address)


def agent_toml(settings: Settings, layout: Layout) -> str:
    """agent.toml for the service; every string through toml_value (Windows paths have backslashes)."""
    lines = [
        "# Written by p2pdist install.cmd; install.cmd URL KEY writes it again, install.cmd alone keeps it.",
        "# Every setting: docs/agent.md.",
        f"repository = {toml_value(settings.repository)}",
        f"public_keys = [{toml_value(settings.public_key)}]",
        f"cache_dir = {toml_value(layout.cache_dir)}",
        f"state_dir = {toml_value(layout.data_dir)}",
        f"log_file = {toml_value(ntpath.join(layout.log_dir, 'agent.log'))}",
        "",
        "[engine]",
        f"listen_port = {settings.port}",
    ]
    if settings.listen_address is not None:
        lines.append(f"listen_host = {toml_value(settings.listen_address)}")
    if settings.control_port is not None:
        lines += ["", "[control]", f"address = {toml_value(f'http://127.0.0.1:{settings.control_port}')}"]
    lines.append("")
    return "\n".join(lines)


def port_from_toml(text: str) -> int:
    """The peer port an existing agent.toml uses (for the firewall rule on an upgrade)."""
    import tomllib

    try:
        value = tomllib.loads(text).get("engine", {}).get("listen_port", DEFAULT_PORT)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"the existing agent.toml is not valid TOML ({exc}); give URL and KEY to write a new one") from None
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise PlanError("the existing agent.toml has no valid engine.listen_port")
    return value


def acl_commands(folder: str) -> list[list[str]]:
    """icacls runs giving ``folder`` and everything in it to SYSTEM and Administrators alone.

    By SID, so any language of Windows reads them alike. Owner first (an owner may always
    rewrite the ACL, and a user may have created the folder in ProgramData before the install),
    then every entry below reset to what it inherits (removing any a user added), then the
    folder itself cut off from ProgramData's entries (Users may create there) with only the two.
    """
    both = [f"{SYSTEM_SID}:(OI)(CI)F", f"{ADMINISTRATORS_SID}:(OI)(CI)F"]
    return [
        ["icacls", folder, "/setowner", ADMINISTRATORS_SID, "/T", "/C", "/Q"],
        ["icacls", folder, "/reset", "/T", "/C", "/Q"],
        ["icacls", folder, "/inheritance:r", "/grant:r", *both, "/Q"],
    ]


def firewall_add(layout: Layout, port: int) -> list[str]:
    """Inbound TCP to the peer port, for the bundled python only (the agent is python.exe)."""
    return [
        "netsh", "advfirewall", "firewall", "add", "rule", f"name={FIREWALL_RULE}", "dir=in", "action=allow",
        "protocol=TCP", f"localport={port}", f"program={layout.python}", "profile=any",
    ]


def firewall_delete() -> list[str]:
    return ["netsh", "advfirewall", "firewall", "delete", "rule", f"name={FIREWALL_RULE}"]
