"""Where the upstream test vectors live: `shared/vectors/` next to the repository (see its README).

CI clones the repository beside `shared/`; a development checkout may live elsewhere on this
machine, so `/work/shared/vectors` is the fallback. A missing vector folder fails the tests that
need it (they are not skipped: they guard the verification code paths).
"""

from __future__ import annotations

from pathlib import Path

_CANDIDATES = (
    Path(__file__).resolve().parents[3] / "shared" / "vectors",
    Path("/work/shared/vectors"),
)

VECTORS = next((path for path in _CANDIDATES if path.is_dir()), _CANDIDATES[0])
"""The vectors folder (the first candidate that exists)."""
