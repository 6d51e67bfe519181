"""Notary Project signature artifacts: the referrer manifest that carries one signature envelope.

A Notation signature is an OCI image manifest whose `subject` is the signed manifest, whose
artifact type (or, in the legacy form Notation 1.0 writes, whose config media type) is
`application/vnd.cncf.notary.signature`, and whose single layer is the envelope
(`application/jose+json` or `application/cose`). This module reads such manifests from verified
bytes and builds them; it does no I/O (`trust.attached` fetches, `trust.notation.signatures` judges).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from cryptography import x509

from pull.digest import Digest
from pull.manifest import Descriptor, ImageManifest, verify_document
from pull.mediatypes import NOTATION_SIGNATURE, OCI_EMPTY, OCI_MANIFEST
from pull.records import dataclass
from trust.notation.certificates import thumbprint
from trust.notation.jws import COSE_MEDIA_TYPE, JWS_MEDIA_TYPE, MAX_ENVELOPE_BYTES

THUMBPRINT_ANNOTATION = "io.cncf.notary.x509chain.thumbprint#S256"
ENVELOPE_MEDIA_TYPES = frozenset({JWS_MEDIA_TYPE, COSE_MEDIA_TYPE})
EMPTY_CONFIG = b"{}"


@dataclass(frozen=True)
class NotationSignature:
    """One Notation signature artifact attached to `target`, fetched and size-capped.

    `target` is the signed object's descriptor as known from verified bytes (its manifest fetched
    by digest and hash-checked), never a registry's claim: `targetArtifact` is compared with it.
    `problem` is set (and `envelope` empty) when the artifact itself is unusable: no single
    envelope layer, an oversized envelope, an envelope type that is not a signature.
    """

    manifest_digest: Digest
    envelope_media_type: str
    envelope_digest: Digest
    envelope: bytes
    target: Descriptor
    problem: str | None = None


BlobLoader = Callable[[Descriptor], bytes]
"""Fetches a blob whose size (at most the descriptor's) and digest the loader checks."""


def is_signature_manifest(document: ImageManifest) -> bool:
    """Artifact type `application/vnd.cncf.notary.signature`, or the legacy config media type."""
    if document.artifact_type is not None:
        return document.artifact_type == NOTATION_SIGNATURE
    return document.config.media_type == NOTATION_SIGNATURE


def read_signature(
    raw_manifest: bytes,
    content_type: str | None,
    manifest_digest: Digest,
    target: Descriptor,
    load_blob: BlobLoader,
) -> NotationSignature | None:
    """The signature carried by a referrer manifest, or None when it is not a Notation signature of
    `target` (another artifact type, or a `subject` other than the target, whatever an index said).

    Raises:
        IntegrityError (DigestMismatch, InvalidManifest): the manifest bytes do not hash to
            `manifest_digest` or are malformed; the envelope blob does not match its descriptor.
    """
    document = verify_document(raw_manifest, content_type=content_type, expected=manifest_digest).document
    if not isinstance(document, ImageManifest) or not is_signature_manifest(document):
        return None
    if document.subject is None or document.subject.digest != target.digest:
        return None

    def unusable(media_type: str, digest: Digest, problem: str) -> NotationSignature:
        return NotationSignature(manifest_digest, media_type, digest, b"", target, problem)

    if len(document.layers) != 1:
        return unusable(
            "",
            manifest_digest,
            f"signature manifest {manifest_digest} has {len(document.layers)} layers, not one envelope",
        )
    layer = document.layers[0]
    if layer.media_type not in ENVELOPE_MEDIA_TYPES:
        return unusable(
            layer.media_type,
            layer.digest,
            f"the signature envelope's media type {layer.media_type[:80]!r} is not "
            f"{JWS_MEDIA_TYPE} or {COSE_MEDIA_TYPE}",
        )
    if layer.size > MAX_ENVELOPE_BYTES:
        return unusable(
            layer.media_type, layer.digest, f"the signature envelope is over {MAX_ENVELOPE_BYTES} bytes"
        )
    return NotationSignature(manifest_digest, layer.media_type, layer.digest, load_blob(layer), target)


@dataclass(frozen=True)
class SignatureArtifact:
    """A signature manifest ready to push: its bytes, media type, and the blobs it names."""

    manifest: bytes
    media_type: str
    config: bytes
    envelope: bytes
    envelope_media_type: str

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.manifest)

    @property
    def config_digest(self) -> Digest:
        return Digest.of_bytes(self.config)

    @property
    def envelope_digest(self) -> Digest:
        return Digest.of_bytes(self.envelope)


def build_signature_manifest(
    subject: Descriptor, envelope: bytes, chain: Sequence[x509.Certificate], *, created: str | None = None
) -> SignatureArtifact:
    """The OCI 1.1 referrer manifest for a JWS envelope over `subject` (as `notation sign` writes it
    with the referrers API: artifact type on the manifest, the empty config)."""
    annotations = {THUMBPRINT_ANNOTATION: json.dumps([thumbprint(c) for c in chain], separators=(",", ":"))}
    if created:
        annotations["org.opencontainers.image.created"] = created
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": NOTATION_SIGNATURE,
        "config": {
            "mediaType": OCI_EMPTY,
            "digest": str(Digest.of_bytes(EMPTY_CONFIG)),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {"mediaType": JWS_MEDIA_TYPE, "digest": str(Digest.of_bytes(envelope)), "size": len(envelope)}
        ],
        "subject": subject.to_json(),
        "annotations": annotations,
    }
    manifest = json.dumps(document, separators=(",", ":")).encode()
    return SignatureArtifact(manifest, OCI_MANIFEST, EMPTY_CONFIG, envelope, JWS_MEDIA_TYPE)
