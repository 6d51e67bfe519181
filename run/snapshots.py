"""Read-only layer snapshots keyed by chain ID, in containerd's vocabulary but much smaller.

A snapshot is one layer unpacked in overlay form (`run/tarsafe.py`), shared by every image whose
layer stack up to that point is the same. Its key is the OCI chain ID, which names the whole stack
below and including the layer, because an overlay lower dir only means something on top of the
same lower dirs:

    ROOT/
      snapshots/sha256-<chain hex>/     committed, mode 0555; never changes after commit
        fs/                             the layer's tree: an overlay lower dir
        snapshot.json                   chain ID, diff_id, layer digest, … (audit re-verifies these)
        tree.json                       every entry of fs/ at commit: path, type, mode, size, sha256
      tmp/extract-<random>-sha256-<chain hex>/{fs, snapshot.json}   being unpacked
      locks/sha256-<chain hex>.lock     flock: one unpacker per chain ID at a time

The protocol, as containerd's unpacker runs it:

    with store.locked(chain_id):            # a second process waits here, then sees exists()
        if not store.exists(chain_id):
            fs = store.prepare(chain_id)
            try:
                apply_layer(..., target=fs)  # verifies digest and diff_id while unpacking
                store.commit(fs, chain_id, diff_id=…, layer_digest=…, media_type=…)
            except BaseException:
                store.discard(fs)
                raise

`commit` is one `rename` of the extraction directory, metadata included, so a snapshot is either
absent or complete. This module knows nothing of blobs or tar; `run/unpack.py` joins the two.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pull.digest import Digest
from pull.durable import fsync_dir
from pull.errors import IntegrityError, InvalidReference
from pull.lockfile import locked_file, remove_unlocked
from pull.records import dataclass, replace

METADATA_FILE = "snapshot.json"
TREE_FILE = "tree.json"
_HASH_CHUNK = 1 << 20
_FS = "fs"
_EXTRACT_PREFIX = "extract-"


class SnapshotNotFound(LookupError):
    """A chain ID has no committed snapshot (a caller asked for lower dirs before unpacking)."""


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """The OCI chain IDs of a layer stack, bottom layer first.

    ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
    """
    result: list[Digest] = []
    for diff_id in diff_ids:
        if result:
            result.append(Digest.of_bytes(f"{result[-1]} {diff_id}".encode()))
        else:
            result.append(diff_id)
    return result


def stack_positions(diff_ids: Sequence[Digest]) -> list[int]:
    """Which layers of an image make its root filesystem: the last occurrence of each diff_id.

    A layer listed again higher up (A, B, A) shadows its earlier occurrence completely: every path
    it adds, changes, deletes (whiteout) or makes opaque, it does again above, and what it reads
    from below (implicit directories' metadata, hard links to lower files) it never found in
    itself. So the earlier occurrence can go, and the stack B, A mounts exactly what A, B, A
    describes, with A's files winning over B's. A small layer listed 500 times is then one
    snapshot, unpacked once and counted once against the image's limits.
    """
    last = {diff_id: i for i, diff_id in enumerate(diff_ids)}
    return [i for i, diff_id in enumerate(diff_ids) if last[diff_id] == i]


def snapshot_chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """The chain IDs of the snapshots an image with these diff_ids uses, bottom first.

    The OCI chain IDs of its layer stack, repeated layers taken once (`stack_positions`).
    """
    return chain_ids([diff_ids[i] for i in stack_positions(diff_ids)])


@dataclass(frozen=True)
class SnapshotInfo:
    """What `snapshot.json` records about a committed snapshot."""

    chain_id: Digest
    diff_id: Digest
    layer_digest: Digest
    media_type: str
    created: str
    synced: bool
    warnings: tuple[str, ...] = ()
    tree_digest: Digest | None = None
    """sha256 of `tree.json` as committed (None: unpacked before trees were recorded)."""
    content_size: int | None = None
    """Bytes of the regular files in the tree."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "chainId": str(self.chain_id),
            "diffId": str(self.diff_id),
            "layerDigest": str(self.layer_digest),
            "mediaType": self.media_type,
            "created": self.created,
            "synced": self.synced,
            "warnings": list(self.warnings),
        }
        if self.tree_digest is not None:
            doc["treeDigest"] = str(self.tree_digest)
            doc["contentSize"] = self.content_size
        return doc

    @classmethod
    def from_json(cls, obj: Any, where: str) -> SnapshotInfo:
        try:
            return cls(
                chain_id=Digest.parse(obj["chainId"]),
                diff_id=Digest.parse(obj["diffId"]),
                layer_digest=Digest.parse(obj["layerDigest"]),
                media_type=str(obj["mediaType"]),
                created=str(obj["created"]),
                synced=bool(obj["synced"]),
                warnings=tuple(str(w) for w in obj.get("warnings", [])),
                tree_digest=Digest.parse(obj["treeDigest"]) if "treeDigest" in obj else None,
                content_size=int(obj["contentSize"]) if "treeDigest" in obj else None,
            )
        except (KeyError, TypeError, ValueError, InvalidReference) as exc:
            raise IntegrityError(f"{where}: malformed snapshot metadata ({exc})") from None


class SnapshotStore:
    """Chain ID → a committed, read-only directory usable as an overlay lower dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._snapshots = root / "snapshots"
        self._tmp = root / "tmp"
        self._locks = root / "locks"
        self._held: set[Digest] = set()  # chain IDs whose lock this object holds

    @classmethod
    def open(cls, root: Path | str) -> SnapshotStore:
        """Open the store at `root`, creating its directories (mode 0700) if needed."""
        store = cls(Path(root))
        for directory in (store.root, store._snapshots, store._tmp, store._locks):
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                # A read-only store can still be read (`trust audit` of a seized disk): without
                # the directory there is simply nothing in it. Writing fails later, clearly.
                if exc.errno != errno.EROFS:
                    raise
        return store

    # -- committed snapshots -------------------------------------------------------------

    def path(self, chain_id: Digest) -> Path:
        """The snapshot's tree (what overlay mounts as a lower dir), committed or not."""
        return self._dir(chain_id) / _FS

    def exists(self, chain_id: Digest) -> bool:
        # The metadata file is renamed into place together with the tree, so it marks a commit.
        return (self._dir(chain_id) / METADATA_FILE).is_file()

    def info(self, chain_id: Digest) -> SnapshotInfo:
        meta = self._dir(chain_id) / METADATA_FILE
        try:
            obj = json.loads(meta.read_bytes())
        except FileNotFoundError:
            raise SnapshotNotFound(f"no snapshot for chain ID {chain_id}") from None
        except ValueError:
            raise IntegrityError(f"{meta}: snapshot metadata is not JSON") from None
        info = SnapshotInfo.from_json(obj, str(meta))
        if info.chain_id != chain_id:
            raise IntegrityError(f"{meta}: records chain ID {info.chain_id}, expected {chain_id}")
        return info

    def recorded_tree(self, chain_id: Digest) -> list[TreeEntry] | None:
        """The tree recorded at commit, checked against snapshot.json's digest; None if none was recorded.

        Raises:
            IntegrityError: tree.json is missing, altered (digest) or malformed.
        """
        info = self.info(chain_id)
        if info.tree_digest is None:
            return None
        where = self._dir(chain_id) / TREE_FILE
        try:
            raw = where.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{where} is missing") from None
        if Digest.of_bytes(raw) != info.tree_digest:
            raise IntegrityError(f"{where} no longer matches the digest recorded in {METADATA_FILE}")
        try:
            doc = json.loads(raw)
            return [TreeEntry.from_json(entry) for entry in doc["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{where}: malformed tree record ({exc})") from None

    def committed(self) -> list[Digest]:
        """Chain IDs of all committed snapshots."""
        found: list[Digest] = []
        if not self._snapshots.is_dir():
            return found  # a read-only store where nothing was ever unpacked
        for entry in sorted(os.listdir(self._snapshots)):
            algorithm, _, hexpart = entry.partition("-")
            try:
                chain_id = Digest(algorithm, hexpart)
            except InvalidReference:
                continue  # not ours
            if self.exists(chain_id):
                found.append(chain_id)
        return found

    def lowerdirs(self, chain_ids: Sequence[Digest]) -> list[Path]:
        """Lower dirs for a stack given bottom layer first, returned top-most first (overlay order)."""
        missing = [c for c in chain_ids if not self.exists(c)]
        if missing:
            raise SnapshotNotFound(f"no snapshot for chain ID {missing[0]} (unpack the image first)")
        return [self.path(c) for c in reversed(chain_ids)]

    def remove(self, chain_id: Digest) -> None:
        """Delete a committed snapshot (the caller makes sure no container uses it)."""
        directory = self._dir(chain_id)
        if not directory.exists():
            return
        # Rename first, so the snapshot disappears at once rather than file by file.
        doomed = Path(tempfile.mkdtemp(prefix="remove-", dir=self._tmp))
        os.rename(directory, doomed / "snapshot")
        _rmtree(doomed)

    # -- unpacking -----------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, chain_id: Digest) -> Iterator[None]:
        """Hold the chain ID's lock: other processes (and threads) unpacking it wait."""
        with locked_file(self._locks / f"{chain_id.encoded}.lock"):
            self._held.add(chain_id)
            try:
                yield
            finally:
                self._held.discard(chain_id)

    def remove_stale_locks(self) -> int:
        """Remove the chain-ID lock files that no unpacker holds (`trust gc`); returns how many."""
        return remove_unlocked(self._locks, "*.lock")

    def prepare(self, chain_id: Digest) -> Path:
        """A new, empty directory to unpack the layer into; returns its `fs` path.

        When called under `locked(chain_id)`, leftovers of earlier crashed extractions of this
        chain ID are removed first (nobody else can be using them while we hold the lock).
        """
        if chain_id in self._held:
            for stale in self._tmp.glob(f"{_EXTRACT_PREFIX}*-{chain_id.encoded}"):
                _rmtree(stale)
        extraction = Path(
            tempfile.mkdtemp(prefix=_EXTRACT_PREFIX, suffix=f"-{chain_id.encoded}", dir=self._tmp)
        )
        fs = extraction / _FS
        fs.mkdir()
        os.chmod(fs, 0o755)  # a layer's "./" entry may change it; mkdir's mode went through the umask
        return fs

    def commit(
        self,
        prepared: Path,
        chain_id: Digest,
        *,
        diff_id: Digest,
        layer_digest: Digest,
        media_type: str,
        warnings: Sequence[str] = (),
        sync: bool = False,
        known_digests: Mapping[str, tuple[int, str]] | None = None,
    ) -> Path:
        """Make a prepared snapshot visible under `chain_id`; returns the committed `fs` path.

        The first committer wins: if the chain ID is already committed, `prepared` is discarded.
        With `sync`, the metadata and directory renames are fsynced (the caller synced the tree).
        """
        extraction = self._extraction(prepared)
        if not extraction.name.endswith(f"-{chain_id.encoded}"):
            raise RuntimeError(f"{prepared} was prepared for another chain ID than {chain_id}")
        # Record the tree as unpacked (every file's sha256), so `trust audit` can later tell a file
        # changed on disk from one the layer put there; its digest goes into snapshot.json.
        entries = scan_tree(prepared, known=known_digests)
        tree = json.dumps(
            {"version": 1, "entries": [entry.to_json() for entry in entries]}, separators=(",", ":")
        ).encode()
        tree_path = extraction / TREE_FILE
        with open(tree_path, "xb") as tree_file:
            tree_file.write(tree)
            if sync:
                tree_file.flush()
                os.fsync(tree_file.fileno())
        os.chmod(tree_path, 0o444)
        info = SnapshotInfo(
            chain_id=chain_id,
            diff_id=diff_id,
            layer_digest=layer_digest,
            media_type=media_type,
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            synced=sync,
            warnings=tuple(warnings),
            tree_digest=Digest.of_bytes(tree),
            content_size=sum(entry.size for entry in entries if entry.kind == "file"),
        )
        meta = extraction / METADATA_FILE
        with open(meta, "x", encoding="utf-8") as f:
            json.dump(info.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(meta, 0o444)
        # The snapshot directory itself is read-only; fs/ keeps the mode the layer gave it.
        os.chmod(extraction, 0o555)
        final = self._dir(chain_id)
        try:
            os.rename(extraction, final)  # fails if `final` exists: it is never empty
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _rmtree(extraction)
            return final / _FS
        if sync:
            fsync_dir(self._snapshots)
        return final / _FS

    def discard(self, prepared: Path) -> None:
        """Remove a prepared (uncommitted) snapshot, e.g. after a failed unpack."""
        extraction = self._extraction(prepared)
        if extraction.exists():
            _rmtree(extraction)

    def remove_stale(self) -> int:
        """Remove extractions left by crashed processes; returns how many. Skips live ones."""
        removed = 0
        for extraction in self._tmp.glob(f"{_EXTRACT_PREFIX}*"):
            # extract-<random>-<algorithm>-<hex>; mkdtemp's random part has no "-".
            pieces = extraction.name.rsplit("-", 2)
            try:
                chain_id = Digest(pieces[1], pieces[2])
            except (IndexError, InvalidReference):
                continue
            fd = os.open(
                self._locks / f"{chain_id.encoded}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # someone is unpacking this chain ID right now
            finally:
                os.close(fd)  # (closing also drops the lock if we got it)
            _rmtree(extraction)
            removed += 1
        return removed

    # -- helpers -------------------------------------------------------------------------

    def _dir(self, chain_id: Digest) -> Path:
        # Digest validated algorithm and hex, so this name cannot leave snapshots/.
        return self._snapshots / chain_id.encoded

    def _extraction(self, prepared: Path) -> Path:
        extraction = prepared.parent if prepared.name == _FS else prepared
        if extraction.parent != self._tmp or not extraction.name.startswith(_EXTRACT_PREFIX):
            raise RuntimeError(f"{prepared} is not a snapshot prepared by this store")
        return extraction


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a snapshot's tree. `digest` is the sha256 hex of a regular file (when hashed)."""

    path: str
    """Relative to fs/, "/"-separated ("." for fs/ itself); undecodable bytes kept as surrogate escapes."""
    kind: str
    """file | dir | symlink | char | block | fifo | socket"""
    mode: int
    """Permission bits (with setuid, setgid, sticky)."""
    size: int
    digest: str | None = None
    target: str | None = None
    """A symlink's target."""
    owner: str = "0:0"
    """uid:gid"""
    device: str | None = None
    """major:minor of a character or block device (overlay whiteouts are 0:0)."""
    xattrs: tuple[tuple[str, str], ...] = ()
    """Extended attributes (e.g. overlay's opaque marker) as (name, hex value), sorted."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "type": self.kind,
            "mode": self.mode,
            "size": self.size,
            "owner": self.owner,
        }
        if self.digest is not None:
            doc["sha256"] = self.digest
        if self.target is not None:
            doc["target"] = self.target
        if self.device is not None:
            doc["device"] = self.device
        if self.xattrs:
            doc["xattrs"] = dict(self.xattrs)
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> TreeEntry:
        digest, target, device = obj.get("sha256"), obj.get("target"), obj.get("device")
        return cls(
            path=str(obj["path"]),
            kind=str(obj["type"]),
            mode=int(obj["mode"]),
            size=int(obj["size"]),
            digest=str(digest) if digest is not None else None,
            target=str(target) if target is not None else None,
            owner=str(obj["owner"]),
            device=str(device) if device is not None else None,
            xattrs=tuple(sorted((str(k), str(v)) for k, v in dict(obj.get("xattrs") or {}).items())),
        )


_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISBLK, "block"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
)


def scan_tree(
    root: Path, *, hash_files: bool = True, known: Mapping[str, tuple[int, str]] | None = None
) -> list[TreeEntry]:
    """Every entry of `root`, itself included as ".", not following symlinks, sorted by path;
    regular files hashed if asked (on one thread per core: hashlib releases the GIL).

    `known` maps paths to the (size, sha256) their content had when the unpacker wrote them (the
    digest was computed from the same bytes on the way to the disk); a file of that path and size is
    not read again. Anything else (hard links, files the map does not name) is hashed."""
    known = known or {}
    entries = [_tree_entry(root, ".", os.lstat(root))]
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(root / relative if relative else root) as listing:
            for item in listing:
                path = f"{relative}/{item.name}" if relative else item.name
                entry = _tree_entry(Path(item.path), path, item.stat(follow_symlinks=False))
                if entry.kind == "dir":
                    pending.append(path)
                entries.append(entry)
    entries.sort(key=lambda entry: entry.path)
    if not hash_files:
        return entries
    # Large files are hashed on other threads (hashlib releases the GIL while it hashes), small
    # ones on this one: for them the cost is system calls under the GIL, which threads only contend for.
    unhashed = []
    for i, entry in enumerate(entries):
        if entry.kind != "file":
            continue
        size, digest = known.get(entry.path, (-1, ""))
        if size == entry.size:
            entries[i] = replace(entry, digest=digest)
        else:
            unhashed.append(i)
    big = [i for i in unhashed if entries[i].size >= _HASH_CHUNK]
    small = [i for i in unhashed if entries[i].size < _HASH_CHUNK]
    from concurrent.futures import ThreadPoolExecutor  # only to hash a tree: not on a warm start

    with ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1)) as pool:
        big_digests = pool.map(lambda i: hash_file(root / entries[i].path), big)
        for i in small:
            entries[i] = replace(entries[i], digest=hash_file(root / entries[i].path))
        for i, digest in zip(big, big_digests, strict=True):
            entries[i] = replace(entries[i], digest=digest)
    return entries


def _tree_entry(full: Path, path: str, info: os.stat_result) -> TreeEntry:
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "other")
    target = device = None
    if kind == "symlink":
        target = os.readlink(full)
    elif kind in ("char", "block"):
        device = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError:  # a filesystem without xattrs
        names = []
    xattrs = tuple(sorted((name, os.getxattr(full, name, follow_symlinks=False).hex()) for name in names))
    return TreeEntry(
        path,
        kind,
        stat.S_IMODE(info.st_mode),
        info.st_size if kind == "file" else 0,
        None,
        target,
        f"{info.st_uid}:{info.st_gid}",
        device,
        xattrs,
    )


def hash_file(path: Path) -> str:
    """sha256 hex of a regular file, read in 1 MiB pieces without following a final symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as file:
        # Most files of a layer are small: a buffer their size, not 1 MiB zeroed for each of them.
        buffer = bytearray(max(1, min(_HASH_CHUNK, os.fstat(fd).st_size + 1)))
        view = memoryview(buffer)
        while count := file.readinto(buffer):
            digest.update(view[:count])  # hashlib releases the GIL for large updates
    return digest.hexdigest()


def _rmtree(path: Path) -> None:
    # shutil.rmtree uses fd-relative, no-follow deletion on Linux; layers may contain 0000 dirs,
    # which root removes regardless.
    shutil.rmtree(path)
