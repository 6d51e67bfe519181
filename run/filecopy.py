"""`trust cp`: copy files between the host and a container, resolving container paths inside it.

    copy_out(container, "/etc/app/conf", Path("./conf"))     # CONTAINER:PATH → HOSTPATH
    copy_in(container, Path("./conf"), "/etc/app/conf")      # HOSTPATH → CONTAINER:PATH

A container path is never resolved on the host: a forked helper joins the container's mount
namespace (setns: its root becomes the container's root, with its volumes and tmpfs mounts) and
chroots there, so every symlink, `..` and mount is followed exactly as in the container and nothing
can lead outside it. The helper and trust exchange a tar stream over a pipe. What comes out of a
container is untrusted: it is extracted on the host through `safe_filter` (nothing outside the
destination, even through a symlink; no devices, no setuid bits); what goes in is extracted by
the helper, inside the container, with the same filter (`safe_filter`).

Docker's rules for the destination: an existing directory receives the source under its own name;
otherwise the source is written as the destination path (whose parent must exist). Symlinks are
copied as symlinks. The container must exist in the runtime (created, running or paused): an exited
container's root filesystem is not mounted.
"""

from __future__ import annotations

import contextlib
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
                archive.extractall(staging, filter=safe_filter)
        except tarfile.FilterError as err:
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
                archive.extractall(staging, filter=safe_filter)
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
            archive.extractall(volume, filter=_image_filter)
    except tarfile.FilterError as err:
        raise UsageError(f"refused to copy {path} of the image into its volume: {err}") from None


def _image_filter(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """`safe_filter`'s checks, keeping the image's modes (its /tmp stays 1777, its setuid files
    stay setuid as they were in the image; the volumes directory is the store's, mode 0700)."""
    return safe_filter(member, destination).replace(mode=member.mode, deep=False)


def safe_filter(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """tarfile's `tar` filter (nothing lands outside the destination, even through a symlink that
    was just extracted; no setuid, setgid or sticky bits), and no device nodes or FIFOs. Symlinks,
    absolute ones included, are kept as symlinks, as `docker cp` does."""
    if member.isdev():
        raise tarfile.SpecialFileError(member)
    return tarfile.tar_filter(member, destination)


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
    except tarfile.FilterError as err:
        os.write(errors, f"refused: {err}".encode())
    except OSError as exc:
        os.write(errors, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ").encode())
    except BaseException as exc:  # nothing may escape a fork into the caller's code
        os.write(errors, repr(exc).encode())
    finally:
        os._exit(code)
