"""The strict JSON rule shared by every parser of hostile documents."""

from __future__ import annotations

import pytest

from pull.strictjson import loads


def test_ordinary_json_parses() -> None:
    assert loads(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert loads('{"nested": {"a": 1}, "other": {"a": 2}}') == {"nested": {"a": 1}, "other": {"a": 2}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"digest": "a", "digest": "b"}', "manifest has a duplicate key 'digest'"),
        (b'{"x": {"k": 1, "k": 2}}', "duplicate key 'k'"),
        (b'{"size": NaN}', "contains NaN"),
        (b'{"size": -Infinity}', "contains -Infinity"),
        (b'{"a": "\xff"}', "utf-8"),
        (b"{", "Expecting"),
        (b"[" * 100_000 + b"]" * 100_000, "manifest is nested too deeply"),
    ],
)
def test_ambiguous_or_invalid_json_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loads(data, "manifest")
