"""OCI 1.1 referrers: artifacts (signatures, bundles, SBOMs) whose `subject` is a given digest.

The registry's referrers API answers with an index of descriptors; a registry without it (404)
is read through the referrers tag schema: an index tagged `<alg>-<hex>` that pushers maintain.
Both are untrusted documents and parsed strictly. The artifact-type filter is applied here too,
because a registry may ignore it.
"""

from __future__ import annotations

from pull.digest import Digest
from pull.errors import InvalidManifest, NotFound
from pull.manifest import Descriptor, ImageIndex, verify_document
from pull.mediatypes import OCI_INDEX
from pull.registry import RegistryClient


def list_referrers(
    client: RegistryClient, repository: str, digest: Digest, artifact_type: str | None = None
) -> list[Descriptor]:
    """Descriptors of the artifacts that refer to `digest` ([] when none; registry errors raise)."""
    pages = client.referrers(repository, digest, artifact_type)
    if pages is None:
        try:
            pages = [client.get_manifest(repository, digest.encoded, accept=OCI_INDEX).data]
        except NotFound:
            return []
    found: list[Descriptor] = []
    for page in pages:
        document = verify_document(page, content_type=None, expected=None).document
        if not isinstance(document, ImageIndex):
            raise InvalidManifest(f"the referrers of {digest} in {repository} are not an image index")
        found.extend(
            entry
            for entry in document.manifests
            if artifact_type is None or entry.artifact_type == artifact_type
        )
    return found
