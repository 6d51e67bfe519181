"""`-t`: a pseudo-terminal through the runtime's console socket, with real runc. The `trust` process
itself runs on a pty of ours (python `pty`), as it would in a terminal emulator."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support.boxes import Box, make_box, removing_new_containers
from support.images import BUSYBOX_APPLETS, build_image, busybox_layer
from support.registry import Registry

from pull.errors import UsageError
from run.terminal import parse_detach_keys

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")


Setup = Box


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("tty")
    image = build_image(
        [busybox_layer(applets=(*BUSYBOX_APPLETS, "tty", "stty"))], cmd=["sleep", "300"], env=["PATH=/bin"]
    )
    return Setup(*make_box(registry, folder, "t/tty-busybox", image))


class Terminal:
    """`trust …` running on a pty whose master we hold."""

    def __init__(
        self,
        setup: Setup,
        *args: str,
        rows: int = 24,
        columns: int = 80,
        agent: Path | None = None,
        client: Sequence[str] = (sys.executable, "-m", "trust"),
    ) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: a session of its own, the pty as its controlling terminal
            if agent is None:
                os.environ["TRUST_NO_AGENT"] = "1"
            else:
                os.environ["TRUST_AGENT_SOCKET"] = str(agent)
            os.execv(client[0], [*client, args[0], "--store", str(setup.store), *args[1:]])
        self.resize(rows, columns)
        self.output = b""

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def expect(self, text: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"{text!r} not in {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:  # EIO: the child has gone
                    assert text in self.output, f"{text!r} not in {self.output!r}"

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def exit_code(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with _suppress_eio():
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if ready:
                    self.output += os.read(self.master, 4096)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.master)
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < deadline, self.output


class _suppress_eio:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return isinstance(exc, OSError)


@pytest.fixture
def box(setup: Setup) -> Iterator[Setup]:
    with removing_new_containers(setup):
        yield setup


def test_run_t_gives_the_process_a_terminal(box: Setup) -> None:
    script = "tty; stty size; exit 3"
    terminal = Terminal(box, "run", "--rm", "-t", "--network", "none", box.image, "sh", "-c", script, rows=33)
    terminal.expect(b"/dev/pts/")
    terminal.expect(b"33 80")
    assert terminal.exit_code() == 3


def test_run_it_forwards_input_and_window_size_changes(box: Setup) -> None:
    script = "stty size; read line; echo got $line; stty size"
    terminal = Terminal(box, "run", "--rm", "-it", "--network", "none", box.image, "sh", "-c", script)
    terminal.expect(b"24 80")
    terminal.resize(40, 100)  # the kernel sends SIGWINCH to trust, which passes the size on
    time.sleep(0.3)
    terminal.send(b"hello\r")
    terminal.expect(b"got hello")
    terminal.expect(b"40 100")
    assert terminal.exit_code() == 0


def test_exec_t_and_a_detached_terminal(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert (
        box.trust(
            "run", "-d", "-t", "--network", "none", "--name", "tbox", box.image, "sh", "-c", "tty; sleep 60"
        )
        == 0
    )
    capfd.readouterr()
    deadline = time.monotonic() + 10
    while True:
        assert box.trust("logs", "tbox") == 0
        if "/dev/pts/0" in capfd.readouterr().out:
            break  # the monitor logs what the detached container writes to its terminal
        assert time.monotonic() < deadline
        time.sleep(0.1)
    terminal = Terminal(box, "exec", "-t", "tbox", "sh", "-c", "tty; stty size; exit 5", rows=30, columns=90)
    terminal.expect(b"/dev/pts/")
    terminal.expect(b"30 90")  # sized before the process started
    assert terminal.exit_code() == 5
    assert box.trust("exec", "-d", "-t", "tbox", "true") == 2


def test_t_without_a_terminal_of_our_own_still_relays(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert box.trust("run", "--rm", "-t", "--network", "none", box.image, "sh", "-c", "tty; echo done") == 0
    assert capfd.readouterr().out == "/dev/pts/0\r\ndone\r\n"  # the pty's line discipline adds \r


def state_of(setup: Setup, capfd: pytest.CaptureFixture[str], ref: str) -> str:
    capfd.readouterr()
    assert setup.trust("inspect", ref) == 0
    return str(json.loads(capfd.readouterr().out)["state"])


ECHO = 'while read line; do echo "got $line"; [ "$line" = quit ] && exit 7; done'
"""Reads lines from its terminal (no interactive shell: busybox's line editor queries the terminal)."""


def test_attach_and_detach_keys(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert box.trust("run", "-dit", "--network", "none", "--name", "shell", box.image, "sh", "-c", ECHO) == 0
    capfd.readouterr()
    terminal = Terminal(box, "attach", "shell")
    time.sleep(0.3)  # raw mode on: what we type is no longer echoed by our own pty
    terminal.send(b"first\r")
    terminal.expect(b"got first")
    terminal.send(b"\x10\x11")  # ctrl-p ctrl-q: detach, the container goes on
    assert terminal.exit_code() == 0
    assert state_of(box, capfd, "shell") == "running"

    terminal = Terminal(box, "attach", "shell")
    time.sleep(0.3)
    terminal.send(b"quit\r")
    terminal.expect(b"got quit")
    assert terminal.exit_code() == 7  # the container's exit code, once it ended
    assert state_of(box, capfd, "shell") == "exited"
    assert box.trust("logs", "shell") == 0
    assert "got first" in capfd.readouterr().out  # the terminal's output is logged too


def test_detach_from_a_foreground_run_and_attach_again(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    terminal = Terminal(box, "run", "-it", "--network", "none", "--name", "fg", box.image, "sh", "-c", ECHO)
    time.sleep(0.5)
    terminal.send(b"up\r")
    terminal.expect(b"got up")
    terminal.send(b"\x10")
    time.sleep(0.2)
    terminal.send(b"\x11")  # the two keys may come in separate reads
    assert terminal.exit_code() == 0
    assert state_of(box, capfd, "fg") == "running"
    terminal = Terminal(box, "attach", "fg")
    time.sleep(0.3)
    terminal.send(b"quit\r")
    assert terminal.exit_code() == 7


def test_attach_needs_a_running_container(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    # (one without a terminal is attached to as well: tests/test_attach.py)
    assert box.trust("run", "-d", "--network", "none", "--name", "plain", box.image) == 0
    assert box.trust("stop", "-t", "0", "plain") == 0
    assert box.trust("attach", "plain") == 2
    assert box.trust("attach", "no-such-container") == 2


@pytest.mark.parametrize("client", ["trust", "trust-python"])
def test_window_size_changes_reach_a_run_t_the_agent_runs(box: Setup, tmp_path: Path, client: str) -> None:
    # Through either client of the agent: the C executable and the Python one.
    socket_path = tmp_path / "agent" / "agent.sock"
    argv = [sys.executable, "-m", "trust", "agent", "--socket", str(socket_path)]
    with subprocess.Popen(argv, stderr=subprocess.DEVNULL) as agent:
        try:
            deadline = time.monotonic() + 20
            while not socket_path.exists():
                assert time.monotonic() < deadline and agent.poll() is None
                time.sleep(0.05)
            script = "stty size; read line; stty size"
            terminal = Terminal(
                box,
                "run",
                "--rm",
                "-it",
                "--network",
                "none",
                box.image,
                "sh",
                "-c",
                script,
                agent=socket_path,
                client=[str(Path(sys.executable).parent / client)],
            )
            terminal.expect(b"24 80")
            children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
            assert children  # the agent runs the command (a fork of it), not the client itself
            terminal.resize(50, 120)  # SIGWINCH to the client, passed to the agent's child
            time.sleep(0.3)
            terminal.send(b"\r")
            terminal.expect(b"50 120")
            assert terminal.exit_code() == 0
        finally:
            agent.terminate()
            agent.wait(timeout=20)


def test_run_t_with_crun(box: Setup) -> None:
    script = "tty; stty size; exit 3"
    terminal = Terminal(
        box,
        "run",
        "--rm",
        "-t",
        "--runtime",
        "crun",
        "--network",
        "none",
        box.image,
        "sh",
        "-c",
        script,
        rows=31,
    )
    terminal.expect(b"/dev/pts/")
    terminal.expect(b"31 80")
    assert terminal.exit_code() == 3


def test_exec_t_with_crun(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    code = box.trust("run", "-d", "--runtime", "crun", "--network", "none", "--name", "ctbox", box.image)
    assert code == 0
    capfd.readouterr()
    # crun 1.8 does not size an exec'd process's pty before it starts (runc does, from consoleSize):
    # trust sizes it as soon as it gets the terminal, a moment later.
    script = "tty; sleep 0.5; stty size; exit 6"
    terminal = Terminal(box, "exec", "-t", "ctbox", "sh", "-c", script, rows=29, columns=91)
    terminal.expect(b"/dev/pts/")
    terminal.expect(b"29 91")
    assert terminal.exit_code() == 6


def test_detach_keys_are_configurable(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,d") == b"\x01d"
    assert parse_detach_keys("ctrl-@,ctrl-_,x") == b"\x00\x1fx"
    assert parse_detach_keys("") == b""
    for bad in ("ctrl-1", "foo", "ctrl-", "é"):
        with pytest.raises(UsageError):
            parse_detach_keys(bad)
    assert box.trust("run", "-dit", "--network", "none", "--name", "keys", box.image, "sh", "-c", ECHO) == 0
    capfd.readouterr()
    terminal = Terminal(box, "attach", "--detach-keys", "ctrl-a,d", "keys")
    time.sleep(0.3)
    terminal.send(b"\x10\x11one\r")  # docker's default keys mean nothing here: they reach the container
    terminal.expect(b"got ")
    terminal.send(b"\x01")
    time.sleep(0.2)
    terminal.send(b"d")
    assert terminal.exit_code() == 0
    assert state_of(box, capfd, "keys") == "running"
    assert box.trust("attach", "--detach-keys", "ctrl-1", "keys") == 2
