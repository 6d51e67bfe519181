"""Sigstore bundles attached as OCI referrers (cosign v3), verified with public keys.

cosign v3 signs an image by attaching a referrer of artifact type
`application/vnd.dev.sigstore.bundle.v0.3+json` whose single layer is a Sigstore bundle holding
either a DSSE envelope of an in-toto statement (predicate type `https://sigstore.dev/cosign/sign/v1`,
subject digest = the image digest) or a message signature over the image digest.

Here the signer is a key (keyless bundles with Fulcio certificates are verified in
`trust.sigstore.keyless`). Transparency-log entries in the bundle are checked when a trusted root
is given (`--key` with `--trusted-root`, by `trust.sigstore.verifier`); without one they are not
required, as with `cosign verify --key --insecure-ignore-tlog`; the bundle's signature is.
Attestations with other predicate types share the artifact type but are not signatures: they are
reported as `malformed` outcomes with a clear reason and never count.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from pull.digest import Digest
from pull.mediatypes import SIGSTORE_BUNDLE, SIGSTORE_BUNDLE_TYPES
from pull.records import dataclass
from pull.strictjson import loads as strict_json
from trust.cosign.simple_signing import Reason, SignatureOutcome
from trust.keys.keyfiles import PublicKey, TrustedKey, verify_bytes

if TYPE_CHECKING:
    from trust.sigstore.trusted_root import LoadedRoot

BUNDLE_ARTIFACT_TYPE = SIGSTORE_BUNDLE
BUNDLE_MEDIA_TYPES = SIGSTORE_BUNDLE_TYPES
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = frozenset({"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"})
MAX_BUNDLE_BYTES = 1024 * 1024


class BundleError(ValueError):
    """The bundle is malformed or is not a signature of the expected kind."""


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]


@dataclass(frozen=True)
class MessageSignature:
    digest: bytes
    algorithm: str
    signature: bytes


@dataclass(frozen=True)
class Bundle:
    media_type: str
    envelope: Envelope | None
    message: MessageSignature | None
    raw: dict[str, Any]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def parse_bundle(data: bytes) -> Bundle:
    """Structure only (no trust): a v0.1 to v0.3 bundle with a DSSE envelope or a message signature."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        doc = strict_json(data, "bundle")
    except ValueError as exc:
        raise BundleError(f"bundle is not JSON: {str(exc)[:80]}") from None
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    if not isinstance(media_type, str) or media_type not in BUNDLE_MEDIA_TYPES:
        raise BundleError("not a Sigstore bundle (unknown mediaType)")
    envelope, message = doc.get("dsseEnvelope"), doc.get("messageSignature")
    if (envelope is None) == (message is None):
        raise BundleError("a bundle holds exactly one of dsseEnvelope and messageSignature")
    if envelope is not None:
        if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list):
            raise BundleError("dsseEnvelope is malformed")
        signatures = tuple(
            _b64(s.get("sig") if isinstance(s, dict) else None, "signature") for s in envelope["signatures"]
        )
        if not signatures:
            raise BundleError("dsseEnvelope has no signatures")
        payload_type = envelope.get("payloadType")
        if not isinstance(payload_type, str):
            raise BundleError("dsseEnvelope has no payloadType")
        return Bundle(
            doc["mediaType"],
            Envelope(payload_type, _b64(envelope.get("payload"), "payload"), signatures),
            None,
            doc,
        )
    if not isinstance(message, dict) or not isinstance(message.get("messageDigest"), dict):
        raise BundleError("messageSignature is malformed")
    digest = message["messageDigest"]
    algorithm = digest.get("algorithm")
    if algorithm != "SHA2_256":
        raise BundleError(f"unsupported message digest algorithm {str(algorithm)[:40]!r}")
    return Bundle(
        doc["mediaType"],
        None,
        MessageSignature(
            _b64(digest.get("digest"), "message digest"),
            algorithm,
            _b64(message.get("signature"), "signature"),
        ),
        doc,
    )


def verify_bundle(
    index: int,
    blob_digest: Digest,
    data: bytes,
    expected: Digest,
    keys: Sequence[TrustedKey],
    root: LoadedRoot | None = None,
) -> SignatureOutcome:
    """One outcome for one bundle: valid when a trusted key signed a statement about `expected`.

    With `root` (`--key` with `--trusted-root`), the bundle's log entries must verify against it
    too (`trust.sigstore.verifier`); without, they are not looked at."""

    def outcome(reason: Reason, detail: str, key: str | None = None) -> SignatureOutcome:
        return SignatureOutcome(index, blob_digest, reason, f"sigstore bundle: {detail}", key)

    if root is not None:
        return _verify_logged(index, blob_digest, data, expected, keys, root)

    try:
        bundle = parse_bundle(data)
    except BundleError as exc:
        return outcome(Reason.MALFORMED, str(exc))
    if bundle.envelope is not None:
        envelope = bundle.envelope
        signed = pae(envelope.payload_type, envelope.payload)
        signer = next(
            (k for k in keys for sig in envelope.signatures if verify_bytes(k.public_key, signed, sig)), None
        )
        if signer is None:
            return outcome(
                Reason.UNKNOWN_KEY, f"DSSE signature verifies with no trusted key ({len(keys)} checked)"
            )
        try:
            subjects = statement_subjects(envelope)
        except BundleError as exc:
            return outcome(Reason.MALFORMED, str(exc), signer.name)
        if expected.hex not in subjects.get(expected.algorithm, set()):
            return outcome(
                Reason.DIGEST_MISMATCH, f"statement is about another digest, not {expected}", signer.name
            )
        return outcome(Reason.VALID, f"signed by {signer.name} (DSSE, cosign v3)", signer.name)
    message = bundle.message
    assert message is not None
    if expected.algorithm != "sha256" or message.digest != bytes.fromhex(expected.hex):
        return outcome(Reason.DIGEST_MISMATCH, f"message digest is not {expected}")
    signer = next(
        (k for k in keys if verify_prehashed(k.public_key, message.digest, message.signature)), None
    )
    if signer is None:
        return outcome(
            Reason.UNKNOWN_KEY, f"message signature verifies with no trusted key ({len(keys)} checked)"
        )
    return outcome(Reason.VALID, f"signed by {signer.name} (message signature)", signer.name)


def _verify_logged(
    index: int,
    blob_digest: Digest,
    data: bytes,
    expected: Digest,
    keys: Sequence[TrustedKey],
    root: LoadedRoot,
) -> SignatureOutcome:
    from trust.errors import SignatureInvalid
    from trust.sigstore.verifier import verify_sigstore_bundle

    def outcome(reason: Reason, detail: str, key: str | None = None) -> SignatureOutcome:
        return SignatureOutcome(index, blob_digest, reason, f"sigstore bundle: {detail}", key)

    wanted = bytes.fromhex(expected.hex) if expected.algorithm == "sha256" else None
    try:
        verified = verify_sigstore_bundle(data, root=root, keys=keys, message_digest=wanted)
    except SignatureInvalid as exc:
        return outcome(Reason(exc.reason), str(exc))
    if verified.payload_type is not None:
        try:
            subjects = statement_subjects(Envelope(verified.payload_type, verified.payload or b"", ()))
        except BundleError as exc:
            return outcome(Reason.MALFORMED, str(exc), verified.signer)
        if expected.hex not in subjects.get(expected.algorithm, set()):
            return outcome(
                Reason.DIGEST_MISMATCH, f"statement is about another digest, not {expected}", verified.signer
            )
    elif wanted is None:
        return outcome(Reason.DIGEST_MISMATCH, f"a message signature is over a SHA-256, not {expected}")
    return outcome(Reason.VALID, verified.describe(), verified.signer)


def statement_subjects(envelope: Envelope, *, any_predicate: bool = False) -> dict[str, set[str]]:
    """The subject digests (`algorithm -> {hex}`) of a cosign signature statement (of any in-toto
    statement with `any_predicate`); raises `BundleError` for other payload types, other predicates
    (attestations, unless `any_predicate`) and malformed statements."""
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise BundleError(f"DSSE payload type {envelope.payload_type[:60]!r} is not an in-toto statement")
    try:
        statement = strict_json(envelope.payload, "the in-toto statement")
    except ValueError:
        raise BundleError("the in-toto statement is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") not in STATEMENT_TYPES:
        raise BundleError("not an in-toto statement")
    if not any_predicate and statement.get("predicateType") != COSIGN_SIGN_PREDICATE:
        raise BundleError(
            f"an attestation ({str(statement.get('predicateType'))[:80]}), not a cosign signature"
        )
    subjects: dict[str, set[str]] = {}
    for subject in statement.get("subject") or []:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if isinstance(digests, dict):
            for algorithm, value in digests.items():
                if isinstance(value, str):
                    subjects.setdefault(algorithm, set()).add(value.lower())
    return subjects


def verify_prehashed(key: PublicKey, digest: bytes, signature: bytes) -> bool:
    """A signature over a SHA-256 digest (a Sigstore message signature)."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        elif isinstance(key, rsa.RSAPublicKey):
            from cryptography.hazmat.primitives.asymmetric import padding

            key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        else:
            return False  # Ed25519 cannot sign a prehash
    except InvalidSignature:
        return False
    return True


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"bundle {what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"bundle {what} is not base64") from None
