"""Torrent metainfo: the validated model, piece/file layout, package identity and signing.

The names below are loaded on first use (PEP 562): the wrapper needs only ``package_id`` (a
regular expression), and importing the package for it must not cost it the model, the layout,
bencode and hashlib (nor typing) at every start.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)

_HOMES = {
    "PackageIdentity": "identity",
    "looks_like_package_id": "package_id",
    "normalize_package_id": "package_id",
    "BLOCK_SIZE": "layout",
    "FileSpan": "layout",
    "Layout": "layout",
    "FileEntry": "model",
    "Info": "model",
    "Metainfo": "model",
    "Signature": "model",
    "encode_torrent": "model",
    "parse_metainfo": "model",
    "read_metainfo": "model",
    "reencode": "model",
}

__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # "X as X": an explicit re-export for type checkers
    from typing import Any

    from p2pdist.metainfo.identity import PackageIdentity as PackageIdentity
    from p2pdist.metainfo.package_id import looks_like_package_id as looks_like_package_id
    from p2pdist.metainfo.package_id import normalize_package_id as normalize_package_id
    from p2pdist.metainfo.layout import BLOCK_SIZE as BLOCK_SIZE
    from p2pdist.metainfo.layout import FileSpan as FileSpan
    from p2pdist.metainfo.layout import Layout as Layout
    from p2pdist.metainfo.model import FileEntry as FileEntry
    from p2pdist.metainfo.model import Info as Info
    from p2pdist.metainfo.model import Metainfo as Metainfo
    from p2pdist.metainfo.model import Signature as Signature
    from p2pdist.metainfo.model import encode_torrent as encode_torrent
    from p2pdist.metainfo.model import parse_metainfo as parse_metainfo
    from p2pdist.metainfo.model import read_metainfo as read_metainfo
    from p2pdist.metainfo.model import reencode as reencode


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value
