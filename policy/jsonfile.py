"""Reading a JSON policy file someone else wrote (containers-policy.json, Notation's trustpolicy.json).

Both importers read hostile input the same way: a size cap, UTF-8 only, the strict JSON rule of
`pull.strictjson` (no duplicate keys, no NaN, no pathological nesting), and errors that name the
file and, for syntax errors, the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policy.errors import PolicyError
from pull.strictjson import loads as strict_json
from pull.userfile import open_regular_file


def read_json_file(path: Path, source: str, *, max_bytes: int, what: str, hint: str) -> Any:
    """The parsed document. `what` starts every error ("not valid JSON", "invalid Notation trust
    policy: …"); `hint` is the advice for syntax errors.

    Raises:
        PolicyError: unreadable, too large, not UTF-8, not strict JSON (exit 2).
    """
    try:
        with open_regular_file(path) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise PolicyError(
            f"cannot read the file: {exc.strerror or exc}", "check the path", source=source
        ) from None
    if len(data) > max_bytes:
        raise PolicyError(f"the file is larger than {max_bytes} bytes", "check the path", source=source)
    try:
        return strict_json(data, "the file")
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{what} ({exc.msg})", hint, source=source, line=exc.lineno) from None
    except UnicodeDecodeError:
        raise PolicyError("the file is not UTF-8 text", "check the path", source=source) from None
    except ValueError as exc:  # duplicate keys, NaN, nesting: the message says which
        raise PolicyError(f"{what}: {exc}", hint, source=source) from None
