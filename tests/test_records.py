"""pull.records against the standard library's dataclasses: every record class of trust is declared
with it, so each rule it claims to share is checked here on both, declared alike."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from types import ModuleType
from typing import Any, ClassVar

import pytest

from pull import records

BOTH = [pytest.param(dataclasses, id="dataclasses"), pytest.param(records, id="records")]


def point_class(impl: Any) -> Any:
    @impl.dataclass(frozen=True)
    class Point:
        """A point."""

        ORIGIN_NAME: ClassVar[str] = "origin"
        x: int
        y: int = 0
        tags: list[str] = impl.field(default_factory=list, compare=False)
        note: str = impl.field(default="", repr=False)
        seen: int = impl.field(default=0, hash=False)

    return Point


@pytest.mark.parametrize("impl", BOTH)
def test_init_takes_fields_in_order_by_position_or_name_with_defaults(impl: ModuleType) -> None:
    point = point_class(impl)
    assert (point(1).x, point(1).y, point(1, 2).y, point(y=3, x=4).x) == (1, 0, 2, 4)
    first, second = point(1), point(1)
    first.tags.append("a")
    assert second.tags == []  # a default_factory makes one per instance
    assert [spec.name for spec in impl.fields(point)] == ["x", "y", "tags", "note", "seen"]
    assert point.y == 0 and point.ORIGIN_NAME == "origin"  # a default stays a class attribute
    assert "tags" not in vars(point)  # …a default_factory does not


@pytest.mark.parametrize("impl", BOTH)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2, [], "", 0, 9), {}), ((1,), {"x": 2}), ((1,), {"z": 2}), ((), {"y": 1})],
    ids=["missing", "too-many", "twice", "unknown", "missing-with-other"],
)
def test_wrong_arguments_are_a_type_error(
    impl: ModuleType, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        point_class(impl)(*args, **kwargs)


def test_repr_is_the_standard_librarys() -> None:
    mine, theirs = (
        point_class(records)(1, 2, ["t"], "hidden"),
        point_class(dataclasses)(1, 2, ["t"], "hidden"),
    )
    assert repr(mine) == repr(theirs) == "point_class.<locals>.Point(x=1, y=2, tags=['t'], seen=0)"


@pytest.mark.parametrize("impl", BOTH)
def test_equality_and_hash_follow_compare_and_hash(impl: ModuleType) -> None:
    point = point_class(impl)
    assert point(1, 2, ["a"]) == point(1, 2, ["b"])  # compare=False
    assert point(1, 2) != point(1, 3)
    assert point(1, seen=1) != point(1, seen=2)
    assert hash(point(1, seen=1)) == hash(point(1, seen=2))  # hash=False
    assert {point(1), point(1)} == {point(1)}

    @impl.dataclass(frozen=True)
    class Other:
        x: int
        y: int = 0

    assert point(1) != Other(1)  # another class, even with the same fields, is not equal
    assert point(1).__eq__(Other(1)) is NotImplemented


@pytest.mark.parametrize("impl", BOTH)
def test_frozen_records_refuse_assignment_and_mutable_ones_have_no_hash(impl: ModuleType) -> None:
    point = point_class(impl)(1)
    with pytest.raises(AttributeError) as caught:
        point.x = 2
    assert isinstance(caught.value, impl.FrozenInstanceError)
    with pytest.raises(impl.FrozenInstanceError):
        del point.x
    assert point.x == 1

    @impl.dataclass
    class Counter:
        count: int = 0

    counter = Counter()
    counter.count += 1
    assert counter == Counter(1)
    with pytest.raises(TypeError):
        hash(counter)


@pytest.mark.parametrize("impl", BOTH)
def test_order_compares_fields_in_order(impl: ModuleType) -> None:
    @impl.dataclass(frozen=True, order=True)
    class Version:
        major: int
        minor: int = 0

    assert Version(1, 2) < Version(2, 0) <= Version(2) < Version(2, 1)
    assert Version(3) > Version(2, 9) >= Version(2, 9)
    assert sorted([Version(2), Version(1, 5), Version(1)]) == [Version(1), Version(1, 5), Version(2)]
    with pytest.raises(TypeError):
        assert Version(1) < (1, 0)


@pytest.mark.parametrize("impl", BOTH)
def test_a_base_records_fields_come_first_and_an_override_keeps_its_place(impl: ModuleType) -> None:
    @impl.dataclass(frozen=True)
    class Base:
        a: int
        b: int = 1

    @impl.dataclass(frozen=True)
    class Child(Base):
        b: int = 2
        c: int = 3

    assert [spec.name for spec in impl.fields(Child)] == ["a", "b", "c"]
    assert Child(0) == Child(0, 2, 3) and Child(0).b == 2
    assert Child(0) != Base(0, 2)
    with pytest.raises(TypeError):

        @impl.dataclass  # a mutable record cannot extend a frozen one
        class Mutable(Base):
            d: int = 0


@pytest.mark.parametrize("impl", BOTH)
def test_bad_declarations_are_refused_when_the_class_is_made(impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="mutable default"):

        @impl.dataclass
        class ListDefault:
            items: list[int] = []  # noqa: RUF012

    with pytest.raises(TypeError, match="non-default argument"):

        @impl.dataclass
        class RequiredAfterDefault:
            a: int = 0
            b: int  # type: ignore[misc]

    with pytest.raises(ValueError):
        impl.field(default=1, default_factory=int)

    with pytest.raises(TypeError):

        @impl.dataclass(frozen=True)
        class OwnSetattr:
            a: int

            def __setattr__(self, name: str, value: object) -> None: ...

    with pytest.raises(TypeError):

        @impl.dataclass(frozen=True, order=True)
        class OwnOrder:
            a: int

            def __lt__(self, other: object) -> bool:
                return True


def test_what_records_do_not_support_is_refused() -> None:
    with pytest.raises(TypeError, match="not supported"):

        @records.dataclass
        class WithInitVar:
            a: int
            b: dataclasses.InitVar[int]


@pytest.mark.parametrize("impl", BOTH)
def test_methods_the_class_defines_are_kept(impl: ModuleType) -> None:
    @impl.dataclass(frozen=True)
    class Named:
        name: str

        def __repr__(self) -> str:
            return f"<{self.name}>"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Named) and self.name.lower() == other.name.lower()

    assert repr(Named("a")) == "<a>"
    assert Named("A") == Named("a")
    assert hash(Named("a")) == hash(Named("a"))  # frozen: a hash over the fields all the same

    @impl.dataclass
    class Keyed:
        key: str

        def __hash__(self) -> int:
            return 7

    assert hash(Keyed("x")) == 7  # a hash of its own stays, even on a mutable record


@pytest.mark.parametrize("impl", BOTH)
def test_post_init_runs_after_init_and_after_replace(impl: ModuleType) -> None:
    @impl.dataclass(frozen=True)
    class Span:
        start: int
        end: int

        def __post_init__(self) -> None:
            if self.end < self.start:
                raise ValueError("end before start")

    span = Span(1, 3)
    assert impl.replace(span, end=5) == Span(1, 5)
    assert span == Span(1, 3)
    with pytest.raises(ValueError, match="end before start"):
        impl.replace(span, end=0)
    with pytest.raises(TypeError):
        impl.replace(span, middle=2)


@pytest.mark.parametrize("impl", BOTH)
def test_asdict_turns_records_inside_containers_into_dicts(impl: ModuleType) -> None:
    point = point_class(impl)

    @impl.dataclass(frozen=True)
    class Shape:
        points: tuple[Any, ...]
        by_name: dict[str, Any]

    shape = Shape((point(1), point(2)), {"c": point(3)})
    plain = {"x": 1, "y": 0, "tags": [], "note": "", "seen": 0}
    assert impl.asdict(shape) == {
        "points": (plain, {**plain, "x": 2}),
        "by_name": {"c": {**plain, "x": 3}},
    }
    with pytest.raises(TypeError):
        impl.asdict({"not": "a record"})
    with pytest.raises(TypeError):
        impl.fields(object())


def test_match_copy_and_pickle_work() -> None:
    for point in (RecordPoint(1, 2), DataclassPoint(1, 2)):
        match point:
            case RecordPoint(first, second) | DataclassPoint(first, second):  # positional: __match_args__
                assert (first, second) == (1, 2)
            case _:
                pytest.fail("positional match failed")
        assert copy.copy(point) == point == copy.deepcopy(point)
        assert pickle.loads(pickle.dumps(point)) == point


@records.dataclass(frozen=True)
class RecordPoint:
    x: int
    y: int = 0


@dataclasses.dataclass(frozen=True)
class DataclassPoint:
    x: int
    y: int = 0
