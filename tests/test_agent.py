"""`trust agent` (trust/cli/agent.py) and its clients, end to end: the `trust` executable
(trust/cli/console.c) and `trust-python` (trust/cli/console.py).

One agent per module (per xdist worker) listens on a socket under /tmp; the real `trust` executable
is run with `TRUST_AGENT_SOCKET` pointing at it. That a command really ran in the agent is checked
where it matters by looking at the process tree while a container runs: the process that runs the
command is a child of the agent with the agent's command line (a fork, not a new `trust`), in the
client's working directory and with its umask. The protocol's refusals are checked by speaking it
with a raw socket; the client's half by a fake agent that records what each executable sends.

Some tests put a side in odd conditions: a client or a fake agent of another user (a fork that
drops to nobody), a client under setpriv, unshare or seccomp, an agent out of descriptors or with
all of them above 1024, an agent stopped at the worst moment (a SIGTERM just before an answer).
The last section is about hostile or unusual clients.
"""

from __future__ import annotations

import _socket
import contextlib
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from support.images import BUSYBOX_APPLETS, build_image, busybox_layer, push_image
from support.registry import Registry

import trust
from trust.cli import console

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="containers need root (mounts, namespaces, cgroups)"
)

TRUST = str(Path(sys.executable).parent / "trust")
"""The `trust` executable (trust/cli/console.c): it hands `run` and `create` to the agent and runs
everything else through `trust-python`."""
TRUST_PYTHON = str(Path(sys.executable).parent / "trust-python")
"""The console script of `trust.cli.console`: the same client, in Python."""
TIMEOUT = 30.0
START_TIMEOUT = 15.0
NOBODY = 65534
HELP_REQUEST = ["run", "--help"]
"""A delegated command that needs no container: what the raw-protocol tests have the agent run."""


# -- fixtures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    folder: Path
    store: Path
    policy: Path
    ref: str
    """A pinned reference the policy accepts without a signature (busybox with `wc`)."""

    def admit(self, command: str, *args: str) -> list[str]:
        return [TRUST, command, "--store", str(self.store), "--policy", str(self.policy), *args]

    def containers(self) -> set[str]:
        directory = self.store / "meta" / "containers"
        if not directory.exists():
            return set()
        return {p.name for p in directory.iterdir() if not p.name.startswith(".")}

    def mounted(self) -> list[str]:
        with open("/proc/self/mountinfo") as mountinfo:
            return [line for line in mountinfo if str(self.store) in line]


@dataclass(frozen=True)
class Agent:
    process: subprocess.Popen[bytes]
    socket: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def env(self) -> dict[str, str]:
        """The environment of a `trust` that hands `run` and `create` to this agent."""
        environment = {**os.environ, console.SOCKET_ENV: str(self.socket)}
        environment.pop(console.NO_AGENT_ENV, None)
        return environment

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("agent")
    image = build_image([busybox_layer(applets=(*BUSYBOX_APPLETS, "wc"))], cmd=["sh", "-c", "echo image cmd"])
    pushed = push_image(registry, "t/agent-open", image, tag="v1")
    policy = folder / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "rules:\n"
        f"  - scope: {registry.host}/t/agent-open\n    insecure-accept-anything: true\n"
        "default:\n  reject: true\n"
    )
    return Setup(folder, folder / "store", policy, pushed.by_digest)


def start_agent(sock: Path, log: Path, argv: Sequence[str] | None = None) -> Agent:
    """`trust agent --socket SOCK` (or `argv`), once it listens (it says so on stderr after `listen()`)."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [TRUST, "agent", "--socket", str(sock)] if argv is None else argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env={k: v for k, v in os.environ.items() if k != console.SOCKET_ENV},
        )
    agent = Agent(process, sock, log)
    deadline = time.monotonic() + START_TIMEOUT
    while b"listening on" not in log.read_bytes():
        if not agent.alive() or time.monotonic() > deadline:
            stop_agent(agent)
            pytest.fail(f"the agent did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)
    return agent


@contextlib.contextmanager
def ready_client(argv: list[str], **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` with its stdout and stderr on pipes (unless `options` says otherwise), once the
    container's script has printed "ready"."""
    settings: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **options}
    with subprocess.Popen(argv, **settings) as client:
        assert client.stdout is not None
        assert client.stdout.readline() == b"ready\n"
        yield client


def stop_agent(agent: Agent) -> None:
    if agent.alive():
        agent.process.terminate()
    try:
        agent.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.process.kill()
        agent.process.wait()


@contextlib.contextmanager
def short_directory() -> Iterator[Path]:
    """A directory for sockets: AF_UNIX paths are limited to 107 bytes, pytest's tmp paths are long."""
    directory = Path(tempfile.mkdtemp(prefix="ta-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    """The module's agent. Its socket's directory does not exist beforehand: the agent makes it."""
    with short_directory() as directory:
        running = start_agent(directory / "run" / "agent.sock", directory / "agent.log")
        try:
            yield running
        finally:
            stop_agent(running)


@pytest.fixture
def cli(setup: Setup, agent: Agent) -> Iterator[Setup]:
    """The setup, checked after the test: the agent still runs, no container is left (those of the
    test are removed) and nothing stays mounted."""
    before = setup.containers()
    yield setup
    leftovers = setup.containers() - before
    for leftover in leftovers:
        subprocess.run([TRUST, "rm", "-f", "--store", str(setup.store), leftover], timeout=TIMEOUT)
    assert not leftovers
    assert not setup.mounted()
    assert agent.alive(), agent.log.read_text(errors="replace")


# -- helpers ------------------------------------------------------------------------------------


def run(argv: Sequence[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


def in_process_env() -> dict[str, str]:
    return {**os.environ, console.NO_AGENT_ENV: "1"}


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        fields = status[status.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask in /proc/{pid}/status")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.05)
    return True


def request(**overrides: object) -> dict[str, object]:
    """A well-formed request for `trust run --help`, with `overrides`."""
    return {
        "version": trust.__version__,
        "argv": HELP_REQUEST,
        "cwd": "/",
        "umask": 0o022,
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        **overrides,
    }


def line(message: object) -> bytes:
    return json.dumps(message).encode() + b"\n"


def replies(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """The agent's messages on `sock`, until it closes the connection."""
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            assert buffer == b"", f"an unfinished message: {buffer!r}"
            return
        buffer += chunk
        while b"\n" in buffer:
            one, _, buffer = buffer.partition(b"\n")
            message = json.loads(one)
            assert isinstance(message, dict)
            yield message


def speak(
    path: Path, data: bytes, fds: Sequence[int] | None = None, *, shut: bool = False, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Send `data` with `fds` (default: /dev/null three times) to the agent; every message it sends back."""
    with contextlib.ExitStack() as stack:
        if fds is None:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            stack.callback(os.close, null)
            fds = [null, null, null]
        client = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        client.settimeout(timeout)
        client.connect(str(path))
        socket.send_fds(client, [data], list(fds))
        if shut:
            client.shutdown(socket.SHUT_WR)
        return list(replies(client))


def assert_serves(agent: Agent) -> None:
    """The agent accepts a well-formed request and reports the exit of the command it forked."""
    answers = speak(agent.socket, line(request()))
    assert len(answers) == 2 and answers[1] == {"exit": 0}, answers
    assert isinstance(answers[0].get("accepted"), int) and answers[0]["accepted"] > 0


# -- commands through the agent -----------------------------------------------------------------


def test_run_through_the_agent_keeps_output_and_exit_code(cli: Setup, agent: Agent) -> None:
    command = ["--rm", cli.ref, "sh", "-c", "echo out; echo err >&2; exit 7"]
    through = run(cli.admit("run", *command), agent.env)
    assert (through.returncode, through.stdout) == (7, "out\n"), through.stderr
    assert "err\n" in through.stderr
    in_process = run(cli.admit("run", *command), in_process_env())
    assert (in_process.returncode, in_process.stdout) == (7, "out\n") and "err\n" in in_process.stderr


def test_the_command_runs_in_a_fork_of_the_agent_with_the_clients_cwd_and_umask(
    cli: Setup, agent: Agent
) -> None:
    # The container's shell lists its own descriptors: the client's three, nothing of the agent's
    # (its listening socket, its children's connections, the pipe they report their exits on).
    # Listed by a child shell while this one only waits: busybox's shell runs `ls` in-process and
    # holds a pipeline's read end until its last command has started, so `ls /proc/$$/fd | tr`
    # could list either (CI saw the pipe's).
    script = "echo ready; read line; echo got $line; sh -c 'ls /proc/$PPID/fd'; exit 3"
    # A relative --policy: it resolves against the client's directory, not the agent's.
    argv = [TRUST, "run", "--store", str(cli.store), "--policy", cli.policy.name, "--rm", "-i", cli.ref]
    assert children_of(agent.pid) == []
    with ready_client(
        [*argv, "sh", "-c", script], env=agent.env, cwd=cli.folder, umask=0o027, stdin=subprocess.PIPE
    ) as client:
        assert client.stdin is not None and client.stdout is not None and client.stderr is not None
        (worker,) = children_of(agent.pid)
        assert worker != client.pid
        assert cmdline(worker) == cmdline(agent.pid)  # a fork of the agent, not a new `trust`
        assert os.readlink(f"/proc/{worker}/cwd") == str(cli.folder)
        assert umask_of(worker) == 0o027 and umask_of(agent.pid) != 0o027
        assert os.getsid(worker) == worker  # a session of its own
        # The client's stdio arrived as three new descriptors: once in place, no copy stays open.
        client_pipes = {os.readlink(f"/proc/{client.pid}/fd/{n}") for n in (0, 1, 2)}
        worker_fds = {int(n): os.readlink(f"/proc/{worker}/fd/{n}") for n in os.listdir(f"/proc/{worker}/fd")}
        assert {worker_fds[n] for n in (0, 1, 2)} == client_pipes
        assert not [n for n, target in worker_fds.items() if n > 2 and target in client_pipes]
        client.stdin.write(b"hello\n")
        client.stdin.close()
        assert client.wait(timeout=TIMEOUT) == 3
        assert client.stdout.read() == b"got hello\n0\n1\n2\n"
    assert wait_until(lambda: children_of(agent.pid) == [])  # reaped


def test_the_clients_environment_reaches_the_command(cli: Setup, agent: Agent) -> None:
    # `-e KEY` takes the caller's value: the client's, which the agent's own environment lacks.
    env = {**agent.env, "GREETING": "hello from the client"}
    done = run(cli.admit("run", "--rm", "-e", "GREETING", cli.ref, "sh", "-c", "echo $GREETING"), env)
    assert (done.returncode, done.stdout) == (0, "hello from the client\n"), done.stderr


def test_no_agent_env_runs_in_process(cli: Setup, agent: Agent) -> None:
    argv = cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo ready; sleep 0.3; echo done")
    with ready_client(argv, env={**agent.env, console.NO_AGENT_ENV: "1"}) as client:
        assert client.stdout is not None
        assert children_of(agent.pid) == []  # the agent was not asked
        assert client.wait(timeout=TIMEOUT) == 0
        assert client.stdout.read() == b"done\n"


def test_a_stale_socket_file_falls_back_to_running_in_process(cli: Setup) -> None:
    with short_directory() as directory:
        stale = directory / "agent.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
            dead.bind(str(stale))  # bound, never listening, closed: what a killed agent leaves
        assert stat.S_ISSOCK(stale.stat().st_mode)
        env = {**os.environ, console.SOCKET_ENV: str(stale)}
        env.pop(console.NO_AGENT_ENV, None)
        done = run(cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo out; exit 4"), env)
        assert (done.returncode, done.stdout) == (4, "out\n"), done.stderr
        assert "agent" not in done.stderr


@pytest.mark.parametrize("interactive", [True, False])
def test_stdin_reaches_the_container_only_with_interactive(
    cli: Setup, agent: Agent, tmp_path: Path, interactive: bool
) -> None:
    source = tmp_path / "input"
    source.write_text("one\ntwo\n")
    flags = ["-i"] if interactive else []
    with open(source) as stdin:
        done = run(cli.admit("run", "--rm", *flags, cli.ref, "wc", "-l"), agent.env, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("2" if interactive else "0")


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGTERM, "TERM"), (signal.SIGINT, "INT")])
def test_signals_to_the_client_reach_the_container(
    cli: Setup, agent: Agent, signum: signal.Signals, name: str
) -> None:
    script = f"trap 'echo got {name}; exit 9' {name}; echo ready; while true; do sleep 0.05; done"
    with ready_client(cli.admit("run", "--rm", cli.ref, "sh", "-c", script), env=agent.env) as client:
        assert client.stdout is not None
        assert len(children_of(agent.pid)) == 1  # it runs in the agent
        client.send_signal(signum)  # to the client, which relays it to the agent's child
        assert client.wait(timeout=TIMEOUT) == 9
        assert client.stdout.read() == f"got {name}\n".encode()


@pytest.mark.parametrize("through_agent", [True, False])
def test_the_exit_code_of_a_container_killed_by_a_signal(
    cli: Setup, agent: Agent, through_agent: bool
) -> None:
    env = agent.env if through_agent else in_process_env()
    with ready_client(
        cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo ready; while true; do sleep 0.05; done"), env=env
    ) as client:
        assert client.stdout is not None
        assert len(children_of(agent.pid)) == (1 if through_agent else 0)
        listed = run([TRUST, "ps", "--store", str(cli.store), "-o", "json"], env)
        (container,) = [c for c in json.loads(listed.stdout) if c["state"] == "running"]
        killed = run([TRUST, "kill", "--store", str(cli.store), container["id"]], env)  # SIGKILL
        assert killed.returncode == 0, killed.stderr
        assert client.wait(timeout=TIMEOUT) == 137


@pytest.mark.parametrize("through_agent", [True, False])
def test_an_exit_code_of_137_from_the_container_passes_through(
    cli: Setup, agent: Agent, through_agent: bool
) -> None:
    # `kill -9 $$` in the container's first process does nothing (the kernel protects a pid
    # namespace's init from its own namespace): a child shell killed by SIGKILL gives the 137.
    env = agent.env if through_agent else in_process_env()
    done = run(cli.admit("run", "--rm", cli.ref, "sh", "-c", "sh -c 'kill -9 $$'; exit $?"), env)
    assert (done.returncode, done.stdout) == (137, ""), done.stderr


def test_a_trust_process_killed_by_a_signal_exits_128_plus_the_signal(cli: Setup, agent: Agent) -> None:
    with ready_client(
        cli.admit("run", "--rm", "-i", cli.ref, "sh", "-c", "echo ready; read line"),
        env=agent.env,
        stdin=subprocess.PIPE,
    ) as client:
        assert client.stdin is not None and client.stdout is not None
        (worker,) = children_of(agent.pid)
        os.kill(worker, signal.SIGKILL)  # the agent reaps it and tells the client: 128 + 9
        assert client.wait(timeout=TIMEOUT) == 137
        client.stdin.close()  # the container reads EOF and exits; its monitor removes it (--rm)
    assert wait_until(lambda: not cli.containers() and not cli.mounted())


def test_create_through_the_agent(cli: Setup, agent: Agent) -> None:
    done = run(cli.admit("create", "--name", "made-by-agent", cli.ref, "true"), agent.env)
    assert done.returncode == 0, done.stderr
    container_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", container_id) and done.stdout == container_id + "\n"
    assert (cli.store / "meta" / "containers" / container_id).is_dir()
    listed = run([TRUST, "ps", "-a", "--store", str(cli.store)], agent.env)
    assert listed.returncode == 0 and container_id[:12] in listed.stdout and "made-by-agent" in listed.stdout
    removed = run([TRUST, "rm", "-f", "--store", str(cli.store), container_id], agent.env)
    assert removed.returncode == 0, removed.stderr
    assert container_id not in cli.containers()


def test_a_client_that_goes_away_leaves_the_agent_serving(cli: Setup, agent: Agent) -> None:
    before = cli.containers()
    with ready_client(
        cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo ready; sleep 1; echo done"),
        env=agent.env,
        stderr=subprocess.DEVNULL,
    ) as client:
        assert client.stdout is not None
        (worker,) = children_of(agent.pid)
        assert len(cli.containers() - before) == 1
        client.kill()
        assert client.wait(timeout=TIMEOUT) == -signal.SIGKILL
        assert children_of(agent.pid) == [worker]  # the command runs on without its client
        # The container's last `echo` writes to the pipe we read: keep it open until the command ends.
        assert wait_until(lambda: children_of(agent.pid) == [])
    assert agent.alive()
    assert wait_until(lambda: cli.containers() == before and not cli.mounted())
    again = run(cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo again"), agent.env)
    assert (again.returncode, again.stdout) == (0, "again\n"), again.stderr


# -- what is (not) delegated: the client's side, against a fake agent -------------------------------


@pytest.fixture(params=[TRUST, TRUST_PYTHON], ids=["c", "python"])
def client(request: pytest.FixtureRequest) -> str:
    """Each client of the agent's protocol: the tests below hold for both."""
    return str(request.param)


@dataclass
class FakeAgent:
    listener: socket.socket
    path: Path

    def pending(self) -> bool:
        """Whether a client connected (and was not accepted yet)."""
        self.listener.settimeout(0)
        try:
            connection, _ = self.listener.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True


@pytest.fixture
def fake_agent() -> Iterator[FakeAgent]:
    with short_directory() as directory, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        path = directory / "fake.sock"
        listener.bind(str(path))
        listener.listen(8)
        yield FakeAgent(listener, path)


def test_other_commands_are_never_delegated(
    client: str, cli: Setup, agent: Agent, fake_agent: FakeAgent
) -> None:
    listed = run([client, "ps", "-a", "--store", str(cli.store)], agent.env)
    assert listed.returncode == 0 and listed.stdout.startswith("CONTAINER ID"), listed.stderr
    env = {**agent.env, console.SOCKET_ENV: str(fake_agent.path)}
    for argv in (["ps", "--store", str(cli.store)], ["--version"], ["policy", "--help"]):
        done = run([client, *argv], env)
        assert done.returncode == 0, done.stderr
        assert not fake_agent.pending(), argv
    done = run([client, "run", "--help"], {**env, console.NO_AGENT_ENV: "1"})
    assert done.returncode == 0 and not fake_agent.pending()


def test_delegate_connects_only_for_run_and_create(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(console.SOCKET_ENV, str(agent.socket))
    monkeypatch.delenv(console.NO_AGENT_ENV, raising=False)

    def no_socket(*args: object) -> _socket.socket:
        raise AssertionError("delegate opened a socket")

    monkeypatch.setattr(_socket, "socket", no_socket)  # the module trust.cli.console uses
    for argv in ([], ["ps"], ["pull", "x"], ["--help"], ["runs"], ["agent"]):
        assert console.delegate(argv) is None, argv
    monkeypatch.setenv(console.NO_AGENT_ENV, "1")
    assert console.delegate(["run", "x"]) is None
    assert console.delegate(["create", "x"]) is None
    monkeypatch.delenv(console.NO_AGENT_ENV)
    monkeypatch.setenv(console.SOCKET_ENV, str(agent.socket) + ".missing")
    assert console.delegate(["run", "x"]) is None


def test_the_client_sends_argv_cwd_umask_env_and_its_stdio(
    client: str, fake_agent: FakeAgent, tmp_path: Path
) -> None:
    stdin_file, stdout_file = tmp_path / "in", tmp_path / "out"
    stdin_file.write_text("")
    env = {**os.environ, console.SOCKET_ENV: str(fake_agent.path), "MARKER": "m-1"}
    env.pop(console.NO_AGENT_ENV, None)
    with open(stdin_file) as stdin, open(stdout_file, "w") as stdout:

        def its_stdio(fds: list[int]) -> None:
            assert len(fds) == 3
            assert os.path.samestat(os.fstat(fds[0]), os.fstat(stdin.fileno()))
            assert os.path.samestat(os.fstat(fds[1]), os.fstat(stdout.fileno()))

        with subprocess.Popen(
            [client, "run", "--help"], env=env, cwd=tmp_path, umask=0o037, stdin=stdin, stdout=stdout,
            stderr=subprocess.PIPE,
        ) as process:  # fmt: skip
            connection, data = receive_request(fake_agent, its_stdio)
            with connection:
                sent = json.loads(data)
                assert sent["version"] == trust.__version__ and sent["argv"] == ["run", "--help"]
                assert sent["cwd"] == str(tmp_path) and sent["umask"] == 0o037
                assert sent["env"]["MARKER"] == "m-1" and sent["env"][console.SOCKET_ENV] == str(
                    fake_agent.path
                )
                connection.sendall(line({"refused": "a test"}))
            assert process.wait(timeout=TIMEOUT) == 0  # refused: it ran the command itself
    assert stdout_file.read_text().startswith("Usage: trust run")


def receive_request(
    fake: FakeAgent, look_at_fds: Callable[[list[int]], None] = lambda fds: None
) -> tuple[socket.socket, bytes]:
    """The fake agent's next connection and the request line it got; `look_at_fds` sees the
    descriptors that came with it before they are closed."""
    fake.listener.settimeout(TIMEOUT)
    connection, _ = fake.listener.accept()
    connection.settimeout(TIMEOUT)
    data = b""
    while not data.endswith(b"\n"):
        chunk, fds, _, _ = socket.recv_fds(connection, 1024 * 1024, 8)
        try:
            if fds:
                look_at_fds(fds)
        finally:
            for fd in fds:
                os.close(fd)
        assert chunk, data
        data += chunk
    return connection, data


def test_argv_env_and_cwd_reach_the_agent_as_the_same_bytes(
    client: str, fake_agent: FakeAgent, tmp_path: Path
) -> None:
    # What is not UTF-8 (a lone byte, an overlong form, an encoded surrogate) travels as the lone
    # surrogates of Python's surrogateescape, which the agent turns back into the same bytes; the
    # rest as JSON escapes (the request is ASCII), a character beyond U+FFFF as a surrogate pair.
    odd = b'caf\xc3\xa9 \xf0\x9f\x90\xb3 \xff\xfe \xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80 \x01\x7f\t"\\ end'
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/dir-\xff-\xc3\xa9"))
    folder.mkdir()
    env = {**fake_env(fake_agent), "ODD": os.fsdecode(odd), os.fsdecode(b"NAME_\xe9"): "v"}
    argv = [client, "run", "--help", os.fsdecode(odd), ""]
    with subprocess.Popen(
        argv, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        connection, data = receive_request(fake_agent)
        with connection:
            assert data.isascii()
            sent = json.loads(data)
            assert [os.fsencode(arg) for arg in sent["argv"]] == [b"run", b"--help", odd, b""]
            assert os.fsencode(sent["env"]["ODD"]) == odd
            assert sent["env"][os.fsdecode(b"NAME_\xe9")] == "v"
            assert os.fsencode(sent["cwd"]) == bytes(folder)
            connection.sendall(line({"accepted": 1}) + line({"exit": 5}))
        out, err = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, out, err) == (5, b"", b"")


def test_messages_after_accepted_may_come_in_pieces_and_unknown_ones_are_ignored(
    client: str, fake_agent: FakeAgent
) -> None:
    with subprocess.Popen(
        [client, "run", "--help"], env=fake_env(fake_agent), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        connection, _ = receive_request(fake_agent)
        with connection:
            connection.sendall(line({"accepted": 1}) + b'{"note": [1, {"a": null}]}\n{"ex')
            time.sleep(0.2)
            assert process.poll() is None
            connection.sendall(b'it": 255}\n')
            out, err = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, out, err) == (255, b"", b"")


@pytest.mark.parametrize(
    "after",
    [b'{"exit": "7"}\n', b'{"exit": 256}\n', b'{"exit": -1}\n', b"not json\n", b'{"exit": 7'],
    ids=["string", "above-255", "negative", "garbage", "cut"],
)
def test_an_agent_that_ends_after_accepting_without_an_exit_code_is_an_error(
    client: str, fake_agent: FakeAgent, after: bytes
) -> None:
    returncode, out, err = answered(client, fake_agent, line({"accepted": 1}) + after)
    assert (returncode, out) == (1, b"")
    assert err == b"trust: error: the agent ended before the command finished\n"


@pytest.mark.parametrize(
    ("answers", "code", "stderr"),
    [
        (
            b' {"accepted": 1}\n',
            1,
            b"trust: error: the agent's answer makes no sense; the command may have started\n",
        ),
        (
            b'{"refused": "\xff"}\n',
            1,
            b"trust: error: the agent's answer makes no sense; the command may have started\n",
        ),
        (
            b'{"refused": "\\\x00"}\n',
            1,
            b"trust: error: the agent's answer makes no sense; the command may have started\n",
        ),
        (
            b'{"accepted" 1}\n',
            1,
            b"trust: error: the agent's answer makes no sense; the command may have started\n",
        ),
        (b'{"accepted": 1, "exit": "x"}\n{"exit": 4}\n', 4, b""),
        (b'{"accepted": true}\r\t\n{"exit": 1, "exit": 0}\n', 0, b""),
        (b'{"accepted": 1, "refused": "no"}\n', 0, b""),
    ],
    ids=[
        "space-before",
        "not-utf8",
        "nul-escape",
        "no-colon",
        "exit-in-first-answer",
        "last-key-wins",
        "refused-wins",
    ],
)
def test_answers_are_read_as_strictly_as_json_loads_reads_them(
    client: str, fake_agent: FakeAgent, answers: bytes, code: int, stderr: bytes
) -> None:
    # Both clients read the agent's lines alike: one JSON object, nothing before it; "refused"
    # anywhere in the first answer means the command runs here (0: `run --help` ran in-process).
    returncode, out, err = answered(client, fake_agent, answers)
    assert (returncode, err) == (code, stderr)
    assert out.startswith(b"Usage: trust run") == (b"refused" in answers and code == 0)


def answered(client: str, fake: FakeAgent, answers: bytes) -> tuple[int, bytes, bytes]:
    """`CLIENT run --help` against the fake agent, which answers its request with `answers` and
    hangs up: the client's exit code, stdout and stderr."""
    with subprocess.Popen(
        [client, "run", "--help"], env=fake_env(fake), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        with accept_request(fake) as connection:
            connection.sendall(answers)
        out, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, out, err


def mangled_answers(count: int, seed: int = 18) -> list[bytes]:
    """Answers an agent could send, each with one to three bytes deleted, inserted or replaced
    (never the last newline): mostly malformed, some still valid JSON of another meaning."""
    rng = random.Random(seed)
    answers = [
        line({"accepted": 1}) + line({"exit": 3}),
        line({"refused": "busy"}),
        line({"accepted": 7, "note": [1, {"k": None, "t": True}]}) + line({"exit": 255}),
    ]
    alphabet = b'{}[]":,\\ 0123456789-.eE\x00\xff\xc3tfnrul'
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(answers))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) - 1)
            change = rng.randrange(3)
            if change == 0:
                del data[at]
            elif change == 1:
                data.insert(at, rng.choice(alphabet))
            else:
                data[at] = rng.choice(alphabet)
        out.append(bytes(data))
    return out


def test_both_clients_read_mangled_answers_alike(fake_agent: FakeAgent) -> None:
    # The same exit code and message from the C and the Python client, whatever the agent says.
    # TRUST_TEST_MANGLED=COUNT[:SEED] for a longer search (900 answers, seeds 1-3: all alike).
    count, _, seed = os.environ.get("TRUST_TEST_MANGLED", "60:18").partition(":")
    for answers in mangled_answers(int(count), int(seed or 18)):
        outcomes = []
        for client in (TRUST, TRUST_PYTHON):
            returncode, out, err = answered(client, fake_agent, answers)
            outcomes.append((returncode, err, out.startswith(b"Usage: trust run")))
        assert outcomes[0] == outcomes[1], answers


def fake_env(fake: FakeAgent) -> dict[str, str]:
    env = {**os.environ, console.SOCKET_ENV: str(fake.path)}
    env.pop(console.NO_AGENT_ENV, None)
    return env


def accept_request(fake: FakeAgent) -> socket.socket:
    """The fake agent's next connection, once the client's request for `run --help` is in."""
    connection, data = receive_request(fake)
    assert json.loads(data)["argv"] == ["run", "--help"]
    return connection


def test_signals_before_the_answer_are_kept_and_sent_after_accepted(
    client: str, fake_agent: FakeAgent
) -> None:
    # Before the agent answers, a ^C must neither kill the client with a traceback (the command may
    # be starting in the agent) nor be lost: it is passed on once the command is accepted.
    with (
        subprocess.Popen(
            [client, "run", "--help"],
            env=fake_env(fake_agent),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as client,
        accept_request(fake_agent) as connection,
    ):
        client.send_signal(signal.SIGINT)
        time.sleep(0.3)  # handled while the client waits for the answer
        client.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert client.poll() is None
        connection.sendall(line({"accepted": 4242}))
        received = b""
        while received.count(b"\n") < 2 and (chunk := connection.recv(65536)):
            received += chunk
        assert [json.loads(one) for one in received.splitlines()] == [{"signal": 2}, {"signal": 15}]
        connection.sendall(line({"exit": 7}))
        out, err = client.communicate(timeout=TIMEOUT)
    assert (client.returncode, out, err) == (7, b"", b"")


@pytest.mark.parametrize(
    ("signum", "code", "message"),
    [(signal.SIGINT, 130, b"trust: interrupted\n"), (signal.SIGTERM, -signal.SIGTERM, b"")],
)
def test_a_signal_before_a_refusal_stops_the_command_before_it_starts(
    client: str, fake_agent: FakeAgent, signum: signal.Signals, code: int, message: bytes
) -> None:
    with (
        subprocess.Popen(
            [client, "run", "--help"],
            env=fake_env(fake_agent),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as client,
        accept_request(fake_agent) as connection,
    ):
        client.send_signal(signum)
        time.sleep(0.3)
        connection.sendall(line({"refused": "a test"}))
        out, err = client.communicate(timeout=TIMEOUT)
    assert (client.returncode, out, err) == (code, b"", message)  # what it would do in-process


@pytest.mark.parametrize(
    "answer",
    [b"", b"garbage\n", line({"neither": 1}), b"[" * 100_000 + b"\n"],
    ids=["none", "garbage", "unknown", "nested too deep"],
)
def test_an_agent_that_ends_without_a_clear_answer_is_an_error_not_a_second_run(
    client: str, fake_agent: FakeAgent, answer: bytes
) -> None:
    # The agent may have forked the command already (it died before it could say so): running it
    # in-process as well would run it twice.
    returncode, out, err = answered(client, fake_agent, answer)
    assert returncode == 1 and out == b"", err
    assert err.count(b"\n") == 1 and err.startswith(b"trust: error: the agent")
    assert err.endswith(b"; the command may have started\n")
    if not answer:
        assert err == b"trust: error: the agent ended before answering; the command may have started\n"


def test_a_request_reset_unread_falls_back_to_running_in_process(client: str, fake_agent: FakeAgent) -> None:
    # An agent that closes its socket (it stops) with connections still queued never read them.
    with subprocess.Popen(
        [client, "run", "--help"], env=fake_env(fake_agent), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        poller = select.poll()
        poller.register(fake_agent.listener, select.POLLIN)
        assert poller.poll(TIMEOUT * 1000)  # the client is queued
        time.sleep(0.3)  # and has sent its request
        fake_agent.listener.close()
        out, err = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, err) == (0, b"")
    assert out.startswith(b"Usage: trust run")


@pytest.mark.parametrize("closed", [0, 1, 2])
def test_a_closed_stdio_descriptor_is_handed_over_as_dev_null(
    client: str, fake_agent: FakeAgent, closed: int
) -> None:
    # Not the client's socket, which would take the closed descriptor's number otherwise.
    with subprocess.Popen(
        [client, "run", "--help"],
        env=fake_env(fake_agent),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(closed),
    ) as process:

        def dev_null_in_place(fds: list[int]) -> None:
            assert len(fds) == 3
            assert os.path.samestat(os.fstat(fds[closed]), os.stat(os.devnull))

        connection, _ = receive_request(fake_agent, dev_null_in_place)
        with connection:
            connection.sendall(line({"refused": "a test"}))
        out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0 and b"Traceback" not in err, err
    assert out.startswith(b"Usage: trust run") == (closed != 1)


def test_a_command_with_its_stdout_closed_writes_nothing_and_no_traceback(client: str, cli: Setup) -> None:
    done = subprocess.run(
        [client, "ps", "--store", str(cli.store)],
        capture_output=True,
        preexec_fn=lambda: os.close(1),
        timeout=TIMEOUT,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_the_client_sends_nothing_to_another_users_agent(client: str) -> None:
    # A socket at $TRUST_AGENT_SOCKET served by another user (nobody): it would get root's
    # environment and stdio, and could make up the exit code.
    with short_directory() as directory:
        os.chown(directory, NOBODY, NOBODY)
        path = directory / "agent.sock"

        def impostor(write_end: int) -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(str(path))
                listener.listen(1)
                listener.settimeout(TIMEOUT)
                os.write(write_end, b"ready\n")
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(TIMEOUT)
                    received, count = b"", 0
                    while b"\n" not in received:
                        chunk, fds, _, _ = socket.recv_fds(connection, 1024 * 1024, 8)
                        for fd in fds:
                            os.close(fd)
                        count += len(fds)
                        if not chunk:
                            break
                        received += chunk
                    if received:
                        connection.sendall(line({"accepted": 1}) + line({"exit": 42}))
                    os.write(write_end, f"{len(received)} bytes, {count} fds\n".encode())

        with forked_as(NOBODY, impostor) as reader:
            assert reader.readline() == b"ready\n"
            done = run([client, "run", "--help"], {**os.environ, console.SOCKET_ENV: str(path)})
            report = reader.read()
    assert report == b"0 bytes, 0 fds\n"
    assert done.returncode == 0 and done.stdout.startswith("Usage: trust run"), done.stderr


# -- the protocol: refusals ---------------------------------------------------------------------


MALFORMED: list[tuple[str, bytes]] = [
    ("not-json", b"this is not json\n"),
    ("not-an-object", line(["run"])),
    ("no-newline", json.dumps(request()).encode()),
    ("no-env", line({k: v for k, v in request().items() if k != "env"})),
    ("no-version", line({k: v for k, v in request().items() if k != "version"})),
    ("no-cwd", line({k: v for k, v in request().items() if k != "cwd"})),
    ("empty-argv", line(request(argv=[]))),
    ("not-delegated", line(request(argv=["ps"]))),
    ("agent-itself", line(request(argv=["agent"]))),
    ("argv-not-strings", line(request(argv=["run", 1]))),
    ("env-not-strings", line(request(env={"A": 1}))),
    ("umask-a-string", line(request(umask="022"))),
    ("umask-a-bool", line(request(umask=True))),
    ("version-a-number", line(request(version=1))),
]


@pytest.mark.parametrize("data", [data for _, data in MALFORMED], ids=[name for name, _ in MALFORMED])
def test_a_malformed_request_is_refused(agent: Agent, data: bytes) -> None:
    assert speak(agent.socket, data, shut=True) == [{"refused": "malformed request"}]
    assert_serves(agent)


def test_a_request_without_three_fds_is_refused(agent: Agent) -> None:
    answers = speak(agent.socket, line(request()), [0])
    assert answers == [{"refused": "expected stdin, stdout and stderr"}]
    assert speak(agent.socket, line(request()), []) == answers
    assert_serves(agent)


def test_another_version_is_refused(agent: Agent) -> None:
    (answer,) = speak(agent.socket, line(request(version="0.0.0-other")))
    assert answer == {"refused": f"this agent runs trust {trust.__version__}, the client is 0.0.0-other"}
    assert_serves(agent)


@contextlib.contextmanager
def forked_as(uid: int, child: Callable[[int], None]) -> Iterator[BinaryIO]:
    """Run `child(write_end)` in a fork of this process with uid and gid `uid` and no groups; yields
    the read end of the pipe it writes to (an exception in the child is written there too)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            child(write_end)
        except BaseException as exc:
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as reader:
            yield reader
    finally:
        os.waitpid(pid, 0)


def first_line(sock: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"\n") and (chunk := sock.recv(1)):
        received += chunk
    return received


@pytest.mark.parametrize("sends", [True, False], ids=["with-request", "silent"])
def test_another_user_is_refused_before_the_agent_reads_anything(agent: Agent, sends: bool) -> None:
    # Open the way to the socket for everyone: only the SO_PEERCRED check is left to refuse. The
    # refusal comes before the agent reads: one that sends nothing does not hold it for a second.
    opened = [agent.socket.parent.parent, agent.socket.parent, agent.socket]
    modes = [stat.S_IMODE(path.stat().st_mode) for path in opened]
    for path in opened:
        os.chmod(path, 0o666 if path == agent.socket else 0o711)

    def client(write_end: int) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(str(agent.socket))
            if sends:
                with contextlib.suppress(BrokenPipeError):  # refused and closed before it sent
                    socket.send_fds(sock, [line(request())], [0, 1, 2])
            os.write(write_end, first_line(sock))

    try:
        with forked_as(NOBODY, client) as reader:
            received = reader.read()
    finally:
        for path, mode in zip(opened, modes, strict=True):
            os.chmod(path, mode)
    assert received.endswith(b"\n") and received.count(b"\n") == 1, received
    assert json.loads(received) == {"refused": f"only uid {os.geteuid()} may use this agent"}
    assert_serves(agent)


CONFINED_CLIENT = """
import ctypes, os, socket, struct, sys
if sys.argv[2] == "seccomp":  # a filter that allows everything: only that there is one differs
    libc = ctypes.CDLL(None, use_errno=True)
    allow = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000))  # RET ALLOW
    program = ctypes.create_string_buffer(struct.pack("@HP", 1, ctypes.addressof(allow)))
    arguments = [ctypes.c_ulong(n) for n in (22, 2, ctypes.addressof(program), 0, 0)]
    if libc.prctl(*arguments) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl")
null = os.open(os.devnull, os.O_RDWR)
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
    client.settimeout(30)
    client.connect(sys.argv[1])
    try:
        socket.send_fds(client, [sys.stdin.buffer.read()], [null, null, null])
    except BrokenPipeError:  # refused and closed before it was sent
        pass
    answer = b""
    while not answer.endswith(b"\\n") and (chunk := client.recv(1)):
        answer += chunk
sys.stdout.buffer.write(answer)
"""
"""A raw client: sends the request on its stdin, prints the agent's first answer. `seccomp` as its
second argument: under a seccomp filter."""

CONFINEMENTS = [
    ("no-new-privs", ["setpriv", "--no-new-privs"], "plain", "no_new_privs"),
    (
        "no-capabilities",
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all"],
        "plain",
        "effective capabilities",
    ),
    (
        "setpriv-all",
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"],
        "plain",
        "capability bounding set",
    ),
    ("seccomp", [], "seccomp", "seccomp mode"),
    ("mount-namespace", ["unshare", "--mount"], "plain", "mnt namespace"),
    ("user-namespace", ["unshare", "--user", "--map-root-user"], "plain", "user namespace"),
    ("pid-namespace", ["unshare", "--pid", "--fork"], "plain", "pid namespace"),
    ("net-namespace", ["unshare", "--net"], "plain", "net namespace"),
    ("uts-namespace", ["unshare", "--uts"], "plain", "uts namespace"),
    ("ipc-namespace", ["unshare", "--ipc"], "plain", "ipc namespace"),
    ("cgroup-namespace", ["unshare", "--cgroup"], "plain", "cgroup namespace"),
    ("chroot", ["chroot", "/"], "plain", None),  # the same root: not a difference
]


@pytest.mark.parametrize(
    ("wrapper", "kind", "named"),
    [confinement[1:] for confinement in CONFINEMENTS],
    ids=[confinement[0] for confinement in CONFINEMENTS],
)
def test_a_client_confined_more_than_the_agent_is_refused(
    agent: Agent, wrapper: list[str], kind: str, named: str | None
) -> None:
    # Root without capabilities, with no_new_privs, under seccomp or in other namespaces must not
    # get the agent's unconfined root: refused, it runs the command in-process, confined as it is.
    done = subprocess.run(
        [*wrapper, sys.executable, "-c", CONFINED_CLIENT, str(agent.socket), kind],
        input=line(request()),
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    if named is None:
        assert isinstance(answer.get("accepted"), int), answer
    else:
        assert set(answer) == {"refused"}, answer
        assert re.fullmatch(r"the client's .* differs? from the agent's: .*", answer["refused"]), answer
        assert named in answer["refused"]
    assert_serves(agent)


def test_a_client_without_capabilities_cannot_start_a_container_through_the_agent(
    cli: Setup, agent: Agent
) -> None:
    confined = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
    argv = [*confined, *cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo inside")]
    in_process = run(argv, in_process_env())
    through = run(argv, agent.env)
    assert in_process.returncode != 0 and "inside" not in in_process.stdout
    assert (through.returncode, through.stdout) == (in_process.returncode, in_process.stdout), through.stderr


def test_after_refusals_a_real_run_still_works(cli: Setup, agent: Agent) -> None:
    for data in (b"garbage\n", line(request(version="other")), line(request(argv=["ps"]))):
        assert "refused" in speak(agent.socket, data, shut=True)[0]
    done = run(cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo still"), agent.env)
    assert (done.returncode, done.stdout) == (0, "still\n"), done.stderr


# -- the socket ---------------------------------------------------------------------------------


def test_the_socket_is_private(agent: Agent) -> None:
    mode = agent.socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(agent.socket.parent.stat().st_mode) == 0o700  # made by the agent


def test_an_agent_replaces_a_stale_socket_file(cli: Setup) -> None:
    with short_directory() as directory:
        path = directory / "agent.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
            dead.bind(str(path))
        os.chmod(path, 0o755)
        with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))
        started = start_agent(path, directory / "agent.log")
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a new socket, not the stale file
            assert_serves(started)
            env = {**os.environ, console.SOCKET_ENV: str(path)}
            env.pop(console.NO_AGENT_ENV, None)
            done = run(cli.admit("run", "--rm", cli.ref, "sh", "-c", "echo served"), env)
            assert (done.returncode, done.stdout) == (0, "served\n"), done.stderr
        finally:
            stop_agent(started)


@pytest.mark.parametrize(
    ("mode", "owner"),
    [(0o777, 0), (0o1777, 0), (0o770, 0), (0o720, 0), (0o700, NOBODY)],
    ids=["world-writable", "sticky", "group-writable", "group-write-only", "another-owner"],
)
def test_an_agent_refuses_a_socket_folder_that_is_not_private(mode: int, owner: int) -> None:
    with short_directory() as directory:
        folder = directory / "sockets"
        folder.mkdir()
        os.chmod(folder, mode)
        os.chown(folder, owner, owner)
        done = subprocess.run(
            [TRUST, "agent", "--socket", str(folder / "agent.sock")],
            env=in_process_env(),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"trust: error: {folder} ")
        assert not (folder / "agent.sock").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_agent_and_removes_its_socket(signum: signal.Signals) -> None:
    with short_directory() as directory:
        path = directory / "agent.sock"
        started = start_agent(path, directory / "agent.log")
        try:
            started.process.send_signal(signum)
            assert started.process.wait(timeout=TIMEOUT) == 0
            assert not path.exists()
        finally:
            stop_agent(started)


def test_a_second_agent_on_a_live_socket_is_refused(agent: Agent) -> None:
    done = run([TRUST, "agent", "--socket", str(agent.socket)], in_process_env())
    assert done.returncode == 2 and f"an agent already listens on {agent.socket}" in done.stderr
    assert_serves(agent)


def test_an_agent_does_not_replace_a_file_that_is_not_a_socket() -> None:
    with short_directory() as directory:
        path = directory / "important"
        path.write_text("important")
        done = run([TRUST, "agent", "--socket", str(path)], in_process_env())
        assert done.returncode == 2 and "exists and is not a socket" in done.stderr
        assert path.read_text() == "important"


def test_an_agent_that_stops_leaves_a_newer_agents_socket() -> None:
    with short_directory() as directory:
        path = directory / "agent.sock"
        first = start_agent(path, directory / "first.log")
        try:
            path.unlink()  # someone removed it; a new agent takes the path
            second = start_agent(path, directory / "second.log")
            try:
                first.process.terminate()
                assert first.process.wait(timeout=TIMEOUT) == 0
                assert stat.S_ISSOCK(path.stat().st_mode)
                assert_serves(second)
            finally:
                stop_agent(second)
            assert not path.exists()
        finally:
            stop_agent(first)


def test_a_stopping_agent_finishes_its_commands_and_their_exit_codes(cli: Setup, own_agent: Agent) -> None:
    started = own_agent
    with ready_client(
        cli.admit("run", "--rm", "-i", cli.ref, "sh", "-c", "echo ready; read line; echo got $line; exit 3"),
        env=started.env,
        stdin=subprocess.PIPE,
    ) as client:
        assert client.stdin is not None and client.stdout is not None
        started.process.terminate()
        assert wait_until(lambda: not started.socket.exists())  # new commands: in-process
        assert started.alive()  # still waiting for the command it runs
        client.stdin.write(b"still here\n")
        client.stdin.close()
        assert client.stdout.read() == b"got still here\n"
        assert client.wait(timeout=TIMEOUT) == 3  # the exit code still reaches the client
    assert started.process.wait(timeout=TIMEOUT) == 0
    assert wait_until(lambda: not cli.containers() and not cli.mounted())  # --rm was honoured


STOPPED_AT = """
import os, signal, sys
from pathlib import Path
import trust.cli.agent as agent
real_encode, agent_pid = agent.encode, os.getpid()
def encode(message):
    if os.getpid() == agent_pid and sys.argv[2] in message:
        os.kill(agent_pid, signal.SIGTERM)  # handled before this returns
    return real_encode(message)
agent.encode = encode
agent.serve(Path(sys.argv[1]))
"""
"""An agent that receives SIGTERM just before it sends `accepted` (just after forking the command)
or `exit` (just after reaping it): the windows where an exception would lose an answer."""


@pytest.mark.parametrize("moment", ["accepted", "exit"])
def test_a_stop_signal_just_before_an_answer_still_lets_the_answer_out(moment: str) -> None:
    with short_directory() as directory:
        path = directory / "agent.sock"
        argv = [sys.executable, "-c", STOPPED_AT, str(path), moment]
        started = start_agent(path, directory / "agent.log", argv)
        try:
            answers = speak(path, line(request()), timeout=10)
            assert len(answers) == 2 and answers[1] == {"exit": 0}, started.log.read_text(errors="replace")
            assert started.process.wait(timeout=TIMEOUT) == 0
            assert not path.exists()
        finally:
            stop_agent(started)


HELD_EXIT = """
import os, sys, time
from pathlib import Path
import trust.cli.agent as agent
agent_pid, real_exit, gate = os.getpid(), os._exit, Path(sys.argv[2])
def held_exit(code):
    while os.getpid() != agent_pid and not gate.exists():
        time.sleep(0.01)
    real_exit(code)
os._exit = held_exit
agent.serve(Path(sys.argv[1]))
"""
"""An agent whose children, done with their command, do not exit until the file argv[2] exists."""


def test_the_client_has_its_exit_code_before_the_child_has_exited() -> None:
    # Unmapping a process the size of the agent takes milliseconds nobody needs to wait for.
    with short_directory() as directory:
        path, gate = directory / "agent.sock", directory / "gate"
        started = start_agent(
            path, directory / "agent.log", [sys.executable, "-c", HELD_EXIT, str(path), str(gate)]
        )
        try:
            answers = speak(path, line(request()), timeout=10)
            assert answers[1:] == [{"exit": 0}], started.log.read_text(errors="replace")
            child = answers[0]["accepted"]
            assert Path(f"/proc/{child}").exists()  # still there, held before its exit
            gate.touch()
            assert wait_until(lambda: child not in children_of(started.pid))
        finally:
            gate.touch()
            stop_agent(started)


def test_a_second_signal_stops_the_agent_at_once_and_the_command_goes_on(
    cli: Setup, own_agent: Agent
) -> None:
    started = own_agent
    with ready_client(
        cli.admit("run", "--rm", "-i", cli.ref, "sh", "-c", "echo ready; read line; echo got $line"),
        env=started.env,
        stdin=subprocess.PIPE,
    ) as client:
        assert client.stdin is not None and client.stdout is not None and client.stderr is not None
        (worker,) = children_of(started.pid)
        started.process.terminate()
        assert wait_until(lambda: not started.socket.exists())
        assert started.alive()  # waiting for its command
        started.process.terminate()
        assert started.process.wait(timeout=5) == 0
        assert client.wait(timeout=TIMEOUT) == 1  # told, not left waiting
        assert Path(f"/proc/{worker}").exists()  # the command goes on
        client.stdin.write(b"anyway\n")
        client.stdin.close()
        assert client.stdout.read() == b"got anyway\n"
        assert b"trust: error: the agent ended before the command finished\n" in client.stderr.read()
    assert wait_until(lambda: not cli.containers() and not cli.mounted())


# -- hostile or unusual clients -------------------------------------------------------------------


@pytest.fixture
def own_agent() -> Iterator[Agent]:
    """An agent for one test: for those that stop, stall or kill it."""
    with short_directory() as directory:
        running = start_agent(directory / "agent.sock", directory / "agent.log")
        try:
            yield running
        finally:
            stop_agent(running)


def test_a_deeply_nested_request_is_refused_and_the_agent_lives_on(own_agent: Agent) -> None:
    answers = speak(own_agent.socket, b"[" * 100_000 + b"\n", shut=True)
    assert answers == [{"refused": "malformed request"}]
    assert own_agent.alive()
    assert_serves(own_agent)


def test_a_silent_connection_does_not_stall_the_agent(own_agent: Agent) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(own_agent.socket))
        answers = speak(own_agent.socket, line(request()), timeout=2)
    assert answers[-1] == {"exit": 0}


def test_a_dribbling_connection_does_not_stall_the_agent(own_agent: Agent) -> None:
    # A byte every 0.3 s: each read is quick, the request never ends. It has a second in all.
    stop = threading.Event()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dribbling:
        dribbling.connect(str(own_agent.socket))

        def dribble() -> None:
            with contextlib.suppress(OSError):
                while not stop.wait(0.3):
                    dribbling.send(b" ")

        thread = threading.Thread(target=dribble)
        thread.start()
        try:
            time.sleep(0.1)  # the agent reads from it first
            answers = speak(own_agent.socket, line(request()), timeout=8)  # served after a second
            assert answers[-1] == {"exit": 0}
        finally:
            stop.set()
            thread.join()


def test_a_client_gone_before_its_request_is_read_gets_nothing_run(own_agent: Agent, tmp_path: Path) -> None:
    output = tmp_path / "output"
    with open(output, "wb") as stdout, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holding:
        holding.connect(str(own_agent.socket))  # served first: the agent waits a second for its request
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
            gone.connect(str(own_agent.socket))
            socket.send_fds(gone, [line(request())], [stdout.fileno()] * 3)
        # Its request and descriptors are queued; nobody is left to see the command or stop it.
        assert_serves(own_agent)
    assert wait_until(lambda: children_of(own_agent.pid) == [])
    assert output.read_bytes() == b""


def test_running_out_of_descriptors_does_not_stop_the_agent(own_agent: Agent) -> None:
    soft, hard = resource.prlimit(own_agent.pid, resource.RLIMIT_NOFILE)
    taken = {int(n) for n in os.listdir(f"/proc/{own_agent.pid}/fd")}
    lowest_free = min(set(range(len(taken) + 1)) - taken)
    resource.prlimit(own_agent.pid, resource.RLIMIT_NOFILE, (lowest_free, hard))  # accept(): EMFILE
    try:
        with contextlib.ExitStack() as stack:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            stack.callback(os.close, null)
            client = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            client.settimeout(TIMEOUT)
            client.connect(str(own_agent.socket))
            socket.send_fds(client, [line(request())], [null, null, null])
            time.sleep(0.5)
            assert own_agent.alive(), own_agent.log.read_text(errors="replace")
            resource.prlimit(own_agent.pid, resource.RLIMIT_NOFILE, (soft, hard))
            answers = list(replies(client))  # queued meanwhile, served now
        assert answers[-1] == {"exit": 0}
    finally:
        if own_agent.alive():
            resource.prlimit(own_agent.pid, resource.RLIMIT_NOFILE, (soft, hard))


HIGH_DESCRIPTORS = """
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
null = os.open(os.devnull, os.O_RDONLY)
os.set_inheritable(null, True)
for fd in range(3, 1100):
    if fd != null:
        os.dup2(null, fd)
os.execv(sys.argv[1], sys.argv[1:])
"""
"""Runs a command with descriptors 3 to 1099 taken: every descriptor it opens is above 1024."""


def test_an_agent_whose_descriptors_are_above_1024_serves() -> None:
    # select() cannot watch a descriptor ≥ 1024 (FD_SETSIZE); a busy agent gets there.
    with short_directory() as directory:
        path = directory / "agent.sock"
        argv = [sys.executable, "-c", HIGH_DESCRIPTORS, TRUST, "agent", "--socket", str(path)]
        started = start_agent(path, directory / "agent.log", argv)
        try:
            sockets = [
                int(n)
                for n in os.listdir(f"/proc/{started.pid}/fd")
                if os.readlink(f"/proc/{started.pid}/fd/{n}").startswith("socket:")
            ]
            assert sockets and min(sockets) >= 1024
            assert_serves(started)
            assert_serves(started)
        finally:
            stop_agent(started)


def test_a_signal_message_split_across_reads_is_relayed(cli: Setup, agent: Agent) -> None:
    script = "trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.05; done"
    argv = [
        "run",
        "--store",
        str(cli.store),
        "--policy",
        str(cli.policy),
        "--rm",
        cli.ref,
        "sh",
        "-c",
        script,
    ]
    read_end, write_end = os.pipe()
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(os.fdopen(read_end, "rb"))
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, null)
        client = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        client.settimeout(TIMEOUT)
        try:
            client.connect(str(agent.socket))
            socket.send_fds(client, [line(request(argv=argv, env=agent.env))], [null, write_end, write_end])
        finally:
            os.close(write_end)  # the command has its copy
        assert reader.readline() == b"ready\n"
        client.sendall(b'{"sig')
        time.sleep(0.3)  # two reads for the agent
        client.sendall(b'nal": 15}\n')
        answers = list(replies(client))
        assert reader.read() == b"got TERM\n"
    assert len(answers) == 2 and answers[1] == {"exit": 9}, answers


def test_a_client_in_a_deleted_directory_falls_back(agent: Agent, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{TRUST}" run --help'
    done = run(["sh", "-c", script], agent.env)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("Usage: trust run")


def test_an_unexpected_error_is_reported_as_in_process(cli: Setup, agent: Agent) -> None:
    # TRUST_DEBUG re-raises errors instead of mapping them to exit codes: a traceback, exit 1.
    rejected = cli.ref.replace("/t/agent-open@", "/t/agent-rejected@")  # the default rule rejects it
    argv = cli.admit("run", "--rm", rejected, "true")
    in_process = run(argv, {**in_process_env(), "TRUST_DEBUG": "1"})
    through = run(argv, {**agent.env, "TRUST_DEBUG": "1"})
    assert in_process.returncode == through.returncode == 1
    assert "Traceback" in through.stderr
    assert through.stderr.splitlines()[-1] == in_process.stderr.splitlines()[-1]


def test_a_relative_store_works(cli: Setup, agent: Agent) -> None:
    argv = [TRUST, "run", "--store", cli.store.name, "--policy", str(cli.policy), "--rm", cli.ref, "true"]
    for env in (in_process_env(), agent.env):
        done = run(argv, env, cwd=cli.store.parent)
        assert done.returncode == 0, done.stderr


def test_twenty_silent_connections_do_not_delay_a_real_client(own_agent: Agent) -> None:
    """The agent reads requests as they arrive: 20 connections that say nothing (each allowed a
    second) must not make a real client wait 20 s behind them."""
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(20)]
    try:
        for connection in silent:
            connection.connect(str(own_agent.socket))
        time.sleep(0.1)  # all accepted and waiting for their requests
        started = time.monotonic()
        answers = speak(own_agent.socket, line(request()), timeout=5)
        assert answers[-1] == {"exit": 0}
        assert time.monotonic() - started < 0.9, "served before the silent connections' second ran out"
        # Each silent one is refused once its second is over; the agent lives on.
        silent[0].settimeout(3)
        assert json.loads(silent[0].recv(4096)) == {"refused": "no request in time"}
    finally:
        for connection in silent:
            connection.close()
    assert own_agent.alive()
    assert_serves(own_agent)
