"""Sigstore trusted roots: which Fulcio CAs, Rekor logs, CT logs and timestamp authorities a keyless
signature may rely on.

A trusted root (`trusted_root.json`, media type `application/vnd.dev.sigstore.trustedroot+json`)
comes from one of two places, and never from the network while verifying:

- the Sigstore public-good instance's root: the copy `trust trusted-root refresh` last fetched
  through sigstore-python's TUF client (TUF-verified, in sigstore-python's cache), else the copy
  shipped inside sigstore-python;
- a file named by `--trusted-root` or a policy authority's `trusted-root` (private Sigstore
  deployments, air-gapped hosts, the staging instance).

Loaded roots are cached per file (and per version of it: a file changed on disk is read again)
for the life of the process: evaluating a policy with many images must not re-parse them.
`import sigstore` costs ~0.4 s, so this module imports it lazily.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pull.errors import CouldNotCheck, UsageError
from pull.records import dataclass
from pull.userfile import open_regular_file
from trust.keys.keyfiles import PublicKey, check_public_key, fingerprint

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from cryptography.x509 import Certificate
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

MAX_TRUSTED_ROOT_BYTES = 1024 * 1024
"""The public-good root is ~7 kB; a larger file is refused before parsing."""

PUBLIC_GOOD = "the Sigstore public-good instance"
"""How the default root is named in messages."""

_PUBLIC_GOOD_TUF_URL = "https://tuf-repo-cdn.sigstore.dev"


class TrustedRootError(UsageError):
    """A trusted root file is unreadable, too large, or not a Sigstore trusted root (exit 2)."""


@dataclass(frozen=True)
class RekorLog:
    """One transparency log of a trusted root: its key and the window its key was valid in."""

    log_id: str
    """Hex SHA-256 of the key's DER SubjectPublicKeyInfo (Rekor's log ID)."""
    key: PublicKey
    valid_from: datetime | None
    valid_until: datetime | None

    def valid_at(self, moment: datetime) -> bool:
        if self.valid_from is not None and moment < self.valid_from:
            return False
        return self.valid_until is None or moment <= self.valid_until


@dataclass(frozen=True)
class LoadedRoot:
    """A parsed trusted root, the sigstore-python verifier built on it, and where it came from."""

    source: str
    root: TrustedRoot
    verifier: Verifier

    @property
    def fulcio_certificates(self) -> list[Certificate]:
        """Every Fulcio CA certificate (roots and intermediates), expired ones included: a
        certificate is judged at the time its signature was logged, not now."""
        return self.root.get_fulcio_certs()

    @functools.cached_property
    def rekor_logs(self) -> tuple[RekorLog, ...]:
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        logs = []
        # `_inner` is the protobuf model; sigstore-python's own Verifier reads tlogs the same way.
        for tlog in self.root._inner.tlogs:
            key_bytes = tlog.public_key.raw_bytes
            if key_bytes is None:
                continue
            try:
                key = check_public_key(load_der_public_key(key_bytes), "Rekor log key")
            except Exception:  # a key we cannot use is a log we cannot trust, not a crash
                continue
            window = tlog.public_key.valid_for
            logs.append(
                RekorLog(
                    fingerprint(key),
                    key,
                    _utc(window.start) if window is not None else None,
                    _utc(window.end) if window is not None else None,
                )
            )
        return tuple(logs)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def load_trusted_root(path: Path | None = None) -> LoadedRoot:
    """The root in `path`, or the public-good root shipped with sigstore-python when None.

    Raises:
        TrustedRootError: the file is unreadable, over `MAX_TRUSTED_ROOT_BYTES`, or malformed.
    """
    if path is None:
        return _public_good()
    resolved = path.resolve()
    try:
        seen = resolved.stat()
    except OSError as exc:
        raise TrustedRootError(f"cannot read trusted root {path}: {exc.strerror}") from None
    # Keyed by the file's identity and change time too: a long-lived process (the webhook) must
    # not go on trusting a root that was replaced on disk (a rotated or withdrawn key).
    return _from_file(resolved, seen.st_ino, seen.st_size, seen.st_mtime_ns)


@functools.cache
def _public_good() -> LoadedRoot:
    refreshed = refreshed_root_path()
    if refreshed.is_file():
        # Either what a refresh downloaded and TUF verified, or the shipped copy sigstore-python
        # placed there when its TUF client first ran.
        return _parse(
            _read_capped(refreshed), f"{PUBLIC_GOOD} (from sigstore-python's TUF cache, {refreshed})"
        )
    return _parse(_shipped_root().read_bytes(), PUBLIC_GOOD)


def _shipped_root() -> Traversable:
    from importlib import resources
    from urllib.parse import quote

    store = resources.files("sigstore._store")
    return store.joinpath(quote(_PUBLIC_GOOD_TUF_URL, safe=""), "trusted_root.json")


def public_good_root_bytes() -> bytes:
    """The public-good root's JSON (the refreshed copy, else the shipped one), for signing configs."""
    refreshed = refreshed_root_path()
    return _read_capped(refreshed) if refreshed.is_file() else _shipped_root().read_bytes()


def public_good_sources() -> tuple[Path, ...]:
    """The files the public-good root may be read from (the refreshed copy first), for
    `policy.reuse`: a decision that used that root depends on them."""
    return (refreshed_root_path(), Path(str(_shipped_root())))  # sigstore's wheel is unpacked on disk


def refreshed_root_path() -> Path:
    """Where sigstore-python's TUF client keeps the public-good root it last downloaded and verified."""
    from sigstore._internal.tuf import _get_dirs  # the cache layout `refresh_public_good` fills

    return _get_dirs(_PUBLIC_GOOD_TUF_URL)[1] / "trusted_root.json"


def refresh_public_good() -> Path:
    """Fetch the public-good trusted root through TUF (the one network call keyless verification
    ever makes, and only when asked). Returns the verified file's path.

    Raises:
        CouldNotCheck: the TUF repository could not be reached or its metadata did not verify.
    """
    from sigstore._internal.tuf import TrustUpdater
    from sigstore.errors import TUFError

    try:
        path = Path(TrustUpdater(_PUBLIC_GOOD_TUF_URL, offline=False).get_trusted_root_path())
    except TUFError as exc:
        cause = exc.__cause__ or exc
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise CouldNotCheck(
            f"cannot refresh the Sigstore trusted root from {_PUBLIC_GOOD_TUF_URL}: {message[:200]}"
        ) from None
    _public_good.cache_clear()
    return path


@functools.lru_cache(maxsize=32)
def _from_file(path: Path, inode: int, size: int, mtime_ns: int) -> LoadedRoot:
    return _parse(_read_capped(path), str(path))


def _read_capped(path: Path) -> bytes:
    try:
        with open_regular_file(path) as handle:
            data = handle.read(MAX_TRUSTED_ROOT_BYTES + 1)
    except OSError as exc:
        raise TrustedRootError(f"cannot read trusted root {path}: {exc.strerror}") from None
    if len(data) > MAX_TRUSTED_ROOT_BYTES:
        raise TrustedRootError(f"trusted root {path} is larger than {MAX_TRUSTED_ROOT_BYTES} bytes")
    return data


def _parse(data: bytes, source: str) -> LoadedRoot:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier
    from sigstore_models.trustroot import v1 as trustroot_v1

    try:
        root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
        verifier = Verifier(trusted_root=root)
        if not root.get_fulcio_certs():
            raise ValueError("no Fulcio certificate authorities")
    except (SigstoreError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrustedRootError(f"{source} is not a usable Sigstore trusted root: {first[:200]}") from None
    return LoadedRoot(source, root, verifier)
