"""`trust copy SRC DST`: an image with its signatures and attestations, between registries and layouts.

What travels, for the image and (without `--platform`) every manifest of its index:

- the manifests and every blob they name, each verified against its descriptor while it streams
  (a blob whose bytes do not hash to its digest stops the copy before the destination keeps it);
- the cosign tags of each manifest digest: `sha256-<hex>.sig`, `.att` and `.sbom`;
- the OCI referrers of each digest (API or `sha256-<hex>` fallback index), and their own cosign
  tags and referrers, up to `MAX_DEPTH` levels (a signature on an SBOM, say). On a destination
  without the referrers API the fallback index is merged (other entries kept) or, when the
  destination has none yet, copied byte for byte.

Blobs and manifests the destination already has are not sent again. The top manifest is pushed
last, under the destination's tag: until then the destination's tag still names what it named.

Nothing here decides trust: an air-gapped site verifies the copy with `trust verify`, exactly as
the original would have been verified, because every byte arrives unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pull.digest import Digest
from pull.errors import DigestMismatch, InvalidManifest, NotFound, SizeMismatch, UsageError
from pull.manifest import Descriptor, ImageIndex, ImageManifest, Platform, VerifiedDocument, verify_document
from pull.mediatypes import INDEX_TYPES, MANIFEST_TYPES
from pull.pipeline import PullProgress, resolve
from pull.records import dataclass, field
from pull.reference import Reference
from pull.referrers import read_referrers, record_referrers
from pull.registry import RegistryClient

ClientFor = Callable[[str], RegistryClient]
"""Returns a (cached) client for an API host (or `oci:/DIR`); the caller owns and closes them."""

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
"""Cosign's attached-artifact tags: `sha256-<hex>` plus one of these."""
MAX_DEPTH = 3
"""Levels of artifacts followed: the image's referrers (1), theirs (2), theirs (3)."""
MAX_ARTIFACTS = 1000
"""Attached manifests copied per image at most; a source listing more is not followed further."""
_INDEX_DEPTH = 4
"""Nesting of indexes inside indexes accepted (an attacker's index may point at itself)."""


@dataclass
class CopyResult:
    """What a copy did; `digest` is what the destination now names (the source's bytes, unchanged)."""

    source: Reference
    destination: Reference
    digest: Digest
    media_type: str
    manifests: list[Digest] = field(default_factory=list)
    """Manifests pushed (image, children, artifacts), in push order."""
    blobs_copied: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0
    tags: list[str] = field(default_factory=list)
    """Cosign tags copied (`sha256-<hex>.sig` …)."""
    referrers: list[Digest] = field(default_factory=list)
    """Referrer manifests copied."""

    def to_json(self) -> dict[str, Any]:
        """The `trust copy --output json` record (docs/formats.md)."""
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "digest": str(self.digest),
            "mediaType": self.media_type,
            "manifests": [str(d) for d in self.manifests],
            "blobsCopied": self.blobs_copied,
            "blobsSkipped": self.blobs_skipped,
            "bytesCopied": self.bytes_copied,
            "tags": list(self.tags),
            "referrers": [str(d) for d in self.referrers],
        }


def copy_image(
    client_for: ClientFor,
    source: Reference,
    destination: Reference,
    *,
    platform: Platform | None = None,
    attached: bool = True,
    progress: PullProgress | None = None,
    parallel: int = 4,
) -> CopyResult:
    """Copy `source` to `destination` with (unless `attached` is False) its signatures and attestations.

    With `platform`, an index source is reduced to that platform's manifest, which is what the
    destination then names (its own signatures are copied; the index's are not).

    Raises:
        UsageError: a layout destination without a tag, or a destination digest the source does not have.
        IntegrityError: a manifest or blob did not match its digest or size (the copy stops there).
        CouldNotCheck: either side could not be read or written.
    """
    if destination.is_layout and destination.tag is None:
        raise UsageError(f"name the image in the layout: {destination.name}:TAG")
    src = client_for(source.api_host)
    dst = client_for(destination.api_host)
    top = resolve(src, source)
    if platform is not None and isinstance(top.document, ImageIndex):
        child = top.document.select(platform)
        top = _fetch(src, source.repository, child)
    if destination.digest is not None and destination.digest != top.digest:
        raise UsageError(f"{destination} names {destination.digest}, but {source} is {top.digest}")
    copier = _Copier(src, source.repository, dst, destination.repository, progress, parallel)
    result = CopyResult(source, destination, top.digest, top.media_type)
    copier.copy_children(top, result, depth=0)
    copier.push(top, str(top.digest), result)
    if attached:
        copier.copy_attached([top, *copier.children_of(top)], result)
    if destination.tag is not None:
        # Last: a copy that failed on the way leaves the destination's tag as it was.
        copier.dst.push_manifest(copier.dst_repo, destination.tag, top.raw, top.media_type)
    return result


class _Copier:
    """One source repository to one destination repository, remembering what is already there."""

    def __init__(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        progress: PullProgress | None = None,
        parallel: int = 4,
    ) -> None:
        self.src, self.src_repo, self.dst, self.dst_repo = src, src_repo, dst, dst_repo
        self._progress = progress
        self._parallel = max(1, parallel)
        self._lock = threading.Lock()
        """Guards `_present` and the result's counters: an image's blobs are copied on several threads."""
        self._present: set[Digest] = set()
        self._children: dict[Digest, list[VerifiedDocument]] = {}
        self._copied: set[Digest] = set()
        """Manifests below an index copied with all their children (each is copied once)."""
        self._artifacts = 0

    # -- images ---------------------------------------------------------------------------------

    def copy_children(self, document: VerifiedDocument, result: CopyResult, depth: int) -> None:
        """Everything `document` names, children first, so that each push finds what it refers to."""
        if isinstance(document.document, ImageManifest):
            blobs = [document.document.config, *document.document.layers]
            # Blobs stream in parallel (both clients are thread-safe); the manifest is pushed after
            # all of them, by the caller, so the destination never names a missing blob.
            with ThreadPoolExecutor(max_workers=min(self._parallel, len(blobs))) as pool:
                for _ in pool.map(lambda blob: self.copy_blob(blob, result), blobs):
                    pass
            return
        if depth >= _INDEX_DEPTH:
            raise InvalidManifest(f"index {document.digest} nests indexes more than {_INDEX_DEPTH} deep")
        children = []
        for entry in document.document.manifests:
            if entry.media_type not in MANIFEST_TYPES | INDEX_TYPES:
                raise InvalidManifest(
                    f"index {document.digest} lists {entry.digest} of type {entry.media_type}"
                )
            if entry.digest in self._copied:
                # Already copied with everything below it. An index may list one child many times
                # (and nest such indexes): copying each listing again would cost that product.
                continue
            child = _fetch(self.src, self.src_repo, entry)
            self.copy_children(child, result, depth + 1)
            self.push(child, str(child.digest), result)
            self._copied.add(child.digest)
            children.append(child)
        self._children[document.digest] = children

    def children_of(self, document: VerifiedDocument) -> list[VerifiedDocument]:
        """The manifests below an index copied by `copy_children` (all levels)."""
        found = []
        for child in self._children.get(document.digest, []):
            found += [child, *self.children_of(child)]
        return found

    def copy_blob(self, descriptor: Descriptor, result: CopyResult) -> None:
        with self._lock:
            known = descriptor.digest in self._present
        if known or self.dst.blob_exists(self.dst_repo, descriptor.digest):
            if self._progress is not None:
                self._progress.blob_started(descriptor, True)
            with self._lock:
                self._present.add(descriptor.digest)
                result.blobs_skipped += 1
            return
        if self._progress is not None:
            self._progress.blob_started(descriptor, False)
        with self.src.stream_blob(self.src_repo, descriptor.digest) as chunks:
            self.dst.push_blob(
                self.dst_repo,
                descriptor.digest,
                descriptor.size,
                _reported(_verified(chunks, descriptor, self.src.host), descriptor, self._progress),
            )
        if self._progress is not None:
            self._progress.blob_finished(descriptor)
        with self._lock:
            self._present.add(descriptor.digest)
            result.blobs_copied += 1
            result.bytes_copied += descriptor.size

    def push(self, document: VerifiedDocument, reference: str, result: CopyResult) -> None:
        if ":" in reference and document.digest in self._present:
            return
        self.dst.push_manifest(self.dst_repo, reference, document.raw, document.media_type)
        self._present.add(document.digest)
        result.manifests.append(document.digest)

    # -- signatures, attestations, referrers ---------------------------------------------------------

    def copy_attached(self, subjects: Iterable[VerifiedDocument], result: CopyResult) -> None:
        """Cosign tags and referrers of each subject, then of what was attached to them, breadth first."""
        level = [subject.digest for subject in subjects]
        seen = set(level)
        for _ in range(MAX_DEPTH):
            following: list[Digest] = []
            for digest in level:
                following += self._copy_cosign_tags(digest, result)
                following += self._copy_referrers(digest, result)
            level = [d for d in following if d not in seen]
            seen.update(level)
            if not level:
                return

    def _copy_cosign_tags(self, digest: Digest, result: CopyResult) -> list[Digest]:
        copied = []
        for suffix in COSIGN_SUFFIXES:
            tag = digest.encoded + suffix
            try:
                fetched = self.src.get_manifest(self.src_repo, tag)
            except NotFound:
                continue
            document = verify_document(fetched.data, content_type=fetched.content_type, expected=None)
            if not self._budget():
                break
            self.copy_children(document, result, depth=0)
            self.push(document, tag, result)
            result.tags.append(tag)
            copied.append(document.digest)
        return copied

    def _copy_referrers(self, digest: Digest, result: CopyResult) -> list[Digest]:
        listing = read_referrers(self.src, self.src_repo, digest)
        copied: list[Digest] = []
        entries: list[dict[str, Any]] = []
        for descriptor, entry in zip(listing.descriptors, listing.entries, strict=True):
            if not self._budget():
                break
            document = _fetch(self.src, self.src_repo, descriptor)
            if document.document.subject is None or document.document.subject.digest != digest:
                continue  # not a referrer of this digest, whatever the listing claimed
            self.copy_children(document, result, depth=0)
            self.push(document, str(document.digest), result)
            result.referrers.append(document.digest)
            copied.append(document.digest)
            entries.append(entry)
        if entries:
            template = listing.fallback_index if len(entries) == len(listing.entries) else None
            record_referrers(self.dst, self.dst_repo, digest, entries, template=template)
        return copied

    def _budget(self) -> bool:
        self._artifacts += 1
        return self._artifacts <= MAX_ARTIFACTS


def _fetch(client: RegistryClient, repository: str, descriptor: Descriptor) -> VerifiedDocument:
    """The manifest `descriptor` promises: its digest, size and media type checked."""
    fetched = client.get_manifest(repository, str(descriptor.digest))
    document = verify_document(fetched.data, content_type=fetched.content_type, expected=descriptor.digest)
    if len(document.raw) != descriptor.size:
        raise SizeMismatch(
            f"manifest {descriptor.digest} is {len(document.raw)} bytes, "
            f"its descriptor says {descriptor.size}"
        )
    if document.media_type != descriptor.media_type:
        raise InvalidManifest(
            f"manifest {descriptor.digest} is a {document.media_type}, "
            f"its descriptor says {descriptor.media_type}"
        )
    return document


def _reported(
    chunks: Iterator[bytes], descriptor: Descriptor, progress: PullProgress | None
) -> Iterator[bytes]:
    """Pass chunks on, telling `progress` (a progress bar on a terminal) how far the blob got."""
    for chunk in chunks:
        if progress is not None:
            progress.blob_advanced(descriptor, len(chunk))
        yield chunk


def _verified(chunks: Iterable[bytes], descriptor: Descriptor, where: str) -> Iterator[bytes]:
    """Pass a blob's chunks on, refusing more than its size; the last chunk waits for the digest check.

    Holding back the last chunk means the destination never receives a complete body whose
    digest is wrong, whatever the destination itself checks.
    """
    hasher = descriptor.digest.hasher()
    seen = 0
    pending: bytes | None = None
    for chunk in chunks:
        seen += len(chunk)
        if seen > descriptor.size:
            raise SizeMismatch(
                f"blob {descriptor.digest} from {where} is longer than its {descriptor.size} bytes"
            )
        hasher.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    if seen != descriptor.size:
        raise SizeMismatch(f"blob {descriptor.digest} from {where} is {seen} bytes, not {descriptor.size}")
    if hasher.hexdigest() != descriptor.digest.hex:
        raise DigestMismatch(
            f"blob {descriptor.digest} from {where} hashes to "
            f"{descriptor.digest.algorithm}:{hasher.hexdigest()}"
        )
    if pending is not None:
        yield pending
