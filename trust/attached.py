"""Signature artifacts attached to an image in a registry, cosign-style.

Cosign stores the signatures of `REPO@sha256:H` as the image manifest tagged `sha256-H.sig`,
in the same repository or in a `--signature-repository`. This module reads and writes that
manifest through `RegistryClient`; the format itself lives in `trust.cosign.simple_signing`.

"Could not look" stays distinct from "nothing there": a missing `.sig` tag is an empty list, any
other registry failure propagates as `CouldNotCheck` (exit 5).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pull.digest import Digest
from pull.errors import NotFound, RegistryError
from pull.records import dataclass, replace
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.cosign.simple_signing import (
    MAX_PAYLOAD_BYTES,
    MAX_SIGNATURE_MANIFEST_BYTES,
    PayloadLoader,
    Reason,
    SignatureLayer,
    SignatureOutcome,
    build_signature_manifest,
    parse_signature_manifest,
    signature_tag,
    verify_simple_signing,
)
from trust.keys.keyfiles import PublicKey, TrustedKey

if TYPE_CHECKING:  # the Notation modules load cryptography's X.509; imported where they are used
    from pull.manifest import Descriptor
    from trust.notation.artifact import NotationSignature

_BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
_COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"
ACCEPT_IMAGE_MANIFEST = (
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
)
"""What a `.sig`/`.att` manifest or a referrer manifest is asked for as."""


@dataclass(frozen=True)
class SignatureLocation:
    """Where the signatures of one digest live: a repository (maybe on another registry) and a tag."""

    registry: str
    api_host: str
    repository: str
    tag: str

    @classmethod
    def for_image(
        cls, image: Reference, digest: Digest, signature_repository: str | None = None
    ) -> SignatureLocation:
        where = image
        if signature_repository:
            where = Reference.parse(signature_repository)
        return cls(where.registry, where.api_host, where.repository, signature_tag(digest))

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def read_signature_manifest(client: RegistryClient, location: SignatureLocation) -> bytes | None:
    """The `.sig` manifest bytes, or None when the tag does not exist."""
    try:
        fetched = client.get_manifest(location.repository, location.tag, accept=ACCEPT_IMAGE_MANIFEST)
    except NotFound:
        return None
    if len(fetched.data) > MAX_SIGNATURE_MANIFEST_BYTES:  # the client caps too; keep the rule local
        return None
    return fetched.data


def fetch_signature_layers(client: RegistryClient, location: SignatureLocation) -> list[SignatureLayer]:
    """The simple-signing layers attached at `location` ([] when nothing is attached)."""
    raw = read_signature_manifest(client, location)
    return [] if raw is None else parse_signature_manifest(raw)


def payload_loader(client: RegistryClient, location: SignatureLocation) -> PayloadLoader:
    """A loader for `verify_simple_signing` that fetches payload blobs (capped) from the registry."""

    def load(layer: SignatureLayer) -> bytes:
        return client.get_blob(
            location.repository, layer.digest, max_bytes=min(layer.size, MAX_PAYLOAD_BYTES)
        )

    return load


@dataclass(frozen=True)
class AttachedSignatures:
    """Everything attached to one digest that may be a cosign signature, fetched and size-capped.

    `layers`/`loader`: the simple-signing layers of the `.sig` tag. `bundles`: Sigstore bundles
    attached as referrers (cosign v3), as (blob digest, verified bytes). `notation`: Notary Project
    signatures attached as referrers, with the signed object's descriptor from verified bytes.
    """

    layers: Sequence[SignatureLayer]
    loader: PayloadLoader
    bundles: Sequence[tuple[Digest, bytes]] = ()
    notation: Sequence[NotationSignature] = ()

    @property
    def empty(self) -> bool:
        return not self.layers and not self.bundles and not self.notation


def discover(
    client: RegistryClient, image_repository: str, digest: Digest, location: SignatureLocation
) -> AttachedSignatures:
    """The `.sig` layers at `location`, and the bundle and Notation referrers of `digest` in the
    image's repository (the referrers are listed once and split by artifact type)."""
    from pull.referrers import list_referrers

    layers = fetch_signature_layers(client, location)
    cache: dict[Digest, bytes] = {}
    load = payload_loader(client, location)

    def cached(layer: SignatureLayer) -> bytes:
        if layer.digest not in cache:
            cache[layer.digest] = load(layer)
        return cache[layer.digest]

    referrers = list_referrers(client, image_repository, digest)
    return AttachedSignatures(
        layers,
        cached,
        fetch_bundles(client, image_repository, digest, referrers),
        fetch_notation(client, image_repository, digest, referrers),
    )


def fetch_bundles(
    client: RegistryClient, repository: str, digest: Digest, referrers: Sequence[Descriptor] | None = None
) -> list[tuple[Digest, bytes]]:
    """Sigstore bundles attached to `digest` as referrers (API or `sha256-<hex>` fallback index).

    `referrers` is the listing already made for `digest`, if any (else it is listed here).
    """
    from pull.manifest import ImageManifest, verify_document
    from pull.mediatypes import SIGSTORE_BUNDLE, SIGSTORE_BUNDLE_TYPES
    from pull.referrers import list_referrers

    if referrers is None:
        referrers = list_referrers(client, repository, digest, SIGSTORE_BUNDLE)
    # An attestation (an SBOM can be megabytes) shares the artifact type; its annotated predicate
    # type says so before it is fetched. The annotation is unsigned: skipping can only lose a
    # signature, never admit one.
    entries = [
        entry
        for entry in referrers
        if entry.artifact_type == SIGSTORE_BUNDLE
        and (entry.annotations or {}).get(_BUNDLE_PREDICATE, _COSIGN_SIGN) == _COSIGN_SIGN
    ]
    if not entries:
        return []
    from trust.sigstore.bundles import MAX_BUNDLE_BYTES  # only now: images without bundles never load it

    bundles = []
    for entry in entries[:MAX_REFERRERS]:
        fetched = client.get_manifest(repository, str(entry.digest), accept=ACCEPT_IMAGE_MANIFEST)
        document = verify_document(
            fetched.data, content_type=fetched.content_type, expected=entry.digest
        ).document
        if (
            not isinstance(document, ImageManifest)
            or document.subject is None
            or document.subject.digest != digest
        ):
            continue  # not a referrer of this digest, whatever the index claimed
        for layer in document.layers:
            if layer.media_type in SIGSTORE_BUNDLE_TYPES and layer.size <= MAX_BUNDLE_BYTES:
                bundles.append(
                    (layer.digest, client.get_blob(repository, layer.digest, max_bytes=layer.size))
                )
    return bundles


def fetch_notation(
    client: RegistryClient, repository: str, digest: Digest, referrers: Sequence[Descriptor] | None = None
) -> list[NotationSignature]:
    """Notary Project signatures attached to `digest` as referrers, envelopes fetched and size-capped.

    Notation checks `targetArtifact` against the signed object's true size and media type, so
    when there is a signature the object's manifest is fetched by digest and hash-checked here.
    """
    from pull.manifest import verify_document
    from pull.mediatypes import NOTATION_SIGNATURE
    from pull.referrers import list_referrers

    if referrers is None:
        referrers = list_referrers(client, repository, digest, NOTATION_SIGNATURE)
    entries = [entry for entry in referrers if entry.artifact_type == NOTATION_SIGNATURE]
    if not entries:
        return []
    from trust.notation.artifact import read_signature  # only now: it loads cryptography.x509 (~20 ms)

    fetched = client.get_manifest(repository, str(digest))
    target = verify_document(fetched.data, content_type=fetched.content_type, expected=digest).descriptor

    def load(layer: Descriptor) -> bytes:
        return client.get_blob(repository, layer.digest, max_bytes=layer.size)

    found = []
    for entry in entries[:MAX_REFERRERS]:
        raw = client.get_manifest(repository, str(entry.digest), accept=ACCEPT_IMAGE_MANIFEST)
        signature = read_signature(raw.data, raw.content_type, entry.digest, target, load)
        if signature is not None:
            found.append(signature)
    return found


def verify_attached(
    attached: AttachedSignatures,
    expected: Digest,
    repository: str | Reference,
    keys: Sequence[TrustedKey],
    *,
    rekor_keys: Sequence[PublicKey] | None = None,
    ignore_reference: bool = False,
    trusted_root: Path | None = None,
) -> list[SignatureOutcome]:
    """One outcome per signature found, simple-signing layers first, then bundles.

    `trusted_root` (a Sigstore trusted root file): the bundles' log entries are verified against it
    (the caller passes its Rekor keys as `rekor_keys` for the layers' SETs)."""
    outcomes = verify_simple_signing(
        attached.layers,
        attached.loader,
        expected,
        repository,
        keys,
        rekor_keys=rekor_keys,
        ignore_reference=ignore_reference,
    )
    if not attached.bundles:
        return outcomes
    from trust.sigstore.bundles import verify_bundle  # only now: images without bundles never load it

    root = None
    if trusted_root is not None:
        from trust.sigstore.trusted_root import load_trusted_root

        root = load_trusted_root(trusted_root)
    for offset, (blob_digest, data) in enumerate(attached.bundles):
        outcome = verify_bundle(len(attached.layers) + offset, blob_digest, data, expected, keys, root)
        if rekor_keys is not None and root is None and outcome.ok:
            outcome = replace(
                outcome,
                reason=Reason.BAD_SET,
                detail="sigstore bundle: transparency-log proofs are not checked with --rekor-key",
            )
        outcomes.append(outcome)
    return outcomes


MAX_REFERRERS = 100
"""Referrers examined per digest; a registry listing more is not allowed to make us fetch them all."""


def attach_signature(
    client: RegistryClient,
    location: SignatureLocation,
    payload: bytes,
    layer: SignatureLayer,
    signer_key: PublicKey,
    *,
    attempts: int = 6,
) -> bool:
    """Append `layer` (over `payload`) to the `.sig` manifest; False if that key had already signed.

    Registries offer no compare-and-swap on tags, so two signers can overwrite each other. After
    pushing we re-read the tag (twice, after a random pause) and, if our layer is gone because
    another signer's push won, merge again and retry. Every signer keeps the layers it read, so
    the last writer's manifest holds everyone's signatures that were visible to it.
    """

    def present(manifest: bytes | None) -> bool:
        return manifest is not None and (
            build_signature_manifest(manifest, layer, payload=payload, signer_key=signer_key) is None
        )

    existing = read_signature_manifest(client, location)
    if present(existing):
        return False
    client.push_blob(location.repository, layer.digest, len(payload), payload)
    for attempt in range(attempts):
        built = build_signature_manifest(existing, layer, payload=payload, signer_key=signer_key)
        if built is not None:
            client.push_blob(location.repository, built.config_digest, len(built.config), built.config)
            client.push_manifest(location.repository, location.tag, built.manifest, built.media_type)
        confirmed = True
        for _ in range(2):
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
            existing = read_signature_manifest(client, location)
            if not present(existing):
                confirmed = False
                break
        if confirmed:
            return True
    raise RegistryError(
        f"could not attach the signature at {location}: concurrent updates overwrote it {attempts} times"
    )
