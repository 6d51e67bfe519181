"""OCI 1.1 referrers: artifacts (signatures, bundles, SBOMs) whose `subject` is a given digest.

The registry's referrers API answers with an index of descriptors; a registry without it (404)
is read through the referrers tag schema: an index tagged `<alg>-<hex>` that pushers maintain.
Both are untrusted documents and parsed strictly. The artifact-type filter is applied here too,
because a registry may ignore it.

Pushing (`push_referrer`) is the other half: the manifest goes up by digest, and on a registry
without the API the fallback index is read, extended and pushed back, keeping every entry that
others put there.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from pull.digest import Digest
from pull.errors import InvalidManifest, NotFound, RegistryError
from pull.manifest import Descriptor, ImageIndex, ImageManifest, VerifiedDocument, verify_document
from pull.mediatypes import ACCEPT, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX
from pull.records import dataclass
from pull.registry import RegistryClient
from pull.strictjson import loads as strict_json

PUSH_ATTEMPTS = 6
"""Merges of the fallback index tried before giving up on concurrent writers that keep winning."""

_TORN_READ_ATTEMPTS = 4
"""Reads of the fallback tag tried when the registry answers 500 while another writer updates it."""

_sleep = time.sleep  # replaced in tests to skip the pauses between re-reads


@dataclass(frozen=True)
class ReferrerListing:
    """The referrers of one digest: parsed descriptors, their JSON as listed, and how they were found.

    `fallback_index` holds the raw bytes of the `<alg>-<hex>` tag index when the listing came from
    the tag schema (None when the registry's API answered, or when nothing is attached).
    """

    descriptors: tuple[Descriptor, ...]
    entries: tuple[dict[str, Any], ...]
    fallback_index: bytes | None


def read_referrers(
    client: RegistryClient, repository: str, digest: Digest, artifact_type: str | None = None
) -> ReferrerListing:
    """Every referrer of `digest` (API pages, else the fallback tag), kept with its JSON as listed.

    Raises:
        CouldNotCheck (RegistryError…): the registry failed while listing; never read as "none".
        InvalidManifest: the listing is not a well-formed image index.
    """
    pages = client.referrers(repository, digest, artifact_type)
    fallback: bytes | None = None
    if pages is None or not any(_lists_any(page) for page in pages):
        # No referrers API, or an API that lists nothing: the tag schema too. Clients that push
        # with the tag schema by default (notation 1.x) leave referrers that a registry's API
        # does not list (olareg); each is verified like any other, so looking costs one request.
        try:
            fallback = client.get_manifest(repository, digest.referrers_tag, accept=OCI_INDEX).data
            pages = [*(pages or []), fallback]
        except NotFound:
            pages = pages or []
    descriptors: list[Descriptor] = []
    entries: list[dict[str, Any]] = []
    for page in pages:
        if page is not fallback:
            page = _null_listing_as_empty(page)
        try:
            verified = verify_document(page, content_type=None, expected=None)
        except InvalidManifest as exc:  # say what was malformed: the listing, not "the manifest"
            raise InvalidManifest(f"the referrers listing of {digest} in {repository}: {exc}") from None
        document = verified.document
        if not isinstance(document, ImageIndex):
            raise InvalidManifest(f"the referrers of {digest} in {repository} are not an image index")
        raw_entries = verified.parsed["manifests"]  # the list verify_document checked, every field kept
        for descriptor, raw in zip(document.manifests, raw_entries, strict=True):
            if artifact_type is None or descriptor.artifact_type == artifact_type:
                descriptors.append(descriptor)
                entries.append(raw)
    # A LayoutClient can only exist if pull.layout was imported; not importing it otherwise keeps
    # registry-only commands (`trust run`) from loading it (and pull.layout imports this module).
    layout = sys.modules.get("pull.layout")
    if layout is not None and isinstance(client, layout.LayoutClient):
        # oras-go (and `notation --oci-layout`) list referrers as untagged index.json entries only.
        listed = {d.digest for d in descriptors}
        for raw in client.untagged_referrers(digest):
            descriptor = Descriptor.from_json(raw, f"referrer of {digest} in {client.host}")
            wanted = artifact_type is None or descriptor.artifact_type == artifact_type
            if wanted and descriptor.digest not in listed:
                listed.add(descriptor.digest)
                descriptors.append(descriptor)
                entries.append(raw)
    return ReferrerListing(tuple(descriptors), tuple(entries), fallback)


def _lists_any(page: bytes) -> bool:
    """Whether an API page lists any referrer (a cheap look; `verify_document` checks it later)."""
    try:
        listing = strict_json(page, "referrers listing")
    except ValueError:
        return True  # let verify_document report it
    return not isinstance(listing, dict) or bool(listing.get("manifests"))


def _null_listing_as_empty(page: bytes) -> bytes:
    """A referrers API page whose `manifests` is `null` read as an empty list.

    Registries written in Go that marshal a nil slice (olareg) answer `"manifests": null` when
    nothing refers to a digest; the distribution spec asks for `[]`, and cosign and notation read
    both as "none". Read so here too: it can only hide nothing, never add a referrer. Anything else
    about the page is still checked by `verify_document`.
    """
    if b'"manifests":null' not in page.replace(b" ", b""):
        return page
    try:
        listing = strict_json(page, "referrers listing")
    except ValueError:
        return page  # verify_document reports it
    if isinstance(listing, dict) and "manifests" in listing and listing["manifests"] is None:
        listing["manifests"] = []
        return json.dumps(listing).encode()
    return page


def list_referrers(
    client: RegistryClient, repository: str, digest: Digest, artifact_type: str | None = None
) -> list[Descriptor]:
    """Descriptors of the artifacts that refer to `digest` ([] when none; registry errors raise).

    Raises:
        CouldNotCheck (RegistryError…): the registry failed while listing; never read as "none".
        InvalidManifest: the listing is not a well-formed image index.
    """
    return list(read_referrers(client, repository, digest, artifact_type).descriptors)


def push_referrer(
    client: RegistryClient, repository: str, manifest: bytes, media_type: str, subject: Descriptor
) -> Digest:
    """Push `manifest` (whose `subject` is `subject`) by digest; maintain the fallback index if needed.

    The caller has pushed the manifest's blobs. On a registry with the referrers API that is all.
    Without it, the `<alg>-<hex>` tag of the subject holds an OCI index of referrer descriptors:
    we read it (or start an empty one), append our descriptor unless it is already there, keep
    every other entry byte for byte (including fields we do not model), and push it back. Tags
    have no compare-and-swap, so after pushing we re-read (twice, after a random pause, as
    `trust.attached.attach_signature` does) and merge again if a concurrent writer dropped us.

    Raises:
        InvalidManifest: `manifest` is not a manifest/index with that subject, or the existing
            fallback tag holds something other than an image index (we refuse to overwrite it).
        RegistryError: the registry failed, or concurrent writers overwrote our entry every time.
    """
    entry = _referrer_descriptor(manifest, media_type, subject)
    digest = client.push_manifest(repository, str(entry["digest"]), manifest, media_type)
    record_referrers(client, repository, subject.digest, [entry])
    return digest


def record_referrers(
    client: RegistryClient,
    repository: str,
    subject: Digest,
    entries: Sequence[dict[str, Any]],
    *,
    template: bytes | None = None,
) -> None:
    """Make the referrers `entries` (pushed already) listable for `subject` on a registry without the API.

    On a registry with the API this does nothing. Otherwise the fallback tag is merged as
    `push_referrer` describes. `template` is a whole fallback index to push verbatim when the tag
    does not exist yet and it lists exactly `entries` (a copy then arrives byte for byte).
    """
    if client.referrers(repository, subject) is not None:
        return  # the registry indexes referrers itself
    tag = subject.referrers_tag
    existing = _read_fallback_index(client, repository, tag)
    for attempt in range(PUSH_ATTEMPTS):
        if existing is None and template is not None and _lists_exactly(template, entries):
            client.push_manifest(repository, tag, template, _media_type_of(json.loads(template)))
        else:
            merged = _merged_index(existing, entries)
            if merged is not None:
                client.push_manifest(repository, tag, merged, _media_type_of(existing))
        confirmed = True
        for _ in range(2):
            _sleep(random.uniform(0.02, 0.1) * (attempt + 1))
            existing = _read_fallback_index(client, repository, tag)
            if _merged_index(existing, entries) is not None:
                confirmed = False
                break
        if confirmed:
            return
    raise RegistryError(
        f"could not record referrers of {subject} in {client.host}/{repository}:{tag}: "
        f"concurrent updates overwrote them {PUSH_ATTEMPTS} times"
    )


def _referrer_descriptor(manifest: bytes, media_type: str, subject: Descriptor) -> dict[str, Any]:
    """The fallback-index entry for `manifest`, as the distribution spec describes it.

    `artifactType` is the manifest's own, else its config's media type (image manifests);
    `annotations` are the manifest's top-level annotations.
    """
    if media_type not in MANIFEST_TYPES | INDEX_TYPES:
        raise InvalidManifest(f"cannot push a referrer of media type {media_type!r}")
    verified = verify_document(manifest, content_type=media_type, expected=None)
    if verified.document.subject is None or verified.document.subject.digest != subject.digest:
        raise InvalidManifest(f"the referrer manifest's subject is not {subject.digest}")
    return referrer_entry(verified)


def referrer_entry(verified: VerifiedDocument) -> dict[str, Any]:
    """How a referrers listing describes the verified manifest `verified` (distribution spec)."""
    document = verified.document
    artifact_type: str | None
    if isinstance(document, ImageManifest):
        artifact_type = document.artifact_type or document.config.media_type
    else:
        raw_type = verified.parsed.get("artifactType")
        artifact_type = raw_type if isinstance(raw_type, str) else None
    entry: dict[str, Any] = {
        "mediaType": verified.media_type,
        "digest": str(verified.digest),
        "size": len(verified.raw),
    }
    if artifact_type:
        entry["artifactType"] = artifact_type
    if document.annotations:
        entry["annotations"] = dict(document.annotations)
    return entry


def _read_fallback_index(client: RegistryClient, repository: str, tag: str) -> dict[str, Any] | None:
    """The fallback index at `tag` as a JSON object (validated as an image index), or None if absent."""
    for attempt in range(_TORN_READ_ATTEMPTS):
        try:
            # Accept every type: distribution answers 404 for a manifest the Accept header leaves
            # out, and a squatter at the tag must be seen, not overwritten.
            fetched = client.get_manifest(repository, tag, accept=ACCEPT)
            break
        except NotFound:
            return None
        except RegistryError as exc:
            # distribution's filesystem driver answers 500 ("invalid checksum digest format")
            # while a concurrent PUT rewrites the tag's link file; that settles within moments.
            if exc.status_code != 500 or attempt == _TORN_READ_ATTEMPTS - 1:
                raise
            _sleep(random.uniform(0.02, 0.1) * (attempt + 1))
    verified = verify_document(fetched.data, content_type=fetched.content_type, expected=None)
    if not isinstance(verified.document, ImageIndex):
        raise InvalidManifest(
            f"tag {tag} in {repository} holds a {verified.media_type}, not a referrers index; "
            "refusing to overwrite it"
        )
    return verified.parsed


def _merged_index(existing: dict[str, Any] | None, entries: Sequence[dict[str, Any]]) -> bytes | None:
    """`existing` with the `entries` it lacks (by digest) appended, serialised; None if it has them all."""
    if existing is None:
        existing = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    manifests = existing.get("manifests")
    assert isinstance(manifests, list)  # checked by verify_document
    present = {m.get("digest") for m in manifests if isinstance(m, dict)}
    missing = []
    for entry in entries:
        if entry.get("digest") not in present:
            missing.append(entry)
            present.add(entry.get("digest"))
    if not missing:
        return None
    merged = dict(existing)
    merged["manifests"] = [*manifests, *missing]
    return json.dumps(merged, separators=(",", ":")).encode()


def _lists_exactly(index: bytes, entries: Sequence[dict[str, Any]]) -> bool:
    document = json.loads(index)
    listed = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        return False
    return sorted(json.dumps(e, sort_keys=True) for e in listed) == sorted(
        json.dumps(e, sort_keys=True) for e in entries
    )


def _media_type_of(index: dict[str, Any] | None) -> str:
    """The media type to push a merged index with: its own (checked by `verify_document`), else OCI's."""
    media_type = OCI_INDEX if index is None else index.get("mediaType")
    return media_type if isinstance(media_type, str) else OCI_INDEX
