"""Errors of the container runtime layer, placed in the existing hierarchy (pull/errors.py).

    TrustError
    ├── UsageError
    │   ├── ContainerNotFound     no container has that id, id prefix or name        (exit 2)
    │   └── ContainerStateError   the container is in the wrong state for the request (exit 2)
    └── RuntimeFailure            runc/crun failed, or the monitor died               (exit 1)
        ├── CommandNotFound       the container's command does not exist             (exit 127)
        └── CommandNotExecutable  the container's command cannot be executed         (exit 126)

Layer problems while building a rootfs keep their own classes (`DigestMismatch`, `UnsafeLayer`: exit 4).
`RuntimeFailure` is deliberately not in `trust/cli.py`'s exit-code table: a runtime that fails is an
internal error of the host (exit 1), not something the user or the image got wrong.
"""

from __future__ import annotations

import re

from pull.errors import DeniedError, TrustError, UsageError


class ContainerNotFound(UsageError):
    """No container matches the id, unique id prefix or name that was given."""


class ContainerStateError(UsageError):
    """The operation does not apply to the container's state (e.g. `rm` of a running container)."""


class RuntimeRefused(DeniedError):
    """The policy rule that admitted the image does not let its containers ask for this (exit 3)."""


class RuntimeFailure(TrustError):
    """The OCI runtime (runc, crun) or the container's monitor process failed."""

    def diagnostics(self) -> str:
        return "The runtime's own log is in the container directory (runtime.log); `trust rm -f` cleans up."


class CommandNotFound(RuntimeFailure):
    """The command to run is not in the image (exit 127, as docker, podman and a shell use)."""


class CommandNotExecutable(RuntimeFailure):
    """The command exists but cannot be executed: not executable, a directory (exit 126)."""


_EXEC = re.compile(r"\bexec(utable)?\b", re.IGNORECASE)
_DENIED = re.compile(r"permission denied|is a directory|exec format error", re.IGNORECASE)
_MISSING = re.compile(r"not found|no such file or directory", re.IGNORECASE)


def start_failure(message: str) -> RuntimeFailure:
    """The error for a runtime's refusal to start the container's process, from its message.

    runc: `exec: "x": executable file not found in $PATH`, `exec: "/x": stat /x: no such file or
    directory`, `exec: "/etc": permission denied`; crun: `executable file `x` not found in $PATH`.
    """
    if _EXEC.search(message):
        if _DENIED.search(message):
            return CommandNotExecutable(message)
        if _MISSING.search(message):
            return CommandNotFound(message)
    return RuntimeFailure(message)
