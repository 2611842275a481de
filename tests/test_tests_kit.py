"""The test kit's own rules, and checks of its helpers.

Helpers live in tests/support/ (one module per job) and shared fixtures in tests/conftest.py;
no test module imports another, so a test file can be renamed, split or deleted without
breaking a second one. A test file is named ``test_<package>_<capability>.py`` after the
p2pdist package it tests, so the tests of a package sit together and a newcomer finds them.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

from p2pdist.metainfo import PackageIdentity, parse_metainfo
from p2pdist.metainfo.signing import SignatureStatus, verify_signature
from p2pdist.storage.verify import piece_matches
from tests.support.agents import PUBLIC_HEX as AGENT_KEY_HEX
from tests.support.agents import agent_settings, make_package
from tests.support.modules import PACKAGE_ROOT
from tests.support.ports import free_port
from tests.support.siteserver import PUBLIC_HEX, info_hash_of, signed_torrent
from tests.support.storage import MULTI_FILES, PIECE, piece_of
from tests.support.torrents import Pad, content, make_torrent

TESTS = Path(__file__).resolve().parent
SOURCES = sorted(TESTS.rglob("*.py"))
# Besides the product's packages and modules: "p2pdist" checks the whole package (layers, lint,
# start-up imports), "interop" runs p2pdist against other products, "benchmarks" checks the
# benchmark harness, "tests" this kit.
WHOLE = {"p2pdist", "interop", "benchmarks", "tests"}


def is_test_module(name: str) -> bool:
    """Whether a dotted import target names a test module (``test_x``, ``tests.test_x``, ...)."""
    return any(part.startswith("test_") for part in name.split("."))


def imported_test_modules(path: Path) -> list[str]:
    """The test modules ``path`` imports, by the name it imports them under."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from . import test_x" or "from .test_x import y"
                target = node.module or ""
                found += [f"{'.' * node.level}{target}"] if is_test_module(target) else []
                found += [f"{'.' * node.level}{alias.name}" for alias in node.names if not target and is_test_module(alias.name)]
            elif node.module and is_test_module(node.module):
                found.append(node.module)
            elif node.module in ("tests", "tests.windows"):
                found += [f"{node.module}.{alias.name}" for alias in node.names if is_test_module(alias.name)]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(TESTS)))
def test_no_module_imports_a_test_module(path: Path) -> None:
    assert imported_test_modules(path) == [], "move what is shared into tests/support/<job>.py (fixtures: tests/conftest.py)"


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import test_a\nimport tests.test_b as b\nfrom test_c import x\nfrom tests.test_d import y\n"
        "from tests import test_e\nfrom . import test_f\nfrom .test_g import z\n"
        "def inner():\n    from test_h import w\n"
        "import tests.support.agents\nfrom tests.support.torrents import make_torrent\nfrom p2pdist.metainfo import x\n"
    )
    assert imported_test_modules(probe) == ["test_a", "tests.test_b", "test_c", "tests.test_d", "tests.test_e", ".test_f", ".test_g", "test_h"]


def test_helpers_live_in_support_and_conftest_only() -> None:
    """Beside test modules, tests/ holds conftest.py and the folders; no loose helper module."""
    loose = [path.name for path in TESTS.glob("*.py") if path.name != "conftest.py" and not path.name.startswith("test_")]
    assert loose == []
    assert not [path for path in (TESTS / "support").glob("test_*.py")], "tests/support/ holds helpers, not tests"


def packages() -> set[str]:
    """p2pdist's top-level packages and modules, the names a test file starts with."""
    names = {path.name for path in PACKAGE_ROOT.iterdir() if (path / "__init__.py").is_file()}
    names |= {path.stem for path in PACKAGE_ROOT.glob("*.py") if not path.stem.startswith("__")}
    return names | WHOLE


def misnamed(names: list[str], known: set[str]) -> list[str]:
    """The file names that are not ``test_<known>_<capability>.py``."""
    bad = []
    for name in names:
        stem = name.removeprefix("test_").removesuffix(".py")
        if not any(stem.startswith(package + "_") and len(stem) > len(package) + 1 for package in known):
            bad.append(name)
    return bad


def test_test_files_are_named_after_the_package_they_test() -> None:
    names = sorted(path.name for path in TESTS.glob("test_*.py"))
    assert misnamed(names, packages()) == []
    assert {"engine", "piece_picker", "tracker", "wire"} <= packages()


def test_the_name_check_refuses_what_it_should() -> None:
    known = {"engine", "piece_picker", "tracker"}
    names = ["test_engine_swarm.py", "test_piece_picker_choker.py", "test_picker.py", "test_engine.py", "test_server_cli.py"]
    assert misnamed(names, known) == ["test_picker.py", "test_engine.py", "test_server_cli.py"]


# The helpers themselves.


def test_one_builder_makes_pads_single_files_and_real_hashes() -> None:
    raw, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    assert parse_metainfo(raw) == meta and meta.info.private and meta.info.total_length == len(data)
    assert [(e.relpath, e.pad) for e in meta.info.files] == [
        (f"pkg/{path}", isinstance(body, Pad)) for path, body in MULTI_FILES.items()
    ]
    assert all(piece_matches(meta.info, i, piece_of(meta.info, data, i)) for i in range(meta.info.num_pieces))
    _, single = make_torrent({"x.msi": b"abc"}, name="x.msi", single=True, private=False)
    assert not single.info.multi_file and not single.info.private and single.info.total_length == 3


def test_make_package_is_signed_private_and_two_files() -> None:
    package = make_package("PS100012", 3, 100_000, announce="http://127.0.0.1:1/announce")
    meta = parse_metainfo(package.torrent)
    assert verify_signature(meta, [bytes.fromhex(AGENT_KEY_HEX)]) is SignatureStatus.VALID
    assert meta.info.private and meta.info.package == PackageIdentity("PS100012", 3)
    assert [e.relpath for e in meta.info.files] == ["PS100012/setup.exe", "PS100012/data/payload.bin"]
    assert len(package.data) == 100_000


def test_agent_settings_are_isolated(tmp_path: Path) -> None:
    a = agent_settings(tmp_path, 1, "http://127.0.0.1:1", tmp_path)
    b = agent_settings(tmp_path, 2, "http://127.0.0.1:1", tmp_path)
    assert a.cache_dir != b.cache_dir and a.engine.bind_host != b.engine.bind_host
    assert a.control.address != b.control.address


def test_signed_torrent_is_valid_and_deterministic() -> None:
    torrent = signed_torrent("PS100099", 4)
    meta = parse_metainfo(torrent)
    assert meta.info.package == PackageIdentity("PS100099", 4)
    assert verify_signature(meta, [bytes.fromhex(PUBLIC_HEX)]) is SignatureStatus.VALID
    assert info_hash_of(signed_torrent("PS100099", 4)) == meta.info_hash


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536
