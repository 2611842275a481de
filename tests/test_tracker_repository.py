"""The signed torrent repository: the class on its own, then its HTTP API on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pdist.errors import SignatureError
from p2pdist.metainfo import encode_torrent, parse_metainfo
from p2pdist.metainfo.model import Signature, reencode
from p2pdist.metainfo.signing import generate_key
from p2pdist.tracker.repository import Repository, RepositoryError
from tests.support.siteserver import (
    PUBLIC_HEX,
    TOKEN,
    info_dict,
    info_hash_of,
    make_settings,
    publish,
    running,
    session_from,
    signed_torrent,
)

KEYS = (bytes.fromhex(PUBLIC_HEX),)
ANNOUNCE = "http://127.0.0.1/announce"  # what signed_torrent() names


def tampered(torrent: bytes) -> bytes:
    meta = parse_metainfo(torrent)
    assert meta.signature is not None
    bad = bytes([meta.signature.signature[0] ^ 1]) + meta.signature.signature[1:]
    return reencode(meta, signature=Signature(meta.signature.public_key, bad))


def test_publish_verifies_signature_and_identity(tmp_path: Path) -> None:
    repo = Repository(tmp_path, KEYS)
    torrent = signed_torrent("PS100012", 1)
    record, created = repo.publish(torrent, 100.0, announce_url=ANNOUNCE)
    assert created and (record.package_id, record.version, record.name) == ("PS100012", 1, "office.msi")
    assert repo.is_tracked(info_hash_of(torrent))
    assert repo.publish(torrent, 200.0, announce_url=ANNOUNCE) == (record, False)  # idempotent
    with pytest.raises(SignatureError, match="does not verify"):
        repo.publish(tampered(signed_torrent("PS100012", 2)), 100.0, announce_url=ANNOUNCE)
    with pytest.raises(SignatureError, match="not trusted"):
        repo.publish(signed_torrent("PS100012", 3, key=generate_key()), 100.0, announce_url=ANNOUNCE)
    raw_info, _ = info_dict("plain", "PS100012", 4)
    with pytest.raises(SignatureError, match="unsigned"):
        repo.publish(encode_torrent(raw_info), 100.0, announce_url=ANNOUNCE)
    with pytest.raises(RepositoryError, match="not a valid torrent") as info:
        repo.publish(b"d4:infoi3ee", 100.0, announce_url=ANNOUNCE)
    assert info.value.status == 422
    with pytest.raises(RepositoryError, match="another info-hash") as info:
        repo.publish(signed_torrent("PS100012", 1, name="other.msi"), 100.0, announce_url=ANNOUNCE)
    assert info.value.status == 409
    assert [r.version for r in repo.packages()] == [1]
    assert [p.name for p in (tmp_path / "torrents").iterdir()] == [f"{record.info_hash}.torrent"]


def test_versions_retire_and_second_instance_follows(tmp_path: Path) -> None:
    repo = Repository(tmp_path, KEYS)
    other = Repository(tmp_path, KEYS)  # another server process sharing the data folder
    v1, v2 = signed_torrent("PS100012", 1), signed_torrent("PS100012", 2)
    repo.publish(v1, 1.0, announce_url=ANNOUNCE)
    repo.publish(v2, 2.0, announce_url=ANNOUNCE)
    assert repo.find("PS100012").version == 2 and repo.find("PS100012", 1).version == 1
    assert other.refresh() and other.is_tracked(info_hash_of(v1)) and other.is_tracked(info_hash_of(v2))
    assert not other.refresh()  # nothing new
    retired = repo.retire("ps100012", 2, 3.0)
    assert [r.version for r in retired] == [2] and retired[0].retired
    assert repo.find("PS100012").version == 1 and repo.find("PS100012", 2) is None
    assert other.refresh() and not other.is_tracked(info_hash_of(v2))
    with pytest.raises(RepositoryError, match="no published package") as info:
        repo.retire("PS100012", 2, 4.0)
    assert info.value.status == 404
    repo.publish(v2, 5.0, announce_url=ANNOUNCE)  # publishing the same torrent again brings it back
    assert repo.find("PS100012").version == 2
    assert [r.version for r in repo.retire("PS100012", None, 6.0)] == [2, 1]
    assert repo.packages() == [] and len(repo.packages(include_retired=True)) == 2


# ------------------------------------------------------------------------------ over HTTP


async def test_publish_api_authentication_and_signature(tmp_path: Path) -> None:
    torrent = signed_torrent("PS100012", 1)
    async with running(make_settings(tmp_path)) as server:
        async with session_from() as session:
            response = await session.post(server.url + "/api/packages", data=torrent)
            assert response.status == 401 and "admin token required" in (await response.json())["error"]
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await publish(server, torrent, token="wrong")).status == 403
        bad = await publish(server, tampered(torrent))
        assert bad.status == 422
        assert (await publish(server, b"not a torrent at all")).status == 422
        assert (await publish(server, torrent)).status == 201
        assert (await publish(server, torrent)).status == 200
        assert (await publish(server, signed_torrent("PS100012", 1, name="x.msi"))).status == 409
        async with session_from() as session:
            async with session.get(server.url + "/api/packages") as response:
                listed = (await response.json())["packages"]
        assert [(p["package"], p["version"], p["info_hash"]) for p in listed] == [
            ("PS100012", 1, info_hash_of(torrent).hex())
        ]
    async with running(make_settings(tmp_path / "no-admin", admin_token="")) as server:
        response = await publish(server, torrent)
        assert response.status == 403
    async with running(make_settings(tmp_path / "no-key", public_keys=())) as server:
        assert (await publish(server, torrent)).status == 503


async def test_fetch_versions_retire_and_report(tmp_path: Path) -> None:
    v1, v2 = signed_torrent("PS100012", 1), signed_torrent("PS100012", 2)
    async with running(make_settings(tmp_path)) as server:
        await publish(server, v1)
        await publish(server, v2)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with session_from("127.1.0.5") as session:

            async def get(path: str) -> tuple[int, bytes]:
                async with session.get(server.url + path) as response:
                    return response.status, await response.read()

            assert await get("/packages/PS100012.torrent") == (200, v2)
            assert await get("/packages/ps100012.torrent") == (200, v2)
            assert await get("/packages/PS100012/1.torrent") == (200, v1)
            assert (await get("/packages/PS100012/3.torrent"))[0] == 404
            assert (await get("/packages/PS100099.torrent"))[0] == 404
            async with session.post(server.url + "/api/packages/PS100012/retire", json={"version": 2}) as r:
                assert r.status == 401
            async with session.post(server.url + "/api/packages/PS100012/retire", json={"version": 2}, headers=auth) as r:
                assert r.status == 200 and [p["version"] for p in (await r.json())["retired"]] == [2]
            async with session.post(server.url + "/api/packages/PS100012/retire", data=b"{", headers=auth) as r:
                assert r.status == 400
            async with session.post(server.url + "/api/packages/BAD/retire", headers=auth) as r:
                assert r.status == 400 and "PackageID" in (await r.json())["error"]
            assert await get("/packages/PS100012.torrent") == (200, v1)
            assert (await get("/packages/PS100012/2.torrent"))[0] == 404
            report = {"info_hash": info_hash_of(v1).hex(), "package": "PS100012", "version": 1,
                      "from_peers": 30_000, "from_webseed": 10_000, "uploaded": 0, "completed": True}  # fmt: skip
            async with session.post(server.url + "/api/report", json=report) as r:
                assert r.status == 200 and (await r.json())["site"] == "Branch"
            async with session.post(server.url + "/api/report", data=b"x" * 100_000) as r:
                assert r.status == 413
            async with session.post(server.url + "/api/report", data=b"{not json") as r:
                assert r.status == 400 and "not JSON" in (await r.json())["error"]
            async with session.post(server.url + "/api/report", json={**report, "version": 2}) as r:
                assert r.status == 404
            status, page = await get("/")
            assert status == 200 and b"PS100012" in page and b"Branch" in page and b"75%" in page
