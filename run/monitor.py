"""The container's monitor: the process that collects its exit code and cleans up after it.

    link = spawn_monitor(container, attach=False, interactive=False)
    created = link.wait_for("created", timeout=120)     # pids of the container and the monitor
    with forward_signals(runtime, container.id):        # foreground only
        runtime.start(container.id); link.wait_for("exited"); link.wait_closed()

Only a process's parent learns its exit status. Every container therefore gets a small monitor
process (a fork of the CLI, in its own session, see `spawn_monitor`) which marks itself a
*child subreaper* and runs `runc create` (for `trust run`, `runc run --detach`: created and started
in one runtime process). When that exits, the container's init process is orphaned and the kernel
re-parents it to the nearest subreaper: the monitor. The monitor then waits for it, records the exit
code (128+N for signal N) and whether the OOM killer struck in state.json, deletes the runtime
state, removes the cgroup, unmounts the rootfs and, for `--rm`, removes the directory (`teardown`,
`remove_directory`: `trust rm -f` uses them too). This is conmon's design, in ~150 lines of Python.

The monitor talks to the CLI that started it over a pipe, one JSON line per event: `created` (with
the pids; the container is started already for `trust run`) or `error` (create failed), then
`exited`; it closes the pipe when its cleanup is done. A foreground `trust run` forwards the signals
it receives (`runtime kill`), and reads the pipe until it closes: so when it returns, the exit code
is known and the mounts are gone. A detached container's CLI closes its end after `created`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from pull.errors import TrustError
from run import libc
from run.errors import ContainerNotFound, RuntimeFailure, start_failure
from run.network import start_release
from run.processes import alive, kill_process, start_time, wait_gone
from run.record import ACTIVE_STATES, Container, State, now, read_state, update_state
from run.rootfs import unmount_rootfs
from run.runtime import Runtime, cgroup_dirs, last_logged_error, oom_killed, remove_cgroups
from run.signals import FORWARDED_SIGNALS
from run.terminal import AttachServer, ConsoleSocket, attach_path
from run.userns import unmount_idmapped_layers

_RESTART_BACKOFF = 0.1
_RESTART_BACKOFF_MAX = 5.0
"""Seconds before restart N: 0.1 s * 2^(N-1), at most 5 (docker starts at 0.1 s too)."""


# -- the CLI's side ---------------------------------------------------------------------------


def spawn_monitor(
    container: Container,
    *,
    attach: bool,
    interactive: bool,
    start: bool,
    fork_once: bool = False,
) -> MonitorLink:
    """Fork the container's monitor (see the module doc); returns our end of its event pipe.

    With `start`, the monitor has the runtime create and start the container in one call. A
    container with a terminal (`container.tty`) has its pty master held by the monitor, which logs
    it and serves its attach socket (run/terminal.py `AttachServer`).

    A double fork of this process, not a new interpreter: the monitor needs nothing that is not
    loaded already, and a fresh Python would add ~50 ms to every start. It is `multiprocessing`'s
    fork method, with the same rule: we fork while single-threaded (the unpack pool has ended).

    `fork_once`: the caller ends soon after the container does (the `trust` executable, an agent's
    fork), so the monitor is its child, not its grandchild: when the caller exits, the orphaned
    monitor is re-parented as the double fork's is at once. A caller that lives on (a test runner)
    needs the second fork, or every monitor would stay its zombie. One fork of a process that has
    imported trust, and that fork's exit, are ~3 ms of a warm `run`.
    """
    read_end, write_end = os.pipe()
    with contextlib.ExitStack() as opened:
        # The container's stdio, set up in the monitor before it runs `runtime create`.
        stdio: list[int | None] = [None, None, None]  # None: inherited from this process
        if container.open_stdin:
            # Opened for reading and writing, the FIFO never reports end of input: the monitor
            # keeps this end as the container's stdin; `trust attach` clients write to it.
            os.mkfifo(container.stdin_fifo, 0o600)
            stdio[0] = _open_fd(opened, container.stdin_fifo, os.O_RDWR)
        elif not interactive or not attach:
            stdio[0] = _open_fd(opened, os.devnull, os.O_RDONLY)
        if not attach:
            for index, path in ((1, container.stdout_log), (2, container.stderr_log)):
                stdio[index] = _open_fd(opened, path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        sys.stdout.flush()
        sys.stderr.flush()  # nothing buffered may be written twice
        fork_again = not fork_once
        first = os.fork()
        if first == 0:
            _run_monitor_child(container.directory, stdio, read_end, write_end, start, fork_again)
    os.close(write_end)  # only the monitor holds it now: EOF means it is done
    if fork_again:
        os.waitpid(first, 0)  # the first child exits at once; the monitor is re-parented
    return MonitorLink(read_end)


def _open_fd(stack: contextlib.ExitStack, path: str | Path, flags: int, mode: int = 0o600) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    stack.callback(os.close, fd)
    return fd


class MonitorLink:
    """The CLI's end of the monitor's pipe: JSON events, one per line."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._buffer = b""

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event; None when the monitor closed the pipe."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if self._fd is None:
                return None
            if deadline is not None:
                ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise RuntimeFailure(f"the container monitor did not answer within {timeout:.0f} s")
            chunk = os.read(self._fd, 4096)
            if not chunk:
                self.close()
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event

    def wait_for(self, kind: str, timeout: float | None = None) -> dict[str, Any] | None:
        """Skip to the event `kind`; an `error` event raises RuntimeFailure; None at end of stream."""
        while (event := self.next(timeout)) is not None:
            if event.get("event") == "error":
                raise start_failure(str(event.get("message")))
            if event.get("event") == kind:
                return event
        return None

    def wait_closed(self) -> None:
        while self.next() is not None:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def forward_signals(runtime: Runtime, container_id: str) -> Iterator[Callable[[], None]]:
    """While a foreground container runs, pass the signals we get on to it (docker's sig-proxy).

    Entered before the runtime starts the container. Until the caller calls the function this
    yields (once the monitor reports the container created), signals are only kept: a `runtime
    kill` then could reach the runtime's own init process and fail the start. A second ^C while
    the first is still waiting gives up (KeyboardInterrupt), for a runtime that hangs.
    """
    pending: list[int] = []
    created = False

    def forward(signum: int, frame: FrameType | None) -> None:
        if created:
            with contextlib.suppress(TrustError):
                runtime.kill(container_id, signum)
        elif signum == signal.SIGINT and signal.SIGINT in pending:
            raise KeyboardInterrupt
        else:
            pending.append(signum)

    def replay() -> None:
        nonlocal created
        created = True
        while pending:
            with contextlib.suppress(TrustError):
                runtime.kill(container_id, pending.pop(0))

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for forwarded in FORWARDED_SIGNALS:
            previous[forwarded] = signal.signal(forwarded, forward)
    except ValueError:  # not the main thread: signals cannot be caught here, so none are forwarded
        pass
    try:
        yield replay
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)


# -- the monitor process ----------------------------------------------------------------------


def _run_monitor_child(
    directory: Path,
    stdio: list[int | None],
    read_end: int,
    write_end: int,
    start: bool,
    fork_again: bool,
) -> NoReturn:
    """In the child of `spawn_monitor`: leave the session, then fork the monitor and exit, or (not
    `fork_again`) become the monitor. Never returns."""
    code = 1
    try:
        os.setsid()  # no controlling terminal: a ^C or hang-up meant for the CLI never reaches it
        # The `trust` executable turns the collector off for its short life; a monitor's is long.
        # Frozen first: what the CLI allocated is never collected here, and the first collection
        # would otherwise walk all of it (every module's objects), before the runtime starts.
        gc.freeze()
        gc.enable()
        if not fork_again or os.fork() == 0:
            os.close(read_end)
            for target, fd in enumerate(stdio):
                if fd is not None:
                    os.dup2(fd, target)
            # Keep only stdio and the event pipe: an inherited lock or pipe would stay open (and a
            # flock held) for as long as the container runs.
            os.closerange(3, write_end)
            os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
            code = _Monitor(directory, write_end, start).run()
        else:
            code = 0
    finally:
        os._exit(code)  # never return into the CLI's (or a test runner's) code


class _Monitor:
    """The monitor process: runs `runtime create`, waits for the container, records its exit, cleans up."""

    def __init__(self, directory: Path, status_fd: int, start: bool) -> None:
        self.directory = directory
        self.status_fd: int | None = status_fd
        self.start = start
        self.attach_server: AttachServer | None = None

    def run(self) -> int:
        # Handlers inherited from the CLI (its signal forwarding) do not apply here. ^C and hang-ups
        # are ignored; SIGTERM stays fatal (`rm -f` kills a stuck monitor with SIGKILL anyway).
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            container = read_state(self.directory)
            runtime = Runtime.for_store(self.directory.parents[1], container.runtime)
            _become_subreaper()
            return self._supervise(container, runtime)
        except Exception as exc:  # a bug here must still reach the CLI, not vanish
            self._send({"event": "error", "message": f"monitor failed: {exc!r}"})
            return 1
        finally:
            self._close()

    def _supervise(self, container: Container, runtime: Runtime) -> int:
        pid_file = self.directory / "pid"
        returncode = self._create(container, runtime, pid_file, start=self.start)
        if returncode != 0:
            message = last_logged_error(container.runtime_log) or f"exit status {returncode}"
            prefix = f"{runtime.name} {'run' if self.start else 'create'} failed"
            text = message if message.startswith(prefix) else f"{prefix}: {message}"
            self._send({"event": "error", "message": text})
            return 1
        pid = int(pid_file.read_text().strip())
        me = os.getpid()
        self._send(
            {
                "event": "created",
                "pid": pid,
                "pidStartTime": start_time(pid),
                "monitorPid": me,
                "monitorStartTime": start_time(me),
            }
        )
        exit_code = _wait_child(pid)
        # --restart: the same bundle, rootfs and network again, until the policy says enough or
        # `stop` / `rm -f` ended it (`stopping` in the record, or the record gone).
        restarts = 0
        while _restart_due(self.directory, exit_code, restarts):
            restarts += 1
            time.sleep(min(_RESTART_BACKOFF * 2 ** (restarts - 1), _RESTART_BACKOFF_MAX))
            if not _restart_due(self.directory, exit_code, restarts - 1):
                break  # stopped while we waited
            with contextlib.suppress(TrustError):
                runtime.delete(container.id, force=True)
            if self._create(container, runtime, pid_file, start=True) != 0:
                message = last_logged_error(container.runtime_log) or "the runtime failed"
                with contextlib.suppress(ContainerNotFound):
                    update_state(self.directory, None, error=f"restart {restarts} failed: {message}")
                break
            pid = int(pid_file.read_text().strip())
            try:
                update_state(
                    self.directory,
                    ACTIVE_STATES,
                    pid=pid,
                    pid_start=start_time(pid),
                    restart_count=restarts,
                    started=now(),
                    state=State.RUNNING,
                )
            except ContainerNotFound:
                break
            exit_code = _wait_child(pid)
        oom = oom_killed(container.cgroups_path)  # before `delete` removes the cgroup
        with contextlib.suppress(ContainerNotFound):  # removed meanwhile (rm -f)
            container = update_state(
                self.directory,
                ACTIVE_STATES,
                state=State.EXITED,
                finished=now(),
                exit_code=exit_code,
                oom_killed=oom,
                error=None if exit_code is not None else "the exit status could not be collected",
            )
        self._send(
            {"event": "exited", "exitCode": exit_code if exit_code is not None else 255, "oomKilled": oom}
        )
        try:
            teardown(container, runtime, init_reaped=exit_code is not None)
            if container.auto_remove:
                remove_directory(self.directory)
        except RuntimeFailure as err:  # e.g. the rootfs is busy: `trust rm -f` will try again
            with contextlib.suppress(ContainerNotFound):
                update_state(self.directory, None, error=str(err))
        return exit_code if exit_code is not None else 255

    def _create(self, container: Container, runtime: Runtime, pid_file: Path, *, start: bool) -> int:
        """`runtime create` (or `run --detach`); its exit status. A container with a terminal has
        its pty master sent here: an `AttachServer` logs it and serves `trust attach` (and the
        foreground `trust run -t` that started it)."""
        with contextlib.ExitStack() as console:
            console_socket: ConsoleSocket | None = None
            if container.tty:
                if self.attach_server is not None:  # a restart: the old terminal is closed
                    self.attach_server.thread.join(timeout=2.0)
                    self.attach_server = None
                console_socket = console.enter_context(ConsoleSocket())
            argv = runtime.create_argv(
                container.id,
                self.directory,
                pid_file,
                container.runtime_log,
                start=start,
                console_socket=console_socket.path if console_socket is not None else None,
            )
            # stdin/stdout/stderr are inherited: they are the container's (log files or the CLI's).
            created = subprocess.run(argv, check=False)
            if console_socket is not None and created.returncode == 0:
                master = console_socket.receive(alive=lambda: False, timeout=5.0)
                self.attach_server = AttachServer(master, container.stdout_log, attach_path(container.id))
        return created.returncode

    def _send(self, event: dict[str, Any]) -> None:
        if self.status_fd is None:
            return
        try:
            os.write(self.status_fd, (json.dumps(event) + "\n").encode())
        except OSError:  # a detached CLI closed its end: nobody is listening any more
            self._close()

    def _close(self) -> None:
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None


def _restart_due(directory: Path, exit_code: int | None, restarts: int) -> bool:
    """Whether the record's restart policy wants the container started again after this exit."""
    try:
        container = read_state(directory)
    except (OSError, ValueError, KeyError, TypeError):
        return False  # removed (rm -f) or unreadable: never bring it back
    policy, _, limit = container.restart_policy.partition(":")
    if container.stopping or policy == "no":
        return False
    if policy == "always":
        return True
    failed = exit_code is None or exit_code != 0
    return policy == "on-failure" and failed and (not limit or restarts < int(limit))


def _wait_child(pid: int) -> int | None:
    """Reap children until `pid` exits; its exit code (128+N for signal N), None if not our child."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            # Not re-parented to us (no subreaper support?): wait without an exit status.
            wait_gone(pid, None, None)
            return None
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _become_subreaper() -> None:
    """Adopt orphaned descendants (the container's init), and show as "trust-monitor" in `ps`."""
    libc.become_subreaper()
    with contextlib.suppress(OSError):  # cosmetic: failure does not matter
        libc.call("prctl", libc.PR_SET_NAME, b"trust-monitor", 0, 0, 0)


# -- teardown (the monitor's, and `trust rm -f`'s) --------------------------------------------


def teardown(container: Container, runtime: Runtime, *, init_reaped: bool = False) -> None:
    """Delete runtime state, cgroups and the rootfs mount; works when the runtime crashed or is gone.

    `init_reaped`: the monitor collected the exit of the container's init, so nothing of the
    container runs any more (every trust container has a PID namespace of its own, and the kernel
    ends all of a namespace's processes before its init's exit can be collected). Then `runtime
    delete` would only remove the cgroups and the state folder: we do that without starting the
    runtime (~8 ms of a warm `run --rm`), and still ask it if a cgroup refuses to go.

    Raises:
        RuntimeFailure: the rootfs cannot be unmounted, or a network plugin failed to release the
            container's address, ports or rules (the caller must keep the directory: `rm -f` retries).
    """
    # Once init is reaped nothing of the container runs, so its network goes beside the rest of the
    # cleanup; otherwise only after the runtime has killed what was left.
    network_released = start_release(container.directory, container.id) if init_reaped else None
    failure: RuntimeFailure | None = None
    try:
        removed = init_reaped and _remove_exited(container, runtime)
        if not removed:
            with contextlib.suppress(TrustError):
                runtime.delete(container.id, force=True)
        if container.pid is not None and alive(container.pid, container.pid_start):
            # The runtime could not kill it (its state is gone?): init's death ends the pid namespace.
            kill_process(container.pid, container.pid_start)
        with contextlib.suppress(OSError):
            attach_path(container.id).unlink()
        if network_released is None:
            network_released = start_release(container.directory, container.id)
        if not removed:  # what a runtime that crashed or is gone left behind
            shutil.rmtree(runtime.state_dir(container.id), ignore_errors=True)
            if container.cgroups_path:
                with contextlib.suppress(OSError):
                    remove_cgroups(container.cgroups_path)
        try:
            unmount_rootfs(container.rootfs)
            if container.idmapped_layers.is_dir():  # below the overlay: only once it is gone
                unmount_idmapped_layers(sorted(container.idmapped_layers.iterdir()))
            if container.exposed != container.directory and container.exposed.exists():
                remove_directory(container.exposed)  # refuses while anything below is mounted
        except OSError as exc:
            raise RuntimeFailure(f"cannot unmount {container.rootfs}: {exc.strerror or exc}") from None
    finally:  # never return (or let the monitor exit) with the release half done
        if network_released is not None:
            try:
                network_released()
            except RuntimeFailure as err:
                failure = err
    if failure is not None:
        raise failure


def _remove_exited(container: Container, runtime: Runtime) -> bool:
    """What `runtime delete` does for a stopped container (trust sets no hooks): its cgroups, then
    its state. False, with the state kept for the runtime to delete, if a cgroup cannot be removed."""
    for directory in cgroup_dirs(container.cgroups_path) if container.cgroups_path else []:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return False
    shutil.rmtree(runtime.state_dir(container.id), ignore_errors=True)
    return True


def remove_directory(directory: Path) -> None:
    """Delete a container's directory (gone already: fine), never while anything below it is mounted."""
    # rmtree descends into mount points: never start while anything is mounted below the directory.
    prefix = str(directory) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mountinfo:
        for line in mountinfo:
            point = line.split(" ")[4]
            if point.startswith(prefix) or point == str(directory):
                raise RuntimeFailure(f"refusing to remove {directory}: {point} is still mounted")

    def already_gone(
        function: object, path: str, exc_info: tuple[type[BaseException], BaseException, Any]
    ) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    # The monitor of an --rm container may be removing the same directory.
    shutil.rmtree(directory, onerror=already_gone)
