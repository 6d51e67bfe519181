"""Errors of the pull layer, and the root of every error `trust` raises on purpose.

The hierarchy has two roots below `TrustError`, as python-tuf does:

    TrustError
    ├── UsageError            the user asked for something malformed          (exit 2)
    │   ├── InvalidReference
    │   └── NotAnImage        an artifact (Helm chart, oras push) where an image is needed
    ├── DeniedError           policy said no (defined here, raised by policy/) (exit 3)
    ├── IntegrityError        bytes did not match what was promised           (exit 4)
    │   ├── DigestMismatch
    │   ├── SizeMismatch
    │   └── InvalidManifest   hostile or malformed manifest/index/config
    └── CouldNotCheck         we could not look                                (exit 5)
        ├── HostFault         the host refused: disk full, read-only store, no permission
        └── RegistryError
            ├── RegistryUnreachable
            ├── AuthError
            ├── NotFound
            └── Throttled

`trust/cli.py` maps these classes to exit codes in one table; anything else exits 1.
Every message is one line a person can act on; `diagnostics()` may add advice.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pull.digest import Digest


class TrustError(Exception):
    """Base of every deliberate error. `str(err)` is a one-line, actionable message."""

    def diagnostics(self) -> str:
        """Extra advice for humans (may be empty)."""
        return ""


class UsageError(TrustError):
    """The request itself is malformed: bad flag, bad reference, unreadable input file."""


class InvalidReference(UsageError):
    """An image reference or digest string does not follow the grammar."""


class DeniedError(TrustError):
    """A policy refused (unsigned, wrong signer, tag-only reference, below threshold)."""


class IntegrityError(TrustError):
    """Bytes did not match what was promised: digest, size, or a structurally hostile document."""

    def diagnostics(self) -> str:
        return "The content may have been modified maliciously; nothing unverified was stored."


class DigestMismatch(IntegrityError):
    """Content hashed to a different digest than the one it was fetched or referenced by."""


class SizeMismatch(IntegrityError):
    """Content was longer or shorter than its descriptor's size."""


class InvalidManifest(IntegrityError):
    """A manifest, index or config is malformed, oversized, ambiguous or of a refused type."""


class NotAnImage(UsageError):
    """A well-formed, verified manifest of an artifact that is not a container image (a Helm chart,
    an SBOM, a signed file): it can be pulled and verified, not run (exit 2, as docker and podman
    treat a request to run something that is not an image).

    `manifest_digest` is the verified digest of the artifact's manifest; `index_digest` that of
    the index it was selected from, if any.
    """

    def __init__(self, message: str, manifest_digest: Digest, index_digest: Digest | None = None) -> None:
        super().__init__(message)
        self.manifest_digest = manifest_digest
        self.index_digest = index_digest


class CouldNotCheck(TrustError):
    """We could not look: the source was unreachable, refused us, throttled us, or lacks the object."""


class HostFault(CouldNotCheck):
    """The host, not the image or the registry, stopped the command: a full disk, a read-only or
    unwritable store, an I/O error. Like an unreachable registry, it says nothing about the image."""

    @classmethod
    def from_os_error(cls, error: OSError) -> HostFault:
        where = f": {error.filename}" if error.filename else ""
        hint = _HOST_FAULT_HINTS.get(error.errno or 0, "")
        return cls(f"{error.strerror or error}{where}{hint}")


class RegistryError(CouldNotCheck):
    """A registry answered with an error or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RegistryUnreachable(RegistryError):
    """Connection refused, DNS failure, TLS failure or timeout."""


class AuthError(RegistryError):
    """401/403, or the token service refused the credentials."""


class NotFound(RegistryError):
    """404 for a repository, manifest, tag or blob."""


class Throttled(RegistryError):
    """429/503 persisted after retries."""


_HOST_FAULT_HINTS = {
    errno.ENOSPC: " (the disk is full: free space or use another --store; nothing half-written was kept)",
    errno.EDQUOT: " (disk quota exceeded: free space or use another --store; nothing half-written was kept)",
    errno.EROFS: " (the store is on a read-only file system: use a writable --store)",
    errno.EACCES: " (permission denied: run as the store's owner or use another --store)",
    errno.EPERM: " (operation not permitted: this needs privileges trust does not have here)",
    errno.EIO: " (an I/O error: check the disk)",
}
HOST_FAULT_ERRNOS = frozenset({*_HOST_FAULT_HINTS, errno.EMFILE, errno.ENFILE})
"""OSErrors that are the host's doing; `trust.cli.app.main` reports them as `HostFault` (exit 5)."""
