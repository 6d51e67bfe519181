"""An admitted image's layers → snapshots → a container's overlay root filesystem.

    snapshots = open_snapshots(content)                        # STORE/meta/snapshots
    lowers = prepare_layers(image, content, snapshots)         # unpack what is missing, verified
    mount_rootfs(container_dir / "rootfs", lowers, upper=…, work=…)
    ...
    unmount_rootfs(container_dir / "rootfs")

`prepare_layers` runs containerd's unpack protocol through `run.unpack.unpack_layers`: one snapshot per
chain ID, the layer blob's digest and diff_id recomputed while unpacking, independent layers in
parallel; a layer that fails (DigestMismatch, exit 4) is discarded, never committed.

`read_image_file` reads a small file of a mounted rootfs (e.g. /etc/passwd) without following any
symbolic link, so an image cannot point the host at its own files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pull.errors import UsageError
from run.overlay import is_mountpoint, mount_overlay, unmount

if TYPE_CHECKING:
    from policy.admitted import AdmittedImage
    from pull.store import ContentStore
    from run.snapshots import SnapshotStore

SNAPSHOTS_DIR = "snapshots"
_READ_LIMIT = 1 << 20  # /etc/passwd and /etc/group of real images are a few kB


def open_snapshots(content: ContentStore) -> SnapshotStore:
    """The snapshot store that lives beside the content store's metadata."""
    from run.snapshots import SnapshotStore

    return SnapshotStore.open(content.meta / SNAPSHOTS_DIR)


def prepare_layers(
    image: AdmittedImage, store: ContentStore, snapshots: SnapshotStore, *, workers: int = 4
) -> list[Path]:
    """Make sure every layer of `image` has a committed snapshot; return the lower dirs, top-most first.

    Raises:
        DigestMismatch: a layer blob or its uncompressed stream does not match (exit 4).
        UnsafeLayer: a layer tries to escape its snapshot or is malformed (exit 4).
        InvalidManifest: layer and diff_id counts differ, or a layer media type is refused (exit 4).
        LayerLimitExceeded: the image exceeds its policy `limits:` (layers, bytes, files; exit 4).
        CouldNotCheck: a layer blob is missing from the store (exit 5).
    """
    from run.snapshots import SnapshotNotFound, snapshot_chain_ids

    if len(image.layers) > image.limits.max_layers:  # also when every snapshot exists already
        from run.unpack import check_layer_count

        check_layer_count(len(image.layers), image.limits)  # raises, naming the limit
    if len(image.diff_ids) == len(image.layers):
        # A warm start: every snapshot exists, so there is nothing to unpack and no unpacker to load.
        with contextlib.suppress(SnapshotNotFound):
            return snapshots.lowerdirs(snapshot_chain_ids(image.diff_ids))
    # Imported here: unmounting and reading /etc/passwd (the monitor, `trust rm`) need no unpacker.
    from run.tarsafe import DEVICES_SKIPPED_PREFIX
    from run.unpack import unpack_layers

    unpacked = unpack_layers(
        store, snapshots, image.layers, image.diff_ids, image_limits=image.limits, workers=workers
    )
    for layer in unpacked:  # only layers unpacked now: a reused snapshot said it when it was made
        for warning in layer.stats.warnings if layer.stats else ():
            if warning.startswith(DEVICES_SKIPPED_PREFIX):
                print(f"trust: layer {str(layer.chain_id)[:19]}: {warning}", file=sys.stderr)
    return snapshots.lowerdirs([layer.chain_id for layer in unpacked])


def mount_rootfs(target: Path, lowerdirs: Sequence[Path], *, upper: Path, work: Path) -> None:
    """Mount the snapshots (top-most first) at `target`, writable through `upper` only.

    An image without layers still gets a (empty) root: overlay needs one lower dir, so `work`'s
    sibling `empty` stands in for it.
    """
    if not lowerdirs:
        empty = work.parent / "empty"
        empty.mkdir(mode=0o755, exist_ok=True)
        lowerdirs = [empty]
    mount_overlay(target, lowerdirs, upper, work)


def unmount_rootfs(target: Path) -> None:
    """Unmount everything mounted at `target` (a lazy detach if it is busy); no-op if nothing is."""
    for _ in range(16):  # mounts can be stacked; a bound loop, not `while True`
        if not is_mountpoint(target):
            return
        try:
            unmount(target)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # raced with another unmount: look again
                continue
            # Busy (a process still has a cwd there): detach now, the kernel frees it when unused.
            unmount(target, detach=True)
    if is_mountpoint(target):
        raise OSError(errno.EBUSY, f"cannot unmount {target}")


def read_image_file(rootfs: Path, path: str, *, max_bytes: int = _READ_LIMIT) -> bytes | None:
    """Read `path` (e.g. "/etc/passwd") inside `rootfs`; None if it does not exist.

    Every component is opened relative to its parent with O_NOFOLLOW, so a symbolic link anywhere on
    the way is refused rather than followed (it could point outside the rootfs).

    Raises:
        UsageError: a component is a symlink, the file is not a regular file, or it is too large.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"{path!r} is not a plain path inside the image")
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            # O_NONBLOCK: a FIFO planted at /etc/passwd must not hang us (we refuse it below).
            flags |= os.O_NONBLOCK if last else os.O_DIRECTORY
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    shown = "/" + "/".join(parts[: i + 1])
                    raise UsageError(
                        f"the image's {shown} is a symbolic link or not a directory: not followed "
                        f"while reading {path}"
                    ) from None
                raise
            os.close(fd)
            fd = child
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"the image's {path} is not a regular file")
        if info.st_size > max_bytes:
            raise UsageError(f"the image's {path} is larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, max_bytes + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise UsageError(f"the image's {path} is larger than {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
