"""Parallel piece hashing gives exactly the SHA-1s of the joined files, whatever the split."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pdist.creator import hashing
from p2pdist.creator.hashing import HashInput, chunk_size_for, hash_pieces
from p2pdist.errors import InputError

KIB = 1024


def reference(contents: list[bytes], piece_length: int) -> bytes:
    data = b"".join(contents)
    return b"".join(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length))


def write_files(folder: Path, contents: list[bytes]) -> list[HashInput]:
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for number, data in enumerate(contents):
        path = folder / f"f{number}"
        path.write_bytes(data)
        inputs.append(HashInput(path, len(data)))
    return inputs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 150 * KIB), min_size=1, max_size=6),
    piece_length=st.sampled_from([16 * KIB, 32 * KIB, 64 * KIB]),
    threads=st.integers(1, 3),
    chunk_pieces=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_matches_hashlib_over_the_joined_bytes(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], piece_length: int, threads: int, chunk_pieces: int, seed: int
) -> None:
    rng = random.Random(seed)
    contents = [rng.randbytes(size) for size in sizes]
    inputs = write_files(tmp_path_factory.mktemp("h"), contents)
    got = hash_pieces(inputs, piece_length, threads=threads, chunk_target=chunk_pieces * piece_length)
    assert got == reference(contents, piece_length)


def test_progress_adds_up_to_the_total(tmp_path: Path) -> None:
    contents = [random.Random(1).randbytes(300 * KIB), b"", b"x" * 5000]
    inputs = write_files(tmp_path, contents)
    seen: list[int] = []
    hash_pieces(inputs, 16 * KIB, threads=2, progress=seen.append, chunk_target=32 * KIB)
    assert sum(seen) == sum(len(c) for c in contents)
    assert all(n > 0 for n in seen)


def test_seek_and_readinto_path_gives_the_same_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The branch Windows takes (no os.preadv) is exercised here too."""
    contents = [random.Random(2).randbytes(n) for n in (70 * KIB, 1, 33 * KIB)]
    inputs = write_files(tmp_path, contents)
    monkeypatch.setattr(hashing, "HAVE_PREADV", False)
    assert hash_pieces(inputs, 16 * KIB, threads=3, chunk_target=16 * KIB) == reference(contents, 16 * KIB)


def test_a_file_shorter_than_scanned_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"a" * 1000)
    with pytest.raises(InputError, match="shrank"):
        hash_pieces([HashInput(path, 5000)], 16 * KIB)


def test_a_missing_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="gone.bin"):
        hash_pieces([HashInput(tmp_path / "gone.bin", 10)], 16 * KIB)


def test_nothing_to_hash_gives_no_pieces(tmp_path: Path) -> None:
    inputs = write_files(tmp_path, [b"", b""])
    assert hash_pieces(inputs, 16 * KIB) == b""


@pytest.mark.parametrize(
    ("piece_length", "expected"),
    [(16 * KIB, 4 * 1024 * KIB), (1024 * KIB, 4 * 1024 * KIB), (16 * 1024 * KIB, 16 * 1024 * KIB)],
)
def test_chunks_are_whole_pieces(piece_length: int, expected: int) -> None:
    assert chunk_size_for(piece_length) == expected


def test_piece_length_must_be_a_power_of_two(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        hash_pieces([], 3 * KIB)
