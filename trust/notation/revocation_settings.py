"""Where revocation answers are cached and whether the network may be used: one setting per process.

Kept apart from `trust.notation.revocation` (which imports cryptography's X.509 and OCSP code) so
that admission can point the cache at its store for nothing: `policy.admission.admit_reference`
(pull, run, create) and `trust verify --policy [--offline]` set `STORE/cache/crl` for their duration.
Verification may run in worker threads (the CI gate), so this is a module setting, not a context
variable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pull.records import dataclass


@dataclass(frozen=True)
class Settings:
    cache_dir: Path | None = None
    """`STORE/cache/crl`, or None: no cache."""
    offline: bool = False
    """Use only the cache, never the network."""


_settings = Settings()


def current() -> Settings:
    return _settings


def configure(*, cache_dir: Path | None, offline: bool = False) -> None:
    """Set the cache and offline mode for every later check in this process."""
    global _settings
    _settings = Settings(cache_dir, offline)


@contextlib.contextmanager
def configured(*, cache_dir: Path | None, offline: bool = False) -> Iterator[None]:
    """`configure` for the duration of a block, then back to what it was."""
    global _settings
    previous = _settings
    _settings = Settings(cache_dir, offline)
    try:
        yield
    finally:
        _settings = previous


def store_cache(store_root: Path) -> contextlib.AbstractContextManager[None]:
    """`STORE/cache/crl` for a block, unless a cache is already configured (an outer command's)."""
    if _settings.cache_dir is not None:
        return contextlib.nullcontext()
    return configured(cache_dir=store_root / "cache" / "crl")
