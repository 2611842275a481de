"""``p2pdist server init DIR``: a site server's first files, ready to run.

An admin setting up a site server needs four things before the first start: a config, an admin
token (publish and retire), the repository's signing key pair and a place for data and logs.
Writing them by hand is where first runs go wrong (a token in a world-readable file, a Windows
path that breaks TOML, a key pasted with a typo), so one command writes them all, keeps the
secrets readable by their owner alone, refuses to overwrite anything, and prints what to do next.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from p2pdist.config import toml_value
from p2pdist.errors import OutputError

CONFIG_NAME = "site.toml"
TOKEN_NAME = "admin.token"
KEY_NAME = "repository.key"
PUBLIC_KEY_NAME = "repository.pub"


@dataclass(frozen=True)
class InitResult:
    folder: Path
    config: Path
    token: Path
    private_key: Path
    public_key: Path
    public_hex: str
    fingerprint: str


def site_config_text(folder: Path, port: int) -> str:
    """A commented site.toml whose every path lies in ``folder``."""
    return f"""\
# p2pdist site server configuration, written by `p2pdist server init`.
# Every key is optional; a misspelt key is refused with its dotted name.
# Reference: docs/site-server.md.

data_dir = {toml_value(str(folder / "data"))}          # catalogue (SQLite) and torrents/
admin_token_file = {toml_value(str(folder / TOKEN_NAME))}  # publish/retire need this token
public_key_files = [{toml_value(str(folder / PUBLIC_KEY_NAME))}]  # torrents must be signed by this key
log_file = {toml_value(str(folder / "logs" / "server.log"))}   # rotated at 10 MiB, 3 old files kept

# How agents reach this server (their `repository`); published torrents must announce to
# <public_url>/announce. Empty: the URL each publish was sent to.
public_url = ""

# Addresses in no site below get no peers; name a site here to give them one.
default_site = ""

[listen]
host = "0.0.0.0"
port = {port}
# tls_cert = "/path/cert.pem"   # both or neither; agents then use https://
# tls_key = "/path/key.pem"

[page]
refresh = 60   # seconds between the status page's own reloads (no script); 0 = never

# One [[sites]] table per site: PCs only ever meet PCs of their own site.
# [[sites]]
# name = "HQ"
# subnets = ["10.0.0.0/16"]
#
#   [[sites.locations]]          # a branch office inside the site: its PCs meet each other first
#   name = "HQ-floor-1"
#   subnets = ["10.0.1.0/24"]
"""


def init_site(folder: Path, *, port: int = 6969) -> InitResult:
    """Write config, token and key pair into ``folder``; nothing is overwritten."""
    from p2pdist.metainfo.signing import generate_key, key_fingerprint, raw_public_key, write_private_key, write_public_key

    folder = folder.absolute()
    config, token, private_key, public_key = (folder / name for name in (CONFIG_NAME, TOKEN_NAME, KEY_NAME, PUBLIC_KEY_NAME))
    existing = [path for path in (config, token, private_key, public_key) if path.exists()]
    if existing:
        raise OutputError(f"{existing[0]} exists; `server init` never overwrites (choose an empty folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror}") from None
    written: list[Path] = []
    try:
        _write_new(token, secrets.token_urlsafe(32) + "\n", 0o600)
        written.append(token)
        key = generate_key()
        write_private_key(key, private_key)
        written.append(private_key)
        write_public_key(key.public_key(), public_key)
        written.append(public_key)
        _write_new(config, site_config_text(folder, port), 0o644)
        written.append(config)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    raw = raw_public_key(key.public_key())
    return InitResult(folder, config, token, private_key, public_key, raw.hex(), key_fingerprint(raw))


def next_steps(result: InitResult) -> str:
    """What the admin does after init, as commands to paste."""
    return f"""\
wrote {result.config}
      {result.token} (admin token; readable by you alone)
      {result.private_key} (signing key; keep it secret, e.g. off this server)
      {result.public_key} (public key, fingerprint {result.fingerprint})
next:
  1. add your sites and their subnets to {result.config}
  2. start the server:   p2pdist server --config {result.config}
  3. make a package:     p2pdist create PKGDIR -o PKG.torrent --pkg PS100001 --version 1 -t http://SERVER:PORT/announce -w DP_URL --sign-key {result.private_key}
  4. publish it:         p2pdist publish PKG.torrent --server http://SERVER:PORT --token-file {result.token}
  5. agents trust the key: public_keys = ["{result.public_hex}"] in agent.toml"""


def _write_new(path: Path, text: str, mode: int) -> None:
    """Created exclusively, with ``mode`` from the start (POSIX): a token is never left
    world-readable, not even for a moment, and nothing that exists is overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise OutputError(f"{path} exists; `server init` never overwrites") from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
