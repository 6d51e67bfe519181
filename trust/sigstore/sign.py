"""`trust sign --keyless`: sign an image digest with a Fulcio certificate and attach the bundle.

Thin over sigstore-python: an OIDC identity token (ambient CI credentials through
`sigstore.oidc.detect_credential`, an explicit `--identity-token`, or the interactive browser flow
on a terminal) buys a short-lived Fulcio certificate; sigstore-python signs an in-toto statement
(predicate `https://sigstore.dev/cosign/sign/v1`, subject = the image digest) as DSSE and logs it
in Rekor; the resulting v0.3 bundle is pushed as an OCI referrer of the image, exactly as cosign v3
attaches it and as `trust.attached.fetch_bundles` finds it.

The network parts (token, Fulcio, Rekor) cannot run in tests. Everything around them can: the
token step fails with `NoIdentityToken` (exit 5, "could not check") before any network call when
no credential is available, and `attach_bundle` pushes any bundle to a registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pull.digest import Digest
from pull.errors import CouldNotCheck, UsageError
from pull.manifest import Descriptor
from pull.mediatypes import OCI_EMPTY, OCI_MANIFEST
from pull.records import dataclass
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.sigstore.bundles import BUNDLE_ARTIFACT_TYPE, COSIGN_SIGN_PREDICATE
from trust.sigstore.services import Instance

if TYPE_CHECKING:
    from sigstore.oidc import IdentityToken

    from trust.keys.keyfiles import Signer
    from trust.sigstore.services import RekorLog

EMPTY_CONFIG = b"{}"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


class NoIdentityToken(CouldNotCheck):
    """No OIDC identity token could be obtained, so Fulcio cannot be asked for a certificate."""

    def diagnostics(self) -> str:
        return (
            "In CI, grant the job an OIDC token (GitHub Actions: `permissions: id-token: write`); "
            "elsewhere pass --identity-token, or run on a terminal for the browser flow."
        )


def obtain_identity_token(
    explicit: str | None, *, interactive: bool, instance: Instance | None = None
) -> IdentityToken:
    """An identity token: `explicit`, else ambient CI credentials, else (on a terminal) the browser
    flow against the public-good OIDC issuer.

    Raises:
        UsageError: `explicit` is not a usable token.
        NoIdentityToken: nothing available (offline, no CI credentials, no terminal).
    """
    from sigstore.oidc import IdentityError, IdentityToken, detect_credential

    raw = explicit
    if raw is None:
        try:
            raw = detect_credential()
        except IdentityError as exc:
            raise NoIdentityToken(f"ambient OIDC credentials were found but unusable: {exc}") from None
    if raw is None:
        if not interactive:
            raise NoIdentityToken(
                "no identity token for keyless signing: no ambient CI credentials were found and "
                "there is no terminal for the interactive flow"
            )
        raw = _interactive_token(instance or Instance())
    try:
        return IdentityToken(raw)
    except IdentityError as exc:
        raise UsageError(f"the identity token is not usable: {str(exc).splitlines()[0][:200]}") from None


def _interactive_token(instance: Instance) -> str:
    """The browser flow (needs the network: the issuer URL comes from the signing config)."""
    from sigstore.oidc import Issuer

    try:
        url = instance.oidc_issuer or instance.client_trust_config().signing_config.get_oidc_url()
        token = Issuer(url).identity_token()
    except Exception as exc:  # any network or flow failure means "no token", exit 5
        raise NoIdentityToken(f"the interactive OIDC flow failed: {str(exc).splitlines()[0][:200]}") from None
    return str(token)


def cosign_statement(reference: Reference, digest: Digest) -> dict[str, Any]:
    """The in-toto statement cosign v3 signs for an image digest."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": reference.name, "digest": {digest.algorithm: digest.hex}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }


def build_bundle_referrer(
    bundle: bytes, subject: Descriptor, predicate_type: str = COSIGN_SIGN_PREDICATE
) -> bytes:
    """The OCI image manifest that attaches `bundle` to `subject` (cosign v3's layout): artifact
    type and single layer of the v0.3 bundle media type, the empty config, `subject` set, the
    statement's predicate type annotated (a signature's, or an attestation's)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_ARTIFACT_TYPE,
        "config": {
            "mediaType": OCI_EMPTY,
            "digest": str(Digest.of_bytes(EMPTY_CONFIG)),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {"mediaType": BUNDLE_ARTIFACT_TYPE, "digest": str(Digest.of_bytes(bundle)), "size": len(bundle)}
        ],
        "subject": {"mediaType": subject.media_type, "digest": str(subject.digest), "size": subject.size},
        # cosign v3 annotates both: what the bundle holds, and the statement's predicate type.
        "annotations": {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": predicate_type,
        },
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def attach_bundle(
    client: RegistryClient,
    repository: str,
    subject: Descriptor,
    bundle: bytes,
    predicate_type: str = COSIGN_SIGN_PREDICATE,
) -> Digest:
    """Push `bundle` as a referrer of `subject` (the API, or the `sha256-<hex>` fallback index)."""
    from pull.referrers import push_referrer

    client.push_blob(repository, Digest.of_bytes(EMPTY_CONFIG), len(EMPTY_CONFIG), EMPTY_CONFIG)
    client.push_blob(repository, Digest.of_bytes(bundle), len(bundle), bundle)
    manifest = build_bundle_referrer(bundle, subject, predicate_type)
    return push_referrer(client, repository, manifest, OCI_MANIFEST, subject)


@dataclass(frozen=True)
class KeylessSignResult:
    reference: Reference
    digest: Digest
    referrer: Digest
    identity: str

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "digest": str(self.digest),
            "referrer": str(self.referrer),
            "identity": self.identity,
        }


def sign_image_keyless(
    client_for: Callable[[str], RegistryClient],
    reference: Reference,
    token: IdentityToken,
    instance: Instance | None = None,
) -> KeylessSignResult:
    """Resolve `reference`, sign its digest with sigstore-python (the instance's Fulcio, Rekor and
    TSA; public good by default), attach the bundle. Network failures of the signing services are
    `CouldNotCheck` (exit 5)."""
    from sigstore.dsse import Statement

    from pull.pipeline import resolve

    client = client_for(reference.api_host)
    document = resolve(client, reference)
    statement = Statement(json.dumps(cosign_statement(reference, document.digest)).encode())
    bundle = keyless_sign(instance or Instance(), token, statement=statement)
    referrer = attach_bundle(client, reference.repository, document.descriptor, bundle)
    return KeylessSignResult(reference, document.digest, referrer, str(token.identity))


def keyless_sign(
    instance: Instance, token: IdentityToken, *, statement: Any = None, sha256: bytes | None = None
) -> bytes:
    """A keyless Sigstore bundle (JSON) over a DSSE `statement` (sigstore's `Statement`) or a
    message whose SHA-256 is `sha256`, made by sigstore-python against `instance`."""
    from sigstore.hashes import Hashed
    from sigstore.sign import SigningContext
    from sigstore_models.common.v1 import HashAlgorithm

    config = instance.client_trust_config()
    try:
        context = SigningContext.from_trust_config(config)
        with context.signer(token) as signer:
            if statement is not None:
                return signer.sign_dsse(statement).to_json().encode()
            assert sha256 is not None
            return (
                signer.sign_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=sha256))
                .to_json()
                .encode()
            )
    except Exception as exc:  # Fulcio/Rekor/TUF unreachable or refusing: nothing was attached
        raise CouldNotCheck(f"keyless signing failed: {str(exc).splitlines()[0][:200]}") from None


def key_signed_bundle(
    signer: Signer,
    *,
    statement: dict[str, Any] | None = None,
    signed_statement: tuple[bytes, bytes] | None = None,
    data: bytes | None = None,
    log: RekorLog | None,
    timestamp_url: str | None,
) -> bytes:
    """A v0.3 Sigstore bundle signed with a key (cosign v3's form): a DSSE envelope of `statement`
    (or of `signed_statement`, an in-toto payload and the signature already made over its PAE), or
    a message signature over `data`. Logged in `log` when given (`services.log_signature`: Rekor v1
    or v2), timestamped when `timestamp_url` is. Raises `CouldNotCheck`, or `UsageError` for a key
    the log cannot take."""
    import base64
    import hashlib

    from trust.keys.keyfiles import public_key_der
    from trust.sigstore.bundles import IN_TOTO_PAYLOAD_TYPE, pae
    from trust.sigstore.services import check_loggable, log_signature, request_timestamp

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    if log is not None:
        check_loggable(log, signer.public_key)

    document: dict[str, Any] = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}
    hint = b64(hashlib.sha256(public_key_der(signer.public_key)).digest())
    material: dict[str, Any] = {"publicKey": {"hint": hint}, "tlogEntries": []}
    envelope_json: str | None = None
    signed_pae: bytes | None = None
    if statement is not None:
        payload = json.dumps(statement, separators=(",", ":")).encode()
        signed_statement = (payload, signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload)))
    if signed_statement is not None:
        payload, signature = signed_statement
        envelope = {
            "payload": b64(payload),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": b64(signature)}],
        }
        document["dsseEnvelope"] = envelope
        envelope_json = json.dumps(envelope, separators=(",", ":"))
        signed_pae = pae(IN_TOTO_PAYLOAD_TYPE, payload)
    else:
        assert data is not None
        signature = signer.sign(data)
        document["messageSignature"] = {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(data).digest())},
            "signature": b64(signature),
        }
    if timestamp_url is not None:
        stamp = request_timestamp(timestamp_url, signature)
        material["timestampVerificationData"] = {"rfc3161Timestamps": [{"signedTimestamp": b64(stamp)}]}
    if log is not None:
        entry, _ = log_signature(
            log,
            signature=signature,
            public_key=signer.public_key,
            message=data if envelope_json is None else None,
            envelope_json=envelope_json,
            pae=signed_pae,
        )
        material["tlogEntries"] = [entry]
    document["verificationMaterial"] = material
    return json.dumps(document, separators=(",", ":")).encode()
