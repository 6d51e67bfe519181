"""User-namespaced containers: `--uidmap`, `--gidmap`, `--userns=auto` (podman's flags), as root.

    request = userns_request("auto:size=65536", [], [])     # or explicit maps, or None (host)
    mapping = request.resolve(taken=[c.user_namespace for c in running])   # under the store lock
    mount_idmapped_layers(lowerdirs, targets, mapping)       # then overlay over `targets`
    spec["linux"]["uidMappings"] = mapping.uid_json() …      # run/bundle.py

Root in such a container is an unprivileged host user (100000 for `0:100000:65536`): what it writes
is owned by that user on the host, a host file it reaches through a bind mount is judged as that
user's, and a breakout lands without root. The image's files must still appear owned by the
container's users. Copying and chowning a rootfs would make every start as slow as an unpack, so
the read-only snapshots are given **idmapped mounts** instead (Linux 5.12+: `open_tree` a clone of
the snapshot, `mount_setattr(MOUNT_ATTR_IDMAP)` with a user namespace holding the mapping,
`move_mount` it into the container's directory): through them a file owned by host uid 0 shows as
host uid 100000, which the container sees as its root. overlayfs cannot itself be idmapped (the
kernel refuses, EINVAL), but it takes idmapped lower layers (Linux 5.19+). The upper and work
directories are new and empty: they are simply chowned to the container's root. A file the container
changes is copied up with the owner it showed (100000), never as host root.

`--userns=auto[:size=N]` takes the first free block of N ids (default 65536) at or above 100000,
aligned to 65536, that no other container of the store maps (their records say which); it is
picked while the store's containers lock is held, so two creations never share a block.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pull.errors import UsageError
from pull.records import dataclass
from run import libc
from run.errors import RuntimeFailure

AUTO_BASE = 100_000
AUTO_BLOCK = 65_536
_MAX_ID = 2**32 - 1
"""uid_t is 32 bits; (uid_t)-1 is reserved."""

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442  # x86_64 and aarch64 alike
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
_AT_EMPTY_PATH, _AT_FDCWD = 0x1000, -100
_MOUNT_ATTR_IDMAP = 0x0010_0000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_CLONE_NEWUSER = 0x1000_0000


@dataclass(frozen=True)
class IdRange:
    """`container_id` … `container_id + size - 1` inside is `host_id` … outside."""

    container_id: int
    host_id: int
    size: int

    def to_json(self) -> dict[str, int]:
        """The OCI runtime spec's `LinuxIDMapping`."""
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}

    @classmethod
    def from_json(cls, doc: Any) -> IdRange:
        return cls(int(doc["containerID"]), int(doc["hostID"]), int(doc["size"]))

    def __str__(self) -> str:
        return f"{self.container_id}:{self.host_id}:{self.size}"


@dataclass(frozen=True)
class UserNamespace:
    """The mappings of a user-namespaced container."""

    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "uidMappings": [r.to_json() for r in self.uids],
            "gidMappings": [r.to_json() for r in self.gids],
        }

    @classmethod
    def from_json(cls, doc: Any) -> UserNamespace | None:
        if not isinstance(doc, dict):
            return None
        return cls(
            tuple(IdRange.from_json(r) for r in doc.get("uidMappings") or ()),
            tuple(IdRange.from_json(r) for r in doc.get("gidMappings") or ()),
        )

    @property
    def root(self) -> tuple[int, int]:
        """The host uid and gid of the container's root (`userns_request` makes sure there is one)."""
        uid, gid = _host_of(0, self.uids), _host_of(0, self.gids)
        if uid is None or gid is None:
            raise UsageError("the user namespace maps no host id to the container's root (0)")
        return uid, gid

    def host_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of every host id this mapping uses (uids and gids alike)."""
        return [(r.host_id, r.host_id + r.size) for r in (*self.uids, *self.gids)]


@dataclass(frozen=True)
class UsernsRequest:
    """What the flags asked for: explicit maps, or `auto` with a size."""

    uids: tuple[IdRange, ...] = ()
    gids: tuple[IdRange, ...] = ()
    auto_size: int | None = None

    def resolve(self, taken: Iterable[UserNamespace]) -> UserNamespace:
        """The mapping to use; `taken`: those of the store's other containers (for `auto`)."""
        if self.auto_size is None:
            return UserNamespace(self.uids, self.gids)
        used = sorted(span for namespace in taken for span in namespace.host_ranges())
        start = AUTO_BASE
        while start + self.auto_size - 1 <= _MAX_ID - 1:
            end = start + self.auto_size
            clash = next((span for span in used if span[0] < end and start < span[1]), None)
            if clash is None:
                block = (IdRange(0, start, self.auto_size),)
                return UserNamespace(block, block)
            start = -(-clash[1] // AUTO_BLOCK) * AUTO_BLOCK  # the next aligned block past it
        raise UsageError(f"--userns=auto: no free block of {self.auto_size} host ids is left")


def userns_request(userns: str | None, uidmap: Sequence[str], gidmap: Sequence[str]) -> UsernsRequest | None:
    """Parse `--userns`, `--uidmap`, `--gidmap` (podman's syntax); None: the host's user namespace.

    Raises:
        UsageError: a malformed or contradictory flag (exit 2).
    """
    mode = (userns or "").strip()
    if mode in ("", "host"):
        if not uidmap and not gidmap:
            return None
        if mode == "host":
            raise UsageError("--userns=host and --uidmap/--gidmap contradict each other")
        uids = _parse_maps(uidmap or gidmap, "--uidmap" if uidmap else "--gidmap")
        gids = _parse_maps(gidmap, "--gidmap") if gidmap else uids
        for name, ranges in (("--uidmap", uids), ("--gidmap", gids)):
            if _host_of(0, ranges) is None:
                raise UsageError(f"{name} maps no host id to the container's root (0): add 0:HOSTID:SIZE")
        return UsernsRequest(uids, gids)
    if uidmap or gidmap:
        raise UsageError(f"--userns={mode} and --uidmap/--gidmap contradict each other")
    kind, _, options = mode.partition(":")
    if kind != "auto":
        raise UsageError(f"invalid --userns {mode!r}: use host, auto or auto:size=N")
    size = AUTO_BLOCK
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key != "size" or not value.isdigit() or not 1 <= int(value) <= _MAX_ID - AUTO_BASE:
            raise UsageError(f"invalid --userns {mode!r}: its only option is size=N (1 to 2^32-100001)")
        size = int(value)
    return UsernsRequest(auto_size=size)


def _parse_maps(texts: Sequence[str], flag: str) -> tuple[IdRange, ...]:
    ranges = []
    for text in texts:
        parts = text.strip().split(":")
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            raise UsageError(f"invalid {flag} {text!r}: use CONTAINERID:HOSTID:SIZE")
        inside, outside, size = (int(part) for part in parts)
        if size < 1 or inside + size - 1 >= _MAX_ID or outside + size - 1 >= _MAX_ID:
            raise UsageError(f"invalid {flag} {text!r}: ids run from 0 to 2^32-2, sizes from 1")
        ranges.append(IdRange(inside, outside, size))
    for which, key in (("container", "container_id"), ("host", "host_id")):
        spans = sorted((getattr(r, key), getattr(r, key) + r.size) for r in ranges)
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            raise UsageError(f"invalid {flag}: its {which} ranges overlap")
    if len(ranges) > 340:  # the kernel's limit on lines in uid_map
        raise UsageError(f"{flag}: at most 340 ranges")
    return tuple(ranges)


def _host_of(container_id: int, ranges: Sequence[IdRange]) -> int | None:
    for r in ranges:
        if r.container_id <= container_id < r.container_id + r.size:
            return r.host_id + container_id - r.container_id
    return None


# -- idmapped mounts of the snapshots ---------------------------------------------------------------


def mount_idmapped_layers(sources: Sequence[Path], targets: Sequence[Path], mapping: UserNamespace) -> None:
    """Mount each of `sources` (a snapshot) on the matching (empty, existing) directory of
    `targets`, idmapped by `mapping`. On failure the ones made are unmounted before raising.

    Raises:
        RuntimeFailure: the kernel refused (too old, or a file system that cannot be idmapped).
    """
    made: list[Path] = []
    userns = _user_namespace(mapping)
    try:
        attr = struct.pack("QQQQ", _MOUNT_ATTR_IDMAP, 0, 0, userns)
        for source, target in zip(sources, targets, strict=True):
            tree = _mount_call(
                "open_tree",
                source,
                _SYS_OPEN_TREE,
                _AT_FDCWD,
                os.fsencode(source),
                _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC,
            )
            try:
                buffer = ctypes.create_string_buffer(attr, len(attr))
                _mount_call(
                    "mount_setattr(MOUNT_ATTR_IDMAP)",
                    source,
                    _SYS_MOUNT_SETATTR,
                    tree,
                    b"",
                    _AT_EMPTY_PATH,
                    buffer,
                    len(attr),
                )
                _mount_call(
                    "move_mount",
                    target,
                    _SYS_MOVE_MOUNT,
                    tree,
                    b"",
                    _AT_FDCWD,
                    os.fsencode(target),
                    _MOVE_MOUNT_F_EMPTY_PATH,
                )
                made.append(target)
            finally:
                os.close(tree)
    except BaseException:
        unmount_idmapped_layers(made)
        raise
    finally:
        os.close(userns)


def unmount_idmapped_layers(targets: Iterable[Path]) -> None:
    """Unmount what `mount_idmapped_layers` mounted (lazily if busy); absent mounts are fine."""
    from run.overlay import is_mountpoint, unmount

    for target in targets:
        if is_mountpoint(target):
            try:
                unmount(target)
            except OSError:
                unmount(target, detach=True)


def _mount_call(call: str, path: Path, number: int, *args: object) -> int:
    """syscall(number, *args) of the mount API (glibc wraps none of it); RuntimeFailure on failure."""
    try:
        return libc.call("syscall", number, *args)
    except OSError as exc:
        raise _failure(call, path, exc.errno or errno.ENOSYS) from None


def _failure(call: str, path: Path, errno_value: int) -> RuntimeFailure:
    why = os.strerror(errno_value)
    return RuntimeFailure(
        f"cannot give {path} an idmapped mount ({call}: {why}): user namespaces need Linux 5.19+"
    )


def _map_lines(ranges: Sequence[IdRange]) -> str:
    return "".join(f"{r.container_id} {r.host_id} {r.size}\n" for r in ranges)


def _user_namespace(mapping: UserNamespace) -> int:
    """An open descriptor of a new user namespace with `mapping` (what MOUNT_ATTR_IDMAP takes).

    A forked child unshares its user namespace and waits; we write its maps, open its namespace,
    and let it go. The namespace lives on through the descriptor (and then the mounts).
    """
    ready_read, ready_write = os.pipe()
    done_read, done_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing but syscalls, then _exit
        code = 1
        try:
            os.close(ready_read)
            os.close(done_write)
            libc.call("unshare", _CLONE_NEWUSER)  # raises: no "1" for the parent, exit 1
            os.write(ready_write, b"1")
            os.read(done_read, 1)  # until the parent has what it needs
            code = 0
        finally:
            os._exit(code)
    os.close(ready_write)
    os.close(done_read)
    try:
        if os.read(ready_read, 1) != b"1":
            raise RuntimeFailure("cannot make a user namespace (unshare(CLONE_NEWUSER) failed)")
        proc = Path(f"/proc/{pid}")
        (proc / "uid_map").write_text(_map_lines(mapping.uids))
        (proc / "setgroups").write_text("deny")
        (proc / "gid_map").write_text(_map_lines(mapping.gids))
        return os.open(proc / "ns" / "user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeFailure(f"cannot make a user namespace for the mapping: {exc.strerror or exc}") from None
    finally:
        os.close(ready_read)
        os.close(done_write)  # the child reads EOF and exits
        os.waitpid(pid, 0)
