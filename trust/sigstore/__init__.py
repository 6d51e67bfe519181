"""Sigstore: keyless signatures (Fulcio certificates, Rekor logs), bundles and trusted roots.

The public face: the keyless authority a policy names and its verifier for `trust.verifiers`.
Behind it: `keyless` (verification of bundles and legacy keyless signatures), `identity` (who a
certificate says signed), `bundles` (the bundle format, key-signed bundles), `sign` (keyless
signing), `trusted_root` (which Fulcio, Rekor and TSA keys are trusted). sigstore-python is
imported only when something is verified or signed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trust.sigstore.authority import KeylessAuthority

if TYPE_CHECKING:
    from pull.digest import Digest
    from trust.attached import AttachedSignatures
    from trust.attest.attached import Attestation
    from trust.cosign.simple_signing import SignatureOutcome

__all__ = ["KeylessAuthority", "open_envelope", "public_good_sources", "verify_authority"]


def verify_authority(
    authority: KeylessAuthority,
    attached: AttachedSignatures,
    digest: Digest,
    *,
    repository: str,
    ignore_reference: bool,
) -> Sequence[SignatureOutcome]:
    """Keyless bundles and legacy keyless `.sig` layers attached to `digest`, for this identity."""
    from trust.sigstore.keyless import verify_keyless_attached

    return verify_keyless_attached(attached, digest, repository, authority, ignore_reference=ignore_reference)


def open_envelope(authority: KeylessAuthority, attestation: Attestation) -> tuple[str, str, bytes]:
    """An attestation's DSSE envelope in a Sigstore bundle signed by this identity (Fulcio chain to
    the trusted root, the log entry or timestamp, the signature), checked by sigstore-python."""
    from trust.cosign.simple_signing import Reason
    from trust.errors import SignatureInvalid

    if attestation.bundle is None:
        raise SignatureInvalid(
            Reason.UNKNOWN_KEY.value,
            "a keyless attestation is verified from a Sigstore bundle; this .att layer has none "
            "(cosign v2 keyless .att layers are not read)",
        )
    from trust.sigstore.envelopes import open_keyless_dsse

    opened = open_keyless_dsse(attestation.bundle, authority)
    return opened.signer, opened.payload_type, opened.payload


def public_good_sources() -> tuple[Path, ...]:
    """The files the public-good trusted root may be read from (`policy.reuse` fingerprints them)."""
    from trust.sigstore.trusted_root import public_good_sources as sources

    return sources()
