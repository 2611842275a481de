"""Ed25519 signatures that tie a torrent to the site's repository.

The signature covers a small canonical message, the info-hash plus the package identity, and
lives in a top-level ``p2pdist`` dictionary outside ``info``, so stock clients load the torrent
unchanged and the info-hash does not depend on who signed it. The agent trusts a torrent only if
``verify_signature`` returns VALID for one of its configured keys; everything else is a reason
to refuse, never a warning.

cryptography itself (its Rust core holds a copy of OpenSSL: 7 MiB resident) is imported by the
functions that sign, verify or make keys, not with this module: reading raw trusted keys (an
agent's or a site server's settings) and the commands that neither sign nor verify do not load
it. Its PEM serialization (3 MiB more: RSA, DSA, EC, SSH formats) is imported only by the
functions that read or write PEM.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from p2pdist import bencode
from p2pdist.config import ConfigError
from p2pdist.errors import LocalError, OutputError, SignatureError
from p2pdist.metainfo.identity import PackageIdentity
from p2pdist.metainfo.model import Metainfo, Signature, reencode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SCHEME = b"p2pdist-ed25519-v1"


class SignatureStatus(enum.Enum):
    VALID = "valid"
    UNSIGNED = "unsigned"
    NO_PACKAGE = "signed torrent carries no package identity"
    UNTRUSTED_KEY = "signed by a key that is not trusted"
    BAD_SIGNATURE = "signature does not verify (torrent modified or forged)"


def signing_message(
    info_hash: bytes,
    package: PackageIdentity,
    trackers: tuple[tuple[str, ...], ...] = (),
    web_seeds: tuple[str, ...] = (),
) -> bytes:
    """The exact bytes that are signed; canonical bencoding leaves no ambiguity.

    Trackers and web seeds are signed too: they are outside the info dictionary, and an edited
    announce or url-list would send every agent to another server.
    """
    return bencode.encode(
        {
            b"info-hash": info_hash,
            b"package": package.package_id,
            b"scheme": SCHEME,
            b"trackers": [list(tier) for tier in trackers],
            b"version": package.version,
            b"web-seeds": list(web_seeds),
        }
    )


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def key_fingerprint(public_key: bytes) -> str:
    """A short printable name for a key (hex of its first 8 bytes)."""
    return public_key[:8].hex()


def sign_torrent(meta: Metainfo, private_key: Ed25519PrivateKey) -> bytes:
    """Torrent bytes for ``meta`` with a signature block added; the info bytes are untouched."""
    if meta.info.package is None:
        raise LocalError("only torrents with a package identity (--pkg, --version) can be signed")
    message = signing_message(meta.info_hash, meta.info.package, meta.trackers, meta.web_seeds)
    signature = Signature(raw_public_key(private_key.public_key()), private_key.sign(message))
    return reencode(meta, signature=signature)


def verify_signature(meta: Metainfo, trusted_keys: Iterable[bytes]) -> SignatureStatus:
    """Check ``meta``'s signature against raw 32-byte trusted public keys."""
    if meta.signature is None:
        return SignatureStatus.UNSIGNED
    if meta.info.package is None:
        return SignatureStatus.NO_PACKAGE
    if meta.signature.public_key not in set(trusted_keys):
        return SignatureStatus.UNTRUSTED_KEY
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(meta.signature.public_key)
    try:
        key.verify(meta.signature.signature, signing_message(meta.info_hash, meta.info.package, meta.trackers, meta.web_seeds))
    except InvalidSignature:
        return SignatureStatus.BAD_SIGNATURE
    return SignatureStatus.VALID


def require_valid_signature(meta: Metainfo, trusted_keys: Iterable[bytes]) -> None:
    """Raise SignatureError with the reason unless ``meta`` is validly signed by a trusted key."""
    status = verify_signature(meta, trusted_keys)
    if status is not SignatureStatus.VALID:
        raise SignatureError(f"torrent {meta.info.name!r} ({meta.info_hash_hex}): {status.value}")


def generate_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """PKCS#8 PEM, created with mode 0600 so no other user can read it."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    except FileExistsError:
        raise OutputError(f"signing key {path} already exists; not overwriting it") from None
    except OSError as exc:
        raise OutputError(f"cannot write signing key {path}: {exc.strerror}") from None


def write_public_key(key: Ed25519PublicKey, path: Path) -> None:
    try:
        Path(path).write_text(raw_public_key(key).hex() + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write public key {path}: {exc.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LocalError(f"cannot read signing key {path}: {exc.strerror}") from None
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise LocalError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LocalError(f"{path} is not an Ed25519 key")
    return key


def parse_public_key(text: str) -> bytes:
    """A public key as 64 hex digits (what ``p2pdist keygen`` writes) or a PEM block."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise LocalError("malformed PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise LocalError("public key is not Ed25519")
        return raw_public_key(key)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise LocalError("public key is neither 64 hex digits nor PEM") from None
    if len(raw) != 32:
        raise LocalError("public key must be 32 bytes (64 hex digits)")
    return raw


def trusted_keys(texts: Iterable[str], files: Iterable[Path]) -> tuple[bytes, ...]:
    """The raw keys a settings file trusts (inline texts, then key files); the error names the
    setting (``public_keys[1]``, ``public_key_files``) so a typo is one clear line."""
    keys = []
    for index, text in enumerate(texts):
        try:
            keys.append(parse_public_key(text))
        except LocalError as exc:
            raise ConfigError(f"public_keys[{index}]: {exc}") from None
    for path in files:
        try:
            keys.append(load_public_key(path))
        except LocalError as exc:
            raise ConfigError(f"public_key_files: {exc}") from None
    return tuple(keys)


def load_public_key(path: Path) -> bytes:
    try:
        return parse_public_key(Path(path).read_text())
    except OSError as exc:
        raise LocalError(f"cannot read public key {path}: {exc.strerror}") from None
