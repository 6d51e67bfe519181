"""Store housekeeping: what an image reaches, which refs `trust rmi` drops, and mark-and-sweep gc.

**Reachability.** A blob is live when a ref in `index.json` reaches it: an index reaches its
children (those stored: an index pulled for one platform holds one child), a manifest its config
and layers. Cached signature artifacts are refs too (`REPO:sha256-<hex>.sig`, the referrers index
`REPO:sha256-<hex>`), so their manifests, payloads and bundles stay with the image they sign.
Callers add roots of their own (the images of containers) and decide which snapshots the live
image configs keep (`pull/` knows nothing of snapshots; `trust gc` passes them in).

**Locking.** `collect` marks and sweeps under `ContentStore.collecting()`, the exclusive side of
the lock every pull holds (shared) from its first blob until its refs are written. So a pull in
flight is never swept, and a pull that starts during a gc waits for it. Snapshots are removed
under their chain ID's lock, which unpackers hold while they create one.

**Safety.** Marking reads manifests back from the store and re-hashes them. If one of them no
longer matches its digest, its children cannot be known, and sweeping would delete them: gc then
refuses (IntegrityError) and asks for `trust audit`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from pull.config import CONFIG_MAX_BYTES, MANIFEST_MAX_BYTES
from pull.digest import Digest
from pull.errors import IntegrityError, InvalidReference, UsageError
from pull.manifest import ImageConfig, ImageIndex, ImageManifest, parse_config, verify_document
from pull.mediatypes import INDEX_TYPES, MANIFEST_TYPES
from pull.records import dataclass, field
from pull.reference import Reference
from pull.store import ContentStore, StoredRef

SIGNATURE_TAG = re.compile(r"(sha256|sha512)-[0-9a-f]{64,128}(\.sig|\.att|\.sbom)?")
"""Tags of cosign artifacts (`sha256-<hex>.sig`) and referrers indexes (`sha256-<hex>`)."""


@dataclass
class Closure:
    """What one or more roots reach in the store."""

    blobs: dict[Digest, int] = field(default_factory=dict)
    """Every stored blob reached (manifests, indexes, configs, layers, signature blobs) → size."""
    configs: dict[Digest, ImageConfig] = field(default_factory=dict)
    """The image configs reached (their diff_ids name the snapshots an image uses)."""
    manifests: dict[Digest, ImageManifest | ImageIndex] = field(default_factory=dict)
    missing: dict[Digest, str] = field(default_factory=dict)
    """Blobs a manifest requires that the store lacks → which manifest requires them."""
    unreadable: dict[Digest, str] = field(default_factory=dict)
    """Blobs that could not be read back or parsed (modified on disk?) → why."""


def reach(store: ContentStore, roots: Iterable[Digest], closure: Closure | None = None) -> Closure:
    """Walk from `roots` through the documents the store holds. Never raises for bad content:
    what cannot be read goes to `closure.unreadable`, what is absent to `closure.missing`."""
    closure = closure if closure is not None else Closure()
    pending = [(root, True) for root in roots]
    while pending:
        digest, is_document = pending.pop()
        if digest in closure.blobs or digest in closure.unreadable:
            continue
        path = store.blob_path(digest)
        try:
            size = path.lstat().st_size
        except FileNotFoundError:
            continue  # an absent root or index child is not an error; manifests check their own
        closure.blobs[digest] = size
        if not is_document:
            continue
        try:
            raw = store.read_blob(digest, MANIFEST_MAX_BYTES)
            document = verify_document(raw, content_type=None, expected=digest).document
        except (IntegrityError, OSError) as exc:
            closure.unreadable[digest] = str(exc)
            continue
        closure.manifests[digest] = document
        if isinstance(document, ImageIndex):
            pending.extend(
                (child.digest, True)
                for child in document.manifests
                if child.media_type in MANIFEST_TYPES | INDEX_TYPES
            )
            continue
        for blob in (document.config, *document.layers):
            if not store.has(blob.digest):
                # An image needs every blob; a cached signature artifact holds only what signature
                # discovery read (a `.sig` manifest's config is never fetched).
                if document.is_image:
                    closure.missing.setdefault(blob.digest, str(digest))
            else:
                pending.append((blob.digest, blob.media_type in MANIFEST_TYPES | INDEX_TYPES))
        if document.is_image and store.has(document.config.digest):
            try:
                raw_config = store.read_blob(document.config.digest, CONFIG_MAX_BYTES)
                closure.configs[document.config.digest] = parse_config(raw_config, document.config)
            except (IntegrityError, OSError) as exc:
                closure.unreadable[document.config.digest] = str(exc)
    return closure


def signature_refs(refs: Sequence[StoredRef], repository: str, digests: Iterable[Digest]) -> list[StoredRef]:
    """The cached signature artifacts (`.sig` manifests, referrers indexes) of `digests` in `repository`."""
    tags = set()
    for digest in digests:
        tags |= {digest.referrers_tag, *(f"{digest.encoded}{suffix}" for suffix in (".sig", ".att", ".sbom"))}
    return [ref for ref in refs if ref.name in {f"{repository}:{tag}" for tag in tags}]


def is_signature_ref(name: str) -> bool:
    """Whether a ref names a cached signature artifact rather than an image."""
    if "@" in name:
        return False
    tail = name.rsplit("/", 1)[-1]
    _, colon, tag = tail.rpartition(":")
    return bool(colon) and SIGNATURE_TAG.fullmatch(tag) is not None


# -- trust rmi --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Untag:
    """What `trust rmi REF` removes from index.json."""

    repository: str
    names: tuple[str, ...]
    """The refs removed."""
    digests: tuple[Digest, ...]
    """The image digests that lose their last name (index, and its platform manifests)."""

    @property
    def image_gone(self) -> bool:
        return bool(self.digests)


def plan_untag(store: ContentStore, text: str) -> Untag:
    """Which refs `trust rmi` removes for `text` (a tag or digest reference).

    By tag: that tag; if no other tag of the repository names the same image, the image goes too
    (its `@digest` ref, its platform manifests' refs, its cached signature artifacts). By digest:
    every tag and ref of the repository naming it. Raises UsageError when nothing matches.
    """
    reference = Reference.parse(text)
    repository = reference.name
    refs = store.refs()
    if reference.digest is not None:
        target = reference.digest
    else:
        named = store.resolve(f"{repository}:{reference.tag or 'latest'}")
        if named is None:
            raise UsageError(f"no image {text} in the store (see `trust images`)")
        target = named.digest
    in_repo = [r for r in refs if _repository_of(r.name) == repository and not is_signature_ref(r.name)]
    naming = [r for r in in_repo if r.descriptor.digest == target]
    if not naming:
        raise UsageError(f"no image {text} in the store (see `trust images`)")
    if reference.digest is None:
        others = [r for r in naming if "@" not in r.name and r.name != f"{repository}:{reference.tag}"]
        if others:  # another tag keeps the image: only this tag goes
            return Untag(repository, (f"{repository}:{reference.tag}",), ())
    children = {d for d in reach(store, [target]).manifests if d != target}
    # A platform manifest that a tag of its own names stays (it was pulled as an image itself).
    tagged = {r.descriptor.digest for r in in_repo if "@" not in r.name and r.descriptor.digest != target}
    gone = {target} | (children - tagged)
    names = [r.name for r in in_repo if r.descriptor.digest in gone]
    names += [r.name for r in signature_refs(refs, repository, gone)]
    return Untag(repository, tuple(dict.fromkeys(names)), tuple(sorted(gone, key=str)))


def _repository_of(name: str) -> str:
    if "@" in name:
        return name.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


# -- trust gc ---------------------------------------------------------------------------------


class Snapshots(Protocol):
    """The part of `run.snapshots.SnapshotStore` gc uses."""

    def committed(self) -> list[Digest]: ...
    def path(self, chain_id: Digest) -> Path: ...
    def exists(self, chain_id: Digest) -> bool: ...
    def remove(self, chain_id: Digest) -> None: ...
    def locked(self, chain_id: Digest) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class Removal:
    kind: str
    """blob | snapshot | partial (an abandoned download under ingest/)"""
    name: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "size": self.size}


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    removed: tuple[Removal, ...]
    kept_blobs: int
    kept_snapshots: int

    @property
    def freed(self) -> int:
        return sum(removal.size for removal in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "removed": [removal.to_json() for removal in self.removed],
            "freed": self.freed,
            "keptBlobs": self.kept_blobs,
            "keptSnapshots": self.kept_snapshots,
        }


def collect(
    store: ContentStore,
    *,
    extra_roots: Callable[[], Iterable[Digest]] = lambda: (),
    snapshots: Snapshots | None = None,
    live_snapshots: Callable[[Closure], set[Digest]] = lambda closure: set(),
    dry_run: bool = False,
) -> GcReport:
    """Mark from index.json refs and `extra_roots()`, sweep blobs and snapshots nothing reaches.

    `extra_roots` and `live_snapshots` are called under the lock (so a container created just
    before is seen). With `dry_run`, nothing is removed; the report lists what would be.

    Raises:
        IntegrityError: a manifest reached from a ref cannot be read back (nothing is removed).
    """
    with store.collecting():
        roots = [ref.descriptor.digest for ref in store.refs()]
        closure = reach(store, [*roots, *extra_roots()])
        if closure.unreadable:
            digest, why = next(iter(closure.unreadable.items()))
            raise IntegrityError(
                f"gc stopped before removing anything: {digest} cannot be read back ({why}); "
                "run `trust audit`"
            )
        removed: list[Removal] = []
        for digest, size in _stored_blobs(store):
            if digest not in closure.blobs:
                removed.append(Removal("blob", str(digest), size))
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        store.blob_path(digest).unlink()
        removed += _abandoned_partials(store, dry_run)
        kept_snapshots = 0
        if snapshots is not None:
            keep = live_snapshots(closure)
            for chain_id in snapshots.committed():
                if chain_id in keep:
                    kept_snapshots += 1
                    continue
                with snapshots.locked(chain_id):
                    if not snapshots.exists(chain_id):
                        continue
                    removed.append(Removal("snapshot", str(chain_id), _tree_size(snapshots.path(chain_id))))
                    if not dry_run:
                        snapshots.remove(chain_id)
    return GcReport(dry_run, tuple(removed), len(closure.blobs), kept_snapshots)


def _stored_blobs(store: ContentStore) -> list[tuple[Digest, int]]:
    found = []
    for algorithm_dir in sorted(store.blobs.iterdir()):
        if not algorithm_dir.is_dir():
            continue
        for entry in os.scandir(algorithm_dir):
            try:
                digest = Digest(algorithm_dir.name, entry.name)
            except InvalidReference:
                continue  # not a blob name: not ours to delete
            found.append((digest, entry.stat(follow_symlinks=False).st_size))
    return found


def _abandoned_partials(store: ContentStore, dry_run: bool) -> list[Removal]:
    """Partial downloads nobody is writing: every writer holds the gc lock (shared), which we
    hold exclusively, but the per-blob lock is checked too in case a writer did not."""
    removed = []
    for partial in store.ingest_dir.glob("*.partial"):
        lock = store.ingest_dir / (partial.name.removesuffix(".partial") + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            with contextlib.suppress(FileNotFoundError):
                size = partial.lstat().st_size
                removed.append(Removal("partial", partial.name, size))
                if not dry_run:
                    partial.unlink()
        finally:
            os.close(fd)
    return removed


def _tree_size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
