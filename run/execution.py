"""`trust exec`: a new process in a running container, through the OCI runtime's `exec`.

    options = ExecOptions(command=("sh", "-c", "ps"), env=("DEBUG=1",), user="nobody")
    code = exec_in(runtime, container, options)       # the process's exit status (128+N: signal N)

The runtime (`runc exec --process FILE`) joins the container's namespaces and cgroup and applies its
seccomp filter itself; what the process may do beyond that is in the `process` object written here,
derived from the container's own `config.json` so that an exec'd process never gets more than the
container's first process: the same bounding capability set (usable only by uid 0, as at create),
rlimits and `noNewPrivileges`. `-u` names are looked up in the container's /etc/passwd as for
`run` (without following symlinks); the environment is the container's with `-e` on top.

Foreground: the runtime stays the process's parent and exits with its status; the signals this
process receives (INT, TERM, …) go to the runtime, which passes them on. A runtime that cannot start
the process (no such command: 127, not executable: 126, as docker) exits 255 after logging the
error; its message also reaches the caller's stderr, which the process shares. `-d`: the runtime
returns once the process runs; its output is discarded (as `docker exec -d`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from pull.errors import UsageError
from pull.records import dataclass
from run import libc
from run.bundle import check_workdir, merge_env, resolve_user
from run.errors import ContainerStateError, RuntimeFailure, start_failure
from run.record import Container
from run.runtime import Runtime, last_logged_error
from run.signals import FORWARDED_SIGNALS
from run.terminal import ConsoleSocket, console_size, relay

_RUNTIME_FAILED = 255
"""runc's and crun's exit status when `exec` itself failed (the error is in the log)."""
_NOT_RUNNING = ("stopped", "not running", "cannot exec", "does not exist")


@dataclass(frozen=True)
class ExecOptions:
    command: tuple[str, ...]
    env: tuple[str, ...] = ()
    """`KEY=VALUE` on top of the container's environment (a bare `KEY`: the caller's value)."""
    user: str | None = None
    """`uid[:gid]` or `name[:group]`; default: the container's user."""
    workdir: str | None = None
    detach: bool = False
    interactive: bool = False
    """Pass stdin (otherwise /dev/null)."""
    tty: bool = False
    """A pseudo-terminal for the process (run/terminal.py)."""

    def __post_init__(self) -> None:
        if not self.command:
            raise UsageError("exec needs a command to run in the container")
        if any("\0" in arg for arg in self.command):
            raise UsageError("the command may not contain NUL characters")
        if self.detach and (self.interactive or self.tty):
            raise UsageError("--interactive and --tty need a foreground exec: drop --detach")


def process_spec(config: Mapping[str, Any], options: ExecOptions, rootfs: Path) -> dict[str, Any]:
    """The OCI `process` object for the runtime, from the container's config.json `process`."""
    base = config["process"]
    env = merge_env([], [str(e) for e in base.get("env") or ()], options.env)
    user: dict[str, Any] = dict(base["user"])
    if options.user is not None:
        resolved = resolve_user(options.user, rootfs)
        user = {"uid": resolved.uid, "gid": resolved.gid}
        if resolved.additional_gids:
            user["additionalGids"] = list(resolved.additional_gids)
        env["HOME"] = resolved.home or "/"
    bounding = list((base.get("capabilities") or {}).get("bounding") or ())
    usable = bounding if user["uid"] == 0 else []
    spec: dict[str, Any] = {
        "terminal": options.tty,
        "user": user,
        "args": list(options.command),
        "env": [f"{key}={value}" for key, value in env.items()],
        "cwd": check_workdir(options.workdir) if options.workdir is not None else base.get("cwd", "/"),
        "capabilities": {"bounding": bounding, "effective": usable, "permitted": usable},
        "rlimits": list(base.get("rlimits") or ()),
        "noNewPrivileges": bool(base.get("noNewPrivileges", True)),
    }
    size = console_size() if options.tty else None
    if size is not None:
        spec["consoleSize"] = size
    return spec


def exec_in(runtime: Runtime, container: Container, options: ExecOptions) -> int:
    """Run `options.command` in `container` (running); its exit status, 0 for a detached one.

    Raises:
        ContainerStateError: the container stopped meanwhile (exit 2).
        CommandNotFound, CommandNotExecutable: exit 127, 126.
        RuntimeFailure: the runtime failed otherwise.
        UsageError: a bad user or working directory.
    """
    config = json.loads((container.directory / "config.json").read_text())
    spec = process_spec(config, options, container.rootfs)
    tag = os.urandom(6).hex()
    process_file = container.directory / f"exec-{tag}.json"
    log_file = container.directory / f"exec-{tag}.log"
    fd = os.open(process_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(spec))  # the C encoder, as in run/bundle.py
    pid_file = container.directory / f"exec-{tag}.pid"
    try:
        argv = runtime.exec_argv(
            container.id, process_file, log_file, detach=options.detach, pid_file=pid_file
        )
        held = b""
        if options.tty:
            with ConsoleSocket() as console:
                argv = runtime.exec_argv(
                    container.id,
                    process_file,
                    log_file,
                    detach=True,
                    pid_file=pid_file,
                    console_socket=console.path,
                )
                code = _with_terminal(argv, console, pid_file, interactive=options.interactive)
        elif options.detach:
            quiet = subprocess.DEVNULL
            code = subprocess.run(argv, stdin=quiet, stdout=quiet, stderr=quiet, check=False).returncode
        else:
            code, held = _foreground(argv, pid_file, runtime.binary, interactive=options.interactive)
        message = None
        if code == _RUNTIME_FAILED or (options.detach and code != 0):
            message = last_logged_error(log_file)
        if message is not None:
            raise _failure(container, message)  # the runtime's own line (held back) is dropped
        _write_all(2, held)  # the process's, from a run too short to be seen starting
        return code
    finally:
        for path in (process_file, log_file, pid_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _foreground(
    argv: list[str], pid_file: Path, runtime_binary: str, *, interactive: bool
) -> tuple[int, bytes]:
    """Run the runtime's `exec` and wait; the process's stdin and stdout are ours.

    Its stderr goes through a pipe: until the process has replaced the runtime's init (its pid
    file names it and its executable is no longer the runtime), what arrives is held back and
    returned, because a runtime that cannot start the process prints its error there too and the
    caller then gets trust's one error line instead of two. After that it is copied through.
    """
    stdin = None if interactive else subprocess.DEVNULL
    held = b""
    with subprocess.Popen(argv, stdin=stdin, stderr=subprocess.PIPE) as child, _forwarding(child.pid):
        assert child.stderr is not None
        pipe = child.stderr.fileno()
        started = False
        while True:
            ready, _, _ = select.select([pipe], [], [], None if started else 0.02)
            if not started and _started(pid_file, runtime_binary):
                started = True
                _write_all(2, held)
                held = b""
            if not ready:
                continue
            chunk = os.read(pipe, 65536)
            if not chunk:
                break
            if started:
                _write_all(2, chunk)
            else:
                held += chunk
        return child.wait(), held


def _with_terminal(argv: list[str], console: ConsoleSocket, pid_file: Path, *, interactive: bool) -> int:
    """`exec -t`: the process's status, its pty relayed to our terminal meanwhile.

    runc hands a console socket the pty only when it detaches (`exec --detach`), and a detached
    process's status goes to whoever adopts it. So a forked helper marks itself a child subreaper
    (as the container's monitor does), runs the runtime, adopts the process when the runtime exits,
    waits for it and writes its status to a pipe; this process relays the terminal meanwhile.
    """
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    helper = os.fork()
    if helper == 0:
        os.close(read_end)
        _reap_exec(argv, pid_file, write_end)
    os.close(write_end)
    try:

        def runtime_going() -> bool:
            ready, _, _ = select.select([read_end], [], [], 0)
            return not ready  # the helper ends once the runtime failed or the process ended

        try:
            master = console.receive(alive=runtime_going)
        except RuntimeFailure:
            master = None  # it gave up before sending the terminal: its log says why
        if master is not None:
            try:
                target = int(pid_file.read_text())
            except (OSError, ValueError):
                target = None
            try:
                with _forwarding(target) if target is not None else contextlib.nullcontext():
                    relay(master, interactive=interactive)
            finally:
                os.close(master)
        report = b""
        while chunk := os.read(read_end, 4096):
            report += chunk
    finally:
        os.close(read_end)
        os.waitpid(helper, 0)
    try:
        return int(json.loads(report)["exit"])
    except (ValueError, KeyError, TypeError):
        return _RUNTIME_FAILED


def _reap_exec(argv: list[str], pid_file: Path, report_fd: int) -> NoReturn:
    """The helper of `_with_terminal` (a fork): never returns."""
    code = _RUNTIME_FAILED
    try:
        libc.become_subreaper()
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)  # the caller forwards them to the process itself
        quiet = subprocess.DEVNULL  # the runtime's own error is in its log
        if subprocess.run(argv, stdin=quiet, stdout=quiet, stderr=quiet, check=False).returncode == 0:
            target = int(pid_file.read_text())
            while True:
                reaped, status = os.waitpid(-1, 0)
                if reaped == target:
                    code = os.waitstatus_to_exitcode(status)
                    code = 128 - code if code < 0 else code
                    break
        os.write(report_fd, json.dumps({"exit": code}).encode())
    except BaseException:  # nothing may escape a fork into the caller's code
        pass
    finally:
        os._exit(0)


def _started(pid_file: Path, runtime_binary: str) -> bool:
    """Whether the exec'd process runs its own program (no longer the runtime's init)."""
    try:
        exe = os.readlink(f"/proc/{int(pid_file.read_text())}/exe")
    except (OSError, ValueError):
        return False
    return "memfd:" not in exe and exe != os.path.realpath(runtime_binary) and "runc" not in exe


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the caller's stderr is gone: nothing to tell it
        while data:
            data = data[os.write(fd, data) :]


def _failure(container: Container, message: str) -> RuntimeFailure | ContainerStateError:
    lowered = message.lower()
    if "exec:" not in lowered and any(text in lowered for text in _NOT_RUNNING):
        return ContainerStateError(f"container {container.short_id} is not running: {message}")
    return start_failure(message)


@contextlib.contextmanager
def _forwarding(pid: int) -> Iterator[None]:
    """Pass the signals we get to the runtime, which passes them to the exec'd process."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    with contextlib.suppress(ValueError):  # not the main thread: nothing is forwarded
        for signum in FORWARDED_SIGNALS:
            previous[signum] = signal.signal(signum, forward)
    try:
        yield
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
