"""Who a Fulcio certificate says signed: the identity policy of a keyless authority.

Fulcio binds a short-lived key to an OIDC identity: the token's subject goes into the
certificate's Subject Alternative Name (an e-mail address, or a URI such as a GitHub workflow
`https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main`), its issuer into an
extension (`1.3.6.1.4.1.57264.1.8`, DER UTF8String; older certificates carry only `…1.1`, raw
bytes), and CI claims into further extensions (GitHub: trigger, sha, workflow name, repository,
ref as `…1.2` to `…1.6`).

`IdentityPolicy` implements sigstore-python's `VerificationPolicy` protocol (`verify(cert)`
raising `VerificationError`) so sigstore's `Verifier` applies it at the right step; the exact
GitHub claims are checked with sigstore-python's own `GitHubWorkflow*` policies. Regular
expressions must match the whole value (`re.fullmatch`), as in the policy file. A mismatch names
the expected and the actual value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sigstore.errors import VerificationError

from pull.records import dataclass, field
from trust.sigstore.authority import KeylessAuthority

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

OIDC_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
OIDC_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
SIGSTORE_OTHERNAME = "1.3.6.1.4.1.57264.1.7"
GITHUB_CLAIM_OIDS = {
    "github-workflow-trigger": "1.3.6.1.4.1.57264.1.2",
    "github-workflow-sha": "1.3.6.1.4.1.57264.1.3",
    "github-workflow-name": "1.3.6.1.4.1.57264.1.4",
    "github-workflow-repository": "1.3.6.1.4.1.57264.1.5",
    "github-workflow-ref": "1.3.6.1.4.1.57264.1.6",
}
MAX_CLAIM_CHARS = 4096
"""Longer extension values are treated as absent: they are not anything Fulcio writes."""


class IdentityMismatch(VerificationError):
    """The certificate is valid but for another identity, issuer or workflow; `actual` says whose."""

    def __init__(self, message: str, actual: CertificateIdentity) -> None:
        super().__init__(message)
        self.actual = actual


@dataclass(frozen=True)
class CertificateIdentity:
    """What a Fulcio certificate asserts. Read from an untrusted certificate: judge it only after
    the certificate chained to a trusted root."""

    subjects: tuple[str, ...]
    """SAN e-mail addresses, URIs and Sigstore other-names, in certificate order."""
    issuer: str | None
    claims: Mapping[str, str] = field(default_factory=dict)
    """GitHub workflow claims present, by policy field name."""

    @property
    def subject(self) -> str:
        return self.subjects[0] if self.subjects else "(no identity)"

    def __str__(self) -> str:
        return f"{self.subject} (issuer {self.issuer or 'unknown'})"


def read_identity(cert: Certificate) -> CertificateIdentity:
    """The SAN identities, OIDC issuer and GitHub claims of `cert` (absent ones left out)."""
    from cryptography import x509

    subjects: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except unreadable_certificate_errors(x509.ExtensionNotFound):
        san = None
    if san is not None:
        for name in san:
            if isinstance(name, x509.RFC822Name | x509.UniformResourceIdentifier):
                subjects.append(name.value)
            elif isinstance(name, x509.OtherName) and name.type_id.dotted_string == SIGSTORE_OTHERNAME:
                text = _der_utf8(name.value)
                if text is not None:
                    subjects.append(text)
    issuer = _extension_text(cert, OIDC_ISSUER_V2, der=True) or _extension_text(cert, OIDC_ISSUER_V1)
    claims = {}
    for claim, oid in GITHUB_CLAIM_OIDS.items():
        value = _extension_text(cert, oid)
        if value is not None:
            claims[claim] = value
    return CertificateIdentity(tuple(subjects), issuer, claims)


def unreadable_certificate_errors(*extra: type[Exception]) -> tuple[type[Exception], ...]:
    """What cryptography raises for a certificate it cannot read, some errors only when a field
    (key, extensions, names) is first used: a hostile certificate must become an outcome."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    return (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
        *extra,
    )


def _extension_text(cert: Certificate, oid: str, *, der: bool = False) -> str | None:
    from cryptography import x509

    try:
        value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
    except unreadable_certificate_errors(x509.ExtensionNotFound):
        return None
    raw = getattr(value, "value", None)
    if not isinstance(raw, bytes):
        return None
    if der:
        return _der_utf8(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) <= MAX_CLAIM_CHARS else None


def _der_utf8(raw: bytes) -> str | None:
    from cryptography.hazmat import asn1

    try:
        text = asn1.decode_der(str, raw)
    except Exception:  # not a DER UTF8String: treat as absent, never as a match
        return None
    return text if isinstance(text, str) and len(text) <= MAX_CLAIM_CHARS else None


class IdentityPolicy:
    """sigstore-python `VerificationPolicy` for one keyless authority: issuer, subject, claims."""

    def __init__(self, authority: KeylessAuthority) -> None:
        self.authority = authority

    @property
    def expected(self) -> str:
        """The required identity, for messages: `subject (issuer …)`."""
        a = self.authority
        subject = f"matching {a.subject_regexp.pattern!r}" if a.subject_regexp is not None else a.subject
        issuer = f"matching {a.issuer_regexp.pattern!r}" if a.issuer_regexp is not None else a.issuer
        return f"{subject} (issuer {issuer})"

    def verify(self, cert: Certificate) -> None:
        """Raise a sigstore `VerificationError` (an `IdentityMismatch`) unless `cert` is ours."""
        actual = read_identity(cert)
        a = self.authority
        if actual.issuer is None:
            raise IdentityMismatch("the certificate names no OIDC issuer", actual)
        if not a.issuer_matches(actual.issuer):
            wanted = (
                f"an issuer matching {a.issuer_regexp.pattern!r}"
                if a.issuer_regexp is not None
                else f"issuer {a.issuer!r}"
            )
            raise IdentityMismatch(f"OIDC issuer is {actual.issuer!r}, expected {wanted}", actual)
        if not any(a.subject_matches(subject) for subject in actual.subjects):
            wanted = (
                f"an identity matching {a.subject_regexp.pattern!r}"
                if a.subject_regexp is not None
                else f"identity {a.subject!r}"
            )
            shown = ", ".join(repr(s) for s in actual.subjects) or "none"
            raise IdentityMismatch(f"certificate identity is {shown}, expected {wanted}", actual)
        for claim, required in a.github_claims.items():
            self._check_claim(cert, claim, required, actual)

    @staticmethod
    def _check_claim(cert: Certificate, claim: str, required: str, actual: CertificateIdentity) -> None:
        from sigstore.verify import policy

        checks = {
            "github-workflow-repository": policy.GitHubWorkflowRepository,
            "github-workflow-ref": policy.GitHubWorkflowRef,
            "github-workflow-name": policy.GitHubWorkflowName,
            "github-workflow-trigger": policy.GitHubWorkflowTrigger,
            "github-workflow-sha": policy.GitHubWorkflowSHA,
        }
        try:
            checks[claim](required).verify(cert)
        except VerificationError:
            found = actual.claims.get(claim)
            shown = repr(found) if found is not None else "absent"
            raise IdentityMismatch(f"{claim} is {shown}, expected {required!r}", actual) from None
