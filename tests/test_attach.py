"""`trust attach` to containers without a terminal, with real runc: the attach command runs as a
process of its own (its stdin, stdout, stderr and signals are what is being tested)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support.boxes import Box, make_box
from support.images import BUSYBOX_APPLETS, build_image, busybox_layer
from support.registry import Registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")

COUNTER = "trap 'exit 7' INT; i=0; while true; do echo out$i; echo err$i >&2; i=$((i+1)); sleep 0.1; done"


@dataclass(frozen=True)
class Setup(Box):
    def attach(self, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "trust", "attach", "--store", str(self.store), *args]
        env = {**os.environ, "TRUST_NO_AGENT": "1"}
        return subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    image = build_image([busybox_layer(applets=(*BUSYBOX_APPLETS, "cat"))], cmd=["sh"], env=["PATH=/bin"])
    return Setup(*make_box(registry, tmp_path_factory.mktemp("attach"), "t/attach-busybox", image))


@pytest.fixture
def detached(setup: Setup, capfd: pytest.CaptureFixture[str]) -> Iterator[str]:
    """A running counter, printing to stdout and stderr ten times a second; its id."""
    assert setup.trust("run", "-d", "--network", "none", setup.image, "sh", "-c", COUNTER) == 0
    container_id = capfd.readouterr().out.strip()
    yield container_id
    setup.trust("rm", "-f", container_id)


def read_until(stream: object, needle: bytes, timeout: float = 10.0) -> bytes:
    fd = stream.fileno()  # type: ignore[attr-defined]
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen in {seen[-300:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"closed before {needle!r}: {seen[-300:]!r}"
            seen += chunk
    return seen


def state(setup: Setup, capfd: pytest.CaptureFixture[str], container_id: str) -> str:
    capfd.readouterr()
    assert setup.trust("inspect", container_id) == 0
    doc = json.loads(capfd.readouterr().out)
    return str(doc["state"])


def test_attach_streams_stdout_and_stderr_apart_and_no_sig_proxy_detaches(
    setup: Setup, detached: str, capfd: pytest.CaptureFixture[str]
) -> None:
    time.sleep(0.5)
    attached = setup.attach("--no-sig-proxy", detached)
    out = read_until(attached.stdout, b"\n")
    first = int(out.split(b"out", 1)[1].split(b"\n", 1)[0])
    assert first > 0  # from now on, not from the start of the log
    later = read_until(attached.stdout, f"out{first + 3}\n".encode())
    assert b"err" not in out + later  # stdout only on stdout
    assert b"err" in read_until(attached.stderr, f"err{first + 3}\n".encode())
    attached.send_signal(signal.SIGINT)
    assert attached.wait(timeout=10) == 0  # detached
    assert state(setup, capfd, detached) == "running"


def test_attach_proxies_signals_and_exits_with_the_container_code(
    setup: Setup, detached: str, capfd: pytest.CaptureFixture[str]
) -> None:
    attached = setup.attach(detached)
    read_until(attached.stdout, b"\n")
    attached.send_signal(signal.SIGINT)  # passed on: the container's trap exits 7
    assert attached.wait(timeout=15) == 7
    assert state(setup, capfd, detached) == "exited"


def test_two_clients_and_a_stalled_one_do_not_hold_the_container(
    setup: Setup, detached: str, capfd: pytest.CaptureFixture[str]
) -> None:
    one, two = setup.attach("--no-sig-proxy", detached), setup.attach("--no-sig-proxy", detached)
    read_until(one.stdout, b"\n")
    read_until(two.stdout, b"\n")
    os.kill(one.pid, signal.SIGSTOP)  # a client that stops reading
    try:
        log = setup.store / "meta" / "containers" / detached / "stdout.log"
        size = log.stat().st_size
        time.sleep(1.0)
        assert log.stat().st_size > size  # the container goes on writing
        read_until(two.stdout, b"\n")  # and the other client goes on reading
    finally:
        os.kill(one.pid, signal.SIGCONT)
    for client in (one, two):
        client.send_signal(signal.SIGINT)
        assert client.wait(timeout=10) == 0


def test_run_di_keeps_stdin_for_attach_and_the_detach_keys_leave_it_running(
    setup: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert setup.trust("run", "-di", "--init", "--network", "none", setup.image, "cat") == 0
    container_id = capfd.readouterr().out.strip()
    try:
        attached = setup.attach(container_id)
        assert attached.stdin is not None
        attached.stdin.write(b"hello through the fifo\n")
        attached.stdin.flush()
        assert b"hello through the fifo\n" in read_until(attached.stdout, b"fifo\n")
        attached.stdin.write(b"\x10\x11")  # ctrl-p ctrl-q
        attached.stdin.flush()
        assert attached.wait(timeout=10) == 0
        assert state(setup, capfd, container_id) == "running"
        again = setup.attach(container_id)  # a second attachment still reaches cat
        assert again.stdin is not None
        again.stdin.write(b"again\n")
        again.stdin.flush()
        read_until(again.stdout, b"again\n")
        again.send_signal(signal.SIGTERM)  # passed on (tini, --init, gives it to cat): cat ends
        assert again.wait(timeout=15) == 143
    finally:
        setup.trust("rm", "-f", container_id)
    assert not (setup.store / "meta" / "containers" / container_id).exists()


def test_create_i_then_start_and_attach_to_a_stopped_container(
    setup: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert setup.trust("create", "-i", "--init", "--network", "none", setup.image, "cat") == 0
    container_id = capfd.readouterr().out.strip()
    try:
        assert setup.trust("attach", container_id) == 2  # created, not running
        assert "not running" in capfd.readouterr().err
        assert setup.trust("start", container_id) == 0
        attached = setup.attach(container_id)
        assert attached.stdin is not None
        attached.stdin.write(b"created with -i\n")
        attached.stdin.flush()
        read_until(attached.stdout, b"created with -i\n")
        attached.send_signal(signal.SIGTERM)
        assert attached.wait(timeout=15) == 143
        assert setup.trust("attach", container_id) == 2  # exited
    finally:
        setup.trust("rm", "-f", container_id)
