"""Strict JSON for hostile documents: one parse rule for manifests, signatures, keys and policies.

Python's `json` accepts what other parsers read differently, and a signature check is only as good
as the agreement between the signer's parser and ours:

- duplicate keys (`{"digest": A, "digest": B}`): Go keeps the last, some parsers the first — the
  classic way to make two verifiers see two documents; refused;
- `NaN`, `Infinity`, `-Infinity`: not JSON at all; refused;
- bytes that are not UTF-8: refused (`UnicodeDecodeError` is a `ValueError`);
- nesting deeper than the interpreter's recursion limit (a few kB of `[`): refused, where `json`
  would raise RecursionError and crash the command.

Callers turn the `ValueError` into their own error type (InvalidManifest, KeyLoadError, …).
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: bytes | str, what: str = "document") -> Any:
    """Parse `data`, naming `what` in the error. Raises ValueError."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in pairs:
            if name in result:
                raise ValueError(f"{what} has a duplicate key {name[:60]!r}")
            result[name] = value
        return result

    def no_constants(name: str) -> Any:
        raise ValueError(f"{what} contains {name}, which is not JSON")

    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
