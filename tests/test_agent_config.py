"""agent.toml: defaults, bad values refused by name, one agent per state folder, the CLI entry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p2pdist.agent.config import AgentSettings, ControlSettings, load_agent_settings
from p2pdist.agent.state import AgentState, PackageRow
from p2pdist.config import ConfigError
from p2pdist.errors import LocalError
from tests.support.agents import PUBLIC_HEX


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_full_config_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
repository = "https://sms-hq:6969/"
public_keys = ["{PUBLIC_HEX}"]
cache_dir = "{tmp_path / 'cache'}"
state_dir = "{tmp_path / 'state'}"
log_file = ""
[engine]
listen_port = 6882
upload_rate_limit = 1000000
max_connections = 100
[cache]
min_seed_days = 5
keep_days = 30
max_bytes = 10000000000
[control]
address = "http://127.0.0.1:7881"
token_file = "{tmp_path / 'token'}"
""",
    )
    settings = load_agent_settings(path)
    assert settings.repository_url == "https://sms-hq:6969"
    assert settings.engine.listen_port == 6882 and settings.engine.upload_rate_limit == 1_000_000
    assert settings.cache.min_seed_seconds == 5 * 86400 and settings.cache.keep_seconds == 30 * 86400
    assert settings.control.tcp_endpoint() == ("127.0.0.1", 7881) and settings.token_file == tmp_path / "token"
    assert settings.trusted_keys() == (bytes.fromhex(PUBLIC_HEX),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('repository = "http://x"', "no repository public key"),
        (f'public_keys = ["{PUBLIC_HEX}"]\n[engine]\nlisten_prot = 1', "engine: unknown setting"),
        (f'public_keys = ["{PUBLIC_HEX}"]\n[control]\naddress = "http://10.0.0.5:7881"', "not a loopback address"),
        (f'public_keys = ["{PUBLIC_HEX}"]\n[control]\naddress = "http://127.0.0.1"', "explicit port"),
        (f'public_keys = ["{PUBLIC_HEX}"]\n[cache]\nmin_seed_days = -1', "must not be negative"),
        (f'public_keys = ["{PUBLIC_HEX}"]\nrepository = "sms-hq:6969"', "http:// or https://"),
        ('public_keys = ["abcd"]', "public_keys[0]"),
        (f'public_keys = ["{PUBLIC_HEX}"]\nretry_interval = "soon"', "retry_interval: expected float"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_agent_settings(write(tmp_path, text))
    assert message in str(error.value)


def test_defaults_are_machine_wide_and_local_only() -> None:
    settings = AgentSettings()
    assert settings.cache.min_seed_days == 3.0
    assert "p2pdist" in str(settings.cache_dir) and "p2pdist" in str(settings.state_dir)
    if sys.platform != "win32":
        assert settings.control.address == "unix:/run/p2pdist/agent.sock"
    assert ControlSettings("http://[::1]:7881").tcp_endpoint() == ("::1", 7881)


def test_one_agent_per_state_folder(tmp_path: Path) -> None:
    first = AgentState(tmp_path)
    try:
        with pytest.raises(LocalError, match="another agent"):
            AgentState(tmp_path)
        first.save_package(PackageRow("ab" * 20, "PS100012", 1, "PS100012", 10, added_at=1.0, last_advertised=2.0))
        first.update_package("ab" * 20, state="complete", completed_at=3.0)
        with pytest.raises(ValueError):
            first.update_package("ab" * 20, nonsense=1)
    finally:
        first.close()
    again = AgentState(tmp_path)  # the lock went with the first one
    try:
        (row,) = again.packages()
        assert (row.state, row.completed_at, row.last_advertised) == ("complete", 3.0, 2.0)
    finally:
        again.close()


def test_agent_command_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2pdist.agent", "--config", str(tmp_path / "missing.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "cannot read config" in result.stderr and "Traceback" not in result.stderr
