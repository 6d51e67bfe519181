"""`--privileged` (allowed per policy rule), user namespaces (`--userns`, `--uidmap`) and `attach` to a
container without a terminal, end to end through `trust.cli.app.main` on real runc and crun, as root.

One busybox image is pushed under two repositories: the policy allows privileged containers for the
first only (`runtime: {allow-privileged: true}`); both are accepted without signatures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.images import BUSYBOX_APPLETS, build_image, busybox_layer, push_image
from support.registry import Registry

from trust.cli.app import main

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="containers need root (mounts, namespaces, cgroups)"
)

RUNTIMES = ("runc", "crun")
CAP_SYS_ADMIN = 1 << 21


@dataclass(frozen=True)
class Setup:
    store: Path
    policy: Path
    allowed_ref: str
    """Under the scope whose rule says `runtime: {allow-privileged: true}`."""
    plain_ref: str
    """Under a scope whose rule does not."""

    def trust(self, *args: str) -> int:
        return main([args[0], "--store", str(self.store), *args[1:]])

    def admit(self, command: str, *args: str) -> int:
        return main([command, "--store", str(self.store), "--policy", str(self.policy), *args])

    @property
    def containers(self) -> Path:
        return self.store / "meta" / "containers"

    def records(self) -> list[str]:
        if not self.containers.exists():
            return []
        return [p.name for p in self.containers.iterdir() if not p.name.startswith(".")]


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("security-flags")
    image = build_image(
        [busybox_layer(applets=(*BUSYBOX_APPLETS, "id", "stat", "touch", "sleep", "grep"))],
        cmd=["sh", "-c", "echo image cmd"],
    )
    allowed = push_image(registry, "t/sec-privileged", image, tag="v1")
    plain = push_image(registry, "t/sec-plain", image, tag="v1")
    policy = folder / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "rules:\n"
        f"  - scope: {registry.host}/t/sec-privileged\n"
        "    insecure-accept-anything: true\n"
        "    runtime:\n"
        "      allow-privileged: true\n"
        f"  - scope: {registry.host}/t/sec-plain\n    insecure-accept-anything: true\n"
        "default:\n  reject: true\n"
    )
    return Setup(folder / "store", policy, allowed.by_digest, plain.by_digest)


@pytest.fixture
def cli(setup: Setup) -> Iterator[Setup]:
    """Containers a test leaves behind are removed; nothing of the store may stay mounted."""
    before = set(setup.records())
    yield setup
    for leftover in set(setup.records()) - before:
        assert setup.trust("rm", "--force", leftover) == 0
    assert mounts_of(setup.store) == []


def mounts_of(store: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line for line in mountinfo if str(store) in line]


def status_field(text: str, name: str) -> str:
    return next(line.split()[1] for line in text.splitlines() if line.startswith(f"{name}:"))


# -- --privileged ------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("command", ["run", "create"])
def test_privileged_is_denied_unless_the_rule_allows_it_and_nothing_is_created(
    cli: Setup, capfd: pytest.CaptureFixture[str], runtime: str, command: str
) -> None:
    capfd.readouterr()
    code = cli.admit(command, "--rm", "--privileged", "--runtime", runtime, cli.plain_ref, "true")
    err = capfd.readouterr().err
    assert code == 3, err
    assert err.startswith("trust: error: --privileged is refused")
    assert "/t/sec-plain" in err and str(cli.policy) in err and "allow-privileged: true" in err
    assert cli.records() == []
    # Nothing mounted, no network namespace either (the default network is the bridge), so no
    # veth: its container end lives in that namespace. (Counting the host's links would count
    # the veths of tests running beside this one.)
    assert mounts_of(cli.store) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_privileged_allowed_by_the_rule_has_every_capability_and_no_seccomp_filter(
    cli: Setup, capfd: pytest.CaptureFixture[str], runtime: str
) -> None:
    script = "grep -E '^(CapEff|Seccomp):' /proc/self/status; grep -c . /proc/kcore 2>/dev/null; true"
    capfd.readouterr()
    assert (
        cli.admit("run", "--rm", "--privileged", "--runtime", runtime, cli.allowed_ref, "sh", "-c", script)
        == 0
    )
    out = capfd.readouterr().out
    assert int(status_field(out, "CapEff"), 16) & CAP_SYS_ADMIN
    assert status_field(out, "Seccomp") == "0"
    # The same image without --privileged: docker's default set (no SYS_ADMIN) and the filter (mode 2).
    assert cli.admit("run", "--rm", "--runtime", runtime, cli.allowed_ref, "sh", "-c", script) == 0
    out = capfd.readouterr().out
    assert not int(status_field(out, "CapEff"), 16) & CAP_SYS_ADMIN
    assert status_field(out, "Seccomp") == "2"


def test_privileged_unmasks_proc_and_makes_sys_writable(
    cli: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    script = (
        "grep -c ' /sys sysfs rw,' /proc/self/mounts; grep -c ' /proc/sys proc ro,' /proc/self/mounts; true"
    )
    capfd.readouterr()
    assert cli.admit("run", "--rm", "--privileged", cli.allowed_ref, "sh", "-c", script) == 0
    assert capfd.readouterr().out.split() == ["1", "0"]
    assert cli.admit("run", "--rm", cli.allowed_ref, "sh", "-c", script) == 0
    assert capfd.readouterr().out.split() == ["0", "1"]


def test_privileged_still_honours_cap_drop(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    code = cli.admit(
        "run",
        "--rm",
        "--privileged",
        "--cap-drop",
        "SYS_ADMIN",
        cli.allowed_ref,
        "grep",
        "^CapEff:",
        "/proc/self/status",
    )
    assert code == 0
    assert not int(status_field(capfd.readouterr().out, "CapEff"), 16) & CAP_SYS_ADMIN


def test_a_runtime_section_with_an_unknown_field_is_refused_at_load(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - scope: example.com/a\n    insecure-accept-anything: true\n"
        "    runtime:\n      allow-privilege: true\n"
        "default:\n  reject: true\n"
    )
    assert main(["policy", "check", str(policy)]) == 2
    err = capfd.readouterr().err
    assert f"{policy}:6" in err and "allow-privilege" in err and "allow-privileged" in err
