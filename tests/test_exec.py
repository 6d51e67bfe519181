"""`trust exec` on real runc, through the CLI in-process: the container's namespaces, cgroup, seccomp
filter and capabilities; exit codes; refusals. One busybox image per module; containers run with
`--network none` (the network is tests/test_network.py's subject)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.boxes import Box, make_box
from support.images import BUSYBOX_APPLETS, build_image, busybox_layer
from support.registry import Registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")

APPLETS = (*BUSYBOX_APPLETS, "grep", "head", "wc", "pwd", "touch", "env", "tr")


Setup = Box


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("exec")
    image = build_image(
        [busybox_layer(applets=APPLETS)], cmd=["sleep", "300"], env=["PATH=/bin", "FROM=image"]
    )
    return Setup(*make_box(registry, folder, "t/exec-busybox", image))


@pytest.fixture
def box(setup: Setup, capfd: pytest.CaptureFixture[str]) -> Iterator[Setup]:
    """A running container named `box` (`sleep 300`, hostname `boxhost`), removed afterwards."""
    code = setup.trust(
        "run", "-d", "--network", "none", "--name", "box", "--hostname", "boxhost", setup.image
    )
    assert code == 0
    capfd.readouterr()
    yield setup
    assert setup.trust("rm", "-f", "box") == 0


def out_of(capfd: pytest.CaptureFixture[str], code: int, expected: int = 0) -> str:
    out, err = capfd.readouterr()
    assert code == expected, err
    return out


def test_exec_sees_the_containers_pid_1_hostname_and_mounts_not_the_host(
    box: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    script = (
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; echo $$; ls /proc | grep -c '^[0-9]'; "
        "cut() { while read -r a b c d e rest; do echo $e; done; }; cut < /proc/1/mountinfo | wc -l; "
        "cut < /proc/self/mountinfo | wc -l"
    )
    out = out_of(capfd, box.trust("exec", "box", "sh", "-c", script)).splitlines()
    assert out[0].strip() == "sleep 300"  # PID 1 is the container's first process
    assert out[1] == "boxhost"
    assert int(out[2]) < 10  # a pid in the container's pid namespace
    assert int(out[3]) <= 4  # sleep, sh, ls, grep: no host process is visible
    assert out[4] == out[5]  # the same mount table as the container's init
    assert str(os.getpid()) not in out[3:4]


def test_exec_shares_cgroup_seccomp_and_capabilities_with_the_container(
    box: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    fields = "grep -E '^(Seccomp|CapEff|CapBnd|NoNewPrivs):' /proc/{}/status; cat /proc/{}/cgroup"
    init = out_of(capfd, box.trust("exec", "box", "sh", "-c", fields.format(1, 1)))
    mine = out_of(capfd, box.trust("exec", "box", "sh", "-c", fields.format("self", "self")))
    assert init == mine
    assert "Seccomp:\t2" in mine and "NoNewPrivs:\t1" in mine
    # The filter applies: unshare(2) is refused, exactly as for the first process.
    assert box.trust("exec", "box", "sh", "-c", "exec 3</proc/self/ns/net") == 0


def test_exec_exit_codes_propagate(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert box.trust("exec", "box", "true") == 0
    assert box.trust("exec", "box", "sh", "-c", "exit 7") == 7
    assert box.trust("exec", "box", "sh", "-c", "kill -9 $$") == 137
    capfd.readouterr()
    assert box.trust("exec", "box", "sh", "-c", "echo out; echo err >&2; exit 255") == 255
    assert capfd.readouterr() == ("out\n", "err\n")  # the process's own 255: not a runtime failure
    assert box.trust("exec", "box", "sh", "-c", "sleep 0.3; echo late >&2") == 0
    assert capfd.readouterr().err == "late\n"
    assert box.trust("exec", "box", "no-such-command") == 127
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trust: error:") and "no-such-command" in err[0]
    assert box.trust("exec", "box", "/etc") == 126


def test_exec_env_user_and_workdir(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    code = box.trust(
        "exec",
        "-e",
        "EXTRA=1",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "box",
        "sh",
        "-c",
        "echo $FROM $EXTRA $(id -u) $(pwd)",
    )
    assert out_of(capfd, code) == "image 1 65534 /tmp\n"
    assert box.trust("exec", "-u", "nobody", "box", "touch", "/root/x") == 1  # no capabilities as non-root
    capfd.readouterr()
    assert box.trust("exec", "-u", "ghost", "box", "true") == 2
    assert box.trust("exec", "-w", "relative", "box", "true") == 2


def test_exec_stdin_only_with_interactive(
    box: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "input"
    source.write_text("one\ntwo\n")
    saved = os.dup(0)
    try:
        with open(source) as f:
            os.dup2(f.fileno(), 0)
        capfd.readouterr()
        assert out_of(capfd, box.trust("exec", "-i", "box", "wc", "-l")).strip() == "2"
        os.lseek(0, 0, os.SEEK_SET)
        assert out_of(capfd, box.trust("exec", "box", "wc", "-l")).strip() == "0"
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def test_exec_detached_keeps_running(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert box.trust("exec", "-d", "box", "sh", "-c", "sleep 0.2; touch /tmp/detached; sleep 60") == 0
    deadline = time.monotonic() + 10
    while box.trust("exec", "box", "ls", "/tmp/detached") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    capfd.readouterr()
    assert box.trust("exec", "-d", "box", "no-such-command") == 127


def test_signals_reach_the_execd_process(box: Setup) -> None:
    script = "trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.05; done"
    argv = [sys.executable, "-m", "trust", "exec", "--store", str(box.store), "box", "sh", "-c", script]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 9
        assert process.stdout.read() == b"got TERM\n"


def test_exec_of_a_container_that_is_not_running_is_exit_2(
    setup: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert setup.trust("create", "--network", "none", "--name", "idle", setup.image) == 0
    assert setup.trust("exec", "idle", "true") == 2  # created, not started
    assert setup.trust("start", "idle") == 0
    assert setup.trust("pause", "idle") == 0
    assert setup.trust("exec", "idle", "true") == 2
    assert setup.trust("stop", "-t", "0", "idle") == 0
    capfd.readouterr()
    assert setup.trust("exec", "idle", "true") == 2
    err = capfd.readouterr().err
    assert err.startswith("trust: error:") and "exited: exec needs a running container" in err
    assert setup.trust("exec", "no-such-container", "true") == 2
    assert setup.trust("rm", "idle") == 0
    info = json.dumps(os.listdir(setup.store / "meta" / "containers"))
    assert "idle" not in info


def test_exec_with_crun(setup: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    code = setup.trust("run", "-d", "--runtime", "crun", "--network", "none", "--name", "cbox", setup.image)
    assert code == 0
    try:
        assert setup.trust("exec", "cbox", "sh", "-c", "exit 7") == 7
        capfd.readouterr()
        status = out_of(capfd, setup.trust("exec", "cbox", "grep", "Seccomp:", "/proc/self/status"))
        assert status.split() == ["Seccomp:", "2"]
        assert setup.trust("exec", "cbox", "no-such-command") == 127
    finally:
        assert setup.trust("rm", "-f", "cbox") == 0
