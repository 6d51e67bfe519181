"""Errors of the signature layer, built on the roots in `pull/errors.py`.

    TrustError
    ├── UsageError
    │   └── KeyLoadError              a key file is unreadable, malformed or refused   (exit 2)
    │       └── WrongPassword         the password does not open an encrypted key      (exit 2)
    ├── DeniedError
    │   ├── SignatureInvalid          one signature failed one check (kept as data)     (exit 3)
    │   ├── NoSignatures              nothing signed this digest                        (exit 3)
    │   └── UntrustedSignatures       signatures exist, none valid / by a trusted key   (exit 3)
    ├── IntegrityError
    │   └── DigestMismatch
    │       └── SignedDigestMismatch  a trusted key signed a different digest          (exit 4)
    └── CouldNotCheck
        └── RevocationUnknown         refused only for an unknown revocation status    (exit 5)

Verification does not raise `SignatureInvalid` to its caller:
`trust.cosign.simple_signing.verify_simple_signing` turns each failed check into a
`SignatureOutcome` (outcome + one-line reason) so that one bad signature never hides a good one.
Only the final decision (`trust.cosign.simple_signing.require_verified`) raises.
"""

from __future__ import annotations

from collections.abc import Mapping

from pull.errors import CouldNotCheck, DeniedError, DigestMismatch, UsageError


class KeyLoadError(UsageError):
    """A key could not be used: unreadable file, malformed PEM, refused algorithm or size, bad KDF."""

    def __init__(self, message: str, *, advice: str = "") -> None:
        super().__init__(message)
        self.advice = advice

    def diagnostics(self) -> str:
        return self.advice


class WrongPassword(KeyLoadError):
    """The password does not decrypt the key (or the encrypted key was altered)."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"wrong password for cosign key {source}",
            advice="Set TRUST_PASSWORD (or COSIGN_PASSWORD) to the key's password, or type it at the "
            "prompt. If the password is right, the key file was altered.",
        )
        self.source = source


class SignatureInvalid(DeniedError):
    """One signature failed one check. `reason` is a `trust.cosign.simple_signing.Reason` value.

    Raised and caught inside the per-signature checks; callers see it as a `SignatureOutcome`.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NoSignatures(DeniedError):
    """No signature at all was found for the digest (as opposed to "could not look", exit 5)."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"no signatures found for {subject}")
        self.subject = subject

    def diagnostics(self) -> str:
        return (
            "Sign the image digest with `trust sign` (or cosign), or point --signature-repository at "
            "where its signatures are stored."
        )


class UntrustedSignatures(DeniedError):
    """Signatures were found but none is valid; `reasons` counts each outcome."""

    def __init__(self, subject: str, reasons: Mapping[str, int]) -> None:
        self.subject = subject
        self.reasons = dict(reasons)
        self.count = sum(self.reasons.values())
        found = f"{self.count} signature{'s' if self.count != 1 else ''} found for {subject}"
        untrusted = {"unknown-key", "bad-signature"}
        if set(self.reasons) <= untrusted:
            message = f"{found}, none by a trusted key"
        else:
            parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items()))
            message = f"{found}, none valid ({parts})"
        super().__init__(message)

    def diagnostics(self) -> str:
        if "wrong-repository" in self.reasons:
            return (
                "A signature names another repository; if this is a mirror of the signed repository, "
                "pass the flag that relaxes the docker-reference check."
            )
        return "Check that --key names the public key that signed this image."


class SignedDigestMismatch(DigestMismatch):
    """A trusted key signed a payload for another manifest digest than the one being verified."""

    def __init__(self, subject: str, signed: str, key: str) -> None:
        super().__init__(
            f"signature by {key} in the signatures of {subject} is for {signed}, not for this digest"
        )
        self.subject = subject
        self.signed = signed
        self.key = key

    def diagnostics(self) -> str:
        return (
            "A signature was copied onto another image's signature tag, or the tag was re-pointed. "
            "Nothing was trusted."
        )


class RevocationUnknown(CouldNotCheck):
    """A signature was refused only because a certificate's revocation status could not be learned
    (OCSP responder and CRL server unreachable, or offline with a stale cache): exit 5."""

    def diagnostics(self) -> str:
        return (
            "Check that the CRL/OCSP URLs of the certificates are reachable, or run online once to "
            "refresh STORE/cache/crl/."
        )
