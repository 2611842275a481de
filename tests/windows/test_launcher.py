"""The C launchers of the bundle, by themselves: what python receives and what the parent gets back.

The launcher and the bundle's python are unpacked beside a stand-in ``p2pdist`` package (its
``._pth`` points there instead of lib/) that reports its raw command line, sys.orig_argv and
sys._xoptions and exits with the code it is told to, so the launcher is checked alone.
Runs where scripts/test-windows-bundle hands over the bundle (P2PDIST_WIN_BUNDLE).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

import lane

BUNDLE = os.environ.get("P2PDIST_WIN_BUNDLE", "")
pytestmark = pytest.mark.skipif(not BUNDLE, reason="needs the bundle: run by scripts/test-windows-bundle")

REPORTER = """\
import ctypes, json, sys
line = ctypes.windll.kernel32.GetCommandLineW
line.restype = ctypes.c_wchar_p
print(json.dumps({"raw": line(), "orig": sys.orig_argv, "argv": sys.argv, "x": sys._xoptions, "path": sys.path}))
sys.stdout.flush()
code = int(sys.argv[sys.argv.index("--exit") + 1]) if "--exit" in sys.argv else 0
ctypes.windll.kernel32.ExitProcess.argtypes = [ctypes.c_uint]
ctypes.windll.kernel32.ExitProcess(code & 0xFFFFFFFF)
"""


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("launcher") / "with space"
    with zipfile.ZipFile(BUNDLE) as bundle:
        for name in bundle.namelist():
            if name.startswith("python/") or name.endswith(".exe"):
                bundle.extract(name, root)
    fake = root / "fake"
    for module in ("p2pdist", "p2pdist/wrapper"):
        (fake / module).mkdir(parents=True)
        (fake / module / "__init__.py").write_text("")
    (fake / "p2pdist" / "wrapper" / "__main__.py").write_text(REPORTER)
    (fake / "p2pdist" / "__main__.py").write_text(REPORTER)
    pth = next((root / "python").glob("python3*._pth"))
    pth.write_text("python312.zip\r\n.\r\n..\\fake\r\n")
    return root


def launch(exe: Path, tail: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    """Start ``exe`` with ``tail`` after its quoted name, as one command-line string."""
    result = lane.run(f'"{exe}" {tail}', text=True, timeout=120, **kwargs)
    report = json.loads(result.stdout.splitlines()[0]) if result.stdout.strip() else {}
    return result.returncode, report


TAILS = [
    '--pkg PS100012 msiexec /i "app 1.msi" TRANSFORMS="c:\\t\\a b.mst" PROP="x y" /qn',
    '--pkg PS100012 setup.exe "C:\\Program Files\\x\\" /s  trailing  ',
    'cmd /c "echo ""quoted"" & exit 3"',
    '--pkg PS100012 x\\"y a\\\\"b c" \t tab',
]


@pytest.mark.parametrize("tail", TAILS)
def test_the_tail_reaches_python_verbatim(layout: Path, tail: str) -> None:
    code, report = launch(layout / "p2pdist-wrapper.exe", tail)
    assert code == 0, report
    raw = str(report["raw"])
    head = f'"{layout / "python" / "python.exe"}" -I -m p2pdist.wrapper '
    assert raw == head + tail  # not re-split, not re-quoted: msiexec sees what SMS passed
    assert report["orig"][1:4] == ["-I", "-m", "p2pdist.wrapper"]  # type: ignore[index]
    assert report["x"] == {}  # a 64-bit parent: the native view


def test_the_exit_code_arrives_whole(layout: Path) -> None:
    for code in (0, 1, 1618, 3010, 1641, 0x80070643, 0xFFFFFFFF):
        got, _ = launch(layout / "p2pdist-wrapper.exe", f"--exit {code}")
        assert got == code


def test_p2pdist_exe_starts_the_cli_module(layout: Path) -> None:
    code, report = launch(layout / "p2pdist.exe", "status --json --exit 5")
    assert code == 5
    assert report["orig"][1:4] == ["-I", "-m", "p2pdist"]  # type: ignore[index]
    assert report["argv"][1:] == ["status", "--json", "--exit", "5"]  # type: ignore[index]


def test_the_working_directory_cannot_put_code_on_sys_path(layout: Path, tmp_path: Path) -> None:
    planted = tmp_path / "p2pdist" / "wrapper"
    planted.mkdir(parents=True)
    (tmp_path / "p2pdist" / "__init__.py").write_text("")
    (planted / "__main__.py").write_text("raise SystemExit(99)\n")
    code, report = launch(layout / "p2pdist-wrapper.exe", "--exit 7", cwd=tmp_path)
    assert code == 7 and str(tmp_path) not in report["path"]  # type: ignore[operator]


def test_without_python_beside_it_one_line_and_the_internal_code(layout: Path, tmp_path: Path) -> None:
    alone = tmp_path / "p2pdist-wrapper.exe"
    shutil.copyfile(layout / "p2pdist-wrapper.exe", alone)
    result = lane.run([str(alone), "--pkg", "PS100012", "x"], text=True, timeout=60)
    if result.returncode == 0:  # an installed p2pdist answered through the registry
        pytest.skip("p2pdist is installed on this machine: the registry names its python")
    assert result.returncode == 7704
    assert len(result.stderr.strip().splitlines()) == 1 and "python" in result.stderr


CALLER32 = os.environ.get("P2PDIST_WIN_CALLER32", "")
needs_caller32 = pytest.mark.skipif(
    not CALLER32, reason=f"no 32-bit caller: {os.environ.get('P2PDIST_WIN_NO_CALLER32') or 'run by scripts/test-windows-bundle'}"
)


@needs_caller32
def test_a_32bit_caller_gets_the_32bit_view_and_its_exit_code_whole(layout: Path) -> None:
    """Started by a 32-bit process as the SMS client starts it (tests/windows/caller32.c): the
    launcher sees a WOW64 parent and tells python so; a 64-bit parent (the tests above) does not."""
    tail = '--pkg PS100012 msiexec /i "app 1.msi" /qn --exit 3010'
    result = lane.run(f'"{CALLER32}" "{layout / "p2pdist-wrapper.exe"}" {tail}', text=True, timeout=120)
    assert result.returncode == 3010, result.stdout + result.stderr
    report = json.loads(result.stdout.splitlines()[0])
    assert report["x"] == {"p2pdist-view": "32"}
    assert str(report["raw"]).endswith(" -I -X p2pdist-view=32 -m p2pdist.wrapper " + tail)


def test_the_view_option_reaches_the_wrapper(layout: Path) -> None:
    """What the launcher passes for a 32-bit caller is what bitness.caller_view reads."""
    python = layout / "python" / "python.exe"
    code = "import sys; from p2pdist.wrapper.bitness import caller_view; print(caller_view())"
    root = Path(__file__).resolve().parents[2]
    result = lane.run(
        # -B: -I ignores the lane's PYTHONPYCACHEPREFIX, and no bytecode may land in the checkout.
        [str(python), "-I", "-B", "-X", "p2pdist-view=32", "-c", f"import sys; sys.path.insert(0, {str(root)!r}); {code}"],
        text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "32", result.stderr
