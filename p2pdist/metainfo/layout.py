"""Mapping between the torrent's byte stream (pieces, blocks) and its files.

A piece may span several files and a file several pieces; storage and the web seed both ask
"which file ranges make up bytes [offset, offset+length)?". Lookups bisect the file offsets, so
they cost O(log files) whatever the torrent's size.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from p2pdist.metainfo.model import FileEntry, Info

BLOCK_SIZE = 16 * 1024  # the request size every client uses (BEP 3 de facto, BEP 52)


@dataclass(frozen=True)
class FileSpan:
    """``length`` bytes at ``file_offset`` inside ``files[file_index]``."""

    file_index: int
    file_offset: int
    length: int


class Layout:
    """Piece and block geometry of one torrent, and its mapping onto files."""

    def __init__(self, info: Info) -> None:
        self.files: tuple[FileEntry, ...] = info.files
        self.piece_length = info.piece_length
        self.total_length = info.total_length
        self.num_pieces = info.num_pieces
        # Zero-length files hold no bytes; leaving them out keeps the bisect exact.
        self._indices = [i for i, f in enumerate(self.files) if f.length > 0]
        self._starts = [self.files[i].offset for i in self._indices]

    def piece_offset(self, index: int) -> int:
        self._check_piece(index)
        return index * self.piece_length

    def piece_size(self, index: int) -> int:
        self._check_piece(index)
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    def blocks_in_piece(self, index: int) -> int:
        return -(-self.piece_size(index) // BLOCK_SIZE)

    def block_size(self, index: int, block: int) -> int:
        size = self.piece_size(index)
        if not 0 <= block < -(-size // BLOCK_SIZE):
            raise IndexError(f"block {block} outside piece {index}")
        return min(BLOCK_SIZE, size - block * BLOCK_SIZE)

    def spans(self, offset: int, length: int) -> list[FileSpan]:
        """The file ranges covering torrent bytes ``[offset, offset + length)``, in order."""
        if offset < 0 or length < 0 or offset + length > self.total_length:
            raise IndexError(f"range {offset}+{length} outside torrent of {self.total_length} bytes")
        result: list[FileSpan] = []
        position = bisect.bisect_right(self._starts, offset) - 1
        end = offset + length
        while offset < end:
            file_index = self._indices[position]
            entry = self.files[file_index]
            inside = offset - entry.offset
            take = min(entry.length - inside, end - offset)
            result.append(FileSpan(file_index, inside, take))
            offset += take
            position += 1
        return result

    def piece_spans(self, index: int) -> list[FileSpan]:
        return self.spans(self.piece_offset(index), self.piece_size(index))

    def pieces_of_file(self, file_index: int) -> range:
        """Pieces holding at least one byte of the file (empty for a zero-length file)."""
        entry = self.files[file_index]
        if entry.length == 0:
            return range(0)
        first = entry.offset // self.piece_length
        last = (entry.offset + entry.length - 1) // self.piece_length
        return range(first, last + 1)

    def _check_piece(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} outside 0..{self.num_pieces - 1}")
