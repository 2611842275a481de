"""install.cmd's decisions, checked on any system: layout, agent.toml, arguments, system commands."""

from __future__ import annotations

import ntpath
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pdist.winsetup import plan

KEY = "ab" * 32
ENV = {"ProgramFiles": r"C:\Program Files (x86)", "ProgramW6432": r"C:\Program Files", "ProgramData": r"D:\PD", "SystemRoot": r"C:\WINDOWS"}


def test_layout_takes_the_64_bit_program_files_whatever_the_caller() -> None:
    layout = plan.Layout.for_machine(ENV)
    assert layout.install_dir == r"C:\Program Files\p2pdist"
    assert layout.data_dir == r"D:\PD\p2pdist" and layout.cache_dir == r"D:\PD\p2pdist\Cache"
    assert layout.windir_wrapper == r"C:\WINDOWS\p2pdist-wrapper.exe"  # %windir%, never System32
    assert layout.service_binary == r'"C:\Program Files\p2pdist\p2pdist-service.exe"'
    assert layout.secured_dirs() == (r"D:\PD\p2pdist",)  # the cache is inside


def test_a_cache_elsewhere_is_secured_on_its_own() -> None:
    layout = plan.Layout.for_machine(ENV, cache_dir=r"E:\p2pdist-cache")
    assert layout.secured_dirs() == (r"D:\PD\p2pdist", r"E:\p2pdist-cache")
    beside = plan.Layout.for_machine(ENV, cache_dir=r"D:\PD\p2pdist-other")  # a prefix, not inside
    assert len(beside.secured_dirs()) == 2


windows_path = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40).map(
    lambda tail: "C:\\" + tail
)


addresses = st.none() | st.ip_addresses().map(str)


@given(
    data=windows_path, cache=windows_path, port=st.integers(1024, 65535), control=st.none() | st.integers(1, 65535), listen=addresses
)
def test_agent_toml_reads_back_as_written(data: str, cache: str, port: int, control: int | None, listen: str | None) -> None:
    layout = plan.Layout(r"C:\Program Files\p2pdist", data, cache, r"C:\Windows")
    settings = plan.check_settings("http://sms01:6969/", KEY, port, control, listen)
    parsed = tomllib.loads(plan.agent_toml(settings, layout))
    assert parsed["repository"] == "http://sms01:6969" and parsed["public_keys"] == [KEY]
    assert parsed["cache_dir"] == cache and parsed["state_dir"] == data
    log_file = parsed["log_file"]  # <data>\logs\agent.log, however data ends ("C:\\/" is C:\)
    assert ntpath.basename(log_file) == "agent.log" and ntpath.basename(ntpath.dirname(log_file)) == "logs"
    assert ntpath.normpath(ntpath.dirname(ntpath.dirname(log_file))) == ntpath.normpath(data)
    assert parsed["engine"] == {"listen_port": port} | ({"listen_host": listen} if listen is not None else {})
    assert ("control" in parsed) == (control is not None)
    if control is not None:
        assert parsed["control"]["address"] == f"http://127.0.0.1:{control}"
    assert plan.port_from_toml(plan.agent_toml(settings, layout)) == port


@pytest.mark.parametrize(
    ("repository", "key", "port", "says"),
    [
        ("sms01:6969", KEY, 6881, "not an http"),
        ('http://sms01:6969/"x', KEY, 6881, "not an http"),
        ("http://sms 01", KEY, 6881, "not an http"),
        ("http://sms01:6969", "abc", 6881, "public key"),
        ("http://sms01:6969", KEY, 80, "between 1024 and 65535"),
        ("http://sms01:6969", KEY, 6881, "not an IP address"),
    ],
)
def test_bad_arguments_fail_the_install_with_one_line(repository: str, key: str, port: int, says: str) -> None:
    listen = "pc-42.corp" if says == "not an IP address" else None
    with pytest.raises(plan.PlanError, match=says) as caught:
        plan.check_settings(repository, key, port, listen_address=listen)
    assert "\n" not in str(caught.value)


def test_an_unreadable_existing_config_is_one_line() -> None:
    with pytest.raises(plan.PlanError, match="not valid TOML"):
        plan.port_from_toml("engine = [")
    assert plan.port_from_toml('repository = "http://x"\n') == plan.DEFAULT_PORT


def test_acl_commands_by_sid_owner_then_reset_then_protect() -> None:
    owner, reset, protect = plan.acl_commands(r"C:\ProgramData\p2pdist")
    assert owner[:4] == ["icacls", r"C:\ProgramData\p2pdist", "/setowner", "*S-1-5-32-544"] and "/T" in owner
    assert reset[2:4] == ["/reset", "/T"]
    assert protect[2:6] == ["/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"]
    assert not any("Users" in word or "Everyone" in word for argv in (owner, reset, protect) for word in argv)


def test_firewall_rule_for_the_bundled_python_and_the_peer_port() -> None:
    add = plan.firewall_add(plan.Layout.for_machine(ENV), 7000)
    assert f"name={plan.FIREWALL_RULE}" in add and "localport=7000" in add and "dir=in" in add
    assert r"program=C:\Program Files\p2pdist\python\python.exe" in add
    assert plan.firewall_delete()[-1] == f"name={plan.FIREWALL_RULE}"
