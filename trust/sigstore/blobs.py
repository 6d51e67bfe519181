"""Signatures over files (`trust verify-blob`): every form cosign and Sigstore clients write.

- a **Sigstore bundle** (v0.1 to v0.3; `cosign sign-blob --bundle` since v3, sigstore-python,
  sigstore-js, GitHub's attestations): a message signature over the file's SHA-256, or a DSSE
  envelope whose in-toto statement names the file's digest among its subjects (any predicate: what
  an attestation *means* is the attestation commands' business);
- cosign's **pre-bundle `--bundle` JSON** (`{"base64Signature", "cert", "rekorBundle"}`, cosign
  v1/v2 `sign-blob --bundle`): a signature over the file's bytes, the certificate as base64 of
  PEM (absent for key signatures), the Rekor SET in the `.sig` annotation's shape;
- a **detached pair**: `--signature` (base64 text, as cosign writes it, or raw bytes) with
  `--certificate` (PEM, or base64 of PEM) for keyless, or with `--key`.

Keyless forms are judged by the same checks as images (`trust.sigstore.verifier` for bundles,
`trust.sigstore.keyless.verify_legacy_signature` for the older forms). Key forms need only the key;
with a trusted root their log entry (bundle) or SET (pre-bundle JSON) must verify against it too.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pull.digest import Digest
from pull.records import dataclass
from pull.strictjson import loads as strict_json
from trust.cosign.simple_signing import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    RFC3161_TIMESTAMP_ANNOTATION,
    SIGNATURE_ANNOTATION,
    Reason,
    SignatureLayer,
    SignatureOutcome,
    verify_rekor_set,
)
from trust.errors import SignatureInvalid
from trust.keys.keyfiles import TrustedKey, verify_bytes

if TYPE_CHECKING:
    from trust.sigstore.identity import IdentityPolicy
    from trust.sigstore.trusted_root import LoadedRoot

MAX_EVIDENCE_BYTES = 1024 * 1024
Outcome = Callable[..., SignatureOutcome]


@dataclass(frozen=True)
class BlobEvidence:
    """What was given about one file: a bundle (either kind), or a detached signature and
    certificate, and an optional RFC 3161 timestamp (cosign's `--rfc3161-timestamp` JSON)."""

    bundle: bytes | None = None
    signature: bytes | None = None
    certificate: bytes | None = None
    timestamp: bytes | None = None


def verify_blob_evidence(
    data: bytes,
    digest: Digest,
    evidence: BlobEvidence,
    *,
    keys: Sequence[TrustedKey] = (),
    root: LoadedRoot | None = None,
    policy: IdentityPolicy | None = None,
) -> SignatureOutcome:
    """One outcome for the file `data` (SHA-256 `digest`). Keyless needs `root` and `policy`;
    with `keys`, `root` (optional) makes the log entry required and checked."""
    if evidence.bundle is not None and _is_sigstore_bundle(evidence.bundle):
        return _sigstore_bundle(evidence.bundle, digest, keys, root, policy)
    what = "cosign bundle" if evidence.bundle is not None else "signature"
    evidence_digest = Digest.of_bytes(evidence.bundle or evidence.signature or b"")

    def outcome(reason: Reason, detail: str, key: str | None = None) -> SignatureOutcome:
        return SignatureOutcome(0, evidence_digest, reason, f"{what}: {detail}", key)

    try:
        signature_b64, certificate, rekor_set = _legacy_parts(evidence)
    except SignatureInvalid as exc:
        return outcome(Reason(exc.reason), str(exc))
    signature = base64.b64decode(signature_b64)
    if policy is not None:
        if certificate is None:
            return outcome(Reason.UNKNOWN_KEY, "no certificate: a key signature, not keyless (give --key)")
        assert root is not None
        return _legacy_keyless(
            data, signature_b64, certificate, rekor_set, evidence.timestamp, root, policy, outcome
        )
    signer = next((k for k in keys if verify_bytes(k.public_key, data, signature)), None)
    if signer is None:
        return outcome(
            Reason.UNKNOWN_KEY, f"the signature verifies with no trusted key ({len(keys)} checked)"
        )
    if root is None:
        return outcome(Reason.VALID, f"signed by {signer.name}", signer.name)
    if rekor_set is None:
        return outcome(
            Reason.BAD_SET, "no Rekor entry (rekorBundle) to check against the trusted root", signer.name
        )
    try:
        entry = verify_rekor_set(
            rekor_set, [log.key for log in root.rekor_logs], data, signature_b64, signer.public_key
        )
    except SignatureInvalid as exc:
        return outcome(Reason(exc.reason), str(exc), signer.name)
    return SignatureOutcome(
        0,
        evidence_digest,
        Reason.VALID,
        f"{what}: signed by {signer.name}, logged in Rekor at index {entry.log_index}",
        signer.name,
        None,
        entry,
    )


def _is_sigstore_bundle(data: bytes) -> bool:
    try:
        document = json.loads(data[:MAX_EVIDENCE_BYTES])
    except (ValueError, UnicodeDecodeError):
        return True  # let the bundle parser say what is wrong
    return not (isinstance(document, dict) and "base64Signature" in document)


def _sigstore_bundle(
    data: bytes,
    digest: Digest,
    keys: Sequence[TrustedKey],
    root: LoadedRoot | None,
    policy: IdentityPolicy | None,
) -> SignatureOutcome:
    from trust.sigstore.keyless import statement_problem, verify_keyless_bundle

    bundle_digest = Digest.of_bytes(data)
    if policy is not None:
        assert root is not None
        return verify_keyless_bundle(0, bundle_digest, data, digest, root, policy, any_predicate=True)
    from trust.sigstore.verifier import verify_sigstore_bundle

    def outcome(reason: Reason, detail: str, key: str | None = None) -> SignatureOutcome:
        return SignatureOutcome(0, bundle_digest, reason, f"sigstore bundle: {detail}", key)

    try:
        verified = verify_sigstore_bundle(
            data, root=root, keys=keys, message_digest=bytes.fromhex(digest.hex)
        )
    except SignatureInvalid as exc:
        return outcome(Reason(exc.reason), str(exc))
    if verified.payload_type is not None:
        problem = statement_problem(verified.payload_type, verified.payload or b"", digest, True)
        if problem is not None:
            return outcome(problem[0], problem[1], verified.signer)
    entry = verified.log_entries[0] if verified.log_entries else None
    return SignatureOutcome(
        0,
        bundle_digest,
        Reason.VALID,
        f"sigstore bundle: {verified.describe()}",
        verified.signer,
        None,
        entry,
    )


def _legacy_parts(evidence: BlobEvidence) -> tuple[str, bytes | None, str | None]:
    """(base64 signature, certificate PEM or None, SET JSON or None) of a pre-bundle JSON or a
    detached pair."""
    certificate = _pem(evidence.certificate) if evidence.certificate is not None else None
    if evidence.bundle is not None:
        try:
            document = strict_json(evidence.bundle, "cosign bundle")
        except ValueError:
            raise SignatureInvalid(Reason.MALFORMED, "not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("base64Signature"), str):
            raise SignatureInvalid(Reason.MALFORMED, "no base64Signature")
        signature_b64 = document["base64Signature"]
        cert = document.get("cert")
        if cert is not None:
            if not isinstance(cert, str):
                raise SignatureInvalid(Reason.MALFORMED, "cert is not a string")
            certificate = _pem(cert.encode())
        rekor = document.get("rekorBundle")
        rekor_set = json.dumps(rekor) if rekor is not None else None
    else:
        raw = evidence.signature or b""
        text = raw.strip()
        signature_b64 = text.decode("ascii", "replace") if _is_b64(text) else base64.b64encode(raw).decode()
        rekor_set = None
    if not _is_b64(signature_b64.encode()):
        raise SignatureInvalid(Reason.MALFORMED, "the signature is not base64")
    return signature_b64, certificate, rekor_set


def _legacy_keyless(
    data: bytes,
    signature_b64: str,
    certificate: bytes,
    rekor_set: str | None,
    timestamp: bytes | None,
    root: LoadedRoot,
    policy: IdentityPolicy,
    outcome: Outcome,
) -> SignatureOutcome:
    from trust.sigstore.keyless import verify_legacy_signature

    annotations = {
        SIGNATURE_ANNOTATION: signature_b64,
        CERTIFICATE_ANNOTATION: certificate.decode("utf-8", "replace"),
    }
    if rekor_set is not None:
        annotations[BUNDLE_ANNOTATION] = rekor_set
    if timestamp is not None:
        annotations[RFC3161_TIMESTAMP_ANNOTATION] = timestamp.decode("utf-8", "replace")
    layer = SignatureLayer(Digest.of_bytes(data), len(data), annotations)
    try:
        identity, proven = verify_legacy_signature(data, layer, root, policy)
    except SignatureInvalid as exc:
        return outcome(Reason(exc.reason), str(exc))
    result = outcome(Reason.VALID, f"signed by {identity}, {proven.describe()}", str(identity))
    if proven.rekor is not None:
        from pull.records import replace

        result = replace(result, rekor=proven.rekor)
    return result


def _pem(raw: bytes) -> bytes:
    text = raw.strip()
    if text.startswith(b"-----BEGIN"):
        return text + b"\n"
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(Reason.MALFORMED, "the certificate is neither PEM nor base64 of PEM") from None
    if not decoded.strip().startswith(b"-----BEGIN"):
        raise SignatureInvalid(Reason.MALFORMED, "the certificate is neither PEM nor base64 of PEM")
    return decoded.strip() + b"\n"


def _is_b64(text: bytes) -> bool:
    try:
        return bool(text) and bool(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return False
