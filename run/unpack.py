"""Layer blobs → verified, read-only snapshots: the one place that sees both content and snapshots.

One pass over each blob, never holding it in memory:

    blob file ─► sha256 (layer digest) ─► gunzip / unzstd / as is ─► sha256 (diff_id), size and
    ratio limits ─► forward-only stream ─► tarfile (headers only) ─► LayerWriter (run/tarsafe.py)
    ─► snapshot directory         (regular files' data goes from the stream to LayerWriter directly)

Both digests are checked after the last byte, including any bytes after the tar's end-of-archive
marker (they are read and hashed too, so the diff_id covers exactly the bytes the config names).
If either differs, `DigestMismatch` names the layer and the snapshot is discarded, never committed.

Limits come at two levels. `UnpackLimits` bound one layer (size, ratio, entries, paths); an
`ImageBudget`, made from the admitting policy rule's `ImageLimits`, bounds the whole image: the number
of layers (checked before anything is unpacked), and the uncompressed bytes and tar entries of all the
layers unpacked for it together, drawn from one shared budget as the bytes come out of the
decompressors, so each layer gets what the others left and a small signed layer listed hundreds of
times stops once the budget is spent, not after writing hundreds of copies. Snapshots that already
exist cost nothing: they were paid for when they were made.

`apply_layer` unpacks one blob into a directory; `unpack_layers` runs containerd's protocol for an
image (chain IDs, one lock per chain ID, prepare → apply → commit or discard), layers in parallel:
in overlay form each layer goes into its own empty directory. Only directories a layer did not list
(`etc/` when it adds `etc/x`) need the layers below: they copy their metadata from there just before
commit, so a layer may wait for those below it to be committed, never the other way round.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import re
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol, cast

from policy.admitted import ImageLimits
from pull.digest import Digest
from pull.errors import CouldNotCheck, DigestMismatch, InvalidManifest
from pull.manifest import Descriptor
from pull.mediatypes import LAYER_COMPRESSION
from pull.records import dataclass, field, fields
from pull.store import ContentStore
from run import libc
from run.snapshots import SnapshotStore, chain_ids, stack_positions
from run.tarsafe import (
    LayerLimitExceeded,
    LayerWriter,
    UnsafeLayer,
    inherit_implicit_dirs,
    materialise_lower_links,
)

__all__ = [
    "ImageBudget",
    "ImageLimitExceeded",
    "ImageLimits",
    "LayerLimitExceeded",
    "LayerStats",
    "UnpackLimits",
    "UnpackedLayer",
    "UnsafeLayer",
    "apply_layer",
    "unpack_layers",
]

_MiB = 1 << 20
_GiB = 1 << 30
# Compressed bytes are read in small steps so the ratio limit notices a bomb early: output is
# checked against what was read so far, and a read can run at most this far ahead.
_RAW_CHUNK = 128 * 1024
_OUT_CHUNK = 1 * _MiB


@dataclass(frozen=True)
class UnpackLimits:
    """Limits that stop decompression bombs and pathological tars, per layer.

    The ratio limit compares the bytes decompressed so far with the compressed bytes read so
    far, once past `ratio_floor_bytes`. Ordinary layers compress 2-10:1; gzip cannot exceed about
    1030:1, so a limit well below that stops a gzip bomb after little output, while zstd bombs
    (which reach 30000:1) are stopped almost at once.

        UnpackLimits()                                  # defaults below
        UnpackLimits(max_ratio=2000, max_total_bytes=200 * 2**30)   # a trusted, huge image
    """

    max_total_bytes: int = 64 * _GiB
    """Uncompressed bytes (the tar stream, and the apparent size of its files) per layer."""
    max_ratio: int = 250
    """Uncompressed ÷ compressed bytes, checked continuously beyond `ratio_floor_bytes`."""
    ratio_floor_bytes: int = 128 * _MiB
    """Output below this size is never refused for its ratio (small layers compress well)."""
    max_entries: int = 1_000_000
    max_path_bytes: int = 4096
    max_depth: int = 256
    max_header_bytes: int = 256 * 1024
    """Bytes of tar headers for one entry, PAX and GNU long names included (tarfile buffers them)."""

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"UnpackLimits.{limit.name} must be a positive integer, not {value!r}")
        if self.max_depth > 512:
            raise ValueError("UnpackLimits.max_depth may not exceed 512")  # keeps removal recursion safe


class ImageLimitExceeded(LayerLimitExceeded):
    """The image as a whole is beyond its policy `limits:` (exit 4, as any refused layer)."""


class ImageBudget:
    """What is left of an image's `ImageLimits` while its layers unpack (shared by the workers).

    Every layer draws on it as it goes; the first draw beyond the limit raises
    `LayerLimitExceeded`, naming the limit and the policy field that raises it.
    """

    def __init__(self, limits: ImageLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self.unpacked_bytes = 0
        self.files = 0

    def spend_bytes(self, count: int) -> None:
        with self._lock:
            self.unpacked_bytes += count
            total = self.unpacked_bytes
        if total > self.limits.max_unpacked_bytes:
            raise ImageLimitExceeded(
                _image_limit(
                    "max-unpacked-bytes",
                    f"its layers unpack to more than {_size(self.limits.max_unpacked_bytes)}",
                )
            )

    def spend_file(self) -> None:
        with self._lock:
            self.files += 1
            total = self.files
        if total > self.limits.max_files:
            raise ImageLimitExceeded(
                _image_limit("max-files", f"its layers hold more than {self.limits.max_files} entries")
            )


def check_layer_count(count: int, limits: ImageLimits) -> None:
    """Refuse an image with more layers than `limits` allow, before anything is unpacked."""
    if count > limits.max_layers:
        raise ImageLimitExceeded(
            _image_limit("max-layers", f"it has {count} layers, more than {limits.max_layers}")
        )


def _image_limit(field_name: str, what: str) -> str:
    return (
        f"image refused by the {field_name} limit: {what}; if that is expected, raise it in the "
        f"policy rule for this image (limits: {{{field_name}: …}})"
    )


def _size(count: int) -> str:
    for unit, scale in (("GiB", _GiB), ("MiB", _MiB)):
        if count >= scale:
            return f"{count / scale:g} {unit} ({count} bytes)"
    return f"{count} bytes"


@dataclass(frozen=True)
class LayerStats:
    """What applying one layer did."""

    entries: int
    bytes_written: int
    whiteouts: int
    warnings: tuple[str, ...]
    uncompressed_bytes: int = 0
    compressed_bytes: int = 0
    implicit_dirs: tuple[str, ...] = ()
    """Directories created only as parents (no tar entry): see `tarsafe.inherit_implicit_dirs`."""
    file_digests: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    """(size, sha256) of every regular file as written, by layer-relative path (for the tree record)."""


@dataclass(frozen=True)
class UnpackedLayer:
    """One layer of an image, as a snapshot. `stats` is None if the snapshot already existed."""

    chain_id: Digest
    path: Path
    stats: LayerStats | None


def apply_layer(
    blob_path: Path,
    media_type: str,
    expected_blob_digest: Digest,
    expected_diff_id: Digest,
    target: Path,
    limits: UnpackLimits = UnpackLimits(),
    *,
    sync: bool = False,
    lowerdirs: Callable[[], Sequence[Path]] | None = None,
    budget: ImageBudget | None = None,
) -> LayerStats:
    """Unpack one layer blob into the empty directory `target`, in overlay form.

    Recomputes the blob's digest and the uncompressed diff_id while streaming. On any error
    `target` holds a partial tree: the caller discards it (`SnapshotStore.discard`).
    With `sync`, the target's filesystem is synced once at the end (no per-file fsync).
    `lowerdirs` gives the committed snapshots below, top-most first (it may wait for them): hard
    links to their files become copies (`tarsafe.materialise_lower_links`); without it such a
    link refuses the layer.
    With `budget`, the layer's uncompressed bytes and entries are also drawn from the image's budget.

    Raises:
        DigestMismatch: the blob or its uncompressed stream hashes to something else.
        UnsafeLayer: the tar is hostile or malformed (escape, device node, overlay xattr, …).
        LayerLimitExceeded: a size, ratio, entry-count or path limit was exceeded.
        InvalidManifest: `media_type` is not a layer type trust accepts.
    """
    label = f"layer {expected_blob_digest}"
    compression = LAYER_COMPRESSION.get(media_type)
    if compression is None:
        raise InvalidManifest(f"{label}: unsupported layer media type {media_type!r}")
    with (
        open(blob_path, "rb", buffering=0) as blob,
        LayerWriter(
            target,
            max_path_bytes=limits.max_path_bytes,
            max_depth=limits.max_depth,
            max_file_bytes=limits.max_total_bytes,
        ) as writer,
    ):
        raw = _HashingReader(blob, expected_blob_digest.hasher())
        stream = _TarStream(_decoder(compression, raw), raw, expected_diff_id.hasher(), limits, budget)
        try:
            entries = _extract(stream, writer, limits, budget)
            if stream.drain():
                writer.warnings.append("data after the end of the tar archive was hashed but not unpacked")
            raw.drain()
        except UnsafeLayer as exc:
            # A blob that is not the promised one explains a parse failure better than the failure.
            raw.drain()
            _check(raw.hasher, expected_blob_digest, f"{label}: blob content")
            if isinstance(exc, ImageLimitExceeded):
                raise  # about the image, not this layer
            raise type(exc)(f"{label}: {exc}") from None
        _check(raw.hasher, expected_blob_digest, f"{label}: blob content")
        _check(stream.hasher, expected_diff_id, f"{label}: uncompressed content (diff_id)")
        if writer.lower_links:  # only once the layer is known to be the promised one
            if lowerdirs is None:
                raise UnsafeLayer(
                    f"{label}: {writer.lower_links[0][2]}: hard link to a file outside this layer"
                )
            copied = materialise_lower_links(target, writer.lower_links, lowerdirs())
            writer.file_digests.update(copied)
        writer.finish()
    if sync:
        _syncfs(target)
    return LayerStats(
        entries=entries,
        bytes_written=writer.bytes_written,
        whiteouts=writer.whiteouts,
        warnings=tuple(writer.warnings),
        uncompressed_bytes=stream.total,
        compressed_bytes=raw.count,
        implicit_dirs=tuple(writer.implicit_dirs),
        file_digests=writer.file_digests,
    )


def unpack_layers(
    content: ContentStore,
    snapshots: SnapshotStore,
    layers: Sequence[Descriptor],
    diff_ids: Sequence[Digest],
    *,
    limits: UnpackLimits = UnpackLimits(),
    image_limits: ImageLimits = ImageLimits(),
    workers: int = 4,
    sync: bool = False,
) -> list[UnpackedLayer]:
    """Make sure every layer of an image has a committed snapshot; returns them bottom first.

    `layers` are the manifest's layer descriptors and `diff_ids` the config's `rootfs.diff_ids`.
    A layer listed more than once is unpacked once, where it last occurs (`snapshots.stack_positions`),
    so the result has one entry per distinct layer, and the image's limits count it once.
    Layers already unpacked (by any image) are reused; the others are unpacked `workers` at a time.
    If one fails, layers not yet started are cancelled and the first error (bottom-most) is raised.
    `image_limits` bound the image as a whole (see the module doc): LayerLimitExceeded, exit 4.
    """
    check_layer_count(len(layers), image_limits)
    if len(layers) != len(diff_ids):
        raise InvalidManifest(
            f"the manifest lists {len(layers)} layers but the config has {len(diff_ids)} diff_ids"
        )
    positions = stack_positions(diff_ids)
    kept_for = {diff_ids[i]: layers[i] for i in positions}
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        kept = kept_for[diff_id]
        if (layer.digest, layer.media_type) != (kept.digest, kept.media_type):
            # Only the kept occurrence is unpacked and checked against the diff_id: another blob
            # claiming the same diff_id would go unchecked, so it is refused instead.
            raise InvalidManifest(f"layers {layer.digest} and {kept.digest} claim the same diff_id {diff_id}")
    stacked = [(layers[i], diff_ids[i]) for i in positions]
    chain = chain_ids([diff_id for _, diff_id in stacked])
    jobs = [_Job(layer, diff_id, chain[: i + 1]) for i, (layer, diff_id) in enumerate(stacked)]
    budget = ImageBudget(image_limits)
    if workers <= 1 or len(jobs) <= 1:
        return [_unpack_one(content, snapshots, job, limits, budget, sync, lambda: None) for job in jobs]

    futures: list[concurrent.futures.Future[UnpackedLayer]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unpack") as pool:
        for job in jobs:
            # The pool starts jobs in submission order, so a job only ever waits for jobs that
            # started before it: waiting cannot deadlock, whatever the number of workers.
            wait_below = functools.partial(_results, list(futures))
            futures.append(
                pool.submit(_unpack_one, content, snapshots, job, limits, budget, sync, wait_below)
            )
        _, pending = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
    # Leaving the `with` waited for the layers already running. Report the bottom-most failure.
    for future in futures:
        if not future.cancelled() and (error := future.exception()) is not None:
            raise error
    return [future.result() for future in futures]


def _results(futures: Sequence[concurrent.futures.Future[UnpackedLayer]]) -> None:
    """Wait for `futures`; raises the first one's error (CancelledError if it never ran)."""
    for future in futures:
        future.result()


@dataclass(frozen=True)
class _Job:
    layer: Descriptor
    diff_id: Digest
    chain: Sequence[Digest]
    """Chain IDs from the bottom layer up to and including this one."""


def _unpack_one(
    content: ContentStore,
    snapshots: SnapshotStore,
    job: _Job,
    limits: UnpackLimits,
    budget: ImageBudget,
    sync: bool,
    wait_below: Callable[[], object],
) -> UnpackedLayer:
    layer, chain_id = job.layer, job.chain[-1]
    with snapshots.locked(chain_id):
        if snapshots.exists(chain_id):
            return UnpackedLayer(chain_id, snapshots.path(chain_id), None)
        if not content.has(layer.digest):
            raise CouldNotCheck(f"layer {layer.digest} is not in the content store; pull the image first")
        prepared = snapshots.prepare(chain_id)
        try:
            stats = apply_layer(
                content.blob_path(layer.digest),
                layer.media_type,
                layer.digest,
                job.diff_id,
                prepared,
                limits,
                sync=sync,
                budget=budget,
                lowerdirs=_lowerdirs_when_ready(snapshots, job.chain, wait_below)
                if len(job.chain) > 1
                else None,
            )
            if stats.implicit_dirs and len(job.chain) > 1:
                # Unpacking ran in parallel; copying metadata from below needs the layers below.
                wait_below()
                inherit_implicit_dirs(prepared, stats.implicit_dirs, snapshots.lowerdirs(job.chain[:-1]))
            path = snapshots.commit(
                prepared,
                chain_id,
                diff_id=job.diff_id,
                layer_digest=layer.digest,
                media_type=layer.media_type,
                warnings=stats.warnings,
                sync=sync,
                known_digests=stats.file_digests,
            )
        except BaseException:
            snapshots.discard(prepared)
            raise
    return UnpackedLayer(chain_id, path, stats)


def _lowerdirs_when_ready(
    snapshots: SnapshotStore, chain: Sequence[Digest], wait_below: Callable[[], object]
) -> Callable[[], Sequence[Path]]:
    """The snapshots below a layer, top-most first, once the layers below are committed."""

    def ready() -> Sequence[Path]:
        wait_below()  # unpacking runs in parallel: the lower layers may still be in progress
        return snapshots.lowerdirs(chain[:-1])

    return ready


# -- the tar member loop ---------------------------------------------------------------------


def _extract(
    stream: _TarStream, writer: LayerWriter, limits: UnpackLimits, budget: ImageBudget | None
) -> int:
    entries = 0

    def member_data(member: tarfile.TarInfo) -> Iterator[bytes | memoryview]:
        # Straight from the decompressor, no copies. (Sparse entries never get here: LayerWriter
        # refuses them.)
        return stream.chunks(member.size)

    try:
        stream.header_budget = limits.max_header_bytes  # opening reads the first header
        # tarfile only parses headers here: we never call extract()/extractall(), LayerWriter
        # creates every entry itself. Mode "r:" over our forward-only stream rather than stream
        # mode "r|", whose internal buffer copies every byte several times (about half the
        # unpacking time of a large layer).
        fileobj = cast(IO[bytes], stream)
        with tarfile.open(fileobj=fileobj, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
            while (member := tar.next()) is not None:
                stream.header_budget = None  # member data is read in bounded chunks
                entries += 1
                if entries > limits.max_entries:
                    raise LayerLimitExceeded(f"more than {limits.max_entries} entries")
                if budget is not None:
                    budget.spend_file()
                writer.apply(member, functools.partial(member_data, member))
                # tarfile remembers every member, and layers can have millions: forget them.
                tar.members.clear()  # type: ignore[attr-defined]
                stream.header_budget = limits.max_header_bytes
    except tarfile.TarError as exc:
        raise UnsafeLayer(f"malformed tar: {exc}") from None
    except RecursionError:  # tarfile parses chained extended headers recursively
        raise UnsafeLayer("malformed tar: too many chained extended headers") from None
    finally:
        stream.header_budget = None
    return entries


# -- byte streams ----------------------------------------------------------------------------


class _HashingReader:
    """The compressed blob as read, hashed and counted on the way through."""

    def __init__(self, file: IO[bytes], hasher: hashlib._Hash) -> None:
        self._file = file
        self.hasher = hasher
        self.count = 0

    def read(self, size: int) -> bytes:
        data = self._file.read(size)
        self.hasher.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(_OUT_CHUNK):
            pass


class _Decoder(Protocol):
    def read(self) -> bytes:
        """The next piece of uncompressed data, at most `_OUT_CHUNK` bytes; b"" at the end."""
        ...


class _Plain:
    def __init__(self, raw: _HashingReader) -> None:
        self._raw = raw

    def read(self) -> bytes:
        return self._raw.read(_OUT_CHUNK)


class _Gzip:
    """Gzip members one after another (as gzip(1) and Go read them), then optional zero padding."""

    def __init__(self, raw: _HashingReader) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""  # compressed input not yet consumed by zlib
        self._padding = False

    def read(self) -> bytes:
        while True:
            if not self._pending:
                self._pending = self._raw.read(_RAW_CHUNK)
                if not self._pending:
                    if not self._inflate.eof:
                        raise UnsafeLayer("gzip stream is truncated")
                    return b""
            if self._inflate.eof:
                # One member ended. What follows is another member or trailing zero bytes.
                rest = self._pending.lstrip(b"\0")
                if len(rest) < len(self._pending):
                    self._padding = True
                if not rest:
                    self._pending = b""
                    continue
                if self._padding:
                    raise UnsafeLayer("corrupt gzip stream: data after the trailing padding")
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                # max_length bounds the output of one call: a bomb cannot expand in memory.
                out = self._inflate.decompress(self._pending, _OUT_CHUNK)
            except zlib.error as exc:
                raise UnsafeLayer(f"corrupt gzip stream: {exc}") from None
            self._pending = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
            if out:
                return out


class _Zstd:
    def __init__(self, raw: _HashingReader) -> None:
        import zstandard  # only layers that need it pay for the import

        self._error = zstandard.ZstdError
        # read_across_frames: a layer may consist of several zstd frames (zstd:chunked does this).
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], raw), read_size=_RAW_CHUNK, read_across_frames=True
        )

    def read(self) -> bytes:
        try:
            return self._reader.read(_OUT_CHUNK)
        except self._error as exc:
            raise UnsafeLayer(f"corrupt zstd stream: {exc}") from None


def _decoder(compression: str, raw: _HashingReader) -> _Decoder:
    if compression == "gzip":
        return _Gzip(raw)
    if compression == "zstd":
        return _Zstd(raw)
    return _Plain(raw)


class _TarStream:
    """The file object tarfile reads: uncompressed bytes, hashed into the diff_id and limited.

    Forward only: `seek` may skip ahead (tarfile skips block padding) but never go back. Bytes
    are hashed as they come out of the decompressor; `drain()` pulls whatever follows the end
    of the archive, so the hash always covers the whole stream. Regular files' data bypasses
    tarfile: `chunks()` hands out views of the decompressor's buffers, copied nowhere.
    """

    def __init__(
        self,
        decoder: _Decoder,
        raw: _HashingReader,
        hasher: hashlib._Hash,
        limits: UnpackLimits,
        budget: ImageBudget | None = None,
    ) -> None:
        self._decoder = decoder
        self._budget = budget
        self._raw = raw
        self.hasher = hasher
        self._limits = limits
        self._chunk = memoryview(b"")
        self._offset = 0  # in _chunk
        self._position = 0  # in the whole stream
        self.total = 0
        self.header_budget: int | None = None
        """While tarfile parses headers: bytes it may still read (else it could buffer gigabytes)."""
        self._pax_records_next = False

    # -- what tarfile calls --

    def read(self, size: int) -> bytes:
        if self.header_budget is not None:
            # Checked before reading: a PAX header claiming 10 GB is refused, not buffered.
            self.header_budget -= size
            if self.header_budget < 0:
                raise LayerLimitExceeded(f"a tar header is larger than {self._limits.max_header_bytes} bytes")
        parts = []
        while size > 0 and (view := self._take(size)):
            parts.append(view)
            size -= len(view)
        data = b"".join(parts)
        if self.header_budget is not None:
            self._screen_header(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or position < self._position:
            raise UnsafeLayer("malformed tar: it would need reading backwards")
        while position > self._position and self._take(min(position - self._position, _OUT_CHUNK)):
            pass
        return self._position

    def seekable(self) -> bool:
        return False

    # -- what LayerWriter reads through --

    def chunks(self, size: int) -> Iterator[memoryview]:
        """The next `size` bytes, as views of at most `_OUT_CHUNK` bytes."""
        while size > 0:
            view = self._take(min(size, _OUT_CHUNK))
            if not view:
                raise UnsafeLayer("malformed tar: member data is truncated")
            size -= len(view)
            yield view

    def drain(self) -> bool:
        """Hash the rest of the stream; True if any of it was not zero (tar pads with zeros)."""
        rest: bytes = self._chunk[self._offset :].tobytes()
        self._chunk, self._offset = memoryview(b""), 0
        nonzero = False
        while True:
            nonzero = nonzero or rest.count(0) != len(rest)
            rest = self._next_chunk()
            if not rest:
                return nonzero

    # -- internals --

    def _screen_header(self, data: bytes) -> None:
        """Refuse headers that make tarfile's own parser take quadratic time.

        Python before 3.11.10 parses PAX records with regular expressions that backtrack badly
        (CVE-2024-6232): a few kilobytes of gzip can cost minutes of CPU. tarfile reads a
        header block (512 bytes) and then, for a PAX header, its records in one read, so the
        records are checked here first, in linear time.
        """
        if self._pax_records_next:
            self._pax_records_next = False
            _check_pax_records(data)
        elif len(data) == _BLOCK:
            self._pax_records_next = data[156:157] in _PAX_TYPES  # the typeflag field

    def _take(self, size: int) -> memoryview:
        """Up to `size` bytes from the current chunk (fetching one if needed); empty at the end."""
        if self._offset >= len(self._chunk):
            self._chunk, self._offset = memoryview(self._next_chunk()), 0
        view = self._chunk[self._offset : self._offset + size]
        self._offset += len(view)
        self._position += len(view)
        return view

    def _next_chunk(self) -> bytes:
        chunk = self._decoder.read()
        self.total += len(chunk)
        limits = self._limits
        if self.total > limits.max_total_bytes:
            raise LayerLimitExceeded(f"uncompressed size exceeds {limits.max_total_bytes} bytes")
        if self.total > limits.ratio_floor_bytes and self.total > limits.max_ratio * self._raw.count:
            raise LayerLimitExceeded(
                f"{self._raw.count} compressed bytes expanded to more than {self.total} bytes, beyond "
                f"the {limits.max_ratio}:1 ratio limit; refusing a likely decompression bomb"
            )
        if self._budget is not None:
            self._budget.spend_bytes(len(chunk))
        self.hasher.update(chunk)
        return chunk


_BLOCK = 512
_PAX_TYPES = (b"x", b"g", b"X")  # extended, global, and Solaris extended headers
_DIGITS = re.compile(rb"[0-9]+")
_MAX_DIGIT_RUN = 256


def _check_pax_records(data: bytes) -> None:
    """Each record must be `<length> <keyword>=<value>\n`, exactly `length` bytes long.

    Also refuses runs of more than 256 digits anywhere: tarfile searches the whole header with
    `\\d+ hdrcharset=`, which is quadratic in the length of a digit run. (Paths, the usual long
    values, cannot hold such a run: a name component has at most 255 bytes.)
    """
    if any(len(run) > _MAX_DIGIT_RUN for run in _DIGITS.findall(data)):
        raise UnsafeLayer(f"malformed PAX header: a run of more than {_MAX_DIGIT_RUN} digits")
    end = len(data.rstrip(b"\0"))  # the records, without the padding to a whole block
    position = 0
    while position < end:
        space = data.find(b" ", position, position + 20)
        length = data[position:space]
        if space < 0 or not length.isdigit():
            raise UnsafeLayer("malformed PAX header: a record does not start with its length")
        record_end = position + int(length)
        if (
            record_end > end
            or data[record_end - 1 : record_end] != b"\n"
            or data.find(b"=", space, record_end) < 0
        ):
            raise UnsafeLayer("malformed PAX header: a record is not `<length> <keyword>=<value>`")
        position = record_end


# -- small helpers ---------------------------------------------------------------------------


def _check(hasher: hashlib._Hash, expected: Digest, what: str) -> None:
    actual = hasher.hexdigest()
    if actual != expected.hex:
        raise DigestMismatch(f"{what} hashes to {expected.algorithm}:{actual}, not {expected}")


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` once (cheaper than an fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc.call("syncfs", fd)
    except OSError as exc:
        raise OSError(exc.errno, os.strerror(exc.errno or 0), str(path)) from None
    finally:
        os.close(fd)
