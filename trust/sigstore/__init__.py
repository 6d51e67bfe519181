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
    from trust.keys.keyfiles import TrustedKey
    from trust.sigstore.verifier import VerifiedBundle

__all__ = [
    "KeylessAuthority",
    "open_envelope",
    "public_good_sources",
    "verify_authority",
    "verify_dsse_bundle",
]


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
    verified = verify_dsse_bundle(attestation.bundle, identity=authority)
    assert verified.payload_type is not None and verified.payload is not None
    return verified.signer, verified.payload_type, verified.payload


def public_good_sources() -> tuple[Path, ...]:
    """The files the public-good trusted root may be read from (`policy.reuse` fingerprints them)."""
    from trust.sigstore.trusted_root import public_good_sources as sources

    return sources()


def verify_dsse_bundle(
    data: bytes,
    *,
    identity: KeylessAuthority | None = None,
    keys: Sequence[TrustedKey] = (),
    trusted_root: Path | None = None,
) -> VerifiedBundle:
    """Verify a Sigstore bundle holding a DSSE envelope; return what it verifiably carries.

    Keyless: `identity` names who must have signed (its `trusted_root`, else `trusted_root`, else
    the public-good root). Key-signed: one of `keys`; with `trusted_root` the log entries are
    verified against it (at least one required), without it they are not looked at. The result's
    `payload_type` and `payload` are the envelope's, checked by signature only: what the payload
    means (an in-toto statement, its subjects, its predicate) is the caller's to check.

    Raises `trust.errors.SignatureInvalid` (a `DeniedError`, exit 3; `.reason` is a
    `trust.cosign.simple_signing.Reason`, `malformed` for a message-signature bundle);
    `trust.sigstore.trusted_root.TrustedRootError` (exit 2) for an unusable root.
    """
    from trust.cosign.simple_signing import Reason
    from trust.errors import SignatureInvalid
    from trust.sigstore.identity import IdentityPolicy
    from trust.sigstore.trusted_root import load_trusted_root
    from trust.sigstore.verifier import verify_sigstore_bundle

    if (identity is None) == (not keys):
        raise ValueError("verify_dsse_bundle needs an identity or keys, not both")
    if identity is not None:
        root = load_trusted_root(identity.trusted_root or trusted_root)
        verified = verify_sigstore_bundle(data, root=root, policy=IdentityPolicy(identity))
    else:
        key_root = load_trusted_root(trusted_root) if trusted_root is not None else None
        verified = verify_sigstore_bundle(data, root=key_root, keys=keys)
    if verified.payload_type is None:
        raise SignatureInvalid(Reason.MALFORMED, "a message-signature bundle, not a DSSE envelope")
    return verified
