"""Verified piece storage: real files (staged, atomically finished, resumable) and twins.

Only pieces whose SHA-1 matched are ever in ``Storage.have``; hashing and disk I/O run in a
thread pool so the event loop never blocks. See base.py for the contract.
"""

from p2pdist.storage.base import PieceCache, Storage, StorageError, default_executor
from p2pdist.storage.files import FileStorage
from p2pdist.storage.memory import MemoryStorage, NullStorage
from p2pdist.storage.verify import piece_matches, sha1, verify_pieces

__all__ = [
    "FileStorage",
    "MemoryStorage",
    "NullStorage",
    "PieceCache",
    "Storage",
    "StorageError",
    "default_executor",
    "piece_matches",
    "sha1",
    "verify_pieces",
]
