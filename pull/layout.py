"""An OCI image layout directory spoken to like a registry: `LayoutClient`.

    DIR/oci-layout               {"imageLayoutVersion": "1.0.0"}
    DIR/index.json               an image index; entries named by `org.opencontainers.image.ref.name`
    DIR/blobs/<alg>/<hex>        content, addressed by digest

`LayoutClient` offers the methods of `RegistryClient` that the pull pipeline, signature discovery
(`trust.attached`), referrers and signing use, with the same error types: `NotFound` for a missing
tag or blob, `DigestMismatch`/`SizeMismatch`/`InvalidManifest` when bytes do not match. It is a
`RegistryClient` subclass only so that code typed for a registry client accepts it; it overrides
every public method and never opens a connection.

Tags are index.json entries named `ref_prefix + tag`. The `repository` argument of every method is
ignored: a layout holds one image namespace. (The content store is a layout whose names are
`registry/repo:tag`; `LayoutClient(store.root, ref_prefix=f"{name}:")` reads one repository of it.)
Referrers are kept in the referrers tag schema (`<alg>-<hex>` entries), so `referrers()` answers
None, as a registry without the API does; `pull.referrers.read_referrers` also finds referrers
listed as unnamed index.json entries (`untagged_referrers`), as oras-go writes them.

The directory is as hostile as a registry: digests are validated before they become paths, blobs
must be regular files that resolve inside the layout (a symlink out of it is refused), documents
are size-capped, and every byte read is hashed against its digest (a streamed blob raises at its
end if it did not match). Writing (only with `writable=True`) puts each blob in place atomically
(temporary file, size and digest check, fsync, rename) and replaces index.json atomically under a
lock file; manifests are written only after the blobs they name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pull.config import PullConfig
from pull.digest import Digest
from pull.durable import atomic_write, fsync_dir
from pull.errors import (
    DigestMismatch,
    InvalidManifest,
    InvalidReference,
    NotFound,
    RegistryError,
    SizeMismatch,
    UsageError,
)
from pull.manifest import Descriptor, ImageIndex, ImageManifest, verify_document
from pull.mediatypes import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX
from pull.records import dataclass
from pull.reference import LAYOUT_PREFIX
from pull.registry import FetchedManifest, RegistryClient
from pull.strictjson import loads as strict_json

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
INDEX_MAX_BYTES = 64 * 1024 * 1024
"""index.json cap: a content store names every image it holds there, so it is allowed more than a manifest."""
INDEX_MAX_VALUES = 2_000_000
"""JSON values (commas + 1) in index.json: a real entry has about four per 250 bytes, so a full 64 MiB
index passes, while a pathological one is refused before `json.loads` builds it."""
MAX_UNTAGGED_SCANNED = 1000
"""Unnamed index.json manifests read when looking for referrers outside the tag schema."""
_LAYOUT_FILE_MAX = 4096
_CHUNK = 1024 * 1024
_LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MEDIA_TYPE = re.compile(r"[\x21-\x7e]{1,255}")
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"')
_STORE_LOCK = Path("meta") / "store.lock"
"""The content store's lock for index.json (`pull.store.ContentStore.locked`), used when present."""
_LAYOUT_LOCK = ".index.json.lock"


@dataclass(frozen=True)
class _Index:
    """index.json, parsed strictly: the raw entries (kept verbatim on rewrite) and their descriptors."""

    document: dict[str, Any]
    entries: tuple[dict[str, Any], ...]
    descriptors: tuple[Descriptor, ...]


class LayoutClient(RegistryClient):
    """Reads (and, when `writable`, writes) the OCI image layout at `root` like a registry.

        with LayoutClient(Path("/media/usb/app")) as layout:
            fetched = layout.get_manifest("", "v1")

    With `writable`, a missing layout is created by the first push.
    """

    def __init__(
        self,
        root: Path,
        ref_prefix: str = "",
        *,
        writable: bool = False,
        config: PullConfig = PullConfig(),
    ) -> None:
        # No RegistryClient.__init__: a layout has no host, transport or credentials.
        self.root = Path(os.path.abspath(root))
        self.host = LAYOUT_PREFIX + str(self.root)
        self.ref_prefix = ref_prefix
        self.writable = writable
        self._config = config
        self._index_cache: tuple[tuple[int, int, int, int], _Index] | None = None

    def close(self) -> None:
        pass

    # -- reading --------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that `root` is an OCI image layout (version 1.x) with a readable index.json."""
        self._read_index()

    def get_manifest(self, repository: str, identifier: str, accept: str = "") -> FetchedManifest:
        """The manifest a tag names (checked against its index.json descriptor) or a digest names.

        `accept` is ignored: callers check the media type, as they must with registries that ignore it.
        """
        cap = self._config.manifest_max_bytes
        if ":" in identifier:
            digest = _digest(identifier)
            data = self._read_blob(digest, cap, what="manifest", oversize=InvalidManifest)
            return FetchedManifest(data=data, content_type="", docker_content_digest=str(digest))
        descriptor = self._resolve_tag(identifier)
        if descriptor.size > cap:
            raise InvalidManifest(
                f"manifest {self._tag_name(identifier)} in {self.host} is {descriptor.size} bytes, "
                f"over the {cap}-byte limit"
            )
        data = self._read_blob(descriptor.digest, descriptor.size, what="manifest", oversize=SizeMismatch)
        if len(data) != descriptor.size:
            raise SizeMismatch(
                f"manifest {descriptor.digest} in {self.host} is {len(data)} bytes, "
                f"index.json says {descriptor.size}"
            )
        return FetchedManifest(
            data=data, content_type=descriptor.media_type, docker_content_digest=str(descriptor.digest)
        )

    def head_manifest(
        self, repository: str, identifier: str, accept: str = ""
    ) -> tuple[str, str | None, int | None] | None:
        """(media type, digest, size) of a tag's entry or of a digest's blob; None if absent."""
        if ":" in identifier:
            digest = _digest(identifier)
            size = self._blob_size(digest)
            return None if size is None else ("", str(digest), size)
        try:
            descriptor = self._resolve_tag(identifier)
        except NotFound:
            return None
        return descriptor.media_type, str(descriptor.digest), descriptor.size

    @contextlib.contextmanager
    def stream_blob(self, repository: str, digest: Digest) -> Iterator[Iterator[bytes]]:
        """Stream a blob in 1 MiB pieces; the last read raises `DigestMismatch` if the bytes were wrong.

        The caller counts (and usually hashes) too; checking here as well means a consumer that
        forgets cannot take tampered layout bytes for good ones.
        """
        fd = self._open_blob(digest)
        with os.fdopen(fd, "rb") as file:
            yield self._verified_chunks(file, digest)

    @contextlib.contextmanager
    def stream_url(self, url: str, digest: Digest) -> Iterator[Iterator[bytes]]:
        """A layout is read from disk only: a non-distributable layer it lacks is not fetched."""
        raise NotFound(f"non-distributable layer {digest} is not in {self.root}; a layout fetches no URL")
        yield iter(())  # pragma: no cover - makes this a generator

    def get_blob(self, repository: str, digest: Digest, max_bytes: int) -> bytes:
        """A small blob read whole: `SizeMismatch` over `max_bytes`, `DigestMismatch` if it does not hash."""
        return self._read_blob(digest, max_bytes, what="blob", oversize=SizeMismatch)

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        return self._blob_size(digest) is not None

    def list_tags(self, repository: str) -> list[str]:
        """Names in index.json that start with `ref_prefix` and are valid tags, prefix removed, sorted."""
        names = set()
        for descriptor in self._read_index().descriptors:
            name = descriptor.annotations.get(REF_NAME, "")
            if name.startswith(self.ref_prefix) and _TAG.fullmatch(name[len(self.ref_prefix) :]):
                names.add(name[len(self.ref_prefix) :])
        return sorted(names)

    def referrers(
        self, repository: str, digest: Digest, artifact_type: str | None = None
    ) -> list[bytes] | None:
        """None: a layout keeps referrers in the `<alg>-<hex>` tag schema, like a registry without the API."""
        return None

    def untagged_referrers(self, digest: Digest) -> list[dict[str, Any]]:
        """Listing entries for the unnamed index.json manifests whose `subject` is `digest`.

        oras-go, and so `notation --oci-layout`, records referrers this way instead of in the tag
        schema. Only unnamed entries are read (a content store names all of its entries), at most
        `MAX_UNTAGGED_SCANNED` of them, each size-capped and hash-checked.
        """
        from pull.referrers import referrer_entry

        cap = self._config.manifest_max_bytes
        found: list[dict[str, Any]] = []
        candidates = [
            d
            for d in self._read_index().descriptors
            if REF_NAME not in d.annotations
            and d.media_type in MANIFEST_TYPES | INDEX_TYPES
            and d.size <= cap
        ]
        for descriptor in candidates[:MAX_UNTAGGED_SCANNED]:
            try:
                data = self._read_blob(
                    descriptor.digest, descriptor.size, what="manifest", oversize=SizeMismatch
                )
            except NotFound:
                continue
            verified = verify_document(data, content_type=descriptor.media_type, expected=descriptor.digest)
            subject = verified.document.subject
            if subject is not None and subject.digest == digest:
                found.append(referrer_entry(verified))
        return found

    # -- writing --------------------------------------------------------------------------------

    def push_blob(self, repository: str, digest: Digest, size: int, chunks: Iterable[bytes] | bytes) -> None:
        """Put a blob in place unless present; its size and digest are checked before it becomes visible.

        Raises:
            SizeMismatch, DigestMismatch: `chunks` did not hold exactly those bytes (nothing is kept).
        """
        self._ensure_layout()
        if self.blob_exists(repository, digest):
            return
        directory = self.root / "blobs" / digest.algorithm
        what = f"blob {digest} for {self.host}"
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            if not _inside(os.path.realpath(directory), os.path.realpath(self.root)):
                raise InvalidManifest(
                    f"{directory} links outside the layout {self.root}; refusing to write there"
                )
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=".trust-ingest-")
        except OSError as exc:
            raise _cannot_write(what, exc) from None
        try:
            hasher = digest.hasher()
            written = 0
            with os.fdopen(fd, "wb") as file:
                for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                    written += len(chunk)
                    if written > size:
                        raise SizeMismatch(f"{what} is longer than its declared {size} bytes")
                    hasher.update(chunk)
                    file.write(chunk)
                if written != size:
                    raise SizeMismatch(f"{what} is {written} bytes, not its declared {size}")
                if hasher.hexdigest() != digest.hex:
                    raise DigestMismatch(f"{what} hashes to {digest.algorithm}:{hasher.hexdigest()}")
                file.flush()
                os.fsync(file.fileno())
                os.fchmod(file.fileno(), 0o444)
            os.replace(temporary, directory / digest.hex)
            fsync_dir(directory)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            if isinstance(exc, OSError):
                raise _cannot_write(what, exc) from None
            raise

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Digest:
        """Store a manifest and, for a tag, name it in index.json (replacing what the tag named).

        The document is checked strictly and every blob it names must already be in the layout.

        Raises:
            DigestMismatch: `reference` is a digest that `data` does not hash to.
            InvalidManifest: the document is malformed or its media type disagrees with `media_type`.
            NotFound: it names a blob or manifest the layout does not hold.
        """
        if not _MEDIA_TYPE.fullmatch(media_type):
            raise UsageError(f"invalid media type {media_type[:100]!r}")
        tag: str | None = None
        if ":" in reference:
            named = _digest(reference)
            if Digest.of_bytes(data, named.algorithm) != named:
                raise DigestMismatch(f"manifest pushed to {self.host} as {named} does not hash to it")
            digest = named
        else:
            tag = self._checked_tag(reference)
            digest = Digest.of_bytes(data)
        verified = verify_document(
            data, content_type=media_type, expected=digest, max_bytes=self._config.manifest_max_bytes
        )
        for child in _children(verified.document):
            if not self.blob_exists(repository, child.digest):
                raise NotFound(f"manifest {digest} names {child.digest}, which is not in {self.host}")
        self.push_blob(repository, digest, len(data), data)
        if tag is not None:
            self._name(Descriptor(media_type, digest, len(data)), self.ref_prefix + tag)
        return digest

    # -- index.json -------------------------------------------------------------------------------

    def _resolve_tag(self, tag: str) -> Descriptor:
        name = self.ref_prefix + self._checked_tag(tag)
        descriptors = self._read_index().descriptors
        found = {d.digest: d for d in descriptors if d.annotations.get(REF_NAME) == name}
        if not found and not self.ref_prefix:
            # crane (`pull --format=oci --annotate-ref`) names entries by whole references,
            # `registry/repo:TAG`: the tag is what follows the last colon after the last slash.
            found = {
                d.digest: d for d in descriptors if _tag_of_reference(d.annotations.get(REF_NAME)) == name
            }
        if not found:
            saved = _cosign_saved(descriptors, tag)
            if saved is not None:
                return saved
            raise NotFound(f"tag {tag} not found in {self.host}")
        if len(found) > 1:
            raise InvalidManifest(f"index.json of {self.host} names {len(found)} different manifests {name}")
        return next(iter(found.values()))

    def _tag_name(self, tag: str) -> str:
        return f"{self.host}:{tag}"

    def _checked_tag(self, tag: str) -> str:
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid tag {tag[:100]!r}")
        return tag

    def _read_index(self) -> _Index:
        """index.json, re-read when the file changed (it is replaced by rename, so the inode changes)."""
        self._check_layout_file()
        path = self.root / INDEX_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"{self.host} has no {INDEX_FILE}: not an OCI image layout") from None
        except OSError as exc:
            raise InvalidManifest(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InvalidManifest(f"{path} is not a regular file")
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if self._index_cache is not None and self._index_cache[0] == key:
                return self._index_cache[1]
            raw = file.read(INDEX_MAX_BYTES + 1)
        if len(raw) > INDEX_MAX_BYTES:
            raise InvalidManifest(f"{path} is larger than the {INDEX_MAX_BYTES}-byte limit")
        index = _parse_index(raw, str(path))
        self._index_cache = (key, index)
        return index

    def _check_layout_file(self) -> None:
        path = self.root / LAYOUT_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            what = "does not exist" if not self.root.exists() else f"has no {LAYOUT_FILE} file"
            raise NotFound(f"{self.host} {what}: not an OCI image layout") from None
        except NotADirectoryError:  # `oci:/etc/passwd`: a usage error, not a broken layout
            raise UsageError(f"{self.root} is not a directory: not an OCI image layout") from None
        except OSError as exc:
            raise InvalidManifest(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise InvalidManifest(f"{path} is not a regular file")
            raw = file.read(_LAYOUT_FILE_MAX + 1)
        try:
            document = strict_json(raw, "oci-layout")
        except ValueError:
            document = None
        version = document.get("imageLayoutVersion") if isinstance(document, dict) else None
        if not isinstance(version, str) or not re.fullmatch(r"1\.[0-9]+\.[0-9]+", version):
            raise InvalidManifest(f"{path} does not declare a supported imageLayoutVersion (1.x)")

    def _name(self, descriptor: Descriptor, name: str) -> None:
        """Point `name` at `descriptor` in index.json, keeping every other entry as written."""
        with self._locked():
            index = self._read_index()
            entries = [e for e in index.entries if _entry_name(e) != name]
            entry = descriptor.to_json()
            entry["annotations"] = {REF_NAME: name}
            kind = _cosign_kind(name)
            if kind is not None:
                entry["annotations"][COSIGN_SAVED_KIND] = kind
            document = dict(index.document)
            document["schemaVersion"] = 2
            document.setdefault("mediaType", OCI_INDEX)
            document["manifests"] = [*entries, entry]
            try:
                atomic_write(self.root / INDEX_FILE, json.dumps(document, separators=(",", ":")).encode())
            except OSError as exc:
                raise _cannot_write(f"{INDEX_FILE} of {self.host}", exc) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        store_lock = self.root / _STORE_LOCK
        path = store_lock if store_lock.parent.is_dir() else self.root / _LAYOUT_LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # a symlink or a directory there, a read-only layout
            raise _cannot_write(f"the lock file {path}", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ensure_layout(self) -> None:
        """Refuse writes unless `writable`; create the layout (oci-layout, index.json, blobs/) if missing."""
        if not self.writable:
            raise UsageError(f"{self.host} is open read-only")
        try:
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            (self.root / "blobs").mkdir(mode=0o755, exist_ok=True)
            if not (self.root / LAYOUT_FILE).exists():
                atomic_write(self.root / LAYOUT_FILE, json.dumps(_LAYOUT_VERSION).encode())
            if not (self.root / INDEX_FILE).exists():
                with self._locked():
                    if not (self.root / INDEX_FILE).exists():
                        empty = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
                        atomic_write(self.root / INDEX_FILE, json.dumps(empty).encode())
        except OSError as exc:
            raise UsageError(f"cannot create the layout {self.root}: {exc.strerror}") from None
        self._check_layout_file()

    # -- blobs ------------------------------------------------------------------------------------

    def _blob_path(self, digest: Digest) -> Path:
        # Digest's constructor validated algorithm and hex: this cannot leave blobs/.
        return self.root / "blobs" / digest.algorithm / digest.hex

    def _open_blob(self, digest: Digest) -> int:
        """An fd on the blob's regular file; refuses symlinks that resolve outside the layout."""
        self._check_layout_file()
        path = self._blob_path(digest)
        real = os.path.realpath(path)
        if not _inside(real, os.path.realpath(self.root)):
            raise InvalidManifest(f"blob {digest} in {self.host} is a link to {real}, outside the layout")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in {self.host}") from None
        except OSError as exc:
            raise RegistryError(f"cannot read blob {digest} in {self.host}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InvalidManifest(f"blob {digest} in {self.host} is not a regular file")
        return fd

    def _blob_size(self, digest: Digest) -> int | None:
        try:
            fd = self._open_blob(digest)
        except NotFound:
            return None
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _read_blob(
        self, digest: Digest, max_bytes: int, *, what: str, oversize: type[InvalidManifest | SizeMismatch]
    ) -> bytes:
        fd = self._open_blob(digest)
        with os.fdopen(fd, "rb") as file:
            data = file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise oversize(f"{what} {digest} in {self.host} is larger than the expected {max_bytes} bytes")
        actual = Digest.of_bytes(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatch(f"{what} {digest} in {self.host} hashes to {actual} (modified on disk?)")
        return data

    def _verified_chunks(self, file: Any, digest: Digest) -> Iterator[bytes]:
        hasher = digest.hasher()
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
            yield chunk
        if hasher.hexdigest() != digest.hex:
            raise DigestMismatch(
                f"blob {digest} in {self.host} hashes to {digest.algorithm}:{hasher.hexdigest()} "
                "(modified on disk?)"
            )


COSIGN_SAVED_KIND = "kind"
COSIGN_SAVED_SUFFIXES = {".sig": "dev.cosignproject.cosign/sigs", ".att": "dev.cosignproject.cosign/atts"}


def _cosign_saved(descriptors: Sequence[Descriptor], tag: str) -> Descriptor | None:
    """The `.sig`/`.att` manifest of a `cosign save` layout, which names entries by a `kind`
    annotation instead of tags: one image (`dev.cosignproject.cosign/image`), its signatures
    (`…/sigs`) and attestations (`…/atts`). Only when the layout holds exactly that one image and
    `tag` is that image's cosign tag: with two images, nothing says whose signatures these are."""
    stem, dot, suffix = tag.rpartition(".")
    wanted = COSIGN_SAVED_SUFFIXES.get(dot + suffix)
    if wanted is None or not stem.startswith("sha256-"):
        return None
    images = [
        d for d in descriptors if d.annotations.get(COSIGN_SAVED_KIND) == "dev.cosignproject.cosign/image"
    ]
    attached = [d for d in descriptors if d.annotations.get(COSIGN_SAVED_KIND) == wanted]
    if len(images) != 1 or len(attached) != 1 or images[0].digest.referrers_tag != stem:
        return None
    return attached[0]


def _tag_of_reference(name: str | None) -> str | None:
    """`TAG` of a ref name written as a whole reference `host[:port]/repo:TAG` (None otherwise)."""
    if not name or "/" not in name or "@" in name:
        return None
    repository, colon, tag = name.rpartition("/")[2].rpartition(":")
    return tag if colon and repository else None


def _cosign_kind(name: str) -> str | None:
    """The `kind` annotation `cosign save` writes and `cosign verify --local-image` reads, so a
    layout written by `trust copy` (one image with its signatures) is one cosign can check too.
    None for a referrers fallback index (`sha256-<hex>`), which is neither."""
    tag = name.rpartition(":")[2]
    if not tag.startswith("sha256-"):
        return "dev.cosignproject.cosign/image"
    for suffix, kind in COSIGN_SAVED_SUFFIXES.items():
        if tag.endswith(suffix):
            return kind
    return None


def _cannot_write(what: str, exc: OSError) -> RegistryError:
    """A write into the layout failed (full disk, read-only, a link in the way): like a registry
    refusing a push, "could not" (exit 5), never a traceback."""
    return RegistryError(f"cannot write {what}: {exc.strerror or exc}")


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _digest(text: str) -> Digest:
    return Digest.parse(text)


def _children(document: ImageManifest | ImageIndex) -> list[Descriptor]:
    if isinstance(document, ImageManifest):
        return [document.config, *document.layers]
    return list(document.manifests)


def _entry_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def _parse_index(raw: bytes, where: str) -> _Index:
    # Python objects cost up to 25 times the JSON that spells them (`[[],[],…]`): count the values
    # (commas outside strings) before parsing, so 64 MiB of index.json cannot take gigabytes.
    values = _JSON_STRING.sub(b"", raw).count(b",") + 1
    if values > INDEX_MAX_VALUES:
        raise InvalidManifest(f"{where} holds more than {INDEX_MAX_VALUES} JSON values")
    try:
        document = strict_json(raw, where)
    except ValueError as exc:
        raise InvalidManifest(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidManifest(f"{where} is not a JSON object")
    if document.get("schemaVersion") != 2 or type(document.get("schemaVersion")) is not int:
        raise InvalidManifest(f"{where}: schemaVersion must be 2")
    if "mediaType" in document and document["mediaType"] != OCI_INDEX:
        raise InvalidManifest(f"{where}: mediaType must be {OCI_INDEX}")
    if "layers" in document or "config" in document:
        raise InvalidManifest(f"{where} has 'layers' or 'config': not an image index")
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise InvalidManifest(f"{where}: 'manifests' must be a list")
    descriptors = tuple(Descriptor.from_json(e, f"{where} manifests[{i}]") for i, e in enumerate(entries))
    return _Index(document, tuple(entries), descriptors)
