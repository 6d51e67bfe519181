"""Notary Project (Notation) signatures: verification against a policy authority, and signing.

Verification follows the Notary Project trust policy specification. Each signature goes through
the validations in the spec's order, and the authority's level says which are *enforced* (a
failure rejects the signature) and which are *logged* (the failure becomes a warning in the
outcome's detail and the next validation runs):

    validation            what it checks                                   strict    permissive  audit
    integrity             envelope well-formed, critical headers known,     enforced  enforced    enforced
                          signature verifies with the x5c leaf, alg fits
                          the leaf key, targetArtifact = the subject
    authenticity          certificate rules, chain valid at signing time,  enforced  enforced    logged
                          chain reaches the trust store, trusted identity
    expiry                `io.cncf.notary.expiry` not passed               enforced  logged      logged
    authentic timestamp   an RFC 3161 countersignature verifies against    enforced  logged      logged
                          the `tsa` store and lies in the chain's validity
                          (always, or only once a certificate expired with
                          verify-timestamp: after-cert-expiry); without a
                          valid one, every chain certificate must be valid
                          now
    revocation            OCSP, then CRLs, of the signing and TSA chains   enforced  logged      logged
                          (`trust.notation.revocation`): revoked or unknown
                          fails; `revocation: skip` checks nothing

Both envelope formats are read: JWS (`trust.notation.jws`) and COSE (`trust.notation.cose`).
Notation's `skip` level is not an authority level here (a rule that checks nothing says
`insecure-accept-anything`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pull.digest import Digest
from pull.errors import UsageError
from pull.manifest import Descriptor
from pull.records import dataclass
from pull.reference import Reference
from pull.registry import RegistryClient
from pull.userfile import open_regular_file
from trust.attached import AttachedSignatures
from trust.cosign.simple_signing import Reason, SignatureOutcome
from trust.notation.artifact import NotationSignature, build_signature_manifest
from trust.notation.authority import NotationAuthority, NotationLevel, Revocation, VerifyTimestamp
from trust.notation.certificates import (
    CertificateProblem,
    anchored_in,
    check_chain,
    describe,
    identity_matches,
    invalid_now,
)
from trust.notation.identity import parse_identity
from trust.notation.jws import (
    COSE_MEDIA_TYPE,
    BadSignature,
    EnvelopeError,
    ExternalKey,
    NotarySigningKey,
    Timestamper,
    build_envelope,
    parse_envelope,
)
from trust.notation.timestamp import (
    AuthenticTime,
    TimestampProblem,
    check_within_validity,
    tsa_chain,
    verify_token,
)

_ENFORCED: dict[NotationLevel, frozenset[str]] = {
    NotationLevel.STRICT: frozenset({"authenticity", "expiry", "timestamp", "revocation"}),
    NotationLevel.PERMISSIVE: frozenset({"authenticity"}),
    NotationLevel.AUDIT: frozenset(),
}
"""Per level, the validations after integrity (always enforced) whose failure rejects a signature."""


def verify_notation_attached(
    attached: AttachedSignatures,
    expected: Digest,
    authority: NotationAuthority,
    *,
    now: datetime | None = None,
) -> list[SignatureOutcome]:
    """One outcome per Notation signature attached to `expected`, judged against the authority.

    Outcomes are numbered after the cosign layers and bundles of the same digest.
    """
    first = len(attached.layers) + len(attached.bundles)
    return [
        verify_notation_signature(first + offset, signature, expected, authority, now=now)
        for offset, signature in enumerate(attached.notation)
    ]


def verify_notation_signature(
    index: int,
    signature: NotationSignature,
    expected: Digest,
    authority: NotationAuthority,
    *,
    now: datetime | None = None,
) -> SignatureOutcome:
    """Check one signature. Never raises for a bad signature: that is an outcome."""
    moment = now or datetime.now(UTC)

    def outcome(reason: Reason, detail: str, key: str | None = None) -> SignatureOutcome:
        return SignatureOutcome(index, signature.envelope_digest, reason, f"notation: {detail}", key)

    # -- integrity (always enforced) --
    if signature.problem is not None:
        return outcome(Reason.MALFORMED, signature.problem)
    try:
        if signature.envelope_media_type == COSE_MEDIA_TYPE:
            from trust.notation.cose import parse_cose_envelope  # cbor2 only when a COSE signature is met

            envelope = parse_cose_envelope(signature.envelope)
        else:
            envelope = parse_envelope(signature.envelope)
    except BadSignature as exc:
        return outcome(Reason.BAD_SIGNATURE, str(exc))
    except EnvelopeError as exc:
        return outcome(Reason.MALFORMED, str(exc))
    claimed, actual = envelope.target, signature.target
    if actual.digest != expected or claimed.digest != actual.digest:
        return outcome(Reason.DIGEST_MISMATCH, f"the signature covers {claimed.digest}, not {expected}")
    if (claimed.size, claimed.media_type) != (actual.size, actual.media_type):
        return outcome(
            Reason.DIGEST_MISMATCH,
            f"targetArtifact says {claimed.media_type[:100]}, {claimed.size} bytes; "
            f"the signed object is {actual.media_type}, {actual.size} bytes",
        )
    leaf = describe(envelope.leaf)

    enforced = _ENFORCED[authority.level]
    warnings: list[str] = []

    def failed(validation: str, reason: Reason, detail: str) -> SignatureOutcome | None:
        if validation in enforced:
            return outcome(reason, detail, leaf)
        warnings.append(f"{validation}: {detail}")
        return None

    # -- authenticity --
    anchor: x509.Certificate | None = None
    problem: tuple[Reason, str] | None = None
    try:
        check_chain(envelope.chain, envelope.signing_time)
        anchor = anchored_in(envelope.chain, authority.certificates)
        if anchor is None:
            problem = (
                Reason.UNTRUSTED_CERTIFICATE,
                f"the certificate chain of {leaf} leads to no certificate of trust store "
                f"{authority.trust_store}",
            )
        elif not _identity_trusted(authority.trusted_identities, envelope.leaf):
            problem = (
                Reason.WRONG_IDENTITY,
                f"signing certificate {leaf} matches none of the trusted identities "
                f"({'; '.join(authority.trusted_identities)})",
            )
    except CertificateProblem as exc:
        problem = (Reason.UNTRUSTED_CERTIFICATE, str(exc))
    if problem is not None and (rejected := failed("authenticity", *problem)):
        return rejected

    # -- expiry --
    if envelope.expiry is not None and moment >= envelope.expiry:
        detail = f"the signature expired at {envelope.expiry.isoformat()}"
        if rejected := failed("expiry", Reason.EXPIRED, detail):
            return rejected

    # -- authentic timestamp --
    authentic: AuthenticTime | None = None
    stale = invalid_now(envelope.chain, moment)
    checks_timestamp = authority.verify_timestamp is VerifyTimestamp.ALWAYS or stale is not None
    if checks_timestamp and envelope.timestamp_token is not None:
        try:
            authentic = verify_token(
                envelope.timestamp_token, envelope.signature_value, authority.tsa_certificates
            )
            check_within_validity(authentic, envelope.chain)
        except TimestampProblem as exc:
            authentic = None
            if rejected := failed("timestamp", Reason.BAD_TIMESTAMP, str(exc)):
                return rejected
    if stale is not None and authentic is None:
        why = (
            "and the signature has no timestamp"
            if envelope.timestamp_token is None
            else "and its timestamp failed"
        )
        detail = (
            f"certificate {describe(stale)} is not valid now (valid {stale.not_valid_before_utc.isoformat()} "
            f"to {stale.not_valid_after_utc.isoformat()}) {why}"
        )
        if rejected := failed("timestamp", Reason.EXPIRED, detail):
            return rejected

    # -- revocation (signing chain, then the timestamp authority's chain) --
    if authority.revocation is Revocation.CHECK:
        from trust.notation.revocation import Status, checker

        revocation = checker(moment)
        statuses = [
            revocation.check(envelope.chain, authentic_signing_time=authentic.time if authentic else None)
        ]
        if authentic is not None and envelope.timestamp_token is not None:
            statuses.append(
                revocation.check(_tsa_chain(envelope.timestamp_token, authority.tsa_certificates))
            )
        for status in statuses:
            if status.status is Status.REVOKED:
                if rejected := failed("revocation", Reason.REVOKED, status.detail):
                    return rejected
            elif status.status is Status.UNKNOWN and (
                rejected := failed("revocation", Reason.REVOCATION_UNKNOWN, status.detail)
            ):
                return rejected

    anchored = f", chain anchored at {describe(anchor)}" if anchor is not None else ""
    detail = f"signed by {leaf}{anchored} at {envelope.signing_time.isoformat()}"
    if authentic is not None:
        detail += f", timestamped {authentic.time.isoformat()} by {authentic.authority}"
    if warnings:
        detail += f"; logged at level {authority.level.value}: " + "; ".join(warnings)
    return outcome(Reason.VALID, detail, leaf)


def _tsa_chain(token: bytes, roots: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The TSA's chain, signer first, completed with the trust-store root it was verified against."""
    chain = tsa_chain(token)
    if chain[-1].issuer != chain[-1].subject:
        root = next((candidate for candidate in roots if candidate.subject == chain[-1].issuer), None)
        if root is not None:
            chain.append(root)
    return chain


def _identity_trusted(identities: Sequence[str], leaf: x509.Certificate) -> bool:
    if tuple(identities) == ("*",):
        return True
    for text in identities:
        try:
            parsed = parse_identity(text)
        except ValueError:
            continue  # the loader refuses these; a hand-built authority simply matches nothing
        if identity_matches(parsed, leaf):
            return True
    return False


# --- signing -----------------------------------------------------------------------------------


def load_certificate_chain(path: str, data: bytes) -> list[x509.Certificate]:
    """The PEM chain file given with `--cert`: leaf first, then intermediates and the root."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise UsageError(f"certificate chain {path} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise UsageError(f"certificate chain {path} is not a valid PEM certificate list") from None


@dataclass(frozen=True)
class NotationSignResult:
    reference: Reference
    digest: Digest
    signature_digest: Digest
    repository: str
    """Where the signature is: `registry/repository`, or `oci:/DIR` for a layout."""

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "digest": str(self.digest),
            "format": "notation",
            "signature": f"{self.repository}@{self.signature_digest}",
        }


def sign_notation(
    client_for: Callable[[str], RegistryClient],
    reference: Reference,
    private_key: object,
    chain: Sequence[x509.Certificate],
    *,
    expiry: datetime | None = None,
    now: datetime | None = None,
    timestamper: Timestamper | None = None,
) -> NotationSignResult:
    """Sign the digest `reference` resolves to and push the signature as a referrer.

    The key (in memory, or on a token or in a KMS) must belong to `chain[0]`, and the chain must
    meet the Notary Project certificate requirements now (the spec applies them at signing time
    too). With a `timestamper`, the signature carries an RFC 3161 countersignature. Raises
    `UsageError` otherwise.
    """
    from pull.pipeline import resolve
    from pull.referrers import push_referrer

    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    key = _signing_key(private_key, chain)
    try:
        check_chain(chain, moment)
    except CertificateProblem as exc:
        raise UsageError(f"the certificate chain cannot sign Notary Project signatures: {exc}") from None
    client = client_for(reference.api_host)
    document = resolve(client, reference)
    subject = Descriptor(document.media_type, document.digest, len(document.raw))
    try:
        envelope = build_envelope(
            subject, key, chain, signing_time=moment, expiry=expiry, timestamper=timestamper
        )
    except EnvelopeError as exc:
        raise UsageError(str(exc)) from None
    artifact = build_signature_manifest(subject, envelope, chain, created=_created(moment))
    repository = reference.repository
    client.push_blob(repository, artifact.config_digest, len(artifact.config), artifact.config)
    client.push_blob(repository, artifact.envelope_digest, len(artifact.envelope), artifact.envelope)
    pushed = push_referrer(client, repository, artifact.manifest, artifact.media_type, subject)
    return NotationSignResult(reference, document.digest, pushed, reference.name)


def _signing_key(private_key: object, chain: Sequence[x509.Certificate]) -> NotarySigningKey:
    if isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        key: NotarySigningKey = private_key
        public = private_key.public_key()
    elif hasattr(private_key, "sign_ecdsa") and hasattr(private_key, "sign_rsa"):
        key = cast(ExternalKey, private_key)
        public = key.public_key
    else:
        raise UsageError("Notary Project signatures need an RSA or EC key")
    if not chain:
        raise UsageError("the certificate chain is empty")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*spki) != chain[0].public_key().public_bytes(*spki):
        raise UsageError(
            f"the key does not belong to the first certificate of the chain ({describe(chain[0])})"
        )
    return key


def _created(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_notation_with_files(
    client_for: Callable[[str], RegistryClient],
    reference: Reference,
    key_reference: str,
    chain_path: Path,
    *,
    expiry: timedelta | None = None,
    timestamp_url: str | None = None,
    timestamp_root: Path | None = None,
) -> NotationSignResult:
    """`trust sign --format notation --key KEY --cert CHAIN [--expiry 30d] [--timestamp-url URL
    --timestamp-root-cert PEM]`: load the key (a file, `env://`, `pkcs11:` or `awskms://`) and the
    chain, then `sign_notation`."""
    from trust.keys.references import is_in_memory, private_key_for, signer_for

    if (timestamp_url is None) != (timestamp_root is None):
        raise UsageError("--timestamp-url and --timestamp-root-cert go together")
    timestamper = _timestamper(timestamp_url, timestamp_root) if timestamp_url and timestamp_root else None
    chain = load_certificate_chain(str(chain_path), _read_chain(chain_path))
    key = private_key_for(key_reference) if is_in_memory(key_reference) else signer_for(key_reference)
    now = datetime.now(UTC)
    return sign_notation(
        client_for,
        reference,
        key,
        chain,
        expiry=now + expiry if expiry is not None else None,
        now=now,
        timestamper=timestamper,
    )


def _read_chain(path: Path) -> bytes:
    try:
        with open_regular_file(path) as handle:
            data = handle.read(MAX_CHAIN_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read certificate chain {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CHAIN_FILE_BYTES:
        raise UsageError(f"certificate chain {path} is larger than {MAX_CHAIN_FILE_BYTES} bytes")
    return data


def _timestamper(url: str, root_path: Path) -> Timestamper:
    """Stamps a signature value at the TSA `url`, checking the answer against the root in `root_path`."""
    from pull.errors import CouldNotCheck
    from trust.notation.timestamp import TimestampUnavailable, request_token

    roots = load_certificate_chain(str(root_path), _read_chain(root_path))

    def stamp(signature_value: bytes, hash_name: str) -> bytes:
        try:
            return request_token(url, signature_value, roots[-1], hash_name=hash_name)
        except TimestampUnavailable as exc:
            raise CouldNotCheck(str(exc)) from None
        except TimestampProblem as exc:
            raise UsageError(f"the timestamp from {url[:100]} does not verify: {exc}") from None

    return stamp


def parse_expiry(text: str) -> timedelta:
    """`--expiry` as Notation writes it: a number and a unit, `h` (hours), `m` (minutes) or `d` (days)."""
    match = re.fullmatch(r"([1-9][0-9]{0,5})([mhd])", text.strip())
    if match is None:
        raise UsageError(f"invalid --expiry {text!r}: use e.g. 24h, 90m or 30d")
    value, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=value), "h": timedelta(hours=value), "d": timedelta(days=value)}[unit]


MAX_CHAIN_FILE_BYTES = 256 * 1024
