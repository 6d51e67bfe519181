"""Durable file writes: what survives a crash is either the old file or the new one, whole.

The content store and OCI layouts both replace small metadata files (`index.json`, `oci-layout`)
this way: write a temporary file beside the target, fsync it, rename it over the target, fsync the
directory so that the rename itself is on disk. A container's run-time files (its state, bundle
config and network record) are replaced the same way without the fsyncs (`replace_json`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (no reader ever sees a partial file) and, unless
    `durable` is False, durably: the file and the rename are fsynced."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def replace_json(path: Path, value: object) -> None:
    """Replace `path` with `value` as one line of JSON, atomically but not durably, mode 0600.

    For a container's run-time files, which are rewritten on every start: no fsync. One line
    because only `json.dumps` without indent uses the C encoder (`json.dump` never does): ten
    times faster for a config.json with its seccomp filter, ~1 ms of every start.
    """
    atomic_write(path, (json.dumps(value) + "\n").encode(), mode=0o600, durable=False)


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
