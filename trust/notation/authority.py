"""A policy authority of the Notary Project kind: X.509 trust anchors, trusted identities, a level."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pull.records import dataclass

if TYPE_CHECKING:  # cryptography.x509 costs ~30 ms to import; only the loader needs it at run time
    from cryptography import x509


class NotationLevel(StrEnum):
    """Notation's verification levels, minus `skip` (spelled `insecure-accept-anything` here)."""

    STRICT = "strict"
    PERMISSIVE = "permissive"
    AUDIT = "audit"


class VerifyTimestamp(StrEnum):
    """When a timestamp countersignature is checked (the trust policy's `verifyTimestamp`)."""

    ALWAYS = "always"
    AFTER_CERT_EXPIRY = "after-cert-expiry"
    """Only once a certificate of the signing chain has expired (Notation's `afterCertExpiry`)."""


class Revocation(StrEnum):
    CHECK = "check"
    """OCSP and CRLs of the signing and TSA chains; the level decides what unknown/revoked do."""
    SKIP = "skip"
    """No revocation check at all (Notation's `"revocation": "skip"` override)."""


@dataclass(frozen=True)
class NotationAuthority:
    """Notary Project signatures chaining to `certificates` (read from `trust_store`) whose signing
    certificate's subject is one of `trusted_identities` (`*` = any)."""

    name: str
    trust_store: Path
    certificates: tuple[x509.Certificate, ...]
    trusted_identities: tuple[str, ...]
    level: NotationLevel = NotationLevel.STRICT
    line: int = 0
    tsa_store: Path | None = None
    tsa_certificates: tuple[x509.Certificate, ...] = ()
    """Roots a timestamp authority's chain must reach (the `tsa` trust store); empty: none trusted."""
    verify_timestamp: VerifyTimestamp = VerifyTimestamp.ALWAYS
    revocation: Revocation = Revocation.CHECK

    @property
    def kind(self) -> str:
        return "notation"
