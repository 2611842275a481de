"""p2pdist.records.Record behaves as a frozen dataclass would, for the records built on it."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pdist.control.schema import PackageStatus
from p2pdist.records import Record


class Point(Record):
    x: int
    y: int = 0
    label: str | None = None


class Point3(Point):
    z: float = 1.5


@dataclasses.dataclass(frozen=True)
class PointDC:
    x: int
    y: int = 0
    label: str | None = None


values = st.tuples(st.integers(), st.integers(), st.none() | st.text(max_size=5))


@given(values, values)
def test_equality_hash_and_repr_match_a_frozen_dataclass(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    ra, rb, da, db = Point(*a), Point(*b), PointDC(*a), PointDC(*b)
    assert (ra == rb) == (da == db) == (a == b)
    assert repr(ra).replace("Point", "PointDC", 1) == repr(da)
    if ra == rb:
        assert hash(ra) == hash(rb)
    assert ra.as_dict() == dataclasses.asdict(da)
    assert ra.replace(y=b[1]) == Point(a[0], b[1], a[2])
    assert pickle.loads(pickle.dumps(ra)) == ra and copy.copy(ra) == ra


def test_defaults_keywords_and_inheritance() -> None:
    assert Point(1) == Point(x=1, y=0, label=None)
    assert Point3._fields == ("x", "y", "label", "z")
    assert Point3(1, 2, "a", 3.0).z == 3.0 and Point3(1).z == 1.5
    assert Point(1) != Point3(1)  # another class, never equal
    assert Point(1) != (1, 0, None)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [((), {}, "missing the argument 'x'"), ((1, 2, None, 4), {}, "takes 3 arguments"), ((1,), {"x": 2}, "'x' twice"), ((1,), {"w": 2}, "unexpected argument 'w'")],
)
def test_wrong_arguments_are_type_errors(args: tuple, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_frozen_and_field_order_checked() -> None:
    point = Point(1)
    with pytest.raises(AttributeError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.y  # type: ignore[misc]
    with pytest.raises(TypeError, match="without a default"):

        class Bad(Record):  # noqa: F841
            a: int = 0
            b: int


def test_package_status_round_trips_its_json() -> None:
    status = PackageStatus("PS100012", 3, state="downloading", progress=0.5, peers=2)
    assert PackageStatus.from_json(status.to_json()) == status
    assert list(status.to_json()) == list(PackageStatus._fields)
    assert status.to_json()["package_id"] == "PS100012" and status.to_json()["in_use"] is False


class Version(Record, order=True, hidden=("secret",)):
    major: int
    minor: int = 0
    secret: bytes = b""

    def __post_init__(self) -> None:
        if self.major < 0:
            raise ValueError("negative")


@dataclasses.dataclass(frozen=True, order=True)
class VersionDC:
    major: int
    minor: int = 0
    secret: bytes = dataclasses.field(default=b"", repr=False)


@given(st.tuples(st.integers(0), st.integers()), st.tuples(st.integers(0), st.integers()))
def test_order_post_init_and_hidden_fields_match_a_dataclass(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    ra, rb, da, db = Version(*a), Version(*b), VersionDC(*a), VersionDC(*b)
    assert (ra < rb, ra <= rb, ra > rb, ra >= rb) == (da < db, da <= db, da > db, da >= db)
    assert sorted([rb, ra]) == [Version(*t) for t in sorted([b, a])]
    assert repr(Version(1, 2, b"key")) == "Version(major=1, minor=2)"
    with pytest.raises(ValueError):
        Version(-1)
