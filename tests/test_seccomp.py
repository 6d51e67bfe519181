"""The default seccomp profile as data: what it allows, what it refuses, and profile-file checks.

That runc applies it (and what it blocks inside a container) is tested in test_container_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pull.errors import UsageError
from run.bundle import RunOptions
from run.seccomp import (
    CLONE_NAMESPACE_FLAGS,
    DENIED,
    ENOSYS,
    default_profile,
    known_syscalls,
    load_profile,
    profile_for,
)


def allowed_unconditionally(profile: dict[str, Any]) -> set[str]:
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def test_the_default_denies_unknown_syscalls_with_eperm() -> None:
    profile = default_profile("x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]  # no x32: see seccomp.py


def test_no_denied_syscall_is_allowed_unconditionally() -> None:
    allowed = allowed_unconditionally(default_profile("x86_64"))
    denied = {name for names in DENIED.values() for name in names}
    assert not allowed & denied
    for name in ("unshare", "setns", "mount", "keyctl", "bpf", "io_uring_setup", "init_module", "clone"):
        assert name not in allowed
    # What ordinary programs need is there.
    for name in ("read", "openat", "execve", "mmap", "futex", "socket", "chroot", "sethostname"):
        assert name in allowed
    assert allowed | denied >= set(known_syscalls())


def test_clone_only_without_namespace_flags_and_clone3_falls_back() -> None:
    rules = {
        rule["names"][0]: rule for rule in default_profile("x86_64")["syscalls"] if len(rule["names"]) == 1
    }
    clone = rules["clone"]
    assert clone["action"] == "SCMP_ACT_ALLOW"
    assert clone["args"] == [
        {"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    # Every CLONE_NEW* flag is in the mask.
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert CLONE_NAMESPACE_FLAGS & flag
    assert rules["clone3"] == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}


def test_an_architecture_without_a_profile_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no default seccomp profile for riscv64"):
        default_profile("riscv64")


def test_containers_get_the_default_profile_unless_told_otherwise() -> None:
    assert RunOptions().seccomp == default_profile()
    assert profile_for(None) == default_profile()
    assert profile_for("unconfined") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not JSON"),
        (b"[]", "expected an object with a defaultAction"),
        (b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}', "syscalls must be a list"),
        (b" " * (1024 * 1024 + 1), "larger than"),
    ],
)
def test_bad_profile_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "profile.json"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_profile(path)


def test_a_profile_file_is_used_as_written(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    assert profile_for(str(path)) == profile
