"""Opening a file a user named (a policy, a key, a certificate, a trusted root, a predicate).

`open(path)` blocks forever on a FIFO with no writer, and reading a device or a socket is never
what the user meant. The one pipe that is welcome is the shell's process substitution
(`--policy <(vault read …)`): `/dev/fd/N` naming an anonymous pipe the caller already holds, whose
writer the shell started; it is read as before.

`open_regular_file` opens without blocking (`O_NONBLOCK`, which a regular file ignores), checks
with `fstat` on the open descriptor (no window between a check and the open) and refuses anything
but a regular file with an `OSError` whose `strerror` says so, so every caller's existing
`except OSError` turns it into its own one-line error (exit 2).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path


def open_regular_file(path: str | Path) -> io.BufferedReader:
    """`open(path, "rb")` for regular files only; a FIFO, device, socket or directory is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode) and not (stat.S_ISFIFO(mode) and _inherited_pipe(path)):
            raise OSError(errno.EINVAL, f"not a regular file ({_kind(mode)})", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _inherited_pipe(path: str | Path) -> bool:
    """`/dev/fd/N` (or `/proc/self/fd/N`) that is an anonymous pipe, as `<(command)` gives."""
    text = str(path)
    if not text.startswith(("/dev/fd/", "/proc/self/fd/")):
        return False
    try:
        return os.readlink(text).startswith("pipe:")
    except OSError:
        return False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
