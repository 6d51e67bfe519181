"""What the store holds: one row per named reference in `index.json`, joined with pull records."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pull.config import MANIFEST_MAX_BYTES
from pull.digest import Digest
from pull.errors import IntegrityError
from pull.gc import is_signature_ref
from pull.manifest import ImageIndex, ImageManifest, verify_document
from pull.records import dataclass
from pull.store import ContentStore


@dataclass(frozen=True)
class ImageRow:
    repository: str
    tag: str | None
    digest: Digest
    media_type: str
    size: int
    """Bytes of the stored manifest(s), config and layers reachable from this reference."""
    pulled_at: str | None
    admitted: str | None = None
    """The last admission decision for this digest (allow, allow-audit, deny, error); None: never."""
    unpacked_size: int = 0
    """Bytes of the image's unpacked snapshots (filled in by the CLI, which knows about snapshots)."""
    artifact_type: str | None = None
    """For an artifact (not a container image): its artifact type, as `trust pull` recorded it."""

    @property
    def size_on_disk(self) -> int:
        return self.size + self.unpacked_size

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "digest": str(self.digest),
            "mediaType": self.media_type,
            "size": self.size,
            "unpackedSize": self.unpacked_size,
            "sizeOnDisk": self.size_on_disk,
            "pulledAt": self.pulled_at,
            "admitted": self.admitted,
            "artifactType": self.artifact_type,
        }


def list_images(store: ContentStore) -> list[ImageRow]:
    """Tag refs, plus digest refs that no tag in the same repository points at."""
    pulled_at: dict[str, str] = {}
    artifact_types: dict[str, str] = {}
    for record in store.read_records("pulls"):
        digest, when = record.get("digest"), record.get("pulledAt")
        if isinstance(digest, str) and isinstance(when, str):
            pulled_at[digest] = max(when, pulled_at.get(digest, ""))
        kind = record.get("artifactType")
        if isinstance(digest, str) and isinstance(kind, str):
            artifact_types[digest] = kind
    decided: dict[tuple[str, str], str] = {}
    for record in store.read_records("decisions"):  # in order: the last decision wins
        reference, digest, decision = record.get("reference"), record.get("digest"), record.get("decision")
        if isinstance(reference, str) and isinstance(digest, str) and isinstance(decision, str):
            decided[(_split_name(reference)[0], digest)] = decision
    rows: list[ImageRow] = []
    tagged: set[tuple[str, Digest]] = set()
    # Cached signature artifacts (`REPO:sha256-<hex>.sig`, referrers indexes) belong to the image they sign.
    refs = [ref for ref in store.refs() if not is_signature_ref(ref.name)]
    for ref in refs:
        repository, tag = _split_name(ref.name)
        if tag is not None:
            tagged.add((repository, ref.descriptor.digest))
    for ref in refs:
        repository, tag = _split_name(ref.name)
        digest = ref.descriptor.digest
        if tag is None and (repository, digest) in tagged:
            continue
        if tag is None and str(digest) not in pulled_at:
            continue  # a platform manifest inside a pulled index: listed through its index
        rows.append(
            ImageRow(
                repository,
                tag,
                digest,
                ref.descriptor.media_type,
                _stored_size(store, digest),
                pulled_at.get(str(digest)),
                decided.get((repository, str(digest))),
                artifact_type=artifact_types.get(str(digest)),
            )
        )
    rows.sort(key=lambda r: (r.repository, r.tag or "", str(r.digest)))
    return rows


def _split_name(name: str) -> tuple[str, str | None]:
    """`registry/repo:tag` → (registry/repo, tag); `registry/repo@sha256:…` → (registry/repo, None)."""
    if "@" in name:
        return name.split("@", 1)[0], None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, None


def _stored_size(store: ContentStore, digest: Digest) -> int:
    """Sum the sizes of the blobs the store holds below `digest` (missing children count 0)."""
    total = 0
    seen: set[Digest] = set()
    pending = [digest]
    while pending:
        current = pending.pop()
        if current in seen or not store.has(current):
            continue
        seen.add(current)
        with contextlib.suppress(IntegrityError, OSError, json.JSONDecodeError):
            raw = store.read_blob(current, MANIFEST_MAX_BYTES)
            total += len(raw)
            document = verify_document(raw, content_type=None, expected=current).document
            if isinstance(document, ImageIndex):
                pending.extend(entry.digest for entry in document.manifests)
            elif isinstance(document, ImageManifest):
                for blob in (document.config, *document.layers):
                    if store.has(blob.digest) and blob.digest not in seen:
                        seen.add(blob.digest)
                        total += blob.size
    return total
