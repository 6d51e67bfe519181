"""The content store: an OCI image layout where only verified bytes become visible.

    STORE/
      oci-layout, index.json      the OCI image layout that skopeo and umoci read as is
      blobs/sha256/<hex>          verified blobs, read-only
      ingest/                     partial downloads and per-blob lock files (never read as content)
      meta/                       trust's own records (pulls, decisions, snapshots, containers)

Like containerd's content store, ingested bytes are invisible until `BlobWriter.commit()` has
checked size and digest; then the file is fsynced and renamed into `blobs/`. Writers take a
per-blob `flock`, so two processes fetching the same blob store it once: the second waits and
then finds it committed. A writer that dies leaves only a file under `ingest/`, which the next
writer for that blob truncates.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from pull.digest import Digest
from pull.durable import atomic_write, fsync_dir
from pull.errors import DigestMismatch, IntegrityError, SizeMismatch, UsageError
from pull.lockfile import locked_file, remove_unlocked
from pull.manifest import Descriptor
from pull.records import dataclass

REF_NAME = "org.opencontainers.image.ref.name"
_GC_LOCK = "gc.lock"
_LAYOUT = {"imageLayoutVersion": "1.0.0"}


@dataclass(frozen=True)
class StoredRef:
    """One `index.json` entry: a name (`registry/repo:tag` or `registry/repo@digest`) and its target."""

    name: str
    descriptor: Descriptor


class BlobWriter:
    """Receives the bytes of one blob, checking the size as they arrive and the digest at commit."""

    def __init__(self, store: ContentStore, digest: Digest, size: int, file: IO[bytes], path: Path) -> None:
        self._store = store
        self.digest = digest
        self.size = size
        self._file = file
        self._path = path
        self._hash = digest.hasher()
        self.written = 0
        self._flushed = 0

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.written > self.size:
            # Stop at size+1: a server that sends more than promised is not read any further.
            raise SizeMismatch(
                f"blob {self.digest} is longer than the {self.size} bytes its descriptor promises"
            )
        self._hash.update(chunk)
        self._file.write(chunk)
        if self.written - self._flushed >= _WRITEBACK_STEP:
            # Start writeback of what we have while the rest downloads, so that the fsync at
            # commit has little left to wait for (durability without a stall at the end).
            self._file.flush()
            _start_writeback(self._file.fileno(), self._flushed, self.written - self._flushed)
            self._flushed = self.written

    def commit(self) -> Path:
        if self.written != self.size:
            raise SizeMismatch(
                f"blob {self.digest} is {self.written} bytes, its descriptor promises {self.size}"
            )
        actual = self._hash.hexdigest()
        if actual != self.digest.hex:
            raise DigestMismatch(
                f"blob content hashes to {self.digest.algorithm}:{actual}, not {self.digest}"
            )
        self._file.flush()
        os.fsync(self._file.fileno())
        os.fchmod(self._file.fileno(), 0o444)
        final = self._store.blob_path(self.digest)
        os.replace(self._path, final)
        fsync_dir(final.parent)
        return final


class ContentStore:
    """Digest → verified bytes, plus the layout's `index.json` of named references."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.ingest_dir = root / "ingest"
        self.meta = root / "meta"

    @classmethod
    def open(cls, root: Path | str) -> ContentStore:
        """Open the store at `root`, creating the layout (mode 0700) if needed."""
        store = cls(Path(root))
        try:
            store.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for sub in (store.blobs / "sha256", store.blobs / "sha512", store.ingest_dir, store.meta):
                sub.mkdir(mode=0o700, parents=True, exist_ok=True)
            layout = store.root / "oci-layout"
            if not layout.exists():
                atomic_write(layout, json.dumps(_LAYOUT).encode())
            if not (store.root / "index.json").exists():
                with store.locked():
                    if not (store.root / "index.json").exists():
                        store._write_index([])
        except OSError as exc:
            raise UsageError(f"cannot open store {root}: {exc.strerror}") from None
        return store

    @functools.cached_property
    def read_only(self) -> bool:
        """Whether the store cannot be written (a read-only mount, say of a seized disk): commands
        that only read it (`trust audit`, `images`) then work without recording anything."""
        return bool(os.statvfs(self.root).f_flag & os.ST_RDONLY) or not os.access(self.meta, os.W_OK)

    # -- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        # Digest's constructor validated algorithm and hex, so this cannot escape blobs/.
        return self.blobs / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: Digest, max_bytes: int) -> bytes:
        """Read a small blob (manifest, config) and re-hash it: the store itself is not trusted."""
        path = self.blob_path(digest)
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise IntegrityError(f"stored blob {digest} is larger than {max_bytes} bytes")
        if Digest.of_bytes(data, digest.algorithm) != digest:
            raise DigestMismatch(f"stored blob {digest} no longer matches its digest (modified on disk)")
        return data

    @contextlib.contextmanager
    def ingest(self, digest: Digest, size: int) -> Iterator[BlobWriter | None]:
        """Write one blob. Yields None if the blob is already stored (nothing to do).

        The per-blob lock is held for the whole block; on any exception the partial file is removed.
        """
        lock_path = self.ingest_dir / f"{digest.encoded}.lock"
        with _flock(lock_path):
            if self.has(digest):
                yield None
                return
            partial = self.ingest_dir / f"{digest.encoded}.partial"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            committed = False
            try:
                with os.fdopen(fd, "wb") as file:
                    writer = BlobWriter(self, digest, size, file, partial)
                    yield writer
                    if not self.has(digest):
                        writer.commit()
                    committed = True
            finally:
                if not committed:
                    with contextlib.suppress(FileNotFoundError):
                        partial.unlink()

    def put_bytes(self, data: bytes, digest: Digest) -> Path:
        """Store a small blob held in memory (manifests, configs) after checking its digest."""
        with self.ingest(digest, len(data)) as writer:
            if writer is not None:
                writer.write(data)
        return self.blob_path(digest)

    # -- index.json ----------------------------------------------------------------------

    def refs(self) -> list[StoredRef]:
        index = self._read_index()
        out = []
        for i, entry in enumerate(index.get("manifests", [])):
            descriptor = Descriptor.from_json(entry, f"index.json manifests[{i}]")
            name = descriptor.annotations.get(REF_NAME)
            if name:
                out.append(StoredRef(name, descriptor))
        return out

    def resolve(self, name: str) -> Descriptor | None:
        for ref in self.refs():
            if ref.name == name:
                return ref.descriptor
        return None

    def set_refs(self, descriptor: Descriptor, names: list[str]) -> None:
        """Point each name at `descriptor` (replacing what it named before). The blob must be stored."""
        if not self.has(descriptor.digest):
            raise IntegrityError(f"refusing to name {descriptor.digest}: it is not in the store")
        wanted = set(names)
        added = []
        for name in names:
            entry = descriptor.to_json()
            entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: name}
            added.append(entry)
        with self.locked():
            current = self._read_index().get("manifests", [])
            kept = [e for e in current if _ref_name(e) not in wanted]
            replaced = [e for e in current if _ref_name(e) in wanted]
            if len(replaced) == len(added) and all(entry in added for entry in replaced):
                return  # already so: `trust run` re-admits the same image every time, skip the fsyncs
            self._write_index([*kept, *added])

    def remove_refs(self, names: list[str]) -> None:
        """Drop these names (their blobs stay until `trust gc`); the index is left alone if none exist."""
        unwanted = set(names)
        with self.locked():
            current = self._read_index().get("manifests", [])
            kept = [e for e in current if _ref_name(e) not in unwanted]
            if len(kept) != len(current):
                self._write_index(kept)

    # -- trust's own records -------------------------------------------------------------

    def append_record(self, log: str, record: dict[str, Any]) -> None:
        """Append one JSON line to `meta/<log>.jsonl` (pull records, decisions)."""
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        path = self.meta / f"{log}.jsonl"
        with self.locked():
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def read_records(self, log: str) -> list[dict[str, Any]]:
        path = self.meta / f"{log}.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store-wide lock for read-modify-write of index.json and metadata."""
        with _flock(self.meta / "store.lock"):
            yield

    # Garbage collection. A blob is safe from gc once a ref in index.json reaches it, but a pull
    # commits its blobs first and its refs last: in between, its blobs look like garbage. So every
    # writer holds `in_use()` (a shared flock on meta/gc.lock) from its first ingest until its refs
    # are written, and so does `trust audit` while it reads blobs; gc marks and sweeps under
    # `collecting()` (the same flock, exclusive). gc waits for them, and they wait for a running gc.

    def remove_stale_locks(self) -> int:
        """Remove the per-blob lock files under `ingest/` that no writer holds (`trust gc`)."""
        return remove_unlocked(self.ingest_dir, "*.lock")

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Keep gc out while blobs are being added (pull, signature caching) or read (audit); shared."""
        with _flock(self.meta / _GC_LOCK, shared=True):
            yield

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Held by gc for mark and sweep; excludes every `in_use()` holder."""
        with _flock(self.meta / _GC_LOCK):
            yield

    def _read_index(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.root / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"store index {self.root / 'index.json'} is unreadable: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
            raise IntegrityError(f"store index {self.root / 'index.json'} is malformed")
        return doc

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }
        atomic_write(self.root / "index.json", json.dumps(doc, indent=2).encode())


_flock = locked_file  # removable per-blob locks: see pull/lockfile.py


_WRITEBACK_STEP = 8 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range, loaded when first needed (ctypes costs a warm `trust run` ~2 ms)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to begin writing a range to disk now (Linux; a no-op elsewhere)."""
    sync_file_range = _sync_file_range()
    if sync_file_range is not None:
        sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _ref_name(entry: dict[str, Any]) -> str | None:
    """The `org.opencontainers.image.ref.name` of an index.json entry, if it has one."""
    name = (entry.get("annotations") or {}).get(REF_NAME)
    return name if isinstance(name, str) else None
