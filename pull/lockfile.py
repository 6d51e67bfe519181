"""Lock files that `trust gc` can remove: flock on a file, re-checked after locking.

Every per-blob (`ingest/<hex>.lock`) and per-chain-ID (`meta/snapshots/locks/<hex>.lock`) lock
leaves a small file behind, and a store that pulled thousands of blobs had thousands of them.
Removing a lock file is only safe if a locker that opened it just before can tell: otherwise it
would hold a lock on a file nobody else can reach, while the next locker creates and locks a new
one, and both would think they are alone. So `locked_file` checks, once it holds the lock, that the
path still names the file it locked, and starts again if not; `remove_unlocked` removes a file only
while holding its lock itself (taken without waiting: a file someone holds is left alone).

    with locked_file(store / "ingest" / f"{hex}.lock"):
        ...                                              # exclusive
    removed = remove_unlocked(store / "ingest", "*.lock")  # trust gc
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["locked_file", "remove_unlocked"]

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def locked_file(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if missing), exclusive unless `shared`; waits for it."""
    while True:
        try:
            fd = os.open(path, _FLAGS, 0o600)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # A read-only store: nobody can change it, so readers need no lock, and writers
            # fail where they write, with a clear error. Lock the file if it exists (flock works
            # on a file opened for reading), else go on without.
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                yield
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _still_linked(fd, path):
            break
        os.close(fd)  # gc removed the file while we waited for it: lock the new one
    try:
        yield
    finally:
        os.close(fd)  # closing releases the flock


def remove_unlocked(directory: Path, pattern: str) -> int:
    """Remove the files matching `pattern` in `directory` that nobody holds; returns how many."""
    removed = 0
    if not os.access(directory, os.W_OK):
        return 0  # a read-only store: nothing to tidy, and nothing grows
    for path in directory.glob(pattern):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue  # gone already, or not a plain file we made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _still_linked(fd, path):
                path.unlink()  # while holding the lock: a waiting locker sees it is gone
                removed += 1
        except OSError:  # held by someone (BlockingIOError), or removed under us
            continue
        finally:
            os.close(fd)
    return removed


def _still_linked(fd: int, path: Path) -> bool:
    opened = os.fstat(fd)
    try:
        current = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)
