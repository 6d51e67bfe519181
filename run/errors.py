"""Errors of the container runtime layer, placed in the existing hierarchy (pull/errors.py).

    TrustError
    ├── UsageError
    │   ├── ContainerNotFound     no container has that id, id prefix or name        (exit 2)
    │   └── ContainerStateError   the container is in the wrong state for the request (exit 2)
    └── RuntimeFailure            runc/crun failed, or the monitor died               (exit 1)

Layer problems while building a rootfs keep their own classes (`DigestMismatch`, `UnsafeLayer`: exit 4).
`RuntimeFailure` is deliberately not in `trust/cli.py`'s exit-code table: a runtime that fails is an
internal error of the host (exit 1), not something the user or the image got wrong.
"""

from __future__ import annotations

from pull.errors import TrustError, UsageError


class ContainerNotFound(UsageError):
    """No container matches the id, unique id prefix or name that was given."""


class ContainerStateError(UsageError):
    """The operation does not apply to the container's state (e.g. `rm` of a running container)."""


class RuntimeFailure(TrustError):
    """The OCI runtime (runc, crun) or the container's monitor process failed."""

    def diagnostics(self) -> str:
        return "The runtime's own log is in the container directory (runtime.log); `trust rm -f` cleans up."
