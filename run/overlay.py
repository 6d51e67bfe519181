"""Overlay mounts of snapshot stacks: a description builder plus thin mount(2)/umount2(2) wrappers.

    lowers = snapshots.lowerdirs(chain_ids)                 # top-most first
    mount_overlay(rootfs, lowers, upper=c / "upper", work=c / "work")
    ...
    unmount(rootfs)

A container gets a fresh upper and work directory, so its writes never reach the snapshots. A
read-only view needs no upper: overlay wants two lower dirs then, so a single layer is bind-mounted
read-only instead (as containerd's snapshotter does).

The classic interface passes every lower dir in one option string, which the kernel caps at a page
(4096 bytes): about 50 snapshot paths. Longer stacks use the new mount API's `lowerdir+` (Linux
6.8+), one lower dir per call and no length limit. Both go through ctypes: no `mount` process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from run import libc

_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MNT_DETACH = 0x2

# The new mount API (linux/mount.h).
_FSOPEN_CLOEXEC = 0x1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 0x1
_MOUNT_ATTR_RDONLY = 0x1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100

_PAGE = 4096
# Overlay splits its options on "," and lower dirs on ":"; "\" escapes. Our paths never need them.
_SPECIAL = frozenset(",:\\\n")
# index=off: lower dirs are shared by many mounts; the inode index would tie them to one upper.
_FIXED_OPTIONS = ("index=off",)


def overlay_options(lowerdirs: Sequence[Path], upper: Path | None = None, work: Path | None = None) -> str:
    """The overlay mount option string: `lowerdir=TOP:…:BOTTOM[,upperdir=…,workdir=…],index=off`.

    `lowerdirs` are top-most first. Without an upper dir overlay needs at least two lower dirs
    (`mount_overlay` bind-mounts a single one instead).
    """
    if not lowerdirs:
        raise ValueError("an overlay needs at least one lower directory")
    if (upper is None) != (work is None):
        raise ValueError("upperdir and workdir go together")
    if upper is None and len(lowerdirs) < 2:
        raise ValueError("a read-only overlay needs two lower directories; bind-mount a single one")
    options = ["lowerdir=" + ":".join(_checked(p) for p in lowerdirs)]
    if upper is not None and work is not None:
        options += [f"upperdir={_checked(upper)}", f"workdir={_checked(work)}"]
    return ",".join([*options, *_FIXED_OPTIONS])


def mount_overlay(
    target: Path,
    lowerdirs: Sequence[Path],
    upper: Path | None = None,
    work: Path | None = None,
    *,
    readonly: bool = False,
) -> None:
    """Mount the stack `lowerdirs` (top-most first) at `target`, writable if `upper` is given."""
    if upper is None and len(lowerdirs) == 1:
        _bind_readonly(lowerdirs[0], target)
        return
    options = overlay_options(lowerdirs, upper, work)
    flags = _MS_RDONLY if readonly or upper is None else 0
    if len(options) < _PAGE:
        _call("mount", b"overlay", os.fsencode(target), b"overlay", flags, options.encode(), what=target)
    else:
        _mount_many_lowers(target, lowerdirs, upper, work, readonly=bool(flags))


def bind_mount(source: str | Path, target: Path) -> None:
    """Bind-mount `source` on `target` (a namespace file of /proc on an empty file, for one)."""
    _call("mount", os.fsencode(source), os.fsencode(target), None, _MS_BIND, None, what=target)


def unmount(target: Path, *, detach: bool = False) -> None:
    """Unmount `target`; with `detach`, lazily (the mount goes away once nothing uses it)."""
    _call("umount2", os.fsencode(target), _MNT_DETACH if detach else 0, what=target)


def is_mountpoint(path: Path) -> bool:
    """Whether something is mounted at `path` (os.path.ismount misses same-filesystem binds)."""
    wanted = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
            point = line.split(" ", 5)[4]
            if _unescape(point) == wanted:
                return True
    return False


# -- helpers ---------------------------------------------------------------------------------


def _checked(path: Path) -> str:
    text = str(path)
    if not path.is_absolute() or _SPECIAL & set(text):
        raise ValueError(f"{text!r}: overlay paths must be absolute and free of ',', ':', '\\' and newlines")
    return text


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _bind_readonly(source: Path, target: Path) -> None:
    bind_mount(source, target)
    try:
        # A bind mount ignores MS_RDONLY on creation: it takes a remount to make it read-only.
        _call(
            "mount", None, os.fsencode(target), None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None, what=target
        )
    except OSError:
        unmount(target, detach=True)
        raise


def _mount_many_lowers(
    target: Path, lowerdirs: Sequence[Path], upper: Path | None, work: Path | None, *, readonly: bool
) -> None:
    """fsopen/fsconfig/fsmount/move_mount: one `lowerdir+` per layer, so no length limit."""
    fs_fd = _call("fsopen", b"overlay", _FSOPEN_CLOEXEC, what=target)
    try:
        settings = [("lowerdir+", p) for p in lowerdirs]
        if upper is not None and work is not None:
            settings += [("upperdir", upper), ("workdir", work)]
        for key, path in settings:
            _fsconfig(fs_fd, key, _checked(path), target)
        for option in _FIXED_OPTIONS:
            key, _, value = option.partition("=")
            _fsconfig(fs_fd, key, value, target)
        _call("fsconfig", fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0, what=target, fs_fd=fs_fd)
        mount_fd = _call(
            "fsmount",
            fs_fd,
            _FSMOUNT_CLOEXEC,
            _MOUNT_ATTR_RDONLY if readonly else 0,
            what=target,
            fs_fd=fs_fd,
        )
        try:
            _call(
                "move_mount",
                mount_fd,
                b"",
                _AT_FDCWD,
                os.fsencode(target),
                _MOVE_MOUNT_F_EMPTY_PATH,
                what=target,
            )
        finally:
            os.close(mount_fd)
    finally:
        os.close(fs_fd)


def _fsconfig(fs_fd: int, key: str, value: str, target: Path) -> None:
    _call(
        "fsconfig", fs_fd, _FSCONFIG_SET_STRING, key.encode(), os.fsencode(value), 0, what=target, fs_fd=fs_fd
    )


def _call(name: str, *args: object, what: Path, fs_fd: int | None = None) -> int:
    """`libc.call`, its error naming `what` and, for the new mount API, the kernel's explanation."""
    try:
        return libc.call(name, *args)
    except OSError as exc:
        if exc.errno is None:
            raise OSError(f"{name}() is not available in this C library (needed to mount {what})") from None
        err = exc.errno
        detail = os.strerror(err)
        if fs_fd is not None:
            detail += _fs_messages(fs_fd)
        raise OSError(err, f"{name} failed for {what}: {detail}") from None


def _fs_messages(fs_fd: int) -> str:
    """The kernel's own explanation, which the new mount API queues on the fs context fd."""
    messages = []
    while True:
        try:
            message = os.read(fs_fd, 1024)
        except OSError:
            break
        messages.append(message.decode(errors="replace").strip())
    return f" ({'; '.join(messages)})" if messages else ""
