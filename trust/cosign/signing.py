"""`trust sign` and `trust verify` for cosign simple-signing signatures in a registry.

Both start by resolving the reference to a manifest digest from verified bytes: a signature
always covers a digest, never a tag. The format rules live in `trust.cosign.simple_signing`; where signatures
are stored, in `trust.attached`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pull.digest import Digest
from pull.manifest import ImageIndex
from pull.pipeline import resolve
from pull.records import dataclass
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.attached import (
    AttachedSignatures,
    SignatureLocation,
    attach_signature,
    discover,
    fetch_bundles,
    verify_attached,
)
from trust.cosign.simple_signing import (
    RFC3161_TIMESTAMP_ANNOTATION,
    SignatureLayer,
    SignatureOutcome,
    build_payload,
    docker_reference,
)
from trust.keys.keyfiles import PublicKey, Signer, TrustedKey

if TYPE_CHECKING:
    from trust.sigstore.services import RekorLog

ClientFor = Callable[[str], RegistryClient]
"""Returns a (cached) client for an API host; the caller owns and closes them."""


@dataclass(frozen=True)
class SignResult:
    reference: Reference
    digest: Digest
    location: SignatureLocation
    added: bool
    """False when this key had already signed the digest (nothing was pushed)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "digest": str(self.digest),
            "signature": str(self.location),
            "added": self.added,
        }


def sign_image(
    client_for: ClientFor,
    reference: Reference,
    signer: Signer,
    *,
    annotations: dict[str, str] | None = None,
    signature_repository: str | None = None,
    recursive: bool = False,
    certificate: str | None = None,
    chain: str | None = None,
    log: RekorLog | None = None,
    timestamp_url: str | None = None,
    bundle_referrer: bool = False,
) -> list[SignResult]:
    """Sign the digest `reference` resolves to (and, with `recursive`, each manifest of an index).

    With `certificate` (PEM, for the signer's key) and `chain` (PEM, its issuers up to the root),
    the layer carries them, for verifiers that trust a CA rather than a key (`cosign-pki`).
    `log`: a Rekor v1 log records the signature first and the layer carries the SET
    (`dev.sigstore.cosign/bundle`), as stock `cosign verify --key` requires; a Rekor v2 log has no
    SET to give, so only the bundle referrer's signature is logged there. `timestamp_url`: an
    RFC 3161 timestamp of the signature goes into `dev.sigstore.cosign/rfc3161timestamp`.
    `bundle_referrer`: cosign v3's form too, a key-signed Sigstore bundle (DSSE statement about
    the digest, logged and timestamped the same way) attached as an OCI referrer. Logging and
    timestamping happen before anything is pushed; their failures are `CouldNotCheck`."""
    from pull.records import replace

    document = resolve(client_for(reference.api_host), reference)
    targets = [document.descriptor]
    if recursive and isinstance(document.document, ImageIndex):
        targets += list(document.document.manifests)
    results = []
    for target in targets:
        digest = target.digest
        payload = build_payload(docker_reference(reference), digest, annotations)
        signature = signer.sign(payload)
        rekor_set = None
        if log is not None and log.major_version == 1:
            from trust.sigstore.services import log_signature

            _, rekor_set = log_signature(
                log, signature=signature, public_key=signer.public_key, message=payload
            )
        layer = SignatureLayer.create(
            payload, signature, certificate=certificate, chain=chain, bundle=rekor_set
        )
        if timestamp_url is not None:
            from trust.sigstore.services import request_timestamp

            stamp = base64.b64encode(request_timestamp(timestamp_url, signature)).decode()
            stamped = json.dumps({"SignedRFC3161Timestamp": stamp})
            layer = replace(layer, annotations={**layer.annotations, RFC3161_TIMESTAMP_ANNOTATION: stamped})
        bundle = None
        if bundle_referrer:
            from trust.sigstore.sign import cosign_statement, key_signed_bundle

            bundle = key_signed_bundle(
                signer,
                statement=cosign_statement(reference, digest),
                log=log,
                timestamp_url=timestamp_url,
            )
        location = SignatureLocation.for_image(reference, digest, signature_repository)
        added = attach_signature(client_for(location.api_host), location, payload, layer, signer.public_key)
        if bundle is not None:
            from trust.sigstore.sign import attach_bundle

            attach_bundle(client_for(reference.api_host), reference.repository, target, bundle)
        results.append(SignResult(reference, digest, location, added))
    return results


@dataclass(frozen=True)
class VerifyResult:
    reference: Reference
    digest: Digest
    location: SignatureLocation
    outcomes: tuple[SignatureOutcome, ...]

    @property
    def subject(self) -> str:
        return f"{self.reference.name}@{self.digest}"

    @property
    def verified(self) -> list[SignatureOutcome]:
        return [outcome for outcome in self.outcomes if outcome.ok]

    def to_json(self) -> dict[str, Any]:
        """The `trust verify --output json` record (docs/formats.md)."""
        return {
            "reference": str(self.reference),
            "digest": str(self.digest),
            "signatureLocation": str(self.location),
            "verified": bool(self.verified),
            "signatures": [outcome.to_json() for outcome in self.outcomes],
        }


def verify_image(
    client_for: ClientFor,
    reference: Reference,
    keys: Sequence[TrustedKey],
    *,
    rekor_keys: Sequence[PublicKey] | None = None,
    ignore_reference: bool = False,
    signature_repository: str | None = None,
    trusted_root: Path | None = None,
) -> VerifyResult:
    """Check every cosign signature attached to the digest `reference` resolves to.

    `trusted_root`: bundles' log entries are verified against this Sigstore root (pass its Rekor
    keys as `rekor_keys` for the `.sig` layers' SETs).

    Returns the outcomes; the caller decides (`trust.cosign.simple_signing.require_verified`).
    Registry failures while looking raise `CouldNotCheck`: they are never reported as "unsigned".
    """
    document = resolve(client_for(reference.api_host), reference)
    location = SignatureLocation.for_image(reference, document.digest, signature_repository)
    attached = discover(client_for(location.api_host), reference.repository, document.digest, location)
    if location.api_host != reference.api_host:
        # Bundles are referrers: they live beside the image, not in the signature repository.
        bundles = fetch_bundles(client_for(reference.api_host), reference.repository, document.digest)
        attached = AttachedSignatures(attached.layers, attached.loader, bundles)
    outcomes = verify_attached(
        attached,
        document.digest,
        reference,
        keys,
        rekor_keys=rekor_keys,
        ignore_reference=ignore_reference,
        trusted_root=trusted_root,
    )
    return VerifyResult(reference, document.digest, location, tuple(outcomes))
