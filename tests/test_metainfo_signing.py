"""Ed25519 signing of torrents: round trip, every refusal, tamper detection, and libtorrent."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import libtorrent as lt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.bencode import decode_spans, encode
from p2pdist.errors import BencodeError, LocalError, MetainfoError, OutputError, SignatureError
from p2pdist.metainfo import PackageIdentity, Signature, encode_torrent, parse_metainfo, reencode
from p2pdist.metainfo.signing import (
    SignatureStatus,
    generate_key,
    key_fingerprint,
    load_private_key,
    load_public_key,
    parse_public_key,
    raw_public_key,
    require_valid_signature,
    sign_torrent,
    signing_message,
    verify_signature,
    write_private_key,
    write_public_key,
)

PIECE = 16 * 1024
KEY = generate_key()
OTHER = generate_key()
TRUSTED = [raw_public_key(KEY.public_key())]


def package_torrent(package: bytes = b"PS100012", version: int = 3, length: int = 50_000, **top: object) -> bytes:
    pieces = b"".join(hashlib.sha1(b"%d" % i).digest() for i in range(-(-length // PIECE)))
    info = {
        b"files": [{b"length": length - 100, b"path": [b"setup.msi"]}, {b"length": 100, b"path": [b"setup.ini"]}],
        b"name": package,
        b"p2pdist": {b"package": package, b"version": version},
        b"piece length": PIECE,
        b"pieces": pieces,
        b"private": 1,
    }
    document: dict[bytes, object] = {b"announce": b"http://site-server:8000/announce", b"info": info}
    document.update({k.encode(): v for k, v in top.items()})
    return encode(document)


SIGNED = sign_torrent(parse_metainfo(package_torrent()), KEY)


def test_sign_and_verify_round_trip() -> None:
    original = parse_metainfo(package_torrent())
    signed = parse_metainfo(SIGNED)
    assert signed.info_hash == original.info_hash and signed.raw_info == original.raw_info
    assert signed.trackers == original.trackers
    assert signed.signature is not None and signed.signature.public_key == TRUSTED[0]
    assert verify_signature(signed, TRUSTED) is SignatureStatus.VALID
    assert verify_signature(signed, [raw_public_key(OTHER.public_key()), *TRUSTED]) is SignatureStatus.VALID
    require_valid_signature(signed, iter(TRUSTED))  # any iterable of keys
    # Signing again (say after a tracker change) keeps the info-hash and stays valid.
    resigned = parse_metainfo(sign_torrent(signed, KEY))
    assert resigned.info_hash == original.info_hash
    assert verify_signature(resigned, TRUSTED) is SignatureStatus.VALID


def test_signed_message_is_canonical_and_bound_to_identity() -> None:
    meta = parse_metainfo(SIGNED)
    trackers = (("http://site-server:8000/announce",),)
    message = signing_message(meta.info_hash, PackageIdentity("PS100012", 3), trackers)
    assert message == encode(
        {
            b"info-hash": meta.info_hash,
            b"package": b"PS100012",
            b"scheme": b"p2pdist-ed25519-v1",
            b"trackers": [[b"http://site-server:8000/announce"]],
            b"version": 3,
            b"web-seeds": [],
        }
    )
    assert meta.signature is not None
    KEY.public_key().verify(meta.signature.signature, message)
    assert message != signing_message(meta.info_hash, PackageIdentity("PS100012", 4), trackers)
    assert message != signing_message(meta.info_hash, PackageIdentity("PS100013", 3), trackers)


@pytest.mark.parametrize(
    "changes",
    [
        {"trackers": (("http://evil.example/announce",),)},
        {"trackers": ()},
        {"web_seeds": ("http://evil.example/dp/",)},
    ],
    ids=["other tracker", "tracker removed", "web seed added"],
)
def test_edited_trackers_or_web_seeds_break_the_signature(changes: dict[str, object]) -> None:
    edited = parse_metainfo(reencode(parse_metainfo(SIGNED), **changes))
    assert verify_signature(edited, TRUSTED) is SignatureStatus.BAD_SIGNATURE


def test_unsigned() -> None:
    meta = parse_metainfo(package_torrent())
    assert verify_signature(meta, TRUSTED) is SignatureStatus.UNSIGNED
    with pytest.raises(SignatureError, match="unsigned") as caught:
        require_valid_signature(meta, TRUSTED)
    assert caught.value.exit_code == 6 and meta.info_hash_hex in str(caught.value)


def test_untrusted_key() -> None:
    meta = parse_metainfo(sign_torrent(parse_metainfo(package_torrent()), OTHER))
    assert verify_signature(meta, TRUSTED) is SignatureStatus.UNTRUSTED_KEY
    assert verify_signature(meta, []) is SignatureStatus.UNTRUSTED_KEY
    with pytest.raises(SignatureError, match="not trusted"):
        require_valid_signature(meta, TRUSTED)


def test_no_package_identity() -> None:
    info = {b"length": 5, b"name": b"x", b"piece length": PIECE, b"pieces": b"p" * 20}
    meta = parse_metainfo(encode({b"info": info}))
    with pytest.raises(LocalError, match="package identity"):
        sign_torrent(meta, KEY)
    forged = encode_torrent(meta.raw_info, signature=Signature(TRUSTED[0], b"s" * 64))
    assert verify_signature(parse_metainfo(forged), TRUSTED) is SignatureStatus.NO_PACKAGE
    with pytest.raises(SignatureError, match="no package identity"):
        require_valid_signature(parse_metainfo(forged), TRUSTED)


def transplant(signed: bytes, onto: bytes) -> bytes:
    """``onto`` with ``signed``'s signature block: what an attacker who edits the info does."""
    meta, target = parse_metainfo(signed), parse_metainfo(onto)
    return encode_torrent(target.raw_info, trackers=target.trackers, signature=meta.signature)


@pytest.mark.parametrize(
    "forged",
    [
        package_torrent(package=b"PS100013"),  # another package id, same length
        package_torrent(version=4),  # another version
        package_torrent(version=30),  # another version, one byte longer
        package_torrent(length=50_001),  # other content
    ],
    ids=["package id", "version", "version length", "content"],
)
def test_changed_info_breaks_the_signature(forged: bytes) -> None:
    meta = parse_metainfo(transplant(SIGNED, forged))
    assert meta.info_hash != parse_metainfo(SIGNED).info_hash
    assert verify_signature(meta, TRUSTED) is SignatureStatus.BAD_SIGNATURE
    with pytest.raises(SignatureError, match="does not verify"):
        require_valid_signature(meta, TRUSTED)


def spans_of(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """Byte ranges of the info dictionary and of the 64 signature bytes."""
    _, spans = decode_spans(data)
    sig_end = spans[b"p2pdist"][1] - 1  # the signature is the last value of the p2pdist dict
    return spans[b"info"], (sig_end - 64, sig_end)


def test_flipped_signature_byte_is_bad_signature() -> None:
    _, (start, end) = spans_of(SIGNED)
    for index in (start, start + 31, end - 1):
        data = bytearray(SIGNED)
        data[index] ^= 0x01
        assert verify_signature(parse_metainfo(bytes(data)), TRUSTED) is SignatureStatus.BAD_SIGNATURE


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_flipped_byte_in_info_or_signature_never_verifies(data: st.DataObject) -> None:
    (info_start, info_end), (sig_start, sig_end) = spans_of(SIGNED)
    index = data.draw(st.integers(info_start, info_end - 1) | st.integers(sig_start, sig_end - 1))
    mask = data.draw(st.integers(1, 255))
    tampered = bytearray(SIGNED)
    tampered[index] ^= mask
    try:
        meta = parse_metainfo(bytes(tampered))
    except (BencodeError, MetainfoError):
        return  # refused before any trust decision
    if index < info_end:
        assert meta.info_hash != parse_metainfo(SIGNED).info_hash
    # A flip inside the info's "p2pdist" key drops the package identity: refused as NO_PACKAGE.
    assert verify_signature(meta, TRUSTED) in (SignatureStatus.BAD_SIGNATURE, SignatureStatus.NO_PACKAGE)
    with pytest.raises(SignatureError):
        require_valid_signature(meta, TRUSTED)


def test_flipped_key_byte_is_untrusted() -> None:
    _, (sig_start, _) = spans_of(SIGNED)
    key_end = sig_start - len(b"9:signature64:")
    data = bytearray(SIGNED)
    data[key_end - 1] ^= 0x80
    assert verify_signature(parse_metainfo(bytes(data)), TRUSTED) is SignatureStatus.UNTRUSTED_KEY


def test_libtorrent_loads_a_signed_torrent_with_the_same_info_hash(tmp_path: Path) -> None:
    meta = parse_metainfo(SIGNED)
    for info in (lt.torrent_info(lt.bdecode(SIGNED)), lt.torrent_info(SIGNED)):
        assert bytes(info.info_hashes().v1.to_bytes()) == meta.info_hash
        assert str(info.info_hash()) == meta.info_hash_hex
        assert info.name() == "PS100012" and info.num_files() == 2 and info.total_size() == 50_000
        assert info.num_pieces() == meta.info.num_pieces and info.priv()
        assert [info.hash_for_piece(i) for i in range(info.num_pieces())] == [
            meta.info.piece_hash(i) for i in range(meta.info.num_pieces)
        ]
    path = tmp_path / "signed.torrent"
    path.write_bytes(SIGNED)
    assert str(lt.torrent_info(str(path)).info_hash()) == meta.info_hash_hex


# ---------------------------------------------------------------------------------------------
# key files


def test_private_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "repo.key"
    write_private_key(KEY, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_private_key(path)
    assert raw_public_key(loaded.public_key()) == TRUSTED[0]
    with pytest.raises(OutputError, match="already exists"):
        write_private_key(OTHER, path)
    assert raw_public_key(load_private_key(path).public_key()) == TRUSTED[0]  # not overwritten
    with pytest.raises(OutputError, match="cannot write signing key"):
        write_private_key(KEY, tmp_path / "missing" / "repo.key")


def test_public_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "repo.pub"
    write_public_key(KEY.public_key(), path)
    assert path.read_text() == TRUSTED[0].hex() + "\n"
    assert load_public_key(path) == TRUSTED[0]
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert parse_public_key(pem.decode()) == TRUSTED[0]
    assert parse_public_key("  " + TRUSTED[0].hex().upper() + "\n") == TRUSTED[0]
    assert key_fingerprint(TRUSTED[0]) == TRUSTED[0][:8].hex()
    with pytest.raises(OutputError):
        write_public_key(KEY.public_key(), tmp_path / "missing" / "repo.pub")


def test_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="cannot read signing key"):
        load_private_key(tmp_path / "absent.key")
    with pytest.raises(LocalError, match="cannot read public key"):
        load_public_key(tmp_path / "absent.pub")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(LocalError, match="not an unencrypted PEM private key"):
        load_private_key(garbage)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    )
    with pytest.raises(LocalError, match="not an unencrypted PEM private key"):
        load_private_key(encrypted)
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    wrong = tmp_path / "ecdsa.key"
    wrong.write_bytes(ecdsa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(LocalError, match="not an Ed25519 key"):
        load_private_key(wrong)
    ecdsa_pub = ecdsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(LocalError, match="not Ed25519"):
        parse_public_key(ecdsa_pub.decode())
    for text, message in (
        ("abcd", "32 bytes"),
        ("zz" * 32, "neither 64 hex digits nor PEM"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "malformed PEM"),
    ):
        with pytest.raises(LocalError, match=message):
            parse_public_key(text)
