"""Piece <-> file mapping against a byte-by-byte model of the torrent's stream."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.bencode import encode
from p2pdist.metainfo import BLOCK_SIZE, FileEntry, FileSpan, Info, Layout, parse_metainfo


def make_info(lengths: list[int], pads: list[bool], piece_length: int) -> Info:
    """An Info built directly, so piece lengths far below 16 KiB exercise every boundary."""
    files, offset = [], 0
    for number, (length, pad) in enumerate(zip(lengths, pads)):
        files.append(FileEntry(("t", f"f{number}"), length, offset, pad))
        offset += length
    pieces = -(-offset // piece_length)
    return Info("t", piece_length, b"\x00" * 20 * pieces, tuple(files), True, False, None, offset)


def byte_owners(info: Info) -> list[tuple[int, int]]:
    """(file index, offset in file) of every byte of the stream, in order."""
    return [(index, at) for index, entry in enumerate(info.files) for at in range(entry.length)]


def runs(owners: list[tuple[int, int]]) -> list[FileSpan]:
    """Group consecutive bytes of one file into spans: what ``spans`` must return."""
    result: list[FileSpan] = []
    for index, at in owners:
        last = result[-1] if result else None
        if last is not None and last.file_index == index and last.file_offset + last.length == at:
            result[-1] = FileSpan(index, last.file_offset, last.length + 1)
        else:
            result.append(FileSpan(index, at, 1))
    return result


layouts = st.integers(1, 7).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 40), min_size=n, max_size=n).filter(lambda ls: sum(ls) > 0),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.integers(1, 24),
    )
)


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_piece_spans_cover_every_file_byte_exactly_once(case: tuple[list[int], list[bool], int]) -> None:
    lengths, pads, piece_length = case
    info = make_info(lengths, pads, piece_length)
    layout = Layout(info)
    owners = byte_owners(info)
    assert layout.total_length == len(owners)
    seen: list[tuple[int, int]] = []
    for piece in range(layout.num_pieces):
        spans = layout.piece_spans(piece)
        start = layout.piece_offset(piece)
        assert start == piece * piece_length
        assert sum(span.length for span in spans) == layout.piece_size(piece) == info.piece_size(piece)
        assert all(span.length > 0 for span in spans)
        assert spans == runs(owners[start : start + layout.piece_size(piece)])
        position = start
        for span in spans:
            entry = info.files[span.file_index]
            assert 0 <= span.file_offset and span.file_offset + span.length <= entry.length
            assert entry.offset + span.file_offset == position  # spans follow the stream in order
            position += span.length
            seen.extend((span.file_index, span.file_offset + k) for k in range(span.length))
    assert seen == owners  # every byte of every file, once, in stream order
    for index, entry in enumerate(info.files):
        expected = {p for p in range(layout.num_pieces) if any(s.file_index == index for s in layout.piece_spans(p))}
        assert set(layout.pieces_of_file(index)) == expected
        assert list(layout.pieces_of_file(index)) == sorted(expected)  # a contiguous range
        if entry.length == 0:
            assert layout.pieces_of_file(index) == range(0)


@settings(max_examples=150, deadline=None)
@given(layouts, st.data())
def test_spans_of_any_range_match_the_model(case: tuple[list[int], list[bool], int], data: st.DataObject) -> None:
    lengths, pads, piece_length = case
    info = make_info(lengths, pads, piece_length)
    layout = Layout(info)
    owners = byte_owners(info)
    offset = data.draw(st.integers(0, len(owners)))
    length = data.draw(st.integers(0, len(owners) - offset))
    assert layout.spans(offset, length) == runs(owners[offset : offset + length])
    with pytest.raises(IndexError):
        layout.spans(offset, len(owners) - offset + 1)
    with pytest.raises(IndexError):
        layout.spans(-1, 1)
    with pytest.raises(IndexError):
        layout.spans(0, -1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 200_000), min_size=1, max_size=6).filter(lambda ls: sum(ls) > 0), st.sampled_from([14, 15, 16, 17]))
def test_blocks_tile_each_piece(lengths: list[int], log_piece: int) -> None:
    piece_length = 1 << log_piece
    layout = Layout(make_info(lengths, [False] * len(lengths), piece_length))
    for piece in range(layout.num_pieces):
        count = layout.blocks_in_piece(piece)
        sizes = [layout.block_size(piece, block) for block in range(count)]
        assert sum(sizes) == layout.piece_size(piece)
        assert all(size == BLOCK_SIZE for size in sizes[:-1]) and 0 < sizes[-1] <= BLOCK_SIZE
        with pytest.raises(IndexError):
            layout.block_size(piece, count)
        with pytest.raises(IndexError):
            layout.block_size(piece, -1)
    for bad in (-1, layout.num_pieces):
        for call in (layout.piece_offset, layout.piece_size, layout.blocks_in_piece, layout.piece_spans):
            with pytest.raises(IndexError):
                call(bad)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 70_000), st.booleans()), min_size=1, max_size=6).filter(lambda fs: sum(f[0] for f in fs) > 0),
    st.sampled_from([16 * 1024, 32 * 1024, 64 * 1024]),
)
def test_layout_of_a_parsed_torrent(files: list[tuple[int, bool]], piece_length: int) -> None:
    """The same properties through parse_metainfo, with real piece lengths and BEP 47 pad files."""
    total = sum(length for length, _ in files)
    entries = [
        {b"length": length, b"path": [b".pad", b"%d" % length] if pad else [b"f%d" % i], **({b"attr": b"p"} if pad else {})}
        for i, (length, pad) in enumerate(files)
    ]
    pieces = b"".join(hashlib.sha1(b"%d" % i).digest() for i in range(-(-total // piece_length)))
    info = {b"files": entries, b"name": b"pkg", b"piece length": piece_length, b"pieces": pieces}
    meta = parse_metainfo(encode({b"info": info}))
    layout = Layout(meta.info)
    covered = [0] * len(meta.info.files)
    for piece in range(layout.num_pieces):
        spans = layout.piece_spans(piece)
        assert sum(s.length for s in spans) == meta.info.piece_size(piece)
        for span in spans:
            assert span.file_offset == covered[span.file_index]  # each file read front to back
            covered[span.file_index] += span.length
            assert piece in layout.pieces_of_file(span.file_index)
    assert covered == [f.length for f in meta.info.files]


def test_known_layout() -> None:
    # files: 5, 0, 3 (pad), 8 bytes; pieces of 4: [0,4) [4,8) [8,12) [12,16)
    layout = Layout(make_info([5, 0, 3, 8], [False, False, True, False], 4))
    assert layout.num_pieces == 4
    assert layout.piece_spans(0) == [FileSpan(0, 0, 4)]
    assert layout.piece_spans(1) == [FileSpan(0, 4, 1), FileSpan(2, 0, 3)]
    assert layout.piece_spans(2) == [FileSpan(3, 0, 4)]
    assert layout.piece_spans(3) == [FileSpan(3, 4, 4)]
    assert [layout.pieces_of_file(i) for i in range(4)] == [range(0, 2), range(0), range(1, 2), range(2, 4)]
    assert layout.spans(5, 0) == [] and layout.spans(16, 0) == []
