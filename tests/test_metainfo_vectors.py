"""The committed .torrent vectors: hostile ones fail with their documented error, valid ones
parse to known facts (info-hash also checked with libtorrent), and the files are exactly what
tests/vectors/make_torrent_vectors.py writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import libtorrent as lt
import pytest

from p2pdist import errors
from p2pdist.errors import RemoteError
from p2pdist.metainfo import Layout, PackageIdentity, parse_metainfo, read_metainfo
from p2pdist.metainfo.signing import SignatureStatus, verify_signature

VECTORS = Path(__file__).parent / "vectors"
TORRENTS = VECTORS / "torrents"
MANIFEST: dict[str, Any] = json.loads((TORRENTS / "expected.json").read_text(encoding="utf-8"))


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_torrent_vectors", VECTORS / "make_torrent_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_lists_every_vector() -> None:
    on_disk = {path.name for path in TORRENTS.glob("*.torrent")}
    assert on_disk == set(MANIFEST["valid"]) | set(MANIFEST["invalid"])
    assert not set(MANIFEST["valid"]) & set(MANIFEST["invalid"])
    assert len(MANIFEST["invalid"]) >= 25
    assert {e["error"] for e in MANIFEST["invalid"].values()} == {"BencodeError", "MetainfoError"}


def test_vectors_are_reproducible() -> None:
    files, manifest = load_generator().build()
    assert manifest == MANIFEST
    for name, data in files.items():
        assert (TORRENTS / name).read_bytes() == data, f"{name} differs from what the generator writes"
    assert (TORRENTS / "expected.json").read_text(encoding="utf-8") == load_generator().manifest_text(manifest)


@pytest.mark.parametrize("name", sorted(MANIFEST["invalid"]))
def test_hostile_vector_fails_with_its_error(name: str) -> None:
    expected = MANIFEST["invalid"][name]
    error_class = getattr(errors, expected["error"])
    for parse in (lambda: parse_metainfo((TORRENTS / name).read_bytes()), lambda: read_metainfo(str(TORRENTS / name))):
        with pytest.raises(RemoteError) as caught:
            parse()
        assert type(caught.value) is error_class, f"{name}: {type(caught.value).__name__}: {caught.value}"
        assert expected["message"] in str(caught.value)
        if "offset" in expected:
            assert caught.value.offset == expected["offset"]  # type: ignore[attr-defined]
            assert str(caught.value).endswith(f"at byte {expected['offset']}")


@pytest.mark.parametrize("name", sorted(MANIFEST["valid"]))
def test_valid_vector_parses_to_known_facts(name: str) -> None:
    facts = MANIFEST["valid"][name]
    data = (TORRENTS / name).read_bytes()
    meta = read_metainfo(str(TORRENTS / name))
    assert meta == parse_metainfo(data)
    assert meta.info_hash_hex == facts["info_hash"]
    assert [[list(f.path), f.length, f.pad] for f in meta.info.files] == facts["files"]
    assert [list(tier) for tier in meta.trackers] == facts["trackers"]
    assert list(meta.web_seeds) == facts["web_seeds"]
    assert meta.info.private is facts.get("private", False)
    assert meta.comment == facts.get("comment")
    package = facts.get("package")
    assert meta.info.package == (PackageIdentity(*package) if package else None)
    if "signed_by" in facts:
        key = bytes.fromhex(facts["signed_by"])
        assert verify_signature(meta, [key]) is SignatureStatus.VALID
        assert verify_signature(meta, [bytes(32)]) is SignatureStatus.UNTRUSTED_KEY
    else:
        assert verify_signature(meta, [bytes(32)]) is SignatureStatus.UNSIGNED
    layout = Layout(meta.info)
    assert sum(layout.piece_size(i) for i in range(layout.num_pieces)) == meta.info.total_length

    # libtorrent reads the same torrent the same way.
    params = lt.load_torrent_buffer(data)
    info = params.ti
    assert str(info.info_hashes().v1) == facts["info_hash"]
    assert info.total_size() == meta.info.total_length
    assert info.num_pieces() == meta.info.num_pieces
    assert info.num_files() == len(meta.info.files)
    assert info.priv() == meta.info.private
    assert list(params.trackers) == list(meta.tracker_urls)
    assert list(params.url_seeds) == list(meta.web_seeds)
