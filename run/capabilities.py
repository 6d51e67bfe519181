"""`--cap-add` / `--cap-drop`: the capability set of a container's processes, from the default.

    capability_set(DEFAULT, add=("NET_ADMIN",), drop=("ALL",))   # ("CAP_NET_ADMIN",)

Docker's rules: names with or without `CAP_`, any case; `ALL` in `--cap-drop` empties the set before
`--cap-add` applies, `ALL` in `--cap-add` is every capability (minus what is dropped by name). An
unknown name is refused: a typo must not silently leave a capability in or out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pull.errors import UsageError

ALL_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
"""Linux 6.1's capabilities (include/uapi/linux/capability.h), in number order."""


def capability_name(text: str) -> str:
    """`net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `all` → `ALL`."""
    name = text.strip().upper()
    if name == "ALL":
        return name
    name = name if name.startswith("CAP_") else f"CAP_{name}"
    if name not in ALL_CAPABILITIES:
        raise UsageError(f"unknown capability {text!r}: use a name like NET_ADMIN, or ALL")
    return name


def capability_set(
    default: Sequence[str], *, add: Iterable[str] = (), drop: Iterable[str] = ()
) -> tuple[str, ...]:
    """The resulting set, in the kernel's order."""
    added = {capability_name(c) for c in add}
    dropped = {capability_name(c) for c in drop}
    chosen = set() if "ALL" in dropped else set(default)
    chosen |= set(ALL_CAPABILITIES) if "ALL" in added else added
    chosen -= dropped
    return tuple(c for c in ALL_CAPABILITIES if c in chosen)
