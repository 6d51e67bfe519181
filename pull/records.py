"""Records: classes declared by their annotated fields, as with the standard library's
`dataclasses`, made without compiling any code.

Why not `dataclasses` itself: on Python 3.11 it writes the source of six methods for every class
(`__init__`, `__repr__`, `__eq__`, `__hash__`, and for a frozen class `__setattr__` and
`__delattr__`) and compiles them, 0.3 to 0.7 ms a class, and importing it imports `inspect` (~8 ms).
A warm `trust run` started as a new process imports ~35 record classes: ~30 ms of its ~140
(docs/benchmarks.md, "Stop 31"). Here every record shares the same few methods, which read the
class's field table, so making a class costs little more than reading its annotations.

Declarations and behaviour are those of `dataclasses` for everything this code base uses, so
that the same rules hold and mypy checks them the same way (`dataclass_transform`):
`@dataclass`, `@dataclass(frozen=True, order=True)`, `field(default=…, default_factory=…,
repr=…, compare=…, hash=…)`, `__post_init__`, a base record's fields first, `ClassVar`
annotations not fields, mutable defaults refused, methods the class defines itself kept, and
`replace`, `fields` and `asdict`. Not provided: `init=False` fields, `InitVar`, `kw_only`,
`slots`, `dataclasses.is_dataclass` (these are not dataclasses to the standard library).
tests/test_records.py holds each rule against the standard library's behaviour.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

_MISSING: Any = object()
"""No default given (None is a default)."""


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record."""


class Field:
    """One field: its name, default, and the parts of the generated methods it takes part in."""

    __slots__ = ("compare", "default", "default_factory", "hash", "name", "repr")

    def __init__(
        self,
        default: Any = _MISSING,
        default_factory: Any = _MISSING,
        repr: bool = True,
        compare: bool = True,
        hash: bool | None = None,
    ) -> None:
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("a field cannot have both a default and a default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare
        self.hash = compare if hash is None else hash

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is _MISSING

    def __repr__(self) -> str:
        return f"Field(name={self.name!r})"


@overload
def field(*, default: T, repr: bool = True, compare: bool = True, hash: bool | None = None) -> T: ...
@overload
def field(
    *, default_factory: Callable[[], T], repr: bool = True, compare: bool = True, hash: bool | None = None
) -> T: ...
@overload
def field(*, repr: bool = True, compare: bool = True, hash: bool | None = None) -> Any: ...
def field(
    *,
    default: Any = _MISSING,
    default_factory: Any = _MISSING,
    repr: bool = True,
    compare: bool = True,
    hash: bool | None = None,
) -> Any:
    """A field with a default made per instance, or left out of `repr`, `==` or `hash`."""
    return Field(default, default_factory, repr, compare, hash)


class _Table:
    """What the shared methods need to know about one record class, computed once."""

    __slots__ = (
        "compare_key",
        "fields",
        "frozen",
        "hash_key",
        "names",
        "positions",
        "post_init",
        "shown",
    )

    def __init__(self, cls: type, fields: dict[str, Field], frozen: bool) -> None:
        self.fields = tuple(fields.values())
        self.names = tuple(fields)
        self.positions = {name: position for position, name in enumerate(fields)}
        self.frozen = frozen
        self.shown = tuple(name for name, spec in fields.items() if spec.repr)
        self.compare_key = _key([name for name, spec in fields.items() if spec.compare])
        self.hash_key = _key([name for name, spec in fields.items() if spec.hash])
        self.post_init = hasattr(cls, "__post_init__")


def _key(names: list[str]) -> Callable[[object], tuple[Any, ...]]:
    """A function from a record to the tuple of these fields' values."""
    if not names:
        return lambda _record: ()
    if len(names) == 1:
        name = names[0]
        return lambda record: (getattr(record, name),)
    return operator.attrgetter(*names)


@overload
def dataclass(cls: type[T], /) -> type[T]: ...
@overload
def dataclass(*, frozen: bool = False, order: bool = False) -> Callable[[type[T]], type[T]]: ...
@dataclass_transform(field_specifiers=(field, Field))
def dataclass(
    cls: type[T] | None = None, /, *, frozen: bool = False, order: bool = False
) -> type[T] | Callable[[type[T]], type[T]]:
    """Make `cls` a record: `__init__` from its fields in order (a base record's first), `__repr__`,
    `__eq__` (same class, equal fields), and for `frozen` no assignment and a `__hash__`; for
    `order`, `<`, `<=`, `>`, `>=` over the fields in order."""

    def make(cls: type[T]) -> type[T]:
        _make_record(cls, frozen, order)
        return cls

    return make if cls is None else make(cls)


def _make_record(cls: type, frozen: bool, order: bool) -> None:
    fields: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        table: _Table | None = base.__dict__.get("__record__")
        if table is not None:
            if table.frozen != frozen:
                kind = "frozen" if frozen else "non-frozen"
                raise TypeError(f"cannot inherit {kind} record {cls.__name__} from {base.__name__}")
            fields.update((spec.name, spec) for spec in table.fields)
    # The class's own annotations, as written (inspect.get_annotations would cost importing inspect).
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
        text = annotation if isinstance(annotation, str) else repr(annotation)
        if text == "ClassVar" or text.startswith(("ClassVar[", "typing.ClassVar", "t.ClassVar")):
            continue  # a class attribute, not a field
        if text.startswith(("InitVar", "KW_ONLY", "dataclasses.")):
            raise TypeError(f"{cls.__name__}.{name}: {text} is not supported by pull.records")
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name = name
        if spec.default is not _MISSING and type(spec.default).__hash__ is None:
            raise ValueError(
                f"mutable default {type(spec.default)} for field {name} is not allowed: use default_factory"
            )
        if isinstance(value, Field):  # the class attribute is the default itself, as dataclasses leaves it
            if spec.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
        fields[name] = spec
    seen_default = ""
    for spec in fields.values():
        if not spec.required:
            seen_default = seen_default or spec.name
        elif seen_default:
            raise TypeError(f"non-default argument {spec.name!r} follows default argument {seen_default!r}")

    table = _Table(cls, fields, frozen)
    cls.__record__ = table  # type: ignore[attr-defined]
    cls.__match_args__ = table.names  # type: ignore[attr-defined,misc]
    methods: dict[str, Any] = {"__init__": _init, "__repr__": _repr, "__eq__": _eq}
    if frozen:
        methods |= {"__setattr__": _frozen_setattr, "__delattr__": _frozen_delattr}
    if order:
        methods |= {name: _comparison(name, compare) for name, compare in _ORDER.items()}
    for name, method in methods.items():
        if name not in cls.__dict__:  # the class's own method wins, as with dataclasses
            setattr(cls, name, method)
        elif name in ("__setattr__", "__delattr__", "__lt__", "__le__", "__gt__", "__ge__"):
            raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")  # as dataclasses
    # Python sets __hash__ = None in a class body that defines __eq__: that is not a hash of its own.
    own_hash = "__hash__" in cls.__dict__ and not (
        cls.__dict__["__hash__"] is None and "__eq__" in cls.__dict__
    )
    if not own_hash:
        cls.__hash__ = _hash if frozen else None  # type: ignore[assignment,method-assign]


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    table: _Table = type(self).__record__
    names = table.names
    given = len(args)
    if given == len(names) and not kwargs:
        values = dict(zip(names, args, strict=True))
    else:
        if given > len(names):
            raise TypeError(
                f"{type(self).__name__}() takes {len(names)} positional arguments but {given} were given"
            )
        for name in kwargs:
            position = table.positions.get(name)
            if position is None:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}")
            if position < given:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
        values = dict(zip(names, args, strict=False))
        for spec in table.fields[given:]:  # in the order of the fields, as the standard library's
            name = spec.name
            if name in kwargs:
                values[name] = kwargs[name]
            elif spec.default is not _MISSING:
                values[name] = spec.default
            elif spec.default_factory is not _MISSING:
                values[name] = spec.default_factory()
            else:
                raise TypeError(f"{type(self).__name__}() missing required argument: {name!r}")
    # Straight into the instance's dict, as the standard library's __init__ bypasses a frozen
    # class's __setattr__ (no record class defines a __setattr__ of its own).
    self.__dict__.update(values)
    if table.post_init:
        self.__post_init__()


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self).__record__.shown)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    key = type(self).__record__.compare_key
    return key(self) == key(other)


def _hash(self: Any) -> int:
    return hash(type(self).__record__.hash_key(self))


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


_ORDER = {"__lt__": operator.lt, "__le__": operator.le, "__gt__": operator.gt, "__ge__": operator.ge}


def _comparison(name: str, compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    """The `order` method `name`: `compare` over the two records' fields, in order, if they are of
    the same class."""

    def method(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        key = type(self).__record__.compare_key
        return compare(key(self), key(other))

    method.__name__ = method.__qualname__ = name
    return method


def _table(record: object) -> _Table:
    table: _Table | None = getattr(record, "__record__", None)
    if table is None:
        raise TypeError(f"{record!r} is not a record")
    return table


def fields(record: object) -> tuple[Field, ...]:
    """The fields of a record or record class, in order."""
    return _table(record).fields


def replace(record: T, /, **changes: Any) -> T:
    """A copy of `record` with `changes` (checked by `__init__`, and `__post_init__` run again)."""
    for spec in _table(record).fields:
        if spec.name not in changes:
            changes[spec.name] = getattr(record, spec.name)
    return type(record)(**changes)


def asdict(record: object) -> dict[str, Any]:
    """The record's fields as a dict, records inside it (also in lists, tuples and dicts) as dicts.
    Unlike `dataclasses.asdict` other values are not deep-copied: records hold immutable values."""
    _table(record)
    return _plain(record)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    table: _Table | None = getattr(type(value), "__record__", None)
    if table is not None:
        return {name: _plain(getattr(value, name)) for name in table.names}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_plain(item) for item in value))
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return type(value)((_plain(key), _plain(item)) for key, item in value.items())
    return value
