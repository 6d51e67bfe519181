"""The seccomp filter every container gets unless the user opts out (`--security-opt seccomp=…`).

Default deny: a system call not on the allow list fails with EPERM, so a syscall added to the
kernel after this list was written is refused rather than silently allowed. The allow list is every
syscall name in `syscalls.txt` (the x86_64, i386 and generic tables of the Linux 6.1 UAPI headers)
except the ones below, which a container has no business making: they reach kernel-global state
(modules, keyrings, clocks, swap, reboot), build new namespaces or mounts (the escape toolkit), or
are large attack surfaces rarely needed by services (bpf, perf events, io_uring, userfaultfd).
Most of them also need a capability the container does not hold; seccomp is the second wall.

Two calls are filtered by argument, as Docker and Podman do:
- `clone` only without namespace flags (`unshare -U` needs no capability, so this matters);
  `clone3` passes its flags in memory seccomp cannot read, so it fails with ENOSYS and libc falls
  back to `clone`;
- `personality` only with the harmless personas (Linux, 32-bit address space, uname26 tricks).

A profile file given with `--security-opt seccomp=FILE` replaces this one as is (OCI
`linux.seccomp` JSON); `seccomp=unconfined` removes the filter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pull.errors import UsageError
from pull.userfile import open_regular_file

EPERM = 1
ENOSYS = 38

MAX_PROFILE_BYTES = 1024 * 1024

DENIED: Mapping[str, tuple[str, ...]] = {
    "kernel modules and kexec": (
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "query_module",
        "get_kernel_syms",
        "kexec_load",
        "kexec_file_load",
    ),
    "host-wide state": (
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "settimeofday",
        "stime",
        "clock_settime",
        "clock_settime64",
        "syslog",
        "quotactl",
        "quotactl_fd",
        "nfsservctl",
        "vhangup",
        "sysfs",
        "_sysctl",
        "uselib",
        "ustat",
    ),
    "kernel keyrings (not namespaced)": ("add_key", "request_key", "keyctl"),
    "namespaces and mounts": (
        "unshare",
        "setns",
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
    ),
    "large attack surfaces": (
        "bpf",
        "perf_event_open",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "userfaultfd",
        "lookup_dcookie",
        "open_by_handle_at",
        "name_to_handle_at",
        "kcmp",
        "process_vm_readv",
        "process_vm_writev",
        "move_pages",
        "migrate_pages",
        "iopl",
        "ioperm",
        "vm86",
        "vm86old",
        "modify_ldt",
    ),
    "filtered by argument below": ("clone", "clone3", "personality"),
}

CLONE_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""
ALLOWED_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
"""PER_LINUX, UNAME26 variants, and 0xffffffff (query the current persona)."""

# x32 (64-bit registers, 32-bit pointers) is left out: almost no program uses that ABI, distribution
# kernels boot with it off, and its syscall table (numbers with bit 30 set) is a third copy of the
# filter for the runtime to build (~6 ms of runc's and ~13 ms of crun's `create`). Without it, an
# x32 system call matches no architecture of the filter and is refused like any unlisted call.
_ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


@cache
def known_syscalls() -> tuple[str, ...]:
    text = (Path(__file__).with_name("syscalls.txt")).read_text(encoding="ascii")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def default_profile(machine: str | None = None) -> dict[str, Any]:
    """The default `linux.seccomp` object for this host's architecture."""
    denied = {name for names in DENIED.values() for name in names}
    allowed = [name for name in known_syscalls() if name not in denied]
    machine = machine or os.uname().machine  # platform.machine(), without its ~2 ms import
    architectures = _ARCHITECTURES.get(machine)
    if architectures is None:
        raise UsageError(
            f"no default seccomp profile for {machine}: "
            "pass --security-opt seccomp=FILE or seccomp=unconfined"
        )
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures,
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
                ],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            *(
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
                }
                for persona in ALLOWED_PERSONALITIES
            ),
        ],
    }


def load_profile(path: Path) -> dict[str, Any]:
    """A user's profile file, checked for shape (the runtime checks the rest when it loads it)."""
    try:
        with open_regular_file(path) as file:
            data = file.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read seccomp profile {path}: {exc.strerror}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise UsageError(f"seccomp profile {path} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        profile = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"seccomp profile {path} is not JSON: {exc}") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        raise UsageError(f"seccomp profile {path}: expected an object with a defaultAction")
    if not isinstance(profile.get("syscalls", []), list):
        raise UsageError(f"seccomp profile {path}: syscalls must be a list")
    return profile


def profile_for(option: str | None) -> dict[str, Any] | None:
    """`--security-opt seccomp=VALUE`: None → default; `unconfined` → no filter; else a file."""
    if option is None:
        return default_profile()
    if option == "unconfined":
        return None
    return load_profile(Path(option))
