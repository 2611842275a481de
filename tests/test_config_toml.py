"""TOML settings into frozen dataclasses: every mistake is one line naming the dotted key."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pdist.config import ConfigError, from_mapping, load_settings, load_toml, toml_value
from p2pdist.errors import UsageError


@dataclass(frozen=True)
class Limits:
    peers: int = 50
    rate: float = 1.5


@dataclass(frozen=True)
class Site:
    name: str
    subnets: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Settings:
    port: int = 6881
    verbose: bool = False
    ratio: float = 1.0
    cache: Path = Path("/var/cache/p2pdist")
    state: Path | None = None
    retry_code: Optional[int] = None
    sites: tuple[Site, ...] = ()
    limits: Limits = field(default_factory=Limits)
    extra: dict[str, int] = field(default_factory=dict)
    window: tuple[int, str] = (0, "always")
    anything: Any = None
    choice: int | str = 0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")


@dataclass(frozen=True)
class Unsupported:
    items: list[int] = field(default_factory=list)


def error(mapping: Any, cls: type = Settings) -> str:
    with pytest.raises(ConfigError) as caught:
        from_mapping(cls, mapping)
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2
    return str(caught.value)


def test_defaults_and_full_mapping() -> None:
    assert from_mapping(Settings, {}) == Settings()
    settings = from_mapping(
        Settings,
        {
            "port": 7000,
            "verbose": True,
            "ratio": 2,
            "cache": "/srv/cache",
            "state": "/srv/state",
            "retry_code": 1618,
            "sites": [{"name": "HQ", "subnets": ["10.0.0.0/8"], "limits": {"peers": 10}}, {"name": "Branch"}],
            "limits": {"rate": 0.5},
            "extra": {"a": 1},
            "window": [22, "night"],
            "anything": {"x": [1]},
            "choice": "text",
        },
    )
    assert settings.port == 7000 and settings.verbose is True
    assert settings.ratio == 2.0 and isinstance(settings.ratio, float)
    assert settings.cache == Path("/srv/cache") and settings.state == Path("/srv/state")
    assert settings.retry_code == 1618
    assert settings.sites == (Site("HQ", ("10.0.0.0/8",), Limits(peers=10)), Site("Branch"))
    assert settings.limits == Limits(50, 0.5)
    assert settings.extra == {"a": 1} and settings.window == (22, "night")
    assert settings.anything == {"x": [1]} and settings.choice == "text"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"prot": 1}, "config: unknown setting(s) prot"),
        ({"b": 1, "a": 2}, "unknown setting(s) a, b"),
        ({"limits": {"peers": 1, "peer": 2}}, "limits: unknown setting(s) peer"),
        ({"sites": [{"name": "x", "limits": {"ratee": 1}}]}, "sites[0].limits: unknown setting(s) ratee"),
        ({"port": "6881"}, "port: expected int, got str"),
        ({"port": True}, "port: expected int, got bool"),
        ({"port": 1.0}, "port: expected int, got float"),
        ({"verbose": 1}, "verbose: expected bool, got int"),
        ({"verbose": "yes"}, "verbose: expected bool, got str"),
        ({"ratio": True}, "ratio: expected float, got bool"),
        ({"ratio": "1"}, "ratio: expected float, got str"),
        ({"cache": 5}, "cache: expected a path string"),
        ({"state": ["x"]}, "state: expected a path string"),
        ({"retry_code": "1618"}, "retry_code: expected int, got str"),
        ({"limits": 5}, "limits: expected a table"),
        ({"limits": {"peers": "many"}}, "limits.peers: expected int, got str"),
        ({"sites": {"name": "x"}}, "sites: expected a list"),
        ({"sites": ["HQ"]}, "sites[0]: expected a table"),
        ({"sites": [{"name": "a"}, {"name": 5}]}, "sites[1].name: expected str, got int"),
        ({"sites": [{"name": "a", "subnets": ["ok", 7]}]}, "sites[0].subnets[1]: expected str, got int"),
        ({"sites": [{"subnets": []}]}, "sites[0]: Site.__init__() missing 1 required positional argument: 'name'"),
        ({"extra": {"a": "1"}}, "extra.a: expected int, got str"),
        ({"extra": [1]}, "extra: expected a table"),
        ({"window": [1]}, "window: expected a list of 2 items, got 1"),
        ({"window": ["1", "x"]}, "window[0]: expected int, got str"),
        ({"window": [1, 2]}, "window[1]: expected str, got int"),
        ({"choice": 1.5}, "choice: expected int, got float"),
        ({"port": 70000}, "config: port 70000 out of range"),
    ],
)
def test_errors_name_the_dotted_key(mapping: dict[str, Any], message: str) -> None:
    assert message in error(mapping)


def test_not_a_table_and_unsupported_types() -> None:
    assert "config: expected a table" in error([1])
    assert "items: unsupported setting type" in error({"items": [1]}, Unsupported)
    assert from_mapping(Unsupported, {}) == Unsupported()


def test_load_settings_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        'port = 7001\nratio = 3\n[limits]\npeers = 5\n[[sites]]\nname = "HQ"\nsubnets = ["10.1.0.0/16"]\n'
        '[sites.limits]\nrate = 2.5\n'
    )
    settings = load_settings(Settings, path)
    assert settings.port == 7001 and settings.ratio == 3.0 and settings.limits.peers == 5
    assert settings.sites == (Site("HQ", ("10.1.0.0/16",), Limits(50, 2.5)),)
    assert load_settings(Settings, str(path)) == settings
    assert load_settings(Settings, None) == Settings()
    assert load_toml(path)["port"] == 7001


def test_load_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(Settings, tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(Settings, tmp_path)  # a directory
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match=f"config {broken}"):
        load_settings(Settings, broken)
    typo = tmp_path / "typo.toml"
    typo.write_text("[limits]\npeer = 5\n")
    with pytest.raises(ConfigError, match=r"^limits: unknown setting\(s\) peer$"):
        load_settings(Settings, typo)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_toml_value_reads_back_as_the_same_string(text: str) -> None:
    assert tomllib.loads(f"key = {toml_value(text)}\n") == {"key": text}


def test_toml_value_writes_windows_paths_and_refuses_what_a_file_cannot_hold() -> None:
    path = PureWindowsPath(r"C:\ProgramData\p2pdist\new\tab\x41 \"q\"")
    assert tomllib.loads(f"p = {toml_value(path)}")["p"] == str(path)
    assert toml_value(r"C:\u") == r'"C:\\u"'
    with pytest.raises(ValueError, match="not valid Unicode"):
        toml_value("bad\udcff name")
