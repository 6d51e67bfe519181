"""Write the entries of one hostile layer tar into an empty directory, in overlay form.

`LayerWriter` is the only code in `trust` that creates files from image content. It assumes every
tar is hostile and keeps one invariant: **nothing outside the target directory is ever created,
changed or followed**. It gets there with three rules rather than by checking paths as strings:

1. Every operation is relative to a directory file descriptor, and every directory is opened
   one component at a time with `O_DIRECTORY | O_NOFOLLOW`, starting from the target. A symlink
   the layer planted can therefore never redirect a later entry: opening it as a directory fails
   with ELOOP and the layer is refused. There is no string path to the host to get wrong.
2. Names are split into components; `..` is refused, `.` and empty components are dropped, and a
   leading `/` is ignored (`/etc/x` means `etc/x`, as in containerd, umoci and GNU tar).
3. The target starts empty, so whatever exists in it was created by this layer. A hard link names
   something that exists there, or a file of a lower layer: that one is never linked (the snapshots
   are separate trees, and a link would reach outside the target) but recorded (`lower_links`)
   and later materialised as a copy of the lower file by `materialise_lower_links`, which reads
   the committed lower snapshots with the same no-follow rules. Links inside the layer stay links.

Files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` and their owner, mode, xattrs and times are
set on the open descriptor (`fchown`, `fchmod`, `fsetxattr`, `futimens`); symlinks only get
`lchown`/`lutimes`-style calls. Nothing is ever done through a symlink.

Entry policy (the choices a reader will ask about):

- regular files, directories, symlinks, hard links and FIFOs are created (a hard link to a file
  of a lower layer becomes a copy of it, as umoci, containerd and podman apply it);
  setuid/setgid/sticky bits are kept (images legitimately ship setuid binaries);
- character and block devices are skipped, never created: the runtime mounts its own /dev over
  them, and an image has no business creating device nodes on the host. Every debootstrap or
  `docker import` rootfs carries some (/dev/console, /dev/null …), so refusing them refused those
  images; they are counted (`devices_skipped`) and recorded as a snapshot warning, which `trust
  run` prints and `trust audit` reports. (The 0:0 character devices of whiteouts are made by us.)
- whiteouts become overlay whiteouts: `.wh.NAME` → a 0:0 character device NAME, `.wh..wh..opq`
  → the `trusted.overlay.opaque="y"` xattr on its directory; other `.wh..wh.*` names (aufs
  bookkeeping) are ignored. As the OCI spec says, a whiteout only hides lower layers: if NAME
  exists in this same layer it stays (a directory becomes opaque so lower contents stay hidden).
- xattrs (PAX `SCHILY.xattr.*`): `user.*`, `security.capability` and POSIX ACLs are applied;
  `trusted.overlay.*` and `user.overlay.*` (what overlayfs reads under `userxattr`) refuse the whole
  layer (only an attack would carry overlay metadata); other
  `trusted.*`, `security.*` (SELinux labels, IMA) and unknown namespaces are dropped with a warning.
- a later entry for the same path replaces the earlier one (tar semantics); a directory is kept
  and merged when the new entry is also a directory, otherwise removed fd-relatively.
- ownership is numeric (uid/gid from the header; user and group names are never looked up).
- sparse files (GNU sparse entries, old GNU or PAX 0.0/0.1/1.0) refuse the whole layer: the OCI
  layer spec says they SHOULD NOT be used, and a 2 KB entry can declare 50 GB of holes that tarfile
  would hand out as zeros and every `trust audit` would hash again. Docker never writes them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pull.errors import IntegrityError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LOWER_LINKS = 100_000
"""Hard links to lower files one layer may defer (each is held in memory until materialised)."""
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Opening a FIFO read-only and non-blocking returns at once, so we can set metadata on its fd.
_FIFO_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC

_CHUNK = 1 << 20
_MAX_CACHED_DIRS = 512
_MAX_WARNINGS = 100
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2): never a real owner

_ALLOWED_XATTRS = ("user.", "security.capability", "system.posix_acl_access", "system.posix_acl_default")
_XATTR_PAX_PREFIX = "SCHILY.xattr."

# errnos that mean "the layer asked for something impossible", as opposed to a local failure
# such as ENOSPC or EIO, which stays an OSError (exit 1) rather than blaming the image.
_LAYER_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EMLINK, errno.EEXIST, errno.EINVAL}
)


DEVICES_SKIPPED_PREFIX = "skipped"
_DEVICE_NAMES_KEPT = 5


class UnsafeLayer(IntegrityError):
    """A layer tar tries something refused (escape, device node, overlay xattr) or is malformed."""


class LayerLimitExceeded(UnsafeLayer):
    """A layer exceeded an unpacking limit: size, compression ratio, entry count, path length."""

    def diagnostics(self) -> str:
        return (
            "This looks like a decompression bomb; raise the limit only for an image trusted to be this big."
        )


_Parts = tuple[str, ...]
MemberData = Callable[[], Iterable[bytes | memoryview]]
"""Gives the content of the member being applied (a regular file's), in pieces."""


class LayerWriter:
    """Applies tar members, one at a time, to the empty directory `target` in overlay form.

    Use as a context manager; call `finish()` after the last member (it sets directory times,
    which creating children would otherwise disturb).
    """

    def __init__(self, target: Path, *, max_path_bytes: int, max_depth: int, max_file_bytes: int) -> None:
        self._max_path_bytes = max_path_bytes
        self._max_depth = max_depth
        self._max_file_bytes = max_file_bytes
        # The target itself is the caller's: its path may contain symlinks. Below it, nothing may.
        self._root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Open directory fds by path components, so consecutive entries in one directory do not
        # re-walk the path. Entries are invalidated when their directory is removed.
        self._dirs: dict[_Parts, int] = {(): self._root}
        self._dir_times: dict[_Parts, float] = {}
        self._implicit: set[_Parts] = set()  # directories created for a child, with no entry of their own
        self._file_bytes = 0
        self._dropped_warnings = 0
        self.warnings: list[str] = []
        self.bytes_written = 0
        self.file_digests: dict[str, tuple[int, str]] = {}
        """Each regular file written, by layer-relative path: (size, sha256 hex) of what was written.
        The snapshot's recorded tree takes these instead of reading every file a second time."""
        self.whiteouts = 0
        self.lower_links: list[tuple[_Parts, _Parts, str]] = []
        """Hard links to files this layer does not have: (link, source, display), in tar order.
        The source must be a file of a lower layer (`materialise_lower_links`)."""
        self.devices_skipped = 0
        self.skipped_device_names: list[str] = []
        if os.listdir(self._root):
            self.close()
            raise ValueError(f"{target} must be an empty directory")

    def __enter__(self) -> LayerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    # -- the one public operation --------------------------------------------------------

    def apply(self, member: tarfile.TarInfo, data: MemberData) -> None:
        """Create what `member` describes. `data()` gives a regular file's content, in order.

        Every regular member's data is read to its end (also when unused), so the caller's
        stream is positioned at the next header afterwards.
        """
        if len(self._dirs) > _MAX_CACHED_DIRS:
            self._forget_dirs(lambda parts: bool(parts))  # only between members: no fd is in use
        parts = self._split(member.name, member.name)
        try:
            self._apply(parts, member, data)
        except OSError as exc:
            if exc.errno not in _LAYER_ERRNOS:
                raise
            raise UnsafeLayer(f"{member.name!r}: {exc.strerror}") from None

    def finish(self) -> None:
        """Set the directory times that were held back while their contents were written."""
        for parts, mtime in self._dir_times.items():
            fd = self._find_dir(parts)
            if fd is not None:  # None: the directory was replaced later in the layer
                self._set_times(fd, mtime, "/".join(parts) or ".")
        self._dir_times.clear()
        if self.devices_skipped:
            more = ", …" if self.devices_skipped > len(self.skipped_device_names) else ""
            self.warnings.append(
                f"{DEVICES_SKIPPED_PREFIX} {self.devices_skipped} device node(s) not created "
                f"({', '.join(self.skipped_device_names)}{more}): the container gets its own /dev"
            )
        if self._dropped_warnings:
            self.warnings.append(f"... and {self._dropped_warnings} more warnings")
            self._dropped_warnings = 0

    @property
    def implicit_dirs(self) -> list[str]:
        """Directories created only as parents of other entries (relative paths, parents first)."""
        return sorted("/".join(parts) for parts in self._implicit)

    # -- dispatch ------------------------------------------------------------------------

    def _apply(self, parts: _Parts, member: tarfile.TarInfo, data: MemberData) -> None:
        base = parts[-1] if parts else ""
        if base.startswith(WHITEOUT_PREFIX):
            if member.isreg():
                for _ in data():  # a marker's content means nothing, but must be read past
                    pass
            self._whiteout(parts, member.name)
        elif member.isreg():
            self._regular(parts, member, data)
        elif member.isdir():
            self._directory(parts, member)
        elif member.issym():
            self._symlink(parts, member)
        elif member.islnk():
            self._hardlink(parts, member)
        elif member.isfifo():
            self._fifo(parts, member)
        elif member.ischr() or member.isblk():
            self.devices_skipped += 1
            if len(self.skipped_device_names) < _DEVICE_NAMES_KEPT:
                self.skipped_device_names.append("/" + "/".join(parts))
        else:
            raise UnsafeLayer(f"{member.name!r}: unsupported tar entry type {member.type!r}")

    # -- entry kinds ---------------------------------------------------------------------

    def _regular(self, parts: _Parts, member: tarfile.TarInfo, data: MemberData) -> None:
        if member.sparse is not None:
            raise UnsafeLayer(
                f"{member.name!r}: a sparse file (GNU sparse tar entry, declaring {member.size} bytes); "
                "OCI layers should not contain sparse entries and trust refuses them"
            )
        parent, name = self._parent(parts, member.name)
        self._file_bytes += member.size
        if self._file_bytes > self._max_file_bytes:
            raise LayerLimitExceeded(f"files in the layer add up to more than {self._max_file_bytes} bytes")
        fd = self._create(parent, parts, lambda: os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent))
        assert fd is not None
        try:
            size, sha256 = self._copy_data(fd, member, data)
            self.file_digests["/".join(parts)] = (size, sha256)
            # Order matters: chown clears setuid bits and file capabilities, and writing data
            # clears capabilities, so: data, owner, mode, xattrs, times.
            self._set_owner_mode_xattrs(fd, member)
            self._set_times(fd, member.mtime, member.name)
        finally:
            os.close(fd)

    def _directory(self, parts: _Parts, member: tarfile.TarInfo) -> None:
        if not parts:
            fd = self._root  # "./": the layer's root directory itself
        else:
            parent, name = self._parent(parts, member.name)
            opaque = False
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):  # an existing directory is kept and merged
                    opaque = _is_whiteout(st)
                    self._remove(parent, parts)
                    os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            stale = self._dirs.pop(parts, None)  # the same directory, opened earlier
            if stale is not None:
                os.close(stale)
            self._dirs[parts] = fd
            if opaque:
                # Whited out earlier in this layer, now a directory: lower contents stay hidden.
                self._set_opaque(fd)
        self._set_owner_mode_xattrs(fd, member)
        self._dir_times[parts] = member.mtime
        self._implicit.discard(parts)

    def _symlink(self, parts: _Parts, member: tarfile.TarInfo) -> None:
        target = member.linkname
        if not target or "\x00" in target:
            raise UnsafeLayer(f"{member.name!r}: symlink with an empty or invalid target")
        parent, name = self._parent(parts, member.name)
        # The target is stored as text and never resolved here: it is only ever followed inside
        # the container's own root.
        self._create(parent, parts, lambda: os.symlink(target, name, dir_fd=parent))
        uid, gid = _owner(member)
        os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        if _xattrs_requested(member):
            self._warn(f"{member.name!r}: xattrs on a symlink are not applied")
        try:
            mtime_ns = _to_ns(member.mtime)
            os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
        except (OverflowError, ValueError, OSError):
            self._warn(f"{member.name!r}: modification time out of range, left unset")

    def _hardlink(self, parts: _Parts, member: tarfile.TarInfo) -> None:
        source = self._split(member.linkname, member.name)
        where = f"{member.name!r} → {member.linkname!r}"
        if not source:
            raise UnsafeLayer(f"{where}: a hard link to the layer root")
        outside = UnsafeLayer(f"{where}: hard link to a file outside this layer")
        found = self._find_dir(source[:-1])
        if found is None:
            self._defer_lower_link(parts, source, where)  # perhaps a file of a lower layer
            return
        # A private duplicate: creating the link may remove (and uncache) directories.
        source_dir = os.dup(found)
        try:
            try:
                st = os.stat(source[-1], dir_fd=source_dir, follow_symlinks=False)
            except FileNotFoundError:
                self._defer_lower_link(parts, source, where)
                return
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(f"{where}: a hard link to a directory")
            if _is_whiteout(st):
                raise outside  # whited out: the file lives (lived) in a lower layer
            if source == parts:
                return  # a link to itself: the entry already exists
            parent, name = self._parent(parts, member.name)
            try:
                # follow_symlinks=False: a link to a symlink links the symlink itself.
                self._create(
                    parent,
                    parts,
                    lambda: os.link(
                        source[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False
                    ),
                )
            except FileNotFoundError:
                raise outside from None  # the source was inside what this entry replaced
        finally:
            os.close(source_dir)
        # A hard link's header carries no metadata of its own: the inode's was set by its source.

    def _defer_lower_link(self, parts: _Parts, source: _Parts, where: str) -> None:
        """Record a link to a file this layer lacks; what the link replaces goes now (tar order)."""
        if len(self.lower_links) >= _MAX_LOWER_LINKS:
            raise LayerLimitExceeded(f"more than {_MAX_LOWER_LINKS} hard links to files of lower layers")
        parent, name = self._parent(parts, where)
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            self._remove(parent, parts)
        self.lower_links.append((parts, source, where))

    def _fifo(self, parts: _Parts, member: tarfile.TarInfo) -> None:
        parent, name = self._parent(parts, member.name)
        self._create(parent, parts, lambda: os.mkfifo(name, 0o600, dir_fd=parent))
        fd = os.open(name, _FIFO_FLAGS, dir_fd=parent)
        try:
            self._set_owner_mode_xattrs(fd, member)
            self._set_times(fd, member.mtime, member.name)
        finally:
            os.close(fd)

    def _whiteout(self, parts: _Parts, display: str) -> None:
        base = parts[-1]
        if base == OPAQUE_MARKER:
            self._set_opaque(self._dir(parts[:-1], display))
            self.whiteouts += 1
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): no meaning for overlay
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise UnsafeLayer(f"{display!r}: a whiteout must name a file, not {name or 'nothing'!r}")
        parent = self._dir(parts[:-1], display)
        try:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        except FileExistsError:
            # Present in this very layer: a whiteout hides only lower layers, so the entry stays;
            # a directory becomes opaque so that the lower one's contents stay hidden.
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                self._set_opaque(self._dir((*parts[:-1], name), display))
        self.whiteouts += 1

    # -- directories, reached only through fds -------------------------------------------

    def _parent(self, parts: _Parts, display: str) -> tuple[int, str]:
        """The open parent directory of a non-root entry, and the entry's last component."""
        if not parts:
            raise UnsafeLayer(f"{display!r}: only a directory may stand for the layer root")
        return self._dir(parts[:-1], display), parts[-1]

    def _dir(self, parts: _Parts, display: str) -> int:
        """Open (creating if missing) the directory `parts` one component at a time, no symlinks."""
        fd = self._dirs.get(parts)
        if fd is not None:
            return fd
        depth = len(parts)
        while parts[:depth] not in self._dirs:  # the deepest directory already open
            depth -= 1
        fd = self._dirs[parts[:depth]]
        for i in range(depth, len(parts)):
            fd = self._open_child(fd, parts[: i + 1], display, create=True)
        return fd

    def _find_dir(self, parts: _Parts) -> int | None:
        """Like `_dir` but never creates: None if a component is missing or not a directory."""
        fd = self._dirs.get(parts)
        if fd is not None:
            return fd
        fd = self._root
        for i in range(len(parts)):
            cached = self._dirs.get(parts[: i + 1])
            if cached is not None:
                fd = cached
                continue
            try:
                fd = self._open_child(fd, parts[: i + 1], "/".join(parts), create=False)
            except (FileNotFoundError, UnsafeLayer):
                return None
        return fd

    def _open_child(self, parent: int, parts: _Parts, display: str, *, create: bool) -> int:
        name = parts[-1]
        opaque = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            # A parent the tar did not list: 0755 and root's for now; `inherit_implicit_dirs`
            # later gives it the metadata the same directory has in the lower layers.
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            os.fchmod(fd, 0o755)  # mkdir's mode went through the umask
            self._implicit.add(parts)
        except OSError as exc:
            # O_NOFOLLOW|O_DIRECTORY on a symlink fails with ELOOP or ENOTDIR (Linux says ENOTDIR).
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            where = "/".join(parts)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeLayer(
                    f"{display!r}: {where!r} is a symlink; refusing to write through it"
                ) from None
            if not (create and _is_whiteout(st)):
                raise UnsafeLayer(f"{display!r}: {where!r} is not a directory") from None
            # Whited out earlier in this layer and now used as a directory.
            os.unlink(name, dir_fd=parent)
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            os.fchmod(fd, 0o755)
            opaque = True
        self._dirs[parts] = fd
        if opaque:
            self._set_opaque(fd)
        return fd

    def _forget_dirs(self, match: Callable[[_Parts], bool]) -> None:
        for parts in [p for p in self._dirs if p and match(p)]:
            os.close(self._dirs.pop(parts))

    # -- replacing entries ---------------------------------------------------------------

    def _create(self, parent: int, parts: _Parts, make: Callable[[], int | None]) -> int | None:
        """Run `make` (which fails with EEXIST if the name is taken); replace what is there once."""
        try:
            return make()
        except FileExistsError:
            self._remove(parent, parts)
            return make()

    def _remove(self, parent: int, parts: _Parts) -> None:
        """Remove the entry `parts` (in directory fd `parent`), a directory with all its contents."""
        name = parts[-1]
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        path = "/".join(parts)
        if stat.S_ISDIR(st.st_mode):
            n = len(parts)
            self._forget_dirs(lambda p: p[:n] == parts)
            _remove_tree(parent, name)
            below = path + "/"
            for gone in [known for known in self.file_digests if known.startswith(below)]:
                del self.file_digests[gone]
        else:
            os.unlink(name, dir_fd=parent)
            self.file_digests.pop(path, None)

    # -- data and metadata ---------------------------------------------------------------

    def _copy_data(self, fd: int, member: tarfile.TarInfo, data: MemberData) -> tuple[int, str]:
        """Write the member's data; returns the file's size and the sha256 of its content."""
        content = hashlib.sha256()
        size = 0
        for chunk in data():
            content.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            self.bytes_written += len(chunk)
        return size, content.hexdigest()

    def _set_owner_mode_xattrs(self, fd: int, member: tarfile.TarInfo) -> None:
        uid, gid = _owner(member)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, member.mode & 0o7777)
        for key, value in self._xattrs(member).items():
            try:
                os.setxattr(fd, key, value)
            except OSError as exc:
                self._warn(f"{member.name!r}: xattr {key} not applied: {exc.strerror}")

    def _set_times(self, fd: int, mtime: float, display: str) -> None:
        try:
            mtime_ns = _to_ns(mtime)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        except (OverflowError, ValueError, OSError):
            self._warn(f"{display!r}: modification time out of range, left unset")

    def _set_opaque(self, fd: int) -> None:
        os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")

    def _xattrs(self, member: tarfile.TarInfo) -> dict[str, bytes]:
        """The member's xattrs that may be applied; refuses overlay xattrs, drops the rest."""
        result: dict[str, bytes] = {}
        for key, value in member.pax_headers.items():
            if not key.startswith(_XATTR_PAX_PREFIX):
                continue
            name = key[len(_XATTR_PAX_PREFIX) :]
            # `user.overlay.*` is what overlayfs reads instead under `userxattr` (rootless mounts).
            if name.startswith(("trusted.overlay.", "user.overlay.")):
                raise UnsafeLayer(
                    f"{member.name!r}: carries the overlayfs xattr {name!r}; an image may not "
                    "set overlay metadata (opaque, redirect, metacopy)"
                )
            if name.startswith(_ALLOWED_XATTRS):
                # tarfile decoded the value with surrogateescape: this gives back the raw bytes.
                result[name] = value.encode("utf-8", "surrogateescape")
            else:
                self._warn(f"{member.name!r}: xattr {name!r} dropped (not allowed from images)")
        return result

    def _split(self, name: str, display: str) -> _Parts:
        """Entry name → path components below the root. Refuses `..`; `/` and `.` are dropped."""
        if "\x00" in name:
            raise UnsafeLayer(f"{display!r}: name contains a NUL byte")
        if len(name.encode("utf-8", "surrogateescape")) > self._max_path_bytes:
            raise LayerLimitExceeded(f"{display[:80]!r}…: path longer than {self._max_path_bytes} bytes")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise UnsafeLayer(f"{display!r}: '..' in {name!r}; names must stay inside the layer")
        if len(parts) > self._max_depth:
            raise LayerLimitExceeded(f"{display[:80]!r}…: deeper than {self._max_depth} directories")
        return parts

    def _warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self._dropped_warnings += 1  # a hostile layer could otherwise fill memory with them


def inherit_implicit_dirs(target: Path, implicit_dirs: Sequence[str], lowerdirs: Sequence[Path]) -> int:
    """Give directories a layer did not list the owner, mode, xattrs and times they have below.

    A layer that adds `etc/config/x` without an `etc/config/` entry means "into the existing
    etc/config". In overlay form that directory exists in this snapshot too, and overlay shows the
    top-most copy's metadata, so it is copied from the merged lower layers (top-most first, the
    order overlay uses). Returns how many directories were updated. The lower dirs are committed
    snapshots; they are walked with the same no-follow rules anyway.
    """
    updated = 0
    lowers = [os.open(path, _DIR_FLAGS) for path in lowerdirs]
    root = os.open(target, _DIR_FLAGS)
    try:
        for relative in implicit_dirs:
            parts = tuple(relative.split("/"))
            below = _merged_lookup(lowers, parts)
            if below is None:
                continue  # nothing below: the layer really created it
            try:
                mine = _walk(root, parts)
                if mine is None:
                    continue  # removed again later in the layer
                try:
                    st = os.fstat(below)
                    os.fchown(mine, st.st_uid, st.st_gid)
                    os.fchmod(mine, stat.S_IMODE(st.st_mode))
                    for key in os.listxattr(below):
                        if key.startswith(_ALLOWED_XATTRS):
                            os.setxattr(mine, key, os.getxattr(below, key))
                    os.utime(mine, ns=(st.st_atime_ns, st.st_mtime_ns))
                    updated += 1
                finally:
                    os.close(mine)
            finally:
                os.close(below)
    finally:
        for fd in (*lowers, root):
            os.close(fd)
    return updated


def materialise_lower_links(
    target: Path, links: Sequence[tuple[_Parts, _Parts, str]], lowerdirs: Sequence[Path]
) -> dict[str, tuple[int, str]]:
    """Create the links `LayerWriter` deferred, as copies of the lower files they name.

    The source is looked up as overlay would show it below this layer's own entries (this layer
    first, then `lowerdirs` top-most first; whiteouts, opaque directories and non-directories on
    the way hide what lies below). A regular file is copied with its owner, mode, allowed xattrs
    and times; a symlink or FIFO is recreated. A second link to the same source links the first
    copy (one inode, as in the layer). A link whose path a later entry of the layer replaced is
    skipped. Returns (size, sha256) of every file copied, by path, for the snapshot's tree record.

    Raises:
        UnsafeLayer: a source no layer below has (or a directory, or a device).
    """
    digests: dict[str, tuple[int, str]] = {}
    if not links:
        return digests
    root = os.open(target, _DIR_FLAGS)
    layers = [root, *(os.open(path, _DIR_FLAGS) for path in lowerdirs)]
    copies: dict[_Parts, _Parts] = {}
    try:
        for dest, source, where in links:
            parent = _walk(root, dest[:-1])
            if parent is None:
                continue  # a later entry replaced a directory on the way
            try:
                try:
                    os.stat(dest[-1], dir_fd=parent, follow_symlinks=False)
                    continue  # a later entry of the layer took the path
                except FileNotFoundError:
                    pass
                first = copies.get(source)
                if first is not None:
                    first_dir = _walk(root, first[:-1])
                    if first_dir is not None:
                        try:
                            os.link(
                                first[-1],
                                dest[-1],
                                src_dir_fd=first_dir,
                                dst_dir_fd=parent,
                                follow_symlinks=False,
                            )
                        finally:
                            os.close(first_dir)
                        continue
                found = _merged_entry(layers, source)
                if found is None:
                    raise UnsafeLayer(
                        f"{where}: hard link to a file that neither this layer nor a lower one has"
                    )
                source_dir, st = found
                try:
                    digest = _copy_entry(source_dir, source[-1], st, parent, dest[-1], where)
                finally:
                    os.close(source_dir)
                if digest is not None:
                    digests["/".join(dest)] = digest
                copies[source] = dest
            finally:
                os.close(parent)
    finally:
        for fd in layers:
            os.close(fd)
    return digests


def _merged_entry(layers: Sequence[int], parts: _Parts) -> tuple[int, os.stat_result] | None:
    """(an open fd of its directory, its lstat) for the entry `parts` as overlay shows it, or None.

    Per layer, top-most first, as `_merged_lookup`: a missing component sends the lookup one layer
    down unless an opaque directory on the way forbids it; a whiteout or non-directory hides below.
    """
    for layer in layers:
        fd = os.dup(layer)
        try:
            opaque = False
            missing = False
            for name in parts[:-1]:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    missing = True
                    break
                if not stat.S_ISDIR(st.st_mode):
                    return None
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                opaque = opaque or _is_opaque(fd)
            if not missing:
                try:
                    st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    missing = True
            if missing:
                if opaque:
                    return None
                continue
            if _is_whiteout(st):
                return None
            found, fd = fd, -1
            return found, st
        finally:
            if fd >= 0:
                os.close(fd)
    return None


def _copy_entry(
    source_dir: int, name: str, st: os.stat_result, dest_dir: int, dest: str, where: str
) -> tuple[int, str] | None:
    """Copy one lower entry (file, symlink, FIFO) to `dest`; (size, sha256) for a regular file."""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=source_dir)
        os.symlink(target, dest, dir_fd=dest_dir)
        os.chown(dest, st.st_uid, st.st_gid, dir_fd=dest_dir, follow_symlinks=False)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dest_dir, follow_symlinks=False)
        return None
    if stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dest, stat.S_IMODE(st.st_mode), dir_fd=dest_dir)
        os.chown(dest, st.st_uid, st.st_gid, dir_fd=dest_dir, follow_symlinks=False)
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeLayer(f"{where}: hard link to something that is not a file")
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source_dir)
    try:
        dst = os.open(
            dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dest_dir
        )
        try:
            content = hashlib.sha256()
            size = 0
            while chunk := os.read(src, 1 << 20):
                content.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view) :]
            os.fchown(dst, st.st_uid, st.st_gid)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))  # after fchown, which clears setuid bits
            for key in os.listxattr(src):
                if key.startswith(_ALLOWED_XATTRS):
                    os.setxattr(dst, key, os.getxattr(src, key))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return size, content.hexdigest()


def _merged_lookup(lowers: Sequence[int], parts: _Parts) -> int | None:
    """An open fd of the directory `parts` as overlay would show it from `lowers`, or None.

    Per layer, top-most first: a whiteout or a non-directory on the way hides everything below;
    a missing component sends the lookup one layer down, unless an opaque ancestor forbids it.
    """
    for layer in lowers:
        fd = os.dup(layer)
        try:
            opaque_ancestor = False
            for depth, name in enumerate(parts):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    break  # not in this layer
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a whiteout, or a file/symlink shadowing what lies below
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                if depth == len(parts) - 1:
                    found, fd = fd, -1
                    return found
                opaque_ancestor = opaque_ancestor or _is_opaque(fd)
            if opaque_ancestor:
                return None
        finally:
            if fd >= 0:
                os.close(fd)
    return None


def _walk(root: int, parts: _Parts) -> int | None:
    """Open the directory `parts` below `root` without following symlinks; None if it is not one."""
    fd = os.dup(root)
    for name in parts:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = child
    return fd


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _remove_tree(parent: int, name: str) -> None:
    """Remove directory `name` in `parent` and everything below it, never following a symlink."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        with os.scandir(fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            if is_dir:
                _remove_tree(fd, child)  # depth is bounded by the layer's max_depth
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def _is_whiteout(st: os.stat_result) -> bool:
    # Device nodes from the tar are refused, so a 0:0 character device can only be ours.
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _owner(member: tarfile.TarInfo) -> tuple[int, int]:
    for value in (member.uid, member.gid):
        if not 0 <= value <= _MAX_ID:
            raise UnsafeLayer(f"{member.name!r}: owner id {value} out of range")
    return member.uid, member.gid


def _to_ns(mtime: float) -> int:
    """Seconds (an int from ustar, a float from PAX) → ns; raises for inf/nan. atime is set to it too."""
    return mtime * 1_000_000_000 if isinstance(mtime, int) else int(mtime * 1e9)


def _xattrs_requested(member: tarfile.TarInfo) -> bool:
    return any(key.startswith(_XATTR_PAX_PREFIX) for key in member.pax_headers)
