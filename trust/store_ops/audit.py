"""`trust audit`: is what this host pulled still intact, and would it still be admitted today?

For every image in the store (or one, `image=`):

1. **Bytes.** Every blob the image reaches (index, manifest, config, layers, cached signature
   artifacts) is re-hashed from disk and compared with its name. Blobs are hashed in parallel,
   one thread per core, streaming in 1 MiB reads (hashlib releases the GIL for large updates, so
   threads use both cores; see `docs/benchmarks.md`).
2. **Snapshots.** Every unpacked snapshot of the image is compared with the tree recorded when it
   was committed (`run.snapshots`, `tree.json`): each file's sha256, size, type and mode, and no
   entry added or missing.
3. **Policy.** The image's signatures are verified again under the current policy and trust
   material: from the registry, or with `offline`, only from the signature artifacts that
   admission cached in the store (`pull.sigcache`), read through an OCI layout client.
4. **History.** The last admission decision for the image is read from the decision log, and the
   pull time from the pull records.

Exit codes (`AuditReport.exit_code`): 4 if anything was tampered with (it wins), else 3 if an
image no longer passes policy, else 5 if something could not be checked, else 0.
This module does no printing; `trust/store_cli.py` renders the report.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from policy.admission import ClientFor, attestation_source, signature_source
from policy.evaluate import Evaluation, evaluate_signatures
from policy.model import Mode, Policy, RuleKind
from pull.digest import Digest
from pull.errors import CouldNotCheck, IntegrityError, InvalidReference, UsageError
from pull.gc import is_signature_ref, reach, signature_refs
from pull.manifest import ImageIndex, ImageManifest
from pull.records import dataclass, field
from pull.reference import Reference
from pull.store import ContentStore, StoredRef
from run.snapshots import SnapshotNotFound, SnapshotStore, TreeEntry, hash_file, scan_tree, snapshot_chain_ids
from run.tarsafe import DEVICES_SKIPPED_PREFIX

READ_CHUNK = 1 << 20
"""Bytes per read while re-hashing: large enough that hashlib drops the GIL for the update."""
POLICY_WORKERS = 4
"""Images whose signatures are re-verified at the same time."""


class AuditProgress(Protocol):
    """Listener for re-hash progress (the CLI binds it to a rich bar on a terminal)."""

    def started(self, total_bytes: int) -> None: ...
    def advanced(self, nbytes: int) -> None: ...
    def finished(self) -> None: ...


class _NoProgress:
    def started(self, total_bytes: int) -> None:
        pass

    def advanced(self, nbytes: int) -> None:
        pass

    def finished(self) -> None:
        pass


@dataclass(frozen=True)
class TamperedBlob:
    digest: Digest
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {"digest": str(self.digest), "problem": self.problem}


@dataclass(frozen=True)
class TamperedFile:
    snapshot: Digest
    """The snapshot's chain ID."""
    path: str
    """Relative to the snapshot's tree ("" for the snapshot's own records)."""
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": str(self.snapshot), "path": self.path, "problem": self.problem}


@dataclass(frozen=True)
class Verdict:
    """What the current policy says about the image today."""

    outcome: str
    """pass | allow-audit | fail | could-not-check | integrity-failure"""
    message: str
    evaluation: Evaluation | None = None

    @property
    def exit_code(self) -> int:
        return {"fail": 3, "integrity-failure": 4, "could-not-check": 5}.get(self.outcome, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "message": self.message,
            "evaluation": self.evaluation.to_json() if self.evaluation else None,
        }


@dataclass
class ImageAudit:
    repository: str
    references: list[str]
    digest: Digest
    manifest_digest: Digest | None
    index_digest: Digest | None
    pulled_at: str | None
    last_decision: dict[str, Any] | None
    verdict: Verdict | None = None
    blobs: list[Digest] = field(default_factory=list)
    snapshots: list[Digest] = field(default_factory=list)
    tampered_blobs: list[TamperedBlob] = field(default_factory=list)
    tampered_files: list[TamperedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return bool(self.tampered_blobs or self.tampered_files)

    @property
    def exit_code(self) -> int:
        if self.tampered:
            return 4
        return self.verdict.exit_code if self.verdict else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "references": self.references,
            "digest": str(self.digest),
            "manifestDigest": str(self.manifest_digest) if self.manifest_digest else None,
            "indexDigest": str(self.index_digest) if self.index_digest else None,
            "pulledAt": self.pulled_at,
            "lastDecision": self.last_decision,
            "verdict": self.verdict.to_json() if self.verdict else None,
            "blobsChecked": len(self.blobs),
            "snapshotsChecked": len(self.snapshots),
            "tamperedBlobs": [t.to_json() for t in self.tampered_blobs],
            "tamperedFiles": [t.to_json() for t in self.tampered_files],
            "warnings": self.warnings,
            "exitCode": self.exit_code,
        }


@dataclass
class AuditReport:
    store: str
    policy: str | None
    offline: bool
    images: list[ImageAudit]
    blobs_checked: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    unreferenced_blobs: list[TamperedBlob] = field(default_factory=list)
    """Tampered blobs that no image reaches (garbage that `trust gc` would remove)."""
    unreferenced_files: list[TamperedFile] = field(default_factory=list)
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def exit_code(self) -> int:
        codes = {image.exit_code for image in self.images}
        if self.unreferenced_blobs or self.unreferenced_files:
            codes.add(4)
        for code in (4, 3, 5):  # tampering wins, then a policy failure, then "could not check"
            if code in codes:
                return code
        return 0

    @property
    def throughput(self) -> float:
        """Re-hash throughput in MB/s (10^6 bytes)."""
        return self.bytes_hashed / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The `trust audit --output json` document (schema in docs/audit.md)."""
        return {
            "version": 1,
            "checkedAt": self.checked_at,
            "store": self.store,
            "policy": self.policy,
            "offline": self.offline,
            "exitCode": self.exit_code,
            "hashing": {
                "blobs": self.blobs_checked,
                "bytes": self.bytes_hashed,
                "seconds": round(self.seconds, 3),
                "mbPerSecond": round(self.throughput, 1),
            },
            "images": [image.to_json() for image in self.images],
            "unreferenced": {
                "tamperedBlobs": [t.to_json() for t in self.unreferenced_blobs],
                "tamperedFiles": [t.to_json() for t in self.unreferenced_files],
            },
        }


OfflineClients = Callable[[str], ClientFor]
"""repository name (`registry/repo`) → the clients reading that repository's cached signatures."""


def audit(
    store: ContentStore,
    snapshots: SnapshotStore,
    policy: Policy | None,
    *,
    clients: ClientFor | None = None,
    offline_clients: OfflineClients | None = None,
    image: str | None = None,
    workers: int | None = None,
    progress: AuditProgress | None = None,
) -> AuditReport:
    """Audit the store (or the one image `image` names). Never raises for what it finds.

    Give `clients` to read signatures from registries, or `offline_clients` to read only the
    store's cache. Without either, or without `policy`, signatures are not re-verified.

    Raises:
        UsageError: `image` is malformed or names nothing in the store.
    """
    # Shared with pulls, exclusive for gc: no blob or snapshot disappears while it is being checked.
    with store.in_use():
        return _audit(store, snapshots, policy, clients, offline_clients, image, workers, progress)


def _audit(
    store: ContentStore,
    snapshots: SnapshotStore,
    policy: Policy | None,
    clients: ClientFor | None,
    offline_clients: OfflineClients | None,
    image: str | None,
    workers: int | None,
    progress: AuditProgress | None,
) -> AuditReport:
    progress = progress or _NoProgress()
    refs = store.refs()
    images = _images(store, refs)
    if image is not None:
        images = _select(images, image)
    for entry in images:
        roots = [entry.digest, *(r.descriptor.digest for r in _signature_refs_of(refs, entry))]
        closure = reach(store, roots)
        entry.blobs = sorted(closure.blobs, key=str)
        # A ref names each root, and the pull record the platform manifest: they must be stored.
        required = [*roots, *([entry.manifest_digest] if entry.manifest_digest else [])]
        entry.tampered_blobs += [
            TamperedBlob(d, "missing from the store (named by index.json)")
            for d in dict.fromkeys(required)
            if not store.has(d)
        ]
        entry.tampered_blobs += [
            TamperedBlob(d, f"unreadable: {why}") for d, why in closure.unreadable.items()
        ]
        entry.tampered_blobs += [
            TamperedBlob(d, f"missing from the store (required by {parent})")
            for d, parent in closure.missing.items()
        ]
        entry.snapshots = [
            c for config in closure.configs.values() for c in snapshot_chain_ids(config.diff_ids)
        ]
        for chain_id in entry.snapshots:
            with contextlib.suppress(SnapshotNotFound, IntegrityError):  # absent, or reported below
                info = snapshots.info(chain_id)
                if info.tree_digest is None:
                    entry.warnings.append(f"snapshot {chain_id} was unpacked before trees were recorded")
                entry.warnings += [
                    f"snapshot {chain_id}: {warning}"
                    for warning in info.warnings
                    if warning.startswith(DEVICES_SKIPPED_PREFIX)
                ]

    # What to hash: the images' blobs, and for a whole-store audit every other blob and snapshot too.
    blob_set = {d for entry in images for d in entry.blobs}
    snapshot_set = {c for entry in images for c in entry.snapshots}
    if image is None:
        blob_set |= set(_all_blobs(store))
        snapshot_set |= set(snapshots.committed())
    started = time.perf_counter()
    blob_problems, file_problems, hashed = _check_all(
        store, snapshots, blob_set, snapshot_set, workers or os.cpu_count() or 1, progress
    )
    elapsed = time.perf_counter() - started

    owned_blobs: set[Digest] = set()
    owned_snapshots: set[Digest] = set()
    for entry in images:
        owned_blobs |= set(entry.blobs)
        owned_snapshots |= set(entry.snapshots)
        entry.tampered_blobs += [TamperedBlob(d, blob_problems[d]) for d in entry.blobs if d in blob_problems]
        entry.tampered_files += [f for c in entry.snapshots for f in file_problems.get(c, [])]
        entry.tampered_blobs = list({t.digest: t for t in entry.tampered_blobs}.values())

    report = AuditReport(
        store=str(store.root),
        policy=str(policy.source_path) if policy and policy.source_path else None,
        offline=offline_clients is not None,
        images=images,
        blobs_checked=len(blob_set),
        bytes_hashed=hashed,
        seconds=elapsed,
        unreferenced_blobs=[
            TamperedBlob(d, p)
            for d, p in sorted(blob_problems.items(), key=lambda i: str(i[0]))
            if d not in owned_blobs
        ],
        unreferenced_files=[
            f for c, found in file_problems.items() if c not in owned_snapshots for f in found
        ],
    )
    if policy is not None and (clients is not None or offline_clients is not None):

        def judge(entry: ImageAudit) -> Verdict:
            source = offline_clients(entry.repository) if offline_clients is not None else clients
            assert source is not None
            return _verdict(entry, policy, store, source, cache=offline_clients is None)

        # Mostly waiting on registries (online) or small reads (offline): a few threads, like the gate.
        with ThreadPoolExecutor(max_workers=POLICY_WORKERS, thread_name_prefix="audit-policy") as pool:
            for entry, verdict in zip(images, pool.map(judge, images), strict=True):
                entry.verdict = verdict
    return report


# -- which images the store holds --------------------------------------------------------------


def _images(store: ContentStore, refs: Sequence[StoredRef]) -> list[ImageAudit]:
    """One entry per (repository, top digest) named by a tag or digest ref; platform manifests
    of a stored index and cached signature artifacts are parts of images, not images."""
    pulls: dict[str, dict[str, Any]] = {}
    for record in store.read_records("pulls"):
        digest = record.get("digest")
        if isinstance(digest, str):
            pulls[digest] = record  # the last record wins: the latest pull
    decisions = store.read_records("decisions")
    grouped: dict[tuple[str, Digest], list[str]] = {}
    for ref in refs:
        if is_signature_ref(ref.name):
            continue
        grouped.setdefault((_repository_of(ref.name), ref.descriptor.digest), []).append(ref.name)
    # A digest-only ref to a child of another stored index of the same repository is a platform manifest.
    documents = {digest: _document(store, digest) for _, digest in grouped}
    children: set[tuple[str, Digest]] = set()
    for repository, digest in grouped:
        document = documents[digest]
        if isinstance(document, ImageIndex):
            children |= {(repository, child.digest) for child in document.manifests}
    images = []
    for (repository, digest), names in sorted(grouped.items(), key=lambda i: (i[0][0], str(i[0][1]))):
        if (repository, digest) in children and all("@" in n for n in names):
            continue
        record = pulls.get(str(digest), {})
        document = documents[digest]
        manifest_digest: Digest | None = digest
        index_digest = None
        if isinstance(document, ImageIndex):
            index_digest = digest
            manifest_digest = _platform_manifest(store, document, record)
        images.append(
            ImageAudit(
                repository=repository,
                references=sorted(names),
                digest=digest,
                manifest_digest=manifest_digest,
                index_digest=index_digest,
                pulled_at=record.get("pulledAt") if isinstance(record.get("pulledAt"), str) else None,
                last_decision=_last_decision(decisions, repository, digest),
            )
        )
    return images


def _select(images: list[ImageAudit], text: str) -> list[ImageAudit]:
    reference = Reference.parse(text)
    chosen = [
        entry
        for entry in images
        if entry.repository == reference.name
        and (
            (reference.digest is not None and reference.digest in (entry.digest, entry.manifest_digest))
            or (reference.digest is None and f"{reference.name}:{reference.tag}" in entry.references)
        )
    ]
    if not chosen:
        raise UsageError(f"no image {text} in the store (see `trust images`)")
    return chosen


def _document(store: ContentStore, digest: Digest) -> ImageManifest | ImageIndex | None:
    """The stored manifest or index `digest` names (None if absent or unreadable: audit reports it)."""
    return reach(store, [digest]).manifests.get(digest)


def _platform_manifest(store: ContentStore, index: ImageIndex, record: dict[str, Any]) -> Digest | None:
    """The platform manifest that was pulled from `index`: the pull record's, else the stored child."""
    with_record = record.get("manifestDigest")
    if isinstance(with_record, str):
        try:
            return Digest.parse(with_record)
        except InvalidReference:
            pass
    stored = [child.digest for child in index.manifests if store.has(child.digest)]
    return stored[0] if stored else None


def _last_decision(decisions: list[dict[str, Any]], repository: str, digest: Digest) -> dict[str, Any] | None:
    for record in reversed(decisions):
        if record.get("digest") != str(digest):
            continue
        try:
            if Reference.parse(str(record.get("reference"))).name != repository:
                continue
        except InvalidReference:
            continue
        keys = ("time", "decision", "rule", "mode", "policy", "reasons", "reused")
        return {key: record.get(key) for key in keys}
    return None


def _signature_refs_of(refs: Sequence[StoredRef], entry: ImageAudit) -> list[StoredRef]:
    digests = [d for d in (entry.digest, entry.manifest_digest) if d is not None]
    return signature_refs(refs, entry.repository, digests)


def _repository_of(name: str) -> str:
    if "@" in name:
        return name.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def _all_blobs(store: ContentStore) -> list[Digest]:
    found = []
    for algorithm_dir in store.blobs.iterdir():
        if algorithm_dir.is_dir():
            for name in os.listdir(algorithm_dir):
                try:
                    found.append(Digest(algorithm_dir.name, name))
                except InvalidReference:
                    continue
    return found


# -- re-hashing --------------------------------------------------------------------------------


def _check_all(
    store: ContentStore,
    snapshots: SnapshotStore,
    blobs: set[Digest],
    chains: set[Digest],
    workers: int,
    progress: AuditProgress,
) -> tuple[dict[Digest, str], dict[Digest, list[TamperedFile]], int]:
    """Re-hash blobs and snapshot files on `workers` threads. Returns problems per blob, per
    snapshot, and the bytes hashed.

    Snapshot trees are compared with their records here (entries, types, modes, owners: cheap).
    Then each blob and each large snapshot file is one job, and the small files of a snapshot one
    job together (for them the cost is system calls under the GIL, not hashing: one job per file
    only adds contention). Largest jobs first, so that the threads finish together.
    """
    file_problems: dict[Digest, list[TamperedFile]] = {}
    jobs: list[tuple[int, Callable[[], tuple[list[tuple[str | None, str]], int]], Digest]] = []
    for digest in blobs:
        try:
            size = store.blob_path(digest).lstat().st_size
        except FileNotFoundError:
            size = 0
        jobs.append((size, functools.partial(_rehash_blob, store, digest, progress), digest))
    for chain_id in chains:
        found, files = _compare_tree(snapshots, chain_id)
        if found:
            file_problems[chain_id] = found
        root = snapshots.path(chain_id)
        small = [entry for entry in files if entry.size < READ_CHUNK]
        for batch in [[entry] for entry in files if entry.size >= READ_CHUNK] + ([small] if small else []):
            check = functools.partial(_rehash_files, root, batch, progress)
            jobs.append((sum(entry.size for entry in batch), check, chain_id))
    jobs.sort(key=lambda job: job[0], reverse=True)
    progress.started(sum(job[0] for job in jobs))
    blob_problems: dict[Digest, str] = {}
    hashed = 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="audit") as pool:
        futures = [(pool.submit(run), digest) for _, run, digest in jobs]
        for future, digest in futures:
            problems, nbytes = future.result()
            hashed += nbytes
            for path, problem in problems:
                if path is None:
                    blob_problems[digest] = problem
                else:
                    file_problems.setdefault(digest, []).append(TamperedFile(digest, path, problem))
    progress.finished()
    for found in file_problems.values():
        found.sort(key=lambda tampered: tampered.path)
    return blob_problems, file_problems, hashed


def _rehash_blob(
    store: ContentStore, digest: Digest, progress: AuditProgress
) -> tuple[list[tuple[str | None, str]], int]:
    """Re-hash one blob: [(None, problem)] if it does not match its name, [] if it does."""
    path = store.blob_path(digest)
    hasher = digest.hasher()
    total = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return [(None, "missing from the store")], 0
    except OSError as exc:
        return [(None, f"cannot be read: {exc.strerror}")], 0
    with os.fdopen(fd, "rb", buffering=0) as file:
        buffer = bytearray(READ_CHUNK)
        view = memoryview(buffer)
        while count := file.readinto(buffer):
            hasher.update(view[:count])  # hashlib drops the GIL for updates this large
            total += count
            progress.advanced(count)
    actual = hasher.hexdigest()
    if actual != digest.hex:
        return [(None, f"content hashes to {digest.algorithm}:{actual} (modified on disk)")], total
    return [], total


def _rehash_files(
    root: Path, entries: Sequence[TreeEntry], progress: AuditProgress
) -> tuple[list[tuple[str | None, str]], int]:
    """Re-hash recorded regular files of one snapshot: (path, problem) for each that differs."""
    problems: list[tuple[str | None, str]] = []
    total = 0
    for recorded in entries:
        try:
            actual = hash_file(root / recorded.path)
        except OSError as exc:
            problems.append((recorded.path, f"cannot be read: {exc.strerror}"))
            continue
        total += recorded.size
        progress.advanced(recorded.size)
        if actual != recorded.digest:
            problems.append(
                (recorded.path, f"content hashes to sha256:{actual}, recorded sha256:{recorded.digest}")
            )
    return problems, total


def _compare_tree(snapshots: SnapshotStore, chain_id: Digest) -> tuple[list[TamperedFile], list[TreeEntry]]:
    """Compare a snapshot's tree with the one recorded at commit, without reading file contents.

    Returns the problems found and the regular files whose contents are still to be re-hashed.
    """
    if not snapshots.exists(chain_id):
        return [], []  # not unpacked: nothing to check (unpacking verifies the layer then)
    try:
        recorded = snapshots.recorded_tree(chain_id)
    except (IntegrityError, SnapshotNotFound) as exc:
        return [TamperedFile(chain_id, "", str(exc))], []
    if recorded is None:
        return [], []  # unpacked before trees were recorded (a warning, see `audit`)
    try:
        current = {entry.path: entry for entry in scan_tree(snapshots.path(chain_id), hash_files=False)}
    except OSError as exc:
        return [TamperedFile(chain_id, "", f"tree cannot be read: {exc}")], []
    problems = []
    files = []
    for entry in recorded:
        problem = _compare(entry, current.pop(entry.path, None))
        if problem is not None:
            problems.append(TamperedFile(chain_id, entry.path, problem))
        elif entry.kind == "file" and entry.digest is not None:
            files.append(entry)
    problems += [TamperedFile(chain_id, path, "added after unpacking") for path in sorted(current)]
    return problems, files


def _compare(recorded: TreeEntry, now: TreeEntry | None) -> str | None:
    if now is None:
        return "removed after unpacking"
    if now.kind != recorded.kind:
        return f"is a {now.kind}, was a {recorded.kind}"
    if now.mode != recorded.mode:
        return f"mode {now.mode:o}, was {recorded.mode:o}"
    if now.size != recorded.size:
        return f"{now.size} bytes, was {recorded.size}"
    if now.target != recorded.target:
        return f"symlink to {now.target!r}, was {recorded.target!r}"
    if now.owner != recorded.owner:
        return f"owner {now.owner}, was {recorded.owner}"
    if now.device != recorded.device:
        return f"device {now.device}, was {recorded.device}"
    if now.xattrs != recorded.xattrs:
        changed = sorted(set(now.xattrs) ^ set(recorded.xattrs))
        return f"extended attributes changed ({', '.join(sorted({name for name, _ in changed}))})"
    return None


# -- policy --------------------------------------------------------------------------------------


def _verdict(
    entry: ImageAudit, policy: Policy, store: ContentStore, clients: ClientFor, *, cache: bool
) -> Verdict:
    text = f"{entry.repository}@{entry.digest}"
    try:
        reference = Reference.parse(text)
    except InvalidReference as exc:
        return Verdict("fail", f"not a valid reference: {exc}")
    matched = policy.rule_for(reference)
    rule = matched.rule
    if rule.kind is RuleKind.REJECT:
        return Verdict("fail", f"{matched} rejects every image in its scope")
    if rule.kind is RuleKind.ACCEPT_ANYTHING:
        return Verdict("pass", f"{matched} accepts anything: no signature was checked")
    if entry.manifest_digest is None:
        return Verdict("could-not-check", "the platform manifest of this index is not in the store")
    try:
        evaluation = evaluate_signatures(
            text,
            matched,
            reference.name,
            entry.digest,
            entry.manifest_digest,
            entry.index_digest,
            signature_source(reference, clients, store if cache else None),
            attestation_source(reference, clients, store if cache else None),
        )
    except IntegrityError as exc:
        return Verdict("integrity-failure", str(exc))
    except CouldNotCheck as exc:
        return Verdict("could-not-check", str(exc))
    if evaluation.passed:
        return Verdict("pass", f"allowed by {matched}", evaluation)
    reasons = "; ".join(evaluation.reasons)
    if evaluation.mode is Mode.AUDIT:
        return Verdict("allow-audit", f"would fail {matched} (audit mode): {reasons}", evaluation)
    return Verdict("fail", f"fails {matched}: {reasons}", evaluation)
