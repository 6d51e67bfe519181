"""Where attestations live in a registry, and how `trust attest` puts them there.

Two layouts, both written by cosign and read by every verifier we know:
- cosign's `.att` tag: the image manifest tagged `sha256-<hex>.att` (beside `.sig`), one layer per
  attestation, media type `application/vnd.dsse.envelope.v1+json`, the layer blob being the DSSE
  envelope JSON, annotated with `predicateType` (cosign's attestation spec);
- a Sigstore bundle (v0.3, `dsseEnvelope`) pushed as an OCI 1.1 referrer of the image, artifact type
  `application/vnd.dev.sigstore.bundle.v0.3+json`, annotated `dev.sigstore.bundle.predicateType`
  (cosign v3, GitHub artifact attestations), with the tag-schema fallback.

Annotations are not signed. They are used only to skip attestations of another predicate type
before fetching them: skipping can only make a requirement fail, never pass. Whatever is fetched
is judged on the verified statement alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pull.digest import Digest
from pull.manifest import Descriptor
from pull.mediatypes import SIGSTORE_BUNDLE, SIGSTORE_BUNDLE_TYPES
from pull.records import dataclass, field, replace
from pull.registry import RegistryClient
from pull.strictjson import loads as strict_json
from trust.attached import (
    ACCEPT_IMAGE_MANIFEST,
    MAX_REFERRERS,
    SignatureLocation,
    attach_signature,
    read_signature_manifest,
)
from trust.attest.envelope import DSSE_MEDIA_TYPE, Envelope, EnvelopeError, envelope_from_json, parse_envelope
from trust.attest.statement import COSIGN_SIGN_PREDICATE, MAX_STATEMENT_BYTES
from trust.cosign.simple_signing import (
    MAX_SIGNATURE_LAYERS,
    SIGNATURE_ANNOTATION,
    SignatureLayer,
    manifest_layers,
)
from trust.keys.keyfiles import PublicKey

PREDICATE_TYPE_ANNOTATION = "predicateType"
BUNDLE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
MAX_ENVELOPE_BYTES = MAX_STATEMENT_BYTES * 4 // 3 + 64 * 1024
"""A statement of MAX_STATEMENT_BYTES, base64-encoded, plus the envelope (or bundle) around it."""


@dataclass(frozen=True)
class Attestation:
    """One attestation found for a digest, fetched (size-capped) but not yet trusted.

    `envelope` is the parsed DSSE envelope (None when unreadable: `problem` says why). `bundle` is
    the whole Sigstore bundle for referrers (keyless verification needs its certificate and log
    entry). `claimed_type` is the unsigned annotation, for display only.
    """

    source: str
    """"att" (cosign's .att tag) or "bundle" (a Sigstore bundle referrer)."""
    blob_digest: Digest
    envelope: Envelope | None
    claimed_type: str | None = None
    bundle: bytes | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    problem: str = ""


def attestation_location(location: SignatureLocation) -> SignatureLocation:
    """The `.att` tag beside the `.sig` tag of `location`."""
    return replace(location, tag=location.tag.removesuffix(".sig") + ".att")


def discover_attestations(
    client: RegistryClient,
    repository: str,
    digest: Digest,
    location: SignatureLocation,
    *,
    predicate_type: str | None = None,
    referrers: Sequence[Descriptor] | None = None,
    referrers_client: RegistryClient | None = None,
) -> list[Attestation]:
    """Every attestation attached to `digest`: `.att` layers at `location` (the `.att` tag), then
    bundle referrers in the image's `repository`. With `predicate_type`, those annotated with
    another type are not fetched. Registry failures propagate (exit 5), "nothing there" is []."""
    found = _att_layers(client, location, predicate_type)
    found += _bundle_referrers(referrers_client or client, repository, digest, predicate_type, referrers)
    return found


def _att_layers(client: RegistryClient, location: SignatureLocation, wanted: str | None) -> list[Attestation]:
    raw = read_signature_manifest(client, location)
    if raw is None:
        return []
    layers = [layer for layer in manifest_layers(raw) if layer.media_type == DSSE_MEDIA_TYPE]
    found = []
    for layer in layers[:MAX_SIGNATURE_LAYERS]:
        claimed = layer.annotations.get(PREDICATE_TYPE_ANNOTATION)
        if wanted is not None and claimed is not None and claimed != wanted:
            continue
        if layer.size > MAX_ENVELOPE_BYTES:
            found.append(Attestation("att", layer.digest, None, claimed, problem="envelope too large"))
            continue
        data = client.get_blob(location.repository, layer.digest, max_bytes=layer.size)
        try:
            envelope: Envelope | None = parse_envelope(data)
            problem = ""
        except EnvelopeError as exc:
            envelope, problem = None, str(exc)
        found.append(Attestation("att", layer.digest, envelope, claimed, None, layer.annotations, problem))
    return found


def _bundle_referrers(
    client: RegistryClient,
    repository: str,
    digest: Digest,
    wanted: str | None,
    referrers: Sequence[Descriptor] | None,
) -> list[Attestation]:
    from pull.manifest import ImageManifest, verify_document
    from pull.referrers import list_referrers

    if referrers is None:
        referrers = list_referrers(client, repository, digest, SIGSTORE_BUNDLE)
    found = []
    for entry in [e for e in referrers if e.artifact_type == SIGSTORE_BUNDLE][:MAX_REFERRERS]:
        claimed = (entry.annotations or {}).get(BUNDLE_PREDICATE_ANNOTATION)
        if claimed == COSIGN_SIGN_PREDICATE or (
            wanted is not None and claimed is not None and claimed != wanted
        ):
            continue  # a signature, or another type: not fetched
        fetched = client.get_manifest(repository, str(entry.digest), accept=ACCEPT_IMAGE_MANIFEST)
        document = verify_document(
            fetched.data, content_type=fetched.content_type, expected=entry.digest
        ).document
        if (
            not isinstance(document, ImageManifest)
            or document.subject is None
            or document.subject.digest != digest
        ):
            continue  # not a referrer of this digest, whatever the listing claimed
        for layer in document.layers:
            if layer.media_type not in SIGSTORE_BUNDLE_TYPES:
                continue
            if layer.size > MAX_ENVELOPE_BYTES:
                found.append(Attestation("bundle", layer.digest, None, claimed, problem="bundle too large"))
                continue
            data = client.get_blob(repository, layer.digest, max_bytes=layer.size)
            envelope, problem = bundle_envelope(data)
            if envelope is None and problem == "":
                continue  # a message-signature bundle: a signature, not an attestation
            found.append(Attestation("bundle", layer.digest, envelope, claimed, data, {}, problem))
    return found


def bundle_envelope(data: bytes) -> tuple[Envelope | None, str]:
    """The DSSE envelope of a bundle; (None, "") for a message-signature bundle; (None, why) if bad."""
    try:
        document = strict_json(data, "the bundle")
    except (ValueError, UnicodeDecodeError):
        return None, "the Sigstore bundle is not valid JSON"
    if not isinstance(document, dict) or document.get("mediaType") not in SIGSTORE_BUNDLE_TYPES:
        return None, "not a Sigstore bundle (unknown mediaType)"
    raw = document.get("dsseEnvelope")
    if raw is None:
        return None, ""
    if not isinstance(raw, dict):
        return None, "the bundle's dsseEnvelope is not an object"
    try:
        return envelope_from_json(raw), ""
    except EnvelopeError as exc:
        return None, str(exc)


# --- writing ----------------------------------------------------------------------------------


def attach_att(
    client: RegistryClient,
    location: SignatureLocation,
    envelope: Envelope,
    predicate_type: str,
    signer_key: PublicKey,
) -> Digest:
    """Append the envelope as a layer of the `.att` manifest at `location` (never overwriting the
    attestations already there; concurrent writers are merged as for `.sig`). Returns the layer digest."""
    data = envelope.to_json()
    layer = SignatureLayer(
        Digest.of_bytes(data),
        len(data),
        {SIGNATURE_ANNOTATION: "", PREDICATE_TYPE_ANNOTATION: predicate_type},
        DSSE_MEDIA_TYPE,
    )
    attach_signature(client, location, data, layer, signer_key)
    return layer.digest
