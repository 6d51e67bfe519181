"""Keep the signature artifacts read during admission in the content store, for `trust audit --offline`.

`CachingClient` wraps a `RegistryClient` for the read calls that signature discovery makes
(`trust.attached.discover`) and ingests what passes through it, after it was checked, like any
other blob (size and digest checked at commit, then renamed into `blobs/`):

    get_manifest(repo, "sha256-<hex>.sig")   → the `.sig` manifest, ref `REGISTRY/REPO:sha256-<hex>.sig`
    get_manifest(repo, "sha256-<hex>")       → the referrers fallback index, ref `REGISTRY/REPO:sha256-<hex>`
    referrers(repo, digest)                  → the API's pages merged into one index under that same ref
    get_manifest(repo, "sha256:…")           → a referrer manifest (reachable through the index)
    get_blob(repo, digest, …)                → signature payloads and bundles (reachable through manifests)

The refs follow the cosign and referrers-tag conventions, so an OCI layout reader (`pull.layout`)
pointed at `REGISTRY/REPO:` finds them exactly where a registry would serve them. When the registry
says a tag is gone (404), its cached ref is dropped too: the cache never outlives a revocation that
the registry shows. Everything is written under `ContentStore.in_use()`, so `trust gc` never sees a
cached blob before the ref that keeps it.
"""

from __future__ import annotations

import json
from typing import Any

from pull.digest import Digest
from pull.errors import IntegrityError, NotFound
from pull.manifest import Descriptor, ImageIndex, verify_document
from pull.mediatypes import OCI_INDEX
from pull.registry import FetchedManifest, RegistryClient
from pull.store import ContentStore


class CachingClient:
    """The read side of a `RegistryClient` for one registry, storing what it returns in `store`.

    `registry` is the registry's name as references spell it (e.g. `docker.io`), which may differ
    from the client's API host; refs are named `REGISTRY/REPOSITORY:TAG`.
    """

    def __init__(self, client: RegistryClient, store: ContentStore, registry: str) -> None:
        self._client = client
        self._store = store
        self._registry = registry
        self.host = client.host

    def __getattr__(self, name: str) -> Any:
        # Anything else signature discovery may call (e.g. head_manifest) goes to the registry uncached.
        return getattr(self._client, name)

    def get_manifest(self, repository: str, identifier: str, accept: str = "") -> FetchedManifest:
        """`RegistryClient.get_manifest`, caching the document (and naming it when fetched by tag)."""
        try:
            fetched = (
                self._client.get_manifest(repository, identifier, accept=accept)
                if accept
                else self._client.get_manifest(repository, identifier)
            )
        except NotFound:
            name = self._name(repository, identifier)
            # A tag the registry no longer has: forget our copy (index.json is rewritten only then).
            if ":" not in identifier and self._store.resolve(name) is not None:
                self._store.remove_refs([name])
            raise
        expected = Digest.parse(identifier) if ":" in identifier else None
        self._keep_document(repository, None if expected else identifier, fetched.data, expected)
        return fetched

    def get_blob(self, repository: str, digest: Digest, max_bytes: int) -> bytes:
        """`RegistryClient.get_blob` (which checked size cap and digest); the bytes are stored."""
        data = self._client.get_blob(repository, digest, max_bytes)
        with self._store.in_use():
            self._store.put_bytes(data, digest)
        return data

    def referrers(
        self, repository: str, digest: Digest, artifact_type: str | None = None
    ) -> list[bytes] | None:
        """`RegistryClient.referrers`; the pages' descriptors are stored as one index under the
        referrers tag `sha256-<hex>`, where an offline reader looks for them."""
        pages = self._client.referrers(repository, digest, artifact_type)
        if pages is None:
            return None
        entries: list[dict[str, Any]] = []
        for page in pages:
            try:
                document = verify_document(page, content_type=None, expected=None).document
            except IntegrityError:
                return pages  # the caller rejects the page; there is nothing sound to keep
            if not isinstance(document, ImageIndex):
                return pages
            entries.extend(entry.to_json() for entry in document.manifests)
        merged = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, separators=(",", ":")
        ).encode()
        self._keep_document(repository, digest.referrers_tag, merged, None)
        return pages

    def _keep_document(self, repository: str, tag: str | None, raw: bytes, expected: Digest | None) -> None:
        """Store a manifest or index that parses as one; name it `REGISTRY/REPO:tag` if tagged.

        A document that does not parse is not stored: the caller's own parse rejects it.
        """
        try:
            verified = verify_document(raw, content_type=None, expected=expected)
        except IntegrityError:
            return
        descriptor = Descriptor(verified.media_type, verified.digest, len(raw))
        with self._store.in_use():  # blob and ref together: gc must not see one without the other
            self._store.put_bytes(raw, verified.digest)
            if tag is None:
                return
            name = self._name(repository, tag)
            known = self._store.resolve(name)
            if known is None or known.digest != verified.digest:  # rewrite index.json only on change
                self._store.set_refs(descriptor, [name])

    def _name(self, repository: str, tag: str) -> str:
        return f"{self._registry}/{repository}:{tag}"
