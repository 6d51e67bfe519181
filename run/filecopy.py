"""`trust cp`: copy files between the host and a container, resolving container paths inside it.

    copy_out(container, "/etc/app/conf", Path("./conf"))     # CONTAINER:PATH → HOSTPATH
    copy_in(container, Path("./conf"), "/etc/app/conf")      # HOSTPATH → CONTAINER:PATH

A container path is never resolved on the host: a forked helper joins the container's mount
namespace (setns: its root becomes the container's root, with its volumes and tmpfs mounts) and
chroots there, so every symlink, `..` and mount is followed exactly as in the container and nothing
can lead outside it. The helper and trust exchange a tar stream over a pipe. What comes out of a
container is untrusted: it is extracted on the host by `extract` (nothing outside the
destination, even through a symlink; no devices, no setuid bits); what goes in is extracted by
the helper, inside the container, the same way.

Docker's rules for the destination: an existing directory receives the source under its own name;
otherwise the source is written as the destination path (whose parent must exist). Symlinks are
copied as symlinks. The container must exist in the runtime (created, running or paused): an exited
container's root filesystem is not mounted.
"""

from __future__ import annotations

import contextlib
import copy
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NoReturn

from pull.errors import UsageError
from run import libc
from run.errors import ContainerStateError
from run.processes import alive
from run.record import Container, State

_CLONE_NEWNS = 0x00020000

# `extract` checks every entry itself; newer Pythons (3.12+) warn unless a filter is named, and
# 3.14 would apply its `data` filter (which refuses the absolute symlinks `docker cp` keeps).
_CHECKED_ALREADY: dict[str, str] = (
    {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
)


class UnsafeEntry(Exception):
    """A tar entry that would land outside the destination, or a device node or FIFO."""


def copy_out(container: Container, path: str, destination: Path) -> None:
    """Copy `path` (in the container) to `destination` (on the host).

    Raises:
        UsageError: the path does not exist in the container, or the destination's parent is missing.
        ContainerStateError: the container is not created, running or paused.
    """
    source = _container_path(path)
    into_directory = destination.is_dir()
    parent = destination if into_directory else destination.parent
    if not parent.is_dir():
        raise UsageError(f"cannot copy to {destination}: {parent} is not a directory")

    def pack(out: IO[bytes]) -> None:
        if not os.path.lexists(source):
            raise UsageError(f"no such file or directory in the container: {path}")
        with tarfile.open(fileobj=out, mode="w|") as archive:
            archive.add(source, arcname=_name(source))

    with tempfile.TemporaryDirectory(dir=parent, prefix=".trust-cp-") as staging:
        try:
            with _helper(container, pack) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
                extract(archive, staging)
        except UnsafeEntry as err:
            raise UsageError(f"refused to copy {path} out of the container: {err}") from None
        _place(Path(staging) / _name(source), destination, into_directory)


def copy_in(container: Container, source: Path, path: str) -> None:
    """Copy `source` (on the host) to `path` (in the container).

    Raises:
        UsageError: the source does not exist, or the destination's parent is missing in the container.
        ContainerStateError: the container is not created, running or paused.
    """
    if not os.path.lexists(source):
        raise UsageError(f"no such file or directory: {source}")
    target = _container_path(path)
    name = _name(str(source.absolute()))
    read_end, write_end = os.pipe()

    def unpack(out: IO[bytes]) -> None:
        os.close(write_end)
        into_directory = os.path.isdir(target)
        parent = target if into_directory else posixpath.dirname(target) or "/"
        if not os.path.isdir(parent):
            raise UsageError(f"cannot copy to {path}: {parent} is not a directory in the container")
        staging = tempfile.mkdtemp(dir=parent, prefix=".trust-cp-")
        try:
            with os.fdopen(read_end, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
                extract(archive, staging)
            _place(Path(staging) / name, Path(target), into_directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    with _helper(container, unpack, close_in_parent=read_end) as done:
        with os.fdopen(write_end, "wb") as stream, tarfile.open(fileobj=stream, mode="w|") as archive:
            archive.add(source, arcname=name)
        done.read()


def copy_up(rootfs: Path, path: str, volume: Path) -> None:
    """Fill a new, empty volume with what the image has at `path` (docker's and podman's copy-up):
    the directory's contents and its mode and owner. Nothing if the image has no directory there.

    `rootfs` is the container's root file system, mounted but not yet running; `path` is resolved
    inside it (a chrooted helper), so an image's symlink cannot point the copy at the host.
    """
    source = _container_path(path)

    def pack(out: IO[bytes]) -> None:
        with tarfile.open(fileobj=out, mode="w|") as archive:
            if os.path.isdir(source):
                archive.add(source, arcname=".")

    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with _forked(root, None, pack) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
            extract(archive, str(volume), keep_modes=True)  # its /tmp stays 1777, setuid files stay so
    except UnsafeEntry as err:
        raise UsageError(f"refused to copy {path} of the image into its volume: {err}") from None


def extract(archive: tarfile.TarFile, destination: str, *, keep_modes: bool = False) -> None:
    """Extract the tar stream `archive` into `destination`, a directory that starts empty, entry by
    entry: none may land outside it. A leading `/` is dropped and `..` refused, as tar does, and
    no entry may be, or go through, a symlink the stream made (the only symlinks `destination`
    can hold), so each lands where its name says. Symlinks themselves are kept, absolute ones
    too, as `docker cp` keeps them. Device nodes and FIFOs are refused; setuid, setgid and sticky
    bits and group and other write are cleared, unless `keep_modes`.

    Not tarfile's extraction filters: Debian 12's Python (3.11.2) predates them (3.11.4), and they
    judge a path by `os.path.realpath`, which a deep enough tree of symlinks can cut short.

    Raises:
        UnsafeEntry: an entry that breaks these rules; what came before it stays (the callers
            extract into a staging directory or a new volume, and remove it).
    """
    symlinks: set[str] = set()
    directories: list[tarfile.TarInfo] = []
    for member in archive:
        if member.isdev():
            raise UnsafeEntry(f"{member.name!r} is a device node or FIFO")
        entry = copy.copy(member)
        entry.name = _entry_path(member.name, symlinks, member.name)
        if member.islnk():
            entry.linkname = _entry_path(member.linkname, symlinks, member.name)
        if not keep_modes:
            entry.mode = member.mode & 0o755
        # A directory's owner, mode and times are set once its contents are in, as extractall does.
        archive.extract(entry, destination, set_attrs=not entry.isdir(), **_CHECKED_ALREADY)  # type: ignore[arg-type]
        if member.issym():
            symlinks.add(entry.name)
        elif entry.isdir():
            directories.append(entry)
    for entry in sorted(directories, key=lambda entry: entry.name, reverse=True):  # children first
        path = os.path.join(destination, entry.name)
        archive.chown(entry, path, numeric_owner=False)
        archive.utime(entry, path)
        archive.chmod(entry, path)


def _entry_path(name: str, symlinks: set[str], entry: str) -> str:
    """`name` relative to the destination ("." for the destination itself), refused if it climbs
    out with `..` or is, or goes through, one of `symlinks`."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeEntry(f"{entry!r} climbs out of the destination ('..')")
    for end in range(1, len(parts) + 1):
        if "/".join(parts[:end]) in symlinks:
            raise UnsafeEntry(f"{entry!r} would go through the symlink {'/'.join(parts[:end])!r}")
    return "/".join(parts) or "."


def _place(staged: Path, destination: Path, into_directory: bool) -> None:
    target = destination / staged.name if into_directory else destination
    if target.is_dir() and not target.is_symlink() and staged.is_dir():
        shutil.copytree(staged, target, symlinks=True, dirs_exist_ok=True)  # merge, as cp -a does
    else:
        os.replace(staged, target)


def _name(path: str) -> str:
    base = posixpath.basename(path.rstrip("/"))
    return base or "root"


def _container_path(path: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise UsageError(f"container path {path!r} must be absolute")
    return path


@contextlib.contextmanager
def _helper(
    container: Container, work: Callable[[IO[bytes]], None], close_in_parent: int | None = None
) -> Iterator[IO[bytes]]:
    """Fork a helper inside the container's mount namespace that runs `work(pipe)`; yields our
    end of the pipe (what it writes, or EOF when it is done); raises what it reported on failure."""
    if container.state not in (State.CREATED, State.RUNNING, State.PAUSED) or not alive(
        container.pid, container.pid_start
    ):
        raise ContainerStateError(
            f"container {container.short_id} is {container.state}: cp needs its root filesystem mounted "
            "(created, running or paused)"
        )
    root = os.open(f"/proc/{container.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    namespace = os.open(f"/proc/{container.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    with _forked(root, namespace, work, close_in_parent) as stream:
        yield stream


@contextlib.contextmanager
def _forked(
    root: int, namespace: int | None, work: Callable[[IO[bytes]], None], close_in_parent: int | None = None
) -> Iterator[IO[bytes]]:
    """Fork a helper chrooted at `root` (after joining the mount `namespace`, if given) that runs
    `work(pipe)`; takes ownership of the descriptors."""
    data_read, data_write = os.pipe()
    error_read, error_write = os.pipe()
    try:
        child = os.fork()
        if child == 0:
            os.close(data_read)
            os.close(error_read)
            _run_helper(root, namespace, work, data_write, error_write)
    finally:
        os.close(root)
        if namespace is not None:
            os.close(namespace)
        os.close(data_write)
        os.close(error_write)
        if close_in_parent is not None:
            os.close(close_in_parent)
    failure: Exception | None = None
    try:
        with os.fdopen(data_read, "rb") as stream:
            try:
                yield stream
                stream.read()  # let it finish writing
            except (tarfile.TarError, OSError) as exc:
                failure = exc  # the helper's own report, if any, says more
    finally:
        _, status = os.waitpid(child, 0)
        with os.fdopen(error_read, "rb") as errors:
            message = errors.read().decode(errors="replace").strip()
    if status != 0 or message:
        raise UsageError(message or "copying inside the container failed")
    if failure is not None:
        raise failure


def _run_helper(
    root: int, namespace: int | None, work: Callable[[IO[bytes]], None], data: int, errors: int
) -> NoReturn:
    code = 1
    try:
        if namespace is not None:
            libc.call("setns", namespace, _CLONE_NEWNS)  # into the container's mount namespace
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")
        with os.fdopen(data, "wb") as out:
            work(out)
        code = 0
    except UsageError as err:
        os.write(errors, str(err).encode())
    except UnsafeEntry as err:
        os.write(errors, f"refused: {err}".encode())
    except OSError as exc:
        os.write(errors, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ").encode())
    except BaseException as exc:  # nothing may escape a fork into the caller's code
        os.write(errors, repr(exc).encode())
    finally:
        os._exit(code)
