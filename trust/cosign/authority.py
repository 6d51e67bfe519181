"""A policy authority of the cosign kind: signatures made with one of a set of public keys."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pull.records import dataclass
from trust.keys.keyfiles import TrustedKey

if TYPE_CHECKING:
    from cryptography import x509


@dataclass(frozen=True)
class CosignKeyAuthority:
    """Signatures by one of `keys` (cosign simple-signing); with `rekor_keys`, a Rekor SET by one
    of them is required as well. With `trusted_root` (a Sigstore trusted root file), attestations
    must come in a Sigstore bundle whose log entries verify against it (`verify-attestation --key
    --trusted-root`, as `cosign verify-attestation --key --trusted-root` requires the log)."""

    name: str
    keys: tuple[TrustedKey, ...]
    rekor_keys: tuple[TrustedKey, ...] = ()
    line: int = 0
    trusted_root: Path | None = None

    @property
    def kind(self) -> str:
        return "cosign-keys"


@dataclass(frozen=True)
class CosignPkiAuthority:
    """Cosign signatures whose `.sig` layer carries a certificate that chains to `roots` (through
    `intermediates` and the layer's own chain) and names `subject_email` and/or `subject_hostname`:
    an enterprise CA instead of Fulcio (containers-policy.json's `pki`). No SCT, no Rekor."""

    name: str
    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    subject_email: str | None = None
    subject_hostname: str | None = None
    roots_path: Path | None = None
    line: int = 0

    @property
    def kind(self) -> str:
        return "cosign-pki"
