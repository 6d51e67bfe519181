"""Cosign simple-signing signatures: payloads, `.sig` manifests, Rekor SETs and the verification core.

What cosign writes when it signs `REPO@sha256:H` with a key:

    payload   {"critical":{"identity":{"docker-reference":"REPO"},
                           "image":{"docker-manifest-digest":"sha256:H"},
                           "type":"cosign container image signature"},
               "optional":null}                      (or the -a annotations, keys sorted)
    layer     mediaType application/vnd.dev.cosign.simplesigning.v1+json, the payload bytes,
              annotation dev.cosignproject.cosign/signature = base64 of the signature over them
              (+ dev.sigstore.cosign/bundle, a Rekor SET, when uploaded to a transparency log)
    manifest  an OCI image manifest tagged `sha256-H.sig` in the same repository; one layer
              per signature; the config is a tiny image config listing the layers as diff_ids

Everything here is transport-independent: bytes in, checked objects or outcomes out. A registry
client and the containers/image `dir:` reader (`trust.cosign.dir_image`) feed the same
`verify_simple_signing`, so the upstream test vectors exercise the code path registries use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pull.digest import Digest
from pull.errors import IntegrityError, InvalidManifest, InvalidReference
from pull.mediatypes import COSIGN_SIMPLESIGNING, MANIFEST_TYPES, OCI_CONFIG, OCI_MANIFEST
from pull.records import dataclass, field
from pull.reference import DOCKER_HUB, Reference
from pull.strictjson import loads as strict_json
from trust.errors import NoSignatures, SignatureInvalid, SignedDigestMismatch, UntrustedSignatures
from trust.keys.keyfiles import PublicKey, TrustedKey, fingerprint, verify_bytes

COSIGN_SIGNATURE_TYPE = "cosign container image signature"
"""The value of `critical.type` in a cosign payload."""

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
RFC3161_TIMESTAMP_ANNOTATION = "dev.sigstore.cosign/rfc3161timestamp"

MAX_PAYLOAD_BYTES = 1024 * 1024
"""A simple-signing payload is a few hundred bytes; larger signature layers are not fetched."""
MAX_SIGNATURE_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_SIGNATURE_LAYERS = 1000
"""A `.sig` manifest with more layers than this is refused as hostile."""

_ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero `time.Time`, which go-containerregistry writes into each history entry."""


class Reason(StrEnum):
    """The outcome of checking one signature. Values are the stable `--output json` strings."""

    VALID = "valid"
    BAD_SIGNATURE = "bad-signature"
    """The signature does not verify with the trusted key the layer itself names."""
    UNKNOWN_KEY = "unknown-key"
    """The signature verifies with none of the trusted keys."""
    DIGEST_MISMATCH = "digest-mismatch"
    """A trusted key signed, but for another manifest digest."""
    WRONG_REPOSITORY = "wrong-repository"
    """A trusted key signed, but the docker-reference names another repository."""
    BAD_SET = "bad-set"
    """A Rekor SET was required and is missing, malformed, or does not match."""
    BAD_TIMESTAMP = "bad-timestamp"
    """Keyless: an RFC 3161 timestamp is malformed, over other bytes, or by an untrusted authority."""
    MALFORMED = "malformed"
    """The layer, its payload or its annotations are malformed or do not match their descriptor."""
    WRONG_IDENTITY = "wrong-identity"
    """Keyless: a valid Fulcio certificate, but for another identity or OIDC issuer than required.
    Notation: a trusted chain, but the signing certificate's subject matches no trusted identity."""
    UNTRUSTED_CERTIFICATE = "untrusted-certificate"
    """Keyless: the certificate does not chain to a Fulcio CA of the trusted root (at signing time),
    lacks a valid embedded SCT, or is not a code-signing certificate.
    Notation: the x5c chain breaks a certificate rule, reaches no trust-store certificate, or has
    an unknown revocation status (strict level)."""
    EXPIRED = "expired"
    """Notation: the signature's expiry has passed, or a chain certificate is no longer valid."""
    REVOKED = "revoked"
    """Notation: a certificate of the signing (or timestamping) chain is revoked (OCSP or CRL)."""
    REVOCATION_UNKNOWN = "revocation-unknown"
    """Notation: the revocation status could not be learned (responder down, stale cache offline)."""
    WRONG_PREDICATE_TYPE = "wrong-predicate-type"
    """Attestation: a valid statement about this digest, but of another predicate type."""
    CONDITION_FALSE = "condition-false"
    """Attestation: a valid statement of the right type, but the policy's condition does not hold."""


# --- JSON as Go's encoding/json writes it ------------------------------------------------------


def go_json(value: object) -> bytes:
    """Compact JSON with Go's `json.Marshal` escaping (`<`, `>`, `&`, U+2028, U+2029 as \\uXXXX).

    Dict key order is preserved (callers order struct fields as Go does and sort map keys).
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # These characters can only occur inside JSON strings, so replacing them everywhere is safe.
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string contains a lone surrogate; it cannot be encoded as UTF-8") from None


# --- the simple-signing payload ----------------------------------------------------------------


@dataclass(frozen=True)
class SimpleSigningPayload:
    """A parsed cosign payload. Structure only: nothing here says who signed it."""

    docker_reference: str
    manifest_digest: Digest
    optional: Mapping[str, object] | None = None

    @property
    def repository(self) -> str:
        """The docker-reference normalised to `registry/repository` (`index.docker.io` → `docker.io`)."""
        return Reference.parse(self.docker_reference).name


def docker_reference(reference: Reference) -> str:
    """The docker-reference cosign writes for `reference`: its repository, with Docker Hub spelled
    `index.docker.io` (go-containerregistry's `Repository.Name()`)."""
    registry = "index.docker.io" if reference.registry == DOCKER_HUB else reference.registry
    return f"{registry}/{reference.repository}"


def build_payload(
    docker_reference: str,
    manifest_digest: Digest,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """Cosign's payload bytes, byte for byte as `cosign sign -a k=v` writes them.

    No annotations gives `"optional":null`, as cosign does (and containers/image accepts).
    """
    try:
        parsed = Reference.parse(docker_reference)
    except InvalidReference as exc:
        raise ValueError(f"invalid docker-reference: {exc}") from None
    if parsed.digest is not None:
        raise ValueError("the docker-reference names a repository; the digest goes in the payload")
    optional: dict[str, str] | None = None
    if annotations:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
            raise ValueError("annotation keys and values must be strings")
        optional = {key: annotations[key] for key in sorted(annotations)}  # Go sorts map keys
    return go_json(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": str(manifest_digest)},
                "type": COSIGN_SIGNATURE_TYPE,
            },
            "optional": optional,
        }
    )


def parse_payload(data: bytes) -> SimpleSigningPayload:
    """Parse a payload strictly (as containers/image does). Raises `SignatureInvalid` (malformed).

    Refused: other `critical.type`s, unknown or missing fields in `critical`, a malformed digest,
    a docker-reference that is not an image name, duplicate keys, non-object `optional`.
    """

    def bad(what: str) -> SignatureInvalid:
        return SignatureInvalid(Reason.MALFORMED, f"malformed simple-signing payload: {what}")

    if len(data) > MAX_PAYLOAD_BYTES:
        raise bad(f"larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        doc = strict_json(data, "payload")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"not JSON ({str(exc)[:80]})") from None
    critical = _exact_object(doc, {"critical"}, {"optional"}, "payload", bad)["critical"]
    critical = _exact_object(critical, {"identity", "image", "type"}, set(), "critical", bad)
    if critical["type"] != COSIGN_SIGNATURE_TYPE:
        raise bad(f"critical.type is {str(critical['type'])[:60]!r}, not {COSIGN_SIGNATURE_TYPE!r}")
    identity = _exact_object(critical["identity"], {"docker-reference"}, set(), "critical.identity", bad)
    image = _exact_object(critical["image"], {"docker-manifest-digest"}, set(), "critical.image", bad)
    reference, digest_text = identity["docker-reference"], image["docker-manifest-digest"]
    if not isinstance(reference, str) or not isinstance(digest_text, str):
        raise bad("docker-reference and docker-manifest-digest must be strings")
    try:
        digest = Digest.parse(digest_text)
        parsed = Reference.parse(reference)
    except InvalidReference as exc:
        raise bad(str(exc)) from None
    if parsed.digest is not None:
        raise bad("docker-reference must not contain a digest")
    optional = doc.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise bad("optional must be an object or null")
    return SimpleSigningPayload(reference, digest, optional)


def _exact_object(
    value: object,
    required: set[str],
    allowed: set[str],
    where: str,
    bad: Callable[[str], SignatureInvalid],
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(f"{where} must be an object")
    missing = required - value.keys()
    unknown = value.keys() - required - allowed
    if missing:
        raise bad(f"{where} lacks {sorted(missing)[0]!r}")
    if unknown:
        raise bad(f"{where} has unknown field {sorted(unknown)[0][:60]!r}")
    return value


def verify_signature(public_key: PublicKey, payload: bytes, signature_b64: str) -> bool:
    """Whether `signature_b64` (the layer annotation) is a valid signature of `payload`."""
    signature = _decode_b64(signature_b64)
    return signature is not None and verify_bytes(public_key, payload, signature)


def _decode_b64(text: str) -> bytes | None:
    """Standard base64 as Go's decoder reads it: line breaks (`\r`, `\n`) are skipped, so the
    76-column output of some signers (containers/image's pki fixture) decodes as cosign decodes it."""
    try:
        return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True) if text else None
    except (binascii.Error, ValueError):
        return None


def signature_tag(digest: Digest) -> str:
    """The tag cosign stores signatures of `digest` under: `sha256-<hex>.sig`."""
    return f"{digest.encoded}.sig"


# --- signature layers and the `.sig` manifest --------------------------------------------------


@dataclass(frozen=True)
class SignatureLayer:
    """One layer of a `.sig` manifest: the payload's descriptor and the signature annotations."""

    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    media_type: str = COSIGN_SIMPLESIGNING

    @classmethod
    def create(
        cls,
        payload: bytes,
        signature: bytes,
        *,
        bundle: str | None = None,
        certificate: str | None = None,
        chain: str | None = None,
    ) -> SignatureLayer:
        """The layer cosign writes for `payload` signed with `signature` (raw bytes)."""
        annotations = {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode("ascii")}
        if certificate is not None:
            annotations[CERTIFICATE_ANNOTATION] = certificate
            annotations[CHAIN_ANNOTATION] = chain or ""
        if bundle is not None:
            annotations[BUNDLE_ANNOTATION] = bundle
        return cls(Digest.of_bytes(payload), len(payload), annotations)

    @classmethod
    def from_descriptor(cls, descriptor: object) -> SignatureLayer:
        """Parse a layer descriptor from a manifest. Raises `InvalidManifest`."""
        if not isinstance(descriptor, dict):
            raise InvalidManifest("signature manifest: a layer descriptor is not an object")
        media_type, size, digest_text = (
            descriptor.get("mediaType"),
            descriptor.get("size"),
            descriptor.get("digest"),
        )
        if not isinstance(media_type, str) or not isinstance(digest_text, str):
            raise InvalidManifest("signature manifest: a layer lacks mediaType or digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifest("signature manifest: a layer has an invalid size")
        annotations = descriptor.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise InvalidManifest("signature manifest: layer annotations must map strings to strings")
        try:
            digest = Digest.parse(digest_text)
        except InvalidReference as exc:
            raise InvalidManifest(f"signature manifest: {exc}") from None
        return cls(digest, size, dict(annotations), media_type)

    def descriptor(self) -> dict[str, object]:
        """The descriptor as go-containerregistry writes it (field order, sorted annotations)."""
        result: dict[str, object] = {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": str(self.digest),
        }
        if self.annotations:
            result["annotations"] = {key: self.annotations[key] for key in sorted(self.annotations)}
        return result

    @property
    def signature(self) -> str | None:
        return self.annotations.get(SIGNATURE_ANNOTATION)

    @property
    def bundle(self) -> str | None:
        return self.annotations.get(BUNDLE_ANNOTATION)

    @property
    def certificate(self) -> str | None:
        return self.annotations.get(CERTIFICATE_ANNOTATION)

    @property
    def chain(self) -> str | None:
        return self.annotations.get(CHAIN_ANNOTATION)


def parse_signature_manifest(data: bytes) -> list[SignatureLayer]:
    """The simple-signing layers of a `.sig` manifest, in order. Raises `InvalidManifest`.

    Layers of other media types are skipped (they are not cosign signatures).
    """
    doc = _parse_manifest(data)
    layers = [SignatureLayer.from_descriptor(raw) for raw in doc["layers"]]
    return [layer for layer in layers if layer.media_type == COSIGN_SIMPLESIGNING]


def manifest_layers(data: bytes) -> list[SignatureLayer]:
    """Every layer of a `.sig`-style manifest (`.att` holds DSSE layers). Raises `InvalidManifest`."""
    return [SignatureLayer.from_descriptor(raw) for raw in _parse_manifest(data)["layers"]]


def _parse_manifest(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_SIGNATURE_MANIFEST_BYTES:
        raise InvalidManifest(f"signature manifest larger than {MAX_SIGNATURE_MANIFEST_BYTES} bytes")
    try:
        doc = strict_json(data, "signature manifest")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidManifest(f"signature manifest is not JSON: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("signature manifest is not a JSON object")
    if "manifests" in doc:
        raise InvalidManifest("signature manifest has both an index's and an image's fields")
    if doc.get("schemaVersion") != 2 or doc.get("mediaType") not in MANIFEST_TYPES:
        raise InvalidManifest("signature manifest is not a schema 2 OCI or Docker image manifest")
    config, layers = doc.get("config"), doc.get("layers")
    if not isinstance(config, dict) or not isinstance(config.get("mediaType"), str):
        raise InvalidManifest("signature manifest has no valid config descriptor")
    if not isinstance(layers, list):
        raise InvalidManifest("signature manifest has no layers list")
    if len(layers) > MAX_SIGNATURE_LAYERS:
        raise InvalidManifest(f"signature manifest has more than {MAX_SIGNATURE_LAYERS} layers")
    return doc


@dataclass(frozen=True)
class SignatureManifest:
    """A `.sig` manifest ready to push: upload the new payload and `config` blobs, then `manifest`."""

    manifest: bytes
    config: bytes
    layers: tuple[SignatureLayer, ...]
    media_type: str

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.manifest)

    @property
    def config_digest(self) -> Digest:
        return Digest.of_bytes(self.config)


def build_signature_manifest(
    existing: bytes | None,
    layer: SignatureLayer,
    *,
    payload: bytes | None = None,
    signer_key: PublicKey | None = None,
    created: datetime | None = None,
) -> SignatureManifest | None:
    """Append `layer` to the `.sig` manifest `existing` (None: start one), as cosign does.

    Returns None when the manifest already holds the same signature: same payload digest and media
    type, the same non-signature annotations, and the same signature — or, given `payload` and
    `signer_key`, any signature that key made over that payload (cosign's duplicate detector; ECDSA
    signatures differ each time, so signing twice with one key adds nothing).
    Other layers are kept exactly. Raises `InvalidManifest` if `existing` is malformed.
    """
    media_type, config_media_type = OCI_MANIFEST, OCI_CONFIG
    kept: list[Any] = []
    extra: dict[str, Any] = {}
    if existing is not None:
        doc = _parse_manifest(existing)
        media_type, config_media_type = doc["mediaType"], doc["config"]["mediaType"]
        kept = list(doc["layers"])
        extra = {name: doc[name] for name in ("annotations", "subject") if name in doc}
    parsed = [SignatureLayer.from_descriptor(raw) for raw in kept]
    if any(_is_duplicate(old, layer, payload, signer_key) for old in parsed):
        return None
    descriptors: list[object] = [*kept, layer.descriptor()]
    all_layers = (*parsed, layer)
    config = go_json(
        {
            "architecture": "",
            "created": _go_time(created or datetime.now(UTC)),
            "history": [{"created": _ZERO_TIME} for _ in all_layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [str(item.digest) for item in all_layers]},
            "config": {},
        }
    )
    manifest = go_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": config_media_type,
                "size": len(config),
                "digest": str(Digest.of_bytes(config)),
            },
            "layers": descriptors,
            **extra,
        }
    )
    if len(manifest) > MAX_SIGNATURE_MANIFEST_BYTES:
        raise InvalidManifest("the signature manifest would exceed the manifest size limit")
    return SignatureManifest(manifest, config, all_layers, media_type)


def _is_duplicate(
    old: SignatureLayer, new: SignatureLayer, payload: bytes | None, signer_key: PublicKey | None
) -> bool:
    if old.digest != new.digest or old.media_type != new.media_type:
        return False
    for name, value in new.annotations.items():
        if name != SIGNATURE_ANNOTATION and old.annotations.get(name) != value:
            return False
    if old.signature is None:
        return False
    if old.signature == new.signature:
        return True
    return (
        payload is not None
        and signer_key is not None
        and verify_signature(signer_key, payload, old.signature)
    )


def _go_time(moment: datetime) -> str:
    """RFC 3339 with trimmed fractional seconds, as Go's `time.Time.MarshalJSON` writes UTC times."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


# --- Rekor signed entry timestamps -------------------------------------------------------------


@dataclass(frozen=True)
class RekorEntry:
    """What a verified SET promises: the entry was logged at `integrated_time` (Unix seconds)."""

    log_id: str
    log_index: int
    integrated_time: int
    kind: str


def verify_rekor_set(
    bundle_json: str,
    rekor_keys: PublicKey | Sequence[PublicKey],
    payload: bytes,
    signature_b64: str,
    public_key: PublicKey | bytes,
) -> RekorEntry:
    """Verify the `dev.sigstore.cosign/bundle` annotation: a Rekor SignedEntryTimestamp.

    The SET is an ECDSA signature by the log (chosen by `logID`, the SHA-256 of its key's DER) over
    the RFC 8785 canonical JSON of `{body, integratedTime, logIndex, logID}`. The logged entry
    (`hashedrekord` or `rekord` v0.0.1) must record this payload's hash, this signature and
    `public_key` (a key, or PEM bytes of a key or certificate). Raises `SignatureInvalid` (bad-set).
    """
    import rfc8785
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    def bad(what: str) -> SignatureInvalid:
        return SignatureInvalid(Reason.BAD_SET, f"Rekor bundle: {what}")

    try:
        bundle = strict_json(bundle_json, "bundle")
    except ValueError:
        raise bad("not JSON") from None
    if not isinstance(bundle, dict) or not isinstance(bundle.get("Payload"), dict):
        raise bad("no Payload object")
    set_b64, entry = bundle.get("SignedEntryTimestamp"), bundle["Payload"]
    signed_entry_timestamp = _decode_b64(set_b64) if isinstance(set_b64, str) else None
    if signed_entry_timestamp is None:
        raise bad("SignedEntryTimestamp missing or not base64")
    body, integrated_time, log_index, log_id = (
        entry.get("body"),
        entry.get("integratedTime"),
        entry.get("logIndex"),
        entry.get("logID"),
    )
    if not (
        isinstance(body, str)
        and isinstance(log_id, str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in (integrated_time, log_index))
    ):
        raise bad("Payload needs string body and logID and integer integratedTime and logIndex")
    assert isinstance(integrated_time, int) and isinstance(log_index, int)
    candidates = [rekor_keys] if not isinstance(rekor_keys, Sequence) else list(rekor_keys)
    log_key = next((key for key in candidates if fingerprint(key) == log_id.lower()), None)
    if log_key is None:
        raise bad(f"logged by {log_id[:16]}…, which is not a trusted Rekor key")
    if not isinstance(log_key, ec.EllipticCurvePublicKey):
        raise bad("the Rekor key must be an ECDSA key")
    try:
        canonical = rfc8785.dumps(
            {"body": body, "integratedTime": integrated_time, "logIndex": log_index, "logID": log_id}
        )
        log_key.verify(signed_entry_timestamp, canonical, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, rfc8785.CanonicalizationError):
        raise bad("the SignedEntryTimestamp does not verify with the Rekor key") from None
    kind = _check_rekor_body(body, payload, signature_b64, public_key, bad)
    return RekorEntry(log_id.lower(), log_index, integrated_time, kind)


def _check_rekor_body(
    body_b64: str,
    payload: bytes,
    signature_b64: str,
    public_key: PublicKey | bytes,
    bad: Callable[[str], SignatureInvalid],
) -> str:
    raw = _decode_b64(body_b64)
    try:
        body = strict_json(raw, "entry body") if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise bad("the logged entry body is not base64 JSON")
    kind, spec = body.get("kind"), body.get("spec")
    if kind not in ("hashedrekord", "rekord") or body.get("apiVersion") != "0.0.1":
        raise bad(f"unsupported entry kind {str(kind)[:30]!r} (want hashedrekord or rekord v0.0.1)")
    data = spec.get("data") if isinstance(spec, dict) else None
    signature = spec.get("signature") if isinstance(spec, dict) else None
    if not isinstance(data, dict) or not isinstance(signature, dict):
        raise bad("the logged entry lacks data or signature")
    hash_ = data.get("hash")
    if isinstance(hash_, dict):
        if hash_.get("algorithm") != "sha256" or hash_.get("value") != hashlib.sha256(payload).hexdigest():
            raise bad("the logged entry is for another payload")
    elif kind == "rekord" and isinstance(data.get("content"), str):
        if _decode_b64(data["content"]) != payload:
            raise bad("the logged entry is for another payload")
    else:
        raise bad("the logged entry records no payload hash")
    if kind == "rekord" and signature.get("format") != "x509":
        raise bad("the logged rekord entry is not of format x509")
    content = signature.get("content")
    logged_signature = _decode_b64(content) if isinstance(content, str) else None
    if logged_signature is None or logged_signature != _decode_b64(signature_b64):
        raise bad("the logged entry is for another signature")
    logged_key = signature.get("publicKey")
    logged_pem = logged_key.get("content") if isinstance(logged_key, dict) else None
    logged = _key_from_pem(_decode_b64(logged_pem) or b"") if isinstance(logged_pem, str) else None
    signer = _key_from_pem(public_key) if isinstance(public_key, bytes) else public_key
    if logged is None or signer is None or fingerprint(logged) != fingerprint(signer):
        raise bad("the logged entry names another signing key")
    return str(kind)


def _key_from_pem(pem: bytes) -> PublicKey | None:
    """A public key from a `PUBLIC KEY` or `CERTIFICATE` PEM, or None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from trust.keys.keyfiles import check_public_key

    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: object = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
        return check_public_key(key)
    except Exception:  # any parse failure or refused key type means "no usable key"
        return None


# --- the verification core ---------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureOutcome:
    """The result of checking one signature layer."""

    index: int
    layer_digest: Digest
    reason: Reason
    detail: str
    key: str | None = None
    """The name of the trusted key whose signature verified (also set for digest/repository/SET failures)."""
    payload: SimpleSigningPayload | None = None
    rekor: RekorEntry | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.VALID

    def to_json(self) -> dict[str, object]:
        """The `--output json` record of one signature (docs/formats.md)."""
        return {
            "index": self.index,
            "layerDigest": str(self.layer_digest),
            "outcome": self.reason.value,
            "reason": self.detail,
            "key": self.key,
            "dockerReference": self.payload.docker_reference if self.payload else None,
            "manifestDigest": str(self.payload.manifest_digest) if self.payload else None,
            "rekor": None
            if self.rekor is None
            else {
                "logID": self.rekor.log_id,
                "logIndex": self.rekor.log_index,
                "integratedTime": self.rekor.integrated_time,
            },
        }


PayloadLoader = Callable[[SignatureLayer], bytes]
"""Fetches a layer's payload bytes. Raises `CouldNotCheck` when it could not look (propagated)."""


def verify_simple_signing(
    signature_layers: Sequence[SignatureLayer],
    payload_loader: PayloadLoader,
    expected_digest: Digest,
    expected_repository: str | Reference,
    trusted_keys: Sequence[TrustedKey],
    rekor_keys: Sequence[PublicKey] | None = None,
    ignore_reference: bool = False,
) -> list[SignatureOutcome]:
    """Check every signature layer; return one outcome per layer, in order. Never raises for a bad
    signature (that is an outcome); `CouldNotCheck` from the loader propagates ("could not look").

    For each layer: the payload must match its descriptor; its signature must verify with a trusted
    key; the payload must be well-formed, name `expected_digest`, and (unless `ignore_reference`)
    name `expected_repository`; with `rekor_keys`, a valid Rekor SET for it is required.
    """
    if not trusted_keys:
        raise ValueError("verify_simple_signing needs at least one trusted key")
    if isinstance(expected_repository, Reference):
        repository = expected_repository.name
    else:
        repository = Reference.parse(expected_repository).name
    outcomes = []
    for index, layer in enumerate(signature_layers):
        state: dict[str, Any] = {}
        try:
            outcome = _check_layer(
                index,
                layer,
                payload_loader,
                expected_digest,
                repository,
                trusted_keys,
                rekor_keys,
                ignore_reference,
                state,
            )
        except SignatureInvalid as exc:
            outcome = SignatureOutcome(
                index, layer.digest, Reason(exc.reason), str(exc), state.get("key"), state.get("payload")
            )
        outcomes.append(outcome)
    return outcomes


def _check_layer(
    index: int,
    layer: SignatureLayer,
    payload_loader: PayloadLoader,
    expected_digest: Digest,
    repository: str,
    trusted_keys: Sequence[TrustedKey],
    rekor_keys: Sequence[PublicKey] | None,
    ignore_reference: bool,
    state: dict[str, Any],
) -> SignatureOutcome:
    def fail(reason: Reason, detail: str) -> SignatureInvalid:
        return SignatureInvalid(reason, detail)

    if layer.media_type != COSIGN_SIMPLESIGNING:
        raise fail(Reason.MALFORMED, f"layer media type {layer.media_type[:80]!r} is not simple signing")
    signature = _decode_b64(layer.signature or "")
    if signature is None:
        raise fail(Reason.MALFORMED, f"layer has no base64 {SIGNATURE_ANNOTATION} annotation")
    if layer.size > MAX_PAYLOAD_BYTES:
        raise fail(Reason.MALFORMED, f"payload of {layer.size} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        payload = payload_loader(layer)
    except IntegrityError as exc:
        raise fail(Reason.MALFORMED, f"payload blob: {exc}") from None
    if len(payload) != layer.size or Digest.of_bytes(payload, layer.digest.algorithm) != layer.digest:
        raise fail(Reason.MALFORMED, "payload does not match its layer descriptor")

    signer = next((key for key in trusted_keys if verify_bytes(key.public_key, payload, signature)), None)
    if signer is None:
        claimed = _claimed_key(layer)
        named = next((k for k in trusted_keys if claimed and k.fingerprint == fingerprint(claimed)), None)
        if named is not None:
            raise fail(Reason.BAD_SIGNATURE, f"signature does not verify with trusted key {named.name}")
        raise fail(
            Reason.UNKNOWN_KEY, f"signature verifies with no trusted key ({len(trusted_keys)} checked)"
        )
    state["key"] = signer.name

    parsed = parse_payload(payload)
    state["payload"] = parsed
    if parsed.manifest_digest != expected_digest:
        raise fail(
            Reason.DIGEST_MISMATCH, f"signed digest is {parsed.manifest_digest}, not {expected_digest}"
        )
    if not ignore_reference and parsed.repository != repository:
        raise fail(
            Reason.WRONG_REPOSITORY,
            f"signed for repository {parsed.docker_reference[:200]}, not {repository}",
        )

    rekor: RekorEntry | None = None
    if rekor_keys is not None:
        if layer.bundle is None:
            raise fail(Reason.BAD_SET, "no Rekor bundle, and a Rekor key was given")
        assert layer.signature is not None
        rekor = verify_rekor_set(layer.bundle, rekor_keys, payload, layer.signature, signer.public_key)
    detail = f"signed by {signer.name}" + (f", logged in Rekor at index {rekor.log_index}" if rekor else "")
    return SignatureOutcome(index, layer.digest, Reason.VALID, detail, signer.name, parsed, rekor)


def _claimed_key(layer: SignatureLayer) -> PublicKey | None:
    """The signing key the layer itself names (certificate or Rekor body), best effort, untrusted."""
    if layer.certificate:
        return _key_from_pem(layer.certificate.encode("utf-8", "replace"))
    if layer.bundle:
        try:
            body = strict_json(layer.bundle, "bundle")["Payload"]["body"]
            entry = strict_json(base64.b64decode(body, validate=True), "body")
            pem = base64.b64decode(entry["spec"]["signature"]["publicKey"]["content"], validate=True)
        except Exception:  # hostile or odd bundle: no hint
            return None
        return _key_from_pem(pem)
    return None


def require_verified(outcomes: Iterable[SignatureOutcome], subject: str) -> list[SignatureOutcome]:
    """The valid outcomes; or raise the error that says why there are none.

    `subject` is `REPOSITORY@DIGEST`. Raises `NoSignatures` (none found), `SignedDigestMismatch`
    (a trusted key signed another digest: exit 4), or `UntrustedSignatures`.
    """
    outcomes = list(outcomes)
    valid = [outcome for outcome in outcomes if outcome.ok]
    if valid:
        return valid
    if not outcomes:
        raise NoSignatures(subject)
    for outcome in outcomes:
        if outcome.reason is Reason.DIGEST_MISMATCH and outcome.payload is not None:
            raise SignedDigestMismatch(subject, str(outcome.payload.manifest_digest), outcome.key or "?")
    raise UntrustedSignatures(subject, Counter(outcome.reason.value for outcome in outcomes))
