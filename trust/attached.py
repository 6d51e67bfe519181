"""Signature artifacts attached to an image in a registry, cosign-style.

Cosign stores the signatures of `REPO@sha256:H` as the image manifest tagged `sha256-H.sig`,
in the same repository or in a `--signature-repository`. This module reads and writes that
manifest through `RegistryClient`; the format itself lives in `trust.cosign`.

"Could not look" stays distinct from "nothing there": a missing `.sig` tag is an empty list, any
other registry failure propagates as `CouldNotCheck` (exit 5).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from pull.digest import Digest
from pull.errors import NotFound, RegistryError
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.cosign import (
    MAX_PAYLOAD_BYTES,
    MAX_SIGNATURE_MANIFEST_BYTES,
    PayloadLoader,
    SignatureLayer,
    build_signature_manifest,
    parse_signature_manifest,
    signature_tag,
)
from trust.keys import PublicKey

_ACCEPT_IMAGE_MANIFEST = (
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
)


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
        fetched = client.get_manifest(location.repository, location.tag, accept=_ACCEPT_IMAGE_MANIFEST)
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
