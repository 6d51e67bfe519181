"""Containers on real runc and real overlayfs, as root: isolation, limits, lifecycle, cleanup.

One busybox image is pushed to the test registry, pulled through the verifying pipeline and turned
into an `AdmittedImage` by hand (admission itself is tested elsewhere), once per module. Each test's
containers are force-removed at teardown, which then checks that nothing is left mounted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from support.images import BUSYBOX_APPLETS, Layer, build_image, busybox_layer, push_image
from support.registry import Registry

from policy.admitted import AdmittedImage, Decision
from pull.errors import DigestMismatch, InvalidManifest, UsageError
from pull.pipeline import PullResult, pull
from pull.records import replace
from pull.reference import Reference
from pull.registry import RegistryClient
from pull.store import ContentStore
from run.bundle import (
    CAPABILITIES,
    HOST_NOFILE_CEILING,
    MASKED_PATHS,
    READONLY_PATHS,
    Limits,
    Network,
    RunOptions,
    build_spec,
    check_workdir,
    parse_cpus,
    parse_memory,
    resolve_process,
    resolve_user,
)
from run.containers import Container, ContainerStore, State
from run.errors import ContainerNotFound, ContainerStateError
from run.monitor import forward_signals
from run.rootfs import open_snapshots, prepare_layers, read_image_file
from run.runtime import CgroupMode, Runtime, cgroup_dirs, cgroup_mode

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="containers need root (mounts, namespaces, cgroups)"
)

APPLETS = (*BUSYBOX_APPLETS, "head", "tail", "wc", "grep", "touch", "seq")
IMAGE_COMMAND = ("sh", "-c", "echo from the image")


def admitted(result: PullResult) -> AdmittedImage:
    return AdmittedImage(
        repository=result.reference.name,
        manifest_digest=result.manifest.digest,
        config_digest=result.config_descriptor.digest,
        config=result.config,
        layers=result.image_manifest.layers,
        decision=Decision(rule="test", mode="enforce", allowed=True),
    )


def pull_busybox(registry: Registry, store_path: Path, repository: str) -> tuple[ContentStore, AdmittedImage]:
    image = build_image(
        [busybox_layer(applets=APPLETS), Layer.from_files({"etc/motd": b"top layer\n"})],
        cmd=list(IMAGE_COMMAND),
        platform="linux/amd64",
    )
    pushed = push_image(registry, repository, image)
    content = ContentStore.open(store_path)
    with RegistryClient(registry.host) as client:
        result = pull(Reference.parse(pushed.by_digest), content, client)
    return content, admitted(result)


@pytest.fixture(scope="module")
def pulled(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ContentStore, AdmittedImage]:
    return pull_busybox(registry, tmp_path_factory.mktemp("runtime") / "store", "t/runtime-busybox")


@pytest.fixture
def image(pulled: tuple[ContentStore, AdmittedImage]) -> AdmittedImage:
    return pulled[1]


@pytest.fixture
def containers(pulled: tuple[ContentStore, AdmittedImage]) -> Iterator[ContainerStore]:
    store = ContainerStore(pulled[0])
    before = {entry.name for entry in store.root.iterdir()}
    yield store
    for entry in store.root.iterdir():
        if entry.name not in before and not entry.name.startswith("."):
            store.remove(entry.name, force=True)
    assert mounts_under(pulled[0].root) == []


def mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        return [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]


def run(
    containers: ContainerStore,
    image: AdmittedImage,
    capfd: pytest.CaptureFixture[str],
    *command: str,
    **options: Any,
) -> tuple[int, str, str]:
    """Run in the foreground; (exit code, stdout, stderr) of the container."""
    capfd.readouterr()
    exited = containers.run(image, RunOptions(command=command, **options))
    out, err = capfd.readouterr()
    return exited.exit_code, out, err


def logs(containers: ContainerStore, ref: str) -> tuple[str, str]:
    out, err = b"", b""
    for stream, chunk in containers.logs(ref):
        if stream == "stdout":
            out += chunk
        else:
            err += chunk
    return out.decode(), err.decode()


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, parent pid, …"""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: its parent may not be us)."""
    try:
        return stat_fields(pid)[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# -- what runs inside ---------------------------------------------------------------------------


def test_pid_1_is_the_image_command(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(containers, image, capfd, "sh", "-c", "echo $$")
    assert (code, out) == (0, "1\n")


def test_the_image_cmd_runs_when_no_command_is_given(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(containers, image, capfd)
    assert (code, out) == (0, "from the image\n")


def test_host_processes_are_invisible(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(containers, image, capfd, "sh", "-c", "sleep 5 & sleep 0.2; ps; true")
    assert code == 0
    rows = [line.split(None, 2) for line in out.strip().splitlines()[1:]]
    # Only the container's own: sh (PID 1), sleep and ps. The host has many more.
    assert sorted(row[2].split()[0].strip("{}") for row in rows) == ["ps", "sh", "sleep"]
    assert min(int(row[0]) for row in rows) == 1
    assert len(os.listdir("/proc")) > len(rows) and "pytest" not in out


def test_hostname_is_the_short_id_and_not_the_hosts(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    container = containers.run_detached(
        image, RunOptions(command=("sh", "-c", "hostname; cat /etc/hostname"))
    )
    containers.wait(container.id, timeout=10)
    out, _ = logs(containers, container.id)
    assert out == f"{container.short_id}\n{container.short_id}\n"
    assert container.short_id != socket.gethostname()


def test_network_is_loopback_only_unless_host_is_asked_for(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(containers, image, capfd, "cat", "/proc/net/dev")
    interfaces = {line.split(":")[0].strip() for line in out.splitlines()[2:]}
    assert interfaces == {"lo"}
    _, out, _ = run(containers, image, capfd, "cat", "/proc/net/dev", network=Network.HOST)
    host = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    assert {line.split(":")[0].strip() for line in out.splitlines()[2:]} == host


def test_writes_stay_in_the_container(
    containers: ContainerStore, image: AdmittedImage, pulled: tuple[ContentStore, AdmittedImage]
) -> None:
    first = containers.run_detached(
        image, RunOptions(command=("sh", "-c", "echo secret > /marker && echo more >> /etc/motd"))
    )
    done = containers.wait(first.id, timeout=10)
    assert done is not None and done.exit_code == 0
    assert (first.upper / "marker").read_text() == "secret\n"
    assert (first.upper / "etc" / "motd").read_text() == "top layer\nmore\n"
    snapshots = open_snapshots(pulled[0])
    for lower in prepare_layers(image, pulled[0], snapshots):  # already unpacked: just the dirs
        assert not (lower / "marker").exists()
        if (lower / "etc" / "motd").exists():
            assert (lower / "etc" / "motd").read_text() == "top layer\n"
    second = containers.run_detached(image, RunOptions(command=("sh", "-c", "cat /marker; cat /etc/motd")))
    containers.wait(second.id, timeout=10)
    out, err = logs(containers, second.id)
    assert out == "top layer\n" and "No such file" in err


# -- limits --------------------------------------------------------------------------------------


def test_memory_limit_kills_a_process_that_goes_over_it(
    containers: ContainerStore, image: AdmittedImage
) -> None:
    # `tail` keeps the last line in memory, and /dev/zero has no newline: it allocates 100 MiB.
    container = containers.run_detached(
        image,
        RunOptions(command=("sh", "-c", "head -c 100m /dev/zero | tail"), limits=Limits(memory=32 << 20)),
    )
    done = containers.wait(container.id, timeout=30)
    assert done is not None and done.state is State.EXITED
    assert done.exit_code == 137 and done.oom_killed


def test_memory_limit_leaves_room_below_it(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(
        containers, image, capfd, "sh", "-c", "head -c 4m /dev/zero | tail", limits=Limits(memory=64 << 20)
    )
    assert code == 0


def test_pids_limit_caps_a_fork_bomb(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    script = "for i in $(seq 1 40); do sleep 30 & done; echo all started"
    code, out, err = run(containers, image, capfd, "sh", "-c", script, limits=Limits(pids=10))
    assert (code, out) == (2, "") and "can't fork" in err  # busybox sh gives up when fork fails
    assert run(containers, image, capfd, "sh", "-c", script)[:2] == (0, "all started\n")


def test_cpu_quota_is_written_to_the_spec_and_accepted(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        containers, image, capfd, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", limits=Limits(cpus=0.5)
    )
    if cgroup_mode() is not CgroupMode.UNIFIED:
        assert (code, out) == (0, "50000\n")


# -- lifecycle -----------------------------------------------------------------------------------


def test_exit_codes_propagate(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run(containers, image, capfd, "sh", "-c", "exit 7")[0] == 7
    # PID 1 cannot be killed from inside its namespace: from outside, SIGKILL gives 128 + 9.
    container = containers.run_detached(image, RunOptions(command=("sleep", "30")))
    containers.kill(container.id, signal.SIGKILL)
    done = containers.wait(container.id, timeout=10)
    assert done is not None and done.exit_code == 137 and not done.oom_killed


def test_create_start_and_the_states_in_between(containers: ContainerStore, image: AdmittedImage) -> None:
    created = containers.create(image, RunOptions(command=("sh", "-c", "sleep 30"), name="lifecycle"))
    assert created.state is State.CREATED and created.command == ("sh", "-c", "sleep 30")
    assert containers.get("lifecycle").id == created.id
    assert containers.get(created.id[:10]).id == created.id
    runtime_state = containers.runtime("runc").state(created.id)
    assert runtime_state is not None and runtime_state.status == "created"
    with pytest.raises(UsageError, match="in use"):
        containers.create(image, RunOptions(command=("true",), name="lifecycle"))

    running = containers.start("lifecycle")
    assert running.state is State.RUNNING and running.started is not None
    with pytest.raises(ContainerStateError, match="only a created container"):
        containers.start("lifecycle")
    # A fresh store object (another CLI invocation) sees the same state.
    assert ContainerStore(containers.content).get("lifecycle").state is State.RUNNING
    assert [c.id for c in containers.list()].count(created.id) == 1

    stopped = containers.stop("lifecycle", timeout=1)  # PID 1 without a handler ignores SIGTERM
    assert stopped is not None and stopped.state is State.EXITED and stopped.exit_code == 137
    assert created.id not in [c.id for c in containers.list()]
    assert created.id in [c.id for c in containers.list(all=True)]


def test_detached_exit_code_is_recorded(containers: ContainerStore, image: AdmittedImage) -> None:
    container = containers.run_detached(
        image, RunOptions(command=("sh", "-c", "echo out; echo err >&2; exit 5"))
    )
    assert container.state in (State.RUNNING, State.EXITED)  # it may well be done already
    assert container.started is not None
    done = containers.wait(container.id, timeout=10)
    assert done is not None and (done.state, done.exit_code, done.oom_killed) == (State.EXITED, 5, False)
    assert done.finished is not None and not done.rootfs.is_mount()
    assert logs(containers, container.id) == ("out\n", "err\n")
    listed = {c.id: c for c in containers.list(all=True)}
    assert listed[container.id].exit_code == 5
    assert not (Path(containers.runtime("runc").root) / container.id).exists()


def test_the_monitor_is_a_child_only_of_a_caller_that_exits_soon(
    containers: ContainerStore, image: AdmittedImage
) -> None:
    """A caller that lives on must not collect a zombie per container: the monitor is forked twice
    and re-parented. The `trust` executable exits with its command: one fork, its child."""
    options = RunOptions(command=("sleep", "30"))
    lives_on = containers.run_detached(image, options)
    assert lives_on.monitor_pid is not None and int(stat_fields(lives_on.monitor_pid)[1]) != os.getpid()
    exits_soon = ContainerStore(containers.content, exits_soon=True).run_detached(image, options)
    assert exits_soon.monitor_pid is not None and int(stat_fields(exits_soon.monitor_pid)[1]) == os.getpid()
    for container in (lives_on, exits_soon):
        containers.remove(container.id, force=True)
    os.waitpid(exits_soon.monitor_pid, 0)  # ours to collect: this test runner lives on
    assert gone(lives_on.monitor_pid) and gone(exits_soon.monitor_pid)


def test_logs_follow_until_exit(containers: ContainerStore, image: AdmittedImage) -> None:
    container = containers.run_detached(
        image, RunOptions(command=("sh", "-c", "echo one; sleep 0.3; echo two; sleep 0.3; echo three"))
    )
    chunks = b"".join(
        chunk for stream, chunk in containers.logs(container.id, follow=True) if stream == "stdout"
    )
    assert chunks == b"one\ntwo\nthree\n"


def test_pause_freezes_and_unpause_resumes(containers: ContainerStore, image: AdmittedImage) -> None:
    script = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done"
    container = containers.run_detached(image, RunOptions(command=("sh", "-c", script)))
    counter = container.rootfs / "tmp" / "count"

    def count() -> int:
        text = counter.read_text().strip() if counter.exists() else ""
        return int(text) if text else 0

    wait_for(lambda: count() > 3)
    paused = containers.pause(container.id)
    assert paused.state is State.PAUSED
    assert containers.get(container.id).state is State.PAUSED
    frozen = count()
    time.sleep(0.3)
    assert count() == frozen
    with pytest.raises(ContainerStateError):
        containers.pause(container.id)

    assert containers.unpause(container.id).state is State.RUNNING
    wait_for(lambda: count() > frozen + 3)
    # Stopping a paused container works too (it is thawed so it can die).
    containers.pause(container.id)
    done = containers.stop(container.id, timeout=1)
    assert done is not None and done.state is State.EXITED


def test_stop_sends_sigkill_after_the_timeout_when_sigterm_is_ignored(
    containers: ContainerStore, image: AdmittedImage
) -> None:
    container = containers.run_detached(
        image, RunOptions(command=("sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"))
    )
    started = time.monotonic()
    done = containers.stop(container.id, timeout=1)
    elapsed = time.monotonic() - started
    assert done is not None and done.exit_code == 137
    assert 1.0 <= elapsed < 8
    assert not done.rootfs.is_mount() and mounts_under(container.directory) == []
    assert not containers.runtime("runc").state_dir(container.id).exists()


def test_stop_is_quick_when_the_process_handles_sigterm(
    containers: ContainerStore, image: AdmittedImage
) -> None:
    container = containers.run_detached(
        image, RunOptions(command=("sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done"))
    )
    time.sleep(0.2)  # let the shell install its trap
    started = time.monotonic()
    done = containers.stop(container.id, timeout=10)
    assert done is not None and done.exit_code == 3
    assert time.monotonic() - started < 5


def test_rm_refuses_a_running_container_without_force(
    containers: ContainerStore, image: AdmittedImage
) -> None:
    container = containers.run_detached(image, RunOptions(command=("sleep", "30")))
    with pytest.raises(ContainerStateError, match="stop it first, or use rm -f"):
        containers.remove(container.id)
    assert containers.get(container.id).state is State.RUNNING

    containers.remove(container.id, force=True)
    assert not container.directory.exists()
    assert mounts_under(container.directory) == []
    assert not containers.runtime("runc").state_dir(container.id).exists()
    with pytest.raises(ContainerNotFound):
        containers.get(container.id)


def test_auto_remove_leaves_nothing(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    containers.root.joinpath(".lock").touch()  # the store's lock file may be made by the first create
    before = set(containers.root.iterdir())
    code, out, _ = run(containers, image, capfd, "sh", "-c", "echo bye; exit 4", auto_remove=True)
    assert (code, out) == (4, "bye\n")
    assert set(containers.root.iterdir()) == before
    assert mounts_under(containers.root) == []

    detached = containers.run_detached(image, RunOptions(command=("true",), auto_remove=True))
    assert containers.wait(detached.id, timeout=10) is None
    assert not detached.directory.exists()


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_an_exited_container_leaves_no_cgroup_or_runtime_state(
    containers: ContainerStore, image: AdmittedImage, runtime: str
) -> None:
    # The monitor removes them itself once it has reaped init (no `runtime delete`): check it did.
    container = containers.run_detached(image, RunOptions(command=("true",), runtime=runtime))
    done = containers.wait(container.id, timeout=30)
    assert done is not None and done.exit_code == 0
    assert not containers.runtime(runtime).state_dir(container.id).exists()
    assert not any(path.exists() for path in cgroup_dirs(container.cgroups_path))
    containers.remove(container.id)


def test_a_cgroup_that_will_not_go_is_left_to_the_runtime(
    containers: ContainerStore, image: AdmittedImage
) -> None:
    from run import monitor

    container = containers.run_detached(image, RunOptions(command=("sleep", "30")))
    runtime = containers.runtime("runc")
    # A cgroup with a process in it cannot be removed (EBUSY): the quick path gives up, keeps the
    # runtime's state for `runtime delete`, and removes nothing the runtime still needs.
    assert monitor._remove_exited(container, runtime) is False
    assert runtime.state_dir(container.id).exists()
    assert containers.get(container.id).state is State.RUNNING
    containers.remove(container.id, force=True)
    assert not runtime.state_dir(container.id).exists()
    assert not any(path.exists() for path in cgroup_dirs(container.cgroups_path))


def test_rm_force_cleans_up_after_a_crashed_runtime(containers: ContainerStore, image: AdmittedImage) -> None:
    container = containers.run_detached(image, RunOptions(command=("sleep", "30")))
    assert container.monitor_pid is not None and container.pid is not None
    # The monitor and the container die, and the runtime's state disappears with them.
    os.kill(container.monitor_pid, signal.SIGKILL)
    os.kill(container.pid, signal.SIGKILL)
    monitor_pid, pid = container.monitor_pid, container.pid
    wait_for(lambda: gone(pid) and gone(monitor_pid))
    state_dir = containers.runtime("runc").state_dir(container.id)
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    assert container.rootfs.is_mount()

    listed = containers.get(container.id)
    assert listed.state is State.EXITED and listed.exit_code is None and listed.error
    containers.remove(container.id, force=True)
    assert not container.directory.exists() and mounts_under(containers.root) == []


def test_unknown_containers_are_usage_errors(containers: ContainerStore) -> None:
    with pytest.raises(ContainerNotFound, match="no such container"):
        containers.get("nothing-here")


def test_user_and_workdir_are_applied(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        containers, image, capfd, "sh", "-c", "id; pwd; echo $HOME", user="nobody", workdir="/tmp"
    )
    assert code == 0
    assert out.splitlines() == ["uid=65534(nobody) gid=65534(nogroup)", "/tmp", "/"]
    code, out, _ = run(containers, image, capfd, "id", user="1234:5678")
    assert out.strip() == "uid=1234 gid=5678"


def test_a_corrupted_layer_fails_create_with_nothing_left(registry: Registry, tmp_path: Path) -> None:
    content, image = pull_busybox(registry, tmp_path / "store", "t/runtime-corrupt")
    blob = content.blob_path(image.layers[0].digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    containers = ContainerStore(content)
    with pytest.raises(DigestMismatch):
        containers.create(image, RunOptions(command=("true",)))
    snapshots = open_snapshots(content)
    assert snapshots.committed() == []
    assert os.listdir(snapshots.root / "tmp") == []
    assert list(containers.root.iterdir()) == []
    assert mounts_under(content.root) == []


# -- crun ----------------------------------------------------------------------------------------


def test_crun_runs_the_image_command_as_pid_1(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    # On this project's hybrid v1/v2 hosts crun only works in its v1-only mount namespace view.
    code, out, _ = run(containers, image, capfd, "sh", "-c", "echo $$; hostname; exit 3", runtime="crun")
    lines = out.splitlines()
    assert code == 3 and lines[0] == "1" and lines[1] != os.uname().nodename


def test_crun_applies_memory_and_pids_limits(
    containers: ContainerStore, image: AdmittedImage, capfd: pytest.CaptureFixture[str]
) -> None:
    container = containers.run_detached(
        image,
        RunOptions(
            command=("sh", "-c", "head -c 100m /dev/zero | tail"),
            runtime="crun",
            limits=Limits(memory=32 << 20),
        ),
    )
    done = containers.wait(container.id, timeout=30)
    assert done is not None and done.exit_code == 137 and done.oom_killed
    script = "for i in $(seq 1 40); do sleep 30 & done; echo all started"
    code, out, err = run(containers, image, capfd, "sh", "-c", script, runtime="crun", limits=Limits(pids=10))
    assert (code, out) == (2, "") and "can't fork" in err


def test_crun_pause_stop_and_remove_leave_nothing(containers: ContainerStore, image: AdmittedImage) -> None:
    container = containers.run_detached(image, RunOptions(command=("sleep", "60"), runtime="crun"))
    assert containers.pause(container.id).state is State.PAUSED
    assert containers.unpause(container.id).state is State.RUNNING
    done = containers.stop(container.id, timeout=1)
    assert done is not None and done.state is State.EXITED
    containers.remove(container.id)
    assert not (containers.root / container.id).exists()
    assert mounts_under(containers.root) == []
    if cgroup_mode() is CgroupMode.HYBRID:
        assert not any(path.exists() for path in cgroup_dirs(container.cgroups_path))


# -- the bundle, without a runtime ---------------------------------------------------------------


def _spec(rootfs: Path, process_user: int = 0, **limits: int) -> dict[str, Any]:
    process = resolve_process(
        {"config": {"Cmd": ["sh"], "Env": ["A=1"]}}, RunOptions(), rootfs=rootfs, hostname="h"
    )
    return build_spec(
        replace(process, uid=process_user),
        rootfs=Path("/c/rootfs"),
        hostname="h",
        network=Network.NONE,
        limits=Limits(**limits),
        cgroups_path="/trust/x",
        etc_files={"/etc/hostname": Path("/c/hostname")},
    )


def test_spec_has_the_isolation_defaults(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    linux = spec["linux"]
    process = spec["process"]
    assert isinstance(linux, dict) and isinstance(process, dict)
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "mount", "uts", "ipc", "network"]
    assert linux["maskedPaths"] == list(MASKED_PATHS) and linux["readonlyPaths"] == list(READONLY_PATHS)
    assert process["noNewPrivileges"] is True
    caps = process["capabilities"]
    assert caps == {
        "bounding": list(CAPABILITIES),
        "effective": list(CAPABILITIES),
        "permitted": list(CAPABILITIES),
    }
    assert all(limit["hard"] <= HOST_NOFILE_CEILING for limit in process["rlimits"])
    assert linux["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert process["env"][:3] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=h",
        "A=1",
    ]
    assert {m["destination"] for m in spec["mounts"]} >= {
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hostname",
    }
    assert json.loads(json.dumps(spec)) == spec


def test_spec_limits_and_non_root_capabilities(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 1000, memory=64 << 20, pids=50)
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert resources["pids"] == {"limit": 50}
    caps = spec["process"]["capabilities"]
    assert caps["effective"] == [] and caps["permitted"] == [] and caps["bounding"] == list(CAPABILITIES)
    cpu = build_spec(
        resolve_process({"config": {"Cmd": ["sh"]}}, RunOptions(), rootfs=tmp_path, hostname="h"),
        rootfs=Path("/c"),
        hostname="h",
        network=Network.HOST,
        limits=Limits(cpus=1.5),
        cgroups_path="/t/x",
        etc_files={},
    )
    assert cpu["linux"]["resources"]["cpu"] == {"quota": 150000, "period": 100000}
    assert "network" not in [n["type"] for n in cpu["linux"]["namespaces"]]


def test_command_entrypoint_env_and_workdir_resolution(tmp_path: Path) -> None:
    config = {
        "config": {
            "Entrypoint": ["/bin/app"],
            "Cmd": ["--default"],
            "Env": ["A=1", "B=2"],
            "WorkingDir": "/srv",
        }
    }
    options = RunOptions(command=("--flag",), env=("B=3", "C=4"))
    process = resolve_process(config, options, rootfs=tmp_path, hostname="h")
    assert process.args == ("/bin/app", "--flag")
    assert process.cwd == "/srv"
    assert [e for e in process.env if e[0] in "ABC"] == ["A=1", "B=3", "C=4"]
    assert "HOME=/" in process.env
    with pytest.raises(UsageError, match="no Entrypoint or Cmd"):
        resolve_process({"config": {}}, RunOptions(), rootfs=tmp_path, hostname="h")
    with pytest.raises(InvalidManifest, match="Cmd must be a list"):
        resolve_process({"config": {"Cmd": "sh"}}, RunOptions(), rootfs=tmp_path, hostname="h")


@pytest.mark.parametrize(
    "workdir", ["relative", "/proc", "/proc/self", "/sys/fs", "//proc/../proc/x", "/a/../sys"]
)
def test_refused_working_directories(workdir: str) -> None:
    with pytest.raises(UsageError, match="working directory"):
        check_workdir(workdir)


def test_working_directories_are_normalised() -> None:
    assert check_workdir("/srv/./app/") == "/srv/app"
    assert check_workdir("//processes") == "/processes"


def test_user_resolution(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nstaff:x:50:\n")
    assert resolve_user("", tmp_path) == resolve_user("root", tmp_path)
    assert resolve_user("root", tmp_path).home == "/root"
    user = resolve_user("app", tmp_path)
    assert (user.uid, user.gid, user.additional_gids, user.home) == (1000, 1001, (2000,), "/home/app")
    assert resolve_user("1000", tmp_path).gid == 1001  # gid from passwd
    assert (resolve_user("4242", tmp_path).uid, resolve_user("4242", tmp_path).gid) == (4242, 0)
    assert resolve_user("app:staff", tmp_path).gid == 50
    assert resolve_user("1000:7", tmp_path).gid == 7
    for bad, message in [
        ("nobody", "not in the image's /etc/passwd"),
        ("app:nogroup", "not in the image's /etc/group"),
        ("4294967295", "invalid user or group id"),
        ("1:", "invalid user"),
        (":1", "invalid user"),
        ("-1", "not in the image's"),
    ]:
        with pytest.raises(UsageError, match=message):
            resolve_user(bad, tmp_path)


def test_user_names_are_never_read_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "host-passwd"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to(outside)
    with pytest.raises(UsageError, match="symbolic link"):
        resolve_user("evil", root)
    assert resolve_user("0:0", root).uid == 0  # numeric ids need no lookup
    (root / "etc" / "passwd").unlink()
    (root / "etc").rmdir()
    (root / "etc").symlink_to(tmp_path)
    with pytest.raises(UsageError, match="symbolic link"):
        read_image_file(root, "/etc/host-passwd")
    assert read_image_file(root, "/missing/file") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64m", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10), ("1048576", 1 << 20), ("32MB", 32 << 20)],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


def test_invalid_options_are_usage_errors() -> None:
    for bad in ("", "12x", "-1m", "1.5g"):
        with pytest.raises(UsageError):
            parse_memory(bad)
    with pytest.raises(UsageError, match="at least 6m"):
        Limits(memory=1 << 20)
    with pytest.raises(UsageError, match="--cpus"):
        Limits(cpus=parse_cpus("0"))
    with pytest.raises(UsageError):
        parse_cpus("many")
    with pytest.raises(UsageError, match="--pids-limit"):
        Limits(pids=0)
    with pytest.raises(UsageError, match="container name"):
        RunOptions(name="bad/name")
    with pytest.raises(UsageError, match="hostname"):
        RunOptions(hostname="-bad")
    with pytest.raises(UsageError, match="runtime"):
        RunOptions(runtime="docker")
    with pytest.raises(UsageError, match="--env"):
        RunOptions(env=("=x",))


def test_run_path_imports_no_network_or_crypto_libraries() -> None:
    code = (
        "import sys, run.containers, run.rootfs, run.bundle, run.runtime, run.unpack; "
        "heavy = [m for m in ('httpx', 'cryptography', 'sigstore', 'nacl') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_container_record_round_trips(containers: ContainerStore, image: AdmittedImage) -> None:
    created = containers.create(image, RunOptions(command=("true",), name="roundtrip"))
    record = json.loads((created.directory / "state.json").read_text())
    assert Container.from_json(record, created.directory) == created
    assert record["image"]["digest"] == str(image.manifest_digest)
    assert record["state"] == "created" and record["paths"]["rootfs"].endswith("/rootfs")


def test_a_creation_that_crashed_shows_as_exited_and_rm_cleans_it(
    containers: ContainerStore, image: AdmittedImage
) -> None:
    created = containers.create(image, RunOptions(command=("true",)))
    # As if the creating CLI had died before the runtime knew the container: no monitor recorded.
    monitor_pid = created.monitor_pid
    assert monitor_pid is not None
    os.kill(monitor_pid, signal.SIGKILL)
    wait_for(lambda: gone(monitor_pid))
    containers.runtime("runc").delete(created.id, force=True)
    record = json.loads((created.directory / "state.json").read_text())
    record.update(monitorPid=None, monitorStartTime=None)
    (created.directory / "state.json").write_text(json.dumps(record))

    found = containers.get(created.id)
    assert found.state is State.EXITED and found.error == "creation did not finish"
    containers.remove(created.id)
    assert not created.directory.exists() and mounts_under(containers.root) == []


class _KillRecorder:
    """Stands in for a Runtime in `forward_signals`: records `kill` calls instead of running runc."""

    def __init__(self) -> None:
        self.killed: list[tuple[str, int]] = []

    def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> bool:
        self.killed.append((container_id, signum))
        return True


def test_signals_during_creation_wait_until_the_container_exists() -> None:
    recorder = _KillRecorder()
    before = signal.getsignal(signal.SIGTERM)
    with forward_signals(cast(Runtime, recorder), "c1") as created:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert recorder.killed == []  # no `runtime kill` while the runtime is still creating it
        created()
        assert recorder.killed == [("c1", signal.SIGTERM), ("c1", signal.SIGINT)]
        os.kill(os.getpid(), signal.SIGHUP)
        assert recorder.killed[-1] == ("c1", signal.SIGHUP)  # once created: passed on at once
    assert signal.getsignal(signal.SIGTERM) == before  # and the handlers are restored


def test_a_second_interrupt_during_creation_gives_up() -> None:
    recorder = _KillRecorder()
    with pytest.raises(KeyboardInterrupt), forward_signals(cast(Runtime, recorder), "c2"):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    assert recorder.killed == []
