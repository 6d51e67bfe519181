"""Keyless DSSE bundles opened for attestations: the verified payload of a Fulcio-signed envelope.

`trust.sigstore.keyless` checks bundles that are *signatures* (their statement must be cosign's
signing predicate). An attestation bundle is checked the same way up to the payload: certificate
chain to the trusted root's Fulcio, the authority's identity, the transparency-log entry (or
timestamp), the DSSE signature over the PAE. What the payload says is `trust.attest`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass

from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError

from trust.cosign.simple_signing import Reason
from trust.errors import SignatureInvalid
from trust.sigstore.authority import KeylessAuthority
from trust.sigstore.identity import (
    IdentityMismatch,
    IdentityPolicy,
    read_identity,
    unreadable_certificate_errors,
)
from trust.sigstore.trusted_root import load_trusted_root


@dataclass(frozen=True)
class OpenedEnvelope:
    signer: str
    """The certificate's identity (subject, issuer)."""
    payload_type: str
    payload: bytes
    log_index: int | None


def open_keyless_dsse(bundle_json: bytes, authority: KeylessAuthority) -> OpenedEnvelope:
    """The payload of a DSSE bundle signed by `authority`'s identity under its trusted root.

    Raises:
        SignatureInvalid: with a `Reason` value (malformed, untrusted-certificate, wrong-identity,
            bad-set, bad-signature) and a one-line message.
        TrustedRootError: the authority's trusted root cannot be loaded (exit 2).
    """
    from cryptography import x509
    from sigstore.errors import CertValidationError
    from sigstore.models import Bundle

    root = load_trusted_root(authority.trusted_root)
    policy = IdentityPolicy(authority)
    try:
        bundle = Bundle.from_json(bundle_json)
    except unreadable_certificate_errors(SigstoreError, x509.ExtensionNotFound, AttributeError) as exc:
        raise SignatureInvalid(Reason.MALFORMED.value, _first_line(exc)) from None
    try:
        claimed = str(read_identity(bundle.signing_certificate))
    except unreadable_certificate_errors(AttributeError) as exc:
        raise SignatureInvalid(Reason.MALFORMED.value, _first_line(exc)) from None
    try:
        payload_type, payload = root.verifier.verify_dsse(bundle, policy)
    except IdentityMismatch as exc:
        raise SignatureInvalid(Reason.WRONG_IDENTITY.value, f"{exc} (signed by {exc.actual})") from None
    except CertValidationError as exc:
        raise SignatureInvalid(
            Reason.UNTRUSTED_CERTIFICATE.value, f"{_first_line(exc)} (trusted root: {root.source})"
        ) from None
    except VerificationError as exc:
        text = _first_line(exc)
        log_words = ("log entry", "inclusion", "SET", "checkpoint", "transparency", "time")
        reason = Reason.BAD_SET if any(word in text for word in log_words) else Reason.BAD_SIGNATURE
        raise SignatureInvalid(reason.value, text) from None
    except unreadable_certificate_errors(SigstoreError, x509.ExtensionNotFound, AttributeError) as exc:
        raise SignatureInvalid(Reason.MALFORMED.value, _first_line(exc)) from None
    try:
        log_index: int | None = int(bundle.log_entry._inner.log_index)
    except (AttributeError, TypeError, ValueError):
        log_index = None
    return OpenedEnvelope(claimed, payload_type, payload, log_index)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:240]
