"""The C library calls that Python 3.11's `os` lacks (unshare, setns, prctl, syncfs, mount, and the
new mount API through `syscall`), through ctypes: one loaded library, one way to turn -1 and errno
into OSError."""

from __future__ import annotations

import ctypes
import os

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

_library: ctypes.CDLL | None = None


def call(name: str, *args: object) -> int:
    """`name(*args)`; its result. Raises OSError(errno, "NAME: reason") if it returns a negative
    number, and OSError without errno if this C library has no such function."""
    global _library
    if _library is None:
        _library = ctypes.CDLL(None, use_errno=True)
    function = getattr(_library, name, None)
    if function is None:
        raise OSError(f"{name}() is not available in this C library")
    result = int(function(*args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return result


def become_subreaper() -> None:
    """Adopt this process's orphaned descendants (they are re-parented here, not to init)."""
    call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
