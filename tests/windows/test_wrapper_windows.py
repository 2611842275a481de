"""The wrapper on Windows, started by a Windows parent as the SMS client starts it, against a
real agent: the raw command line passes through verbatim, .cmd files run by full path, the
package / %windir% / PATH search, a relative Start in, and exit codes arriving whole; the
control API on loopback with its token; the lease holding the files against change."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lane
from lane import WINE, AgentProcess, Site, read_json
from p2pdist.agent import winacl
from p2pdist.control.schema import ControlError
from p2pdist.agent.pins import hold
from p2pdist.wrapper.run import find_program

PKG = "LN100010"
SHOW = b"""import ctypes, json, os, sys
line = ctypes.windll.kernel32.GetCommandLineW
line.restype = ctypes.c_wchar_p
with open(os.environ["LANE_RECORD"], "w", encoding="utf-8") as out:
    json.dump({"line": line(), "cwd": os.getcwd(), "argv": sys.argv[1:]}, out)
"""
EXIT = b"""import sys
code = int(sys.argv[1])
sys.exit(code - 2**32 if code >= 2**31 else code)
"""
SETUP_CMD = b'@echo off\r\necho %*> "%LANE_RECORD%"\r\nexit /b 3010\r\n'
DECOY_CMD = b'@echo off\r\necho decoy> "%LANE_RECORD%"\r\nexit /b 1\r\n'


@pytest.fixture(scope="module")
def agent(site: Site, pc: AgentProcess) -> AgentProcess:
    """The lane's shared agent, with this module's package complete in its cache."""
    site.publish(PKG, {"show.py": SHOW, "exit.py": EXIT, "setup.cmd": SETUP_CMD, "x86/show.py": SHOW, "data.cab": os.urandom(300_000)})
    pc.wait_complete(PKG)
    return pc


@pytest.fixture
def dp_folder(tmp_path: Path) -> Path:
    """Where SMS starts the program: the DP's package folder, holding decoys the wrapper must not run."""
    folder = tmp_path / "SMSPKGC$" / PKG
    (folder / "x86").mkdir(parents=True)
    (folder / "setup.cmd").write_bytes(DECOY_CMD)
    (folder / "show.py").write_bytes(b"raise SystemExit(99)\n")
    return folder


def wrapper(agent: AgentProcess, tail: str, cwd: Path, record: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """Start the wrapper as the SMS client does: one command line, through CreateProcess."""
    line = (
        f'"{sys.executable}" -m p2pdist.wrapper --agent {agent.control} --token-file "{agent.token_file}" '
        f'--log "{log}" {tail}'
    )
    env = dict(os.environ, LANE_RECORD=str(record), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return lane.run(line, cwd=cwd, env=env, text=True, timeout=120)


def test_raw_command_line_passes_through_verbatim(agent: AgentProcess, dp_folder: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    tail = 'python.exe show.py /i "a b.msi" PROP="x y" TRANSFORMS="c:\\t\\a b.mst" /qn  /l*v "c:\\log dir\\x.log"'
    result = wrapper(agent, tail, dp_folder, record, tmp_path / "wrapper.log")
    assert result.returncode == 0, result.stderr
    seen = read_json(record)
    assert seen["line"] == tail  # not re-quoted: msiexec reads its own quoting
    cached = agent.call("status", PKG).path
    assert seen["cwd"] == cached  # the cached copy, not the DP's decoy
    assert seen["argv"] == ["/i", "a b.msi", "PROP=x y", "TRANSFORMS=c:\\t\\a b.mst", "/qn", "/l*v", "c:\\log dir\\x.log"]
    assert "outcome=ran exit=0" in (tmp_path / "wrapper.log").read_text()


def test_a_cmd_file_runs_from_the_cache_by_full_path(agent: AgentProcess, dp_folder: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    result = wrapper(agent, 'setup.cmd /i "a b.msi" PROP="x y"', dp_folder, record, tmp_path / "wrapper.log")
    assert result.returncode == 3010, result.stderr
    assert record.read_text().strip() == '/i "a b.msi" PROP="x y"'  # the cached one, not the decoy


def test_relative_start_in_runs_in_the_same_subfolder(agent: AgentProcess, dp_folder: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    result = wrapper(agent, "--pkg " + PKG + " python.exe show.py", dp_folder / "x86", record, tmp_path / "wrapper.log")
    assert result.returncode == 0, result.stderr
    assert read_json(record)["cwd"] == os.path.join(agent.call("status", PKG).path, "x86")


@pytest.mark.parametrize("code", [3010, 1641, 1603, 2147944003])
def test_exit_codes_arrive_whole_at_a_windows_parent(agent: AgentProcess, dp_folder: Path, tmp_path: Path, code: int) -> None:
    result = wrapper(agent, f"python.exe exit.py {code}", dp_folder, tmp_path / "r", tmp_path / "wrapper.log")
    assert result.returncode == code, result.stderr  # 2147944003 is 0x80070643, an HRESULT


def test_not_ready_is_1618_whole_and_a_path_program_keeps_its_code(agent: AgentProcess, dp_folder: Path, tmp_path: Path) -> None:
    missing = wrapper(agent, "--pkg LN1000FF cmd.exe /c exit 0", dp_folder, tmp_path / "r", tmp_path / "wrapper.log")
    assert missing.returncode == 1618, missing.stderr
    on_path = wrapper(agent, "cmd.exe /c exit 1641", dp_folder, tmp_path / "r", tmp_path / "wrapper.log")
    assert on_path.returncode == 1641, on_path.stderr  # found on PATH (System32), after the package


def test_the_search_order_is_package_then_windir_then_path(agent: AgentProcess) -> None:
    package = agent.call("status", PKG).path
    windir = os.environ["windir"]
    assert find_program("show.py", package) == os.path.join(package, "show.py")
    found = find_program("regedit", package)
    assert found is not None and os.path.normcase(os.path.dirname(found)) == os.path.normcase(windir)
    assert os.path.normcase(find_program("cmd", package) or "").endswith("\\system32\\cmd.exe")


# ---------------------------------------------------------------- the control API


def test_control_api_on_loopback_needs_its_token(agent: AgentProcess, tmp_path: Path) -> None:
    import http.client

    host, port = agent.control[len("http://") :].rsplit(":", 1)
    token = agent.token_file.read_text().strip()

    def get(headers: dict[str, str]) -> int:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", "/v1/packages", headers=headers)
            return connection.getresponse().status
        finally:
            connection.close()

    assert get({}) == 401
    assert get({"Authorization": "Bearer " + "0" * 64}) == 401
    assert get({"Authorization": f"Bearer {token}", "Host": "evil.example"}) == 421
    assert get({"Authorization": f"Bearer {token}", "Origin": "http://127.0.0.1"}) == 403
    assert get({"Authorization": f"Bearer {token}"}) == 200


def test_the_token_acl_is_administrators_and_system(agent: AgentProcess, tmp_path: Path) -> None:
    probe = tmp_path / "probe.token"
    probe.write_text("x")
    winacl.restrict(probe)  # what the agent did to its token file; Windows accepts the SDDL
    seen = winacl.dacl_of(agent.token_file)
    if WINE and seen != winacl.ADMINS_AND_SYSTEM:
        pytest.skip(f"Wine 8 does not store file ACLs (it maps a DACL to Unix mode bits; reads back {seen})")
    assert seen == winacl.ADMINS_AND_SYSTEM


# ---------------------------------------------------------------- the lease holds the files


def test_leased_files_cannot_be_replaced_or_deleted_until_release(agent: AgentProcess, tmp_path: Path) -> None:
    status = agent.call("verify", PKG)
    target = Path(status.path, "data.cab")
    original = target.read_bytes()
    other = tmp_path / "other.cab"
    other.write_bytes(b"planted")
    lease = agent.call("acquire", PKG, os.getpid())
    try:
        with pytest.raises(PermissionError):
            os.replace(other, target)
        with pytest.raises(PermissionError):
            os.remove(target)
        with pytest.raises(PermissionError):
            open(target, "r+b").close()
        with pytest.raises(PermissionError):
            os.rename(Path(status.path, "setup.cmd"), tmp_path / "moved.cmd")
        assert target.read_bytes() == original  # reading is not hindered
    finally:
        agent.call("release", lease)
    with open(target, "r+b") as handle:  # released: the files may change again
        head = handle.read(4)
        handle.seek(0)
        handle.write(head)
    assert target.read_bytes() == original


def test_a_file_changed_after_the_check_refuses_the_lease(agent: AgentProcess) -> None:
    status = agent.call("verify", PKG)
    target = Path(status.path, "exit.py")
    data = target.read_bytes()
    time.sleep(0.05)
    target.write_bytes(data)  # same bytes, a new modification time: no longer what was checked
    with pytest.raises(ControlError) as refused:
        agent.call("acquire", PKG, os.getpid())
    assert refused.value.status == 409 and "changed since it was checked" in refused.value.message
    again = agent.call("verify", PKG)  # checked again, whole
    for _ in range(100):
        if again.state == "complete":
            break
        time.sleep(0.2)
        again = agent.call("verify", PKG)
    assert again.state == "complete"
    agent.call("release", agent.call("acquire", PKG, os.getpid()))


def test_a_pin_of_a_file_open_for_writing_elsewhere_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "busy.bin"
    path.write_bytes(b"x")
    with open(path, "r+b"):
        with pytest.raises(OSError, match="cannot hold"):
            hold([path])
    pin = hold([path])
    assert len(pin) == 1
    pin.close()
    os.remove(path)
