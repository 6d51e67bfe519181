"""`trust agent`: a warm process that runs `trust run` and `trust create` for the `trust` executable.

A fresh `trust run` spends most of its time starting Python and importing its modules (~70 ms of
~140 on a warm start); the container itself takes ~40. The agent imports everything once, then for
each command it receives it forks: the child is a copy of a process that has imported trust but
never run a command, so it runs the command exactly as a new `trust` process would (same code,
same checks, fresh state), only without the start-up. The client side is `trust.cli.console.delegate`,
what the `trust` executable runs first: it imports nothing but json, socket, signal and struct.

    trust agent &                   # or as a service; socket: $TRUST_AGENT_SOCKET or /run/trust/agent.sock
    trust run --rm app@sha256:…     # handed to the agent when its socket exists, else run in-process

The protocol, over a Unix stream socket, one JSON object per line:

    client → agent   {"version", "argv", "cwd", "umask", "env"} with its stdin, stdout and stderr
                     attached (SCM_RIGHTS)
    agent → client   {"accepted": PID} or {"refused": WHY}  (the client then runs the command itself)
    client → agent   {"signal": N}      for each SIGINT, SIGTERM, … the client receives (those that
                                        came before `accepted` right after it)
    agent → client   {"exit": CODE}     when the child is done (128+N if signal N ended it)

Who may connect: the socket is mode 0600 in a folder of the agent's user that nobody else may
write (the agent refuses to listen elsewhere). On every connection, before it reads the request,
the agent checks with SO_PEERCRED that the peer runs as the agent's user (root, for containers),
and in /proc that it is confined no more than the agent: the same capability sets, no_new_privs,
seccomp mode and filters, namespaces, root directory and security label. A client that differs
is refused and runs the command in-process, under its own limits: the agent adds no privilege.
The client checks too: it sends nothing to a socket whose peer is neither its user nor root.
An agent of another trust version refuses, so an upgrade never runs old code. Only `run` and
`create` are delegated: the commands that start containers and gain the most; everything else (a
password prompt, a progress bar) runs in-process as before.

A command must never run twice: the client runs it in-process only when it is sure the agent did
not (no agent, a refusal, or its request reset unread); an agent that ends after reading a request
and before answering is reported by the client as an error. So the serving loop is never
interrupted by an exception: the stop signals only set a flag, read between iterations.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from pull.records import dataclass, field
from run.signals import DELEGATED_SIGNALS
from trust import __version__
from trust.cli.console import DELEGATED, MAX_MESSAGE_BYTES, encode

_REQUEST_TIMEOUT = 1.0
"""Seconds a connection has to send its whole request (and to take a reply)."""
_MAX_PENDING = 64
"""Connections whose requests are read at once; one more is refused (its client runs in-process)."""
_ACCEPT_PAUSE = 0.1
"""Seconds the agent leaves new connections queued after `accept` failed (out of descriptors)."""
_MAX_SIGNAL_LINE = 4096
"""A client's unfinished line longer than this is dropped: signal messages are a few bytes."""
_SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux ≥ 6.5; Python ≥ 3.13 names it
_CHILD_SIGNALS = {signal.SIGCHLD, *DELEGATED_SIGNALS}
"""Blocked across fork(): a signal sent to a new child before it resets its handlers waits for it."""
_STATUS_FIELDS = {
    "CapEff": "effective capabilities",
    "CapPrm": "permitted capabilities",
    "CapBnd": "capability bounding set",
    "NoNewPrivs": "no_new_privs",
    "Seccomp": "seccomp mode",
    "Seccomp_filters": "seccomp filters",
}
"""The lines of /proc/PID/status that a client must share with the agent (→ how a refusal names them)."""
_NAMESPACES = ("mnt", "pid", "user", "net", "ipc", "uts", "cgroup")


def serve(path: Path) -> NoReturn:
    """Listen on `path` and run each delegated command in a fork of this process.

    SIGTERM or SIGINT stops it: the socket is removed at once (new commands run in-process), and
    the agent exits 0 once the commands it runs have finished and their clients have their exit
    codes. A second signal exits at once (the commands go on; their clients report the agent gone).
    """
    _warm_up()
    _Agent(path, _listen(path)).run()


class _Agent:
    def __init__(self, path: Path, listener: socket.socket) -> None:
        self.path = path
        self.listener: socket.socket | None = listener
        self.listening = os.stat(path).st_ino
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Where each child writes "PID CODE" just before it exits (`_report_exit`).
        self.reports_read, self.reports_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.children: dict[int, socket.socket | None] = {}  # child pid → its client's connection, if open
        self.unfinished: dict[int, bytes] = {}  # child pid → the start of its client's next line
        self.stops = 0  # stop signals received
        self.accept_paused_until = 0.0
        self.confinement = _confinement("self")
        self.pending: dict[int, _Pending] = {}  # fd → a connection whose request is still arriving

    def run(self) -> NoReturn:
        signal.set_wakeup_fd(self.wake_write)  # every signal wakes poll() through the pipe
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        print(f"trust agent {__version__}: listening on {self.path}", file=sys.stderr, flush=True)
        try:
            while not self.stops:
                self._serve_once()
        finally:
            self._stop_listening()
        while self.children and self.stops < 2:
            self._serve_once()
        sys.exit(0)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: an exception here could land between fork() and `accepted`, or between
        # reaping a child and telling its client, and the client would not know what ran.
        self.stops += 1

    def _stop_listening(self) -> None:
        if self.listener is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.listening:  # not a newer agent's socket
                self.path.unlink()
        self.listener.close()  # connections still queued are reset: their clients run in-process
        self.listener = None

    def _serve_once(self) -> None:
        """Wait for a new client (while listening), a signal from a client, a child's end or a signal."""
        poller = select.poll()  # not select(): it fails for descriptors ≥ 1024; no fd of its own either
        poller.register(self.wake_read, select.POLLIN)
        poller.register(self.reports_read, select.POLLIN)
        timeout = None
        now = time.monotonic()
        if self.listener is not None:
            paused = self.accept_paused_until - now
            if paused > 0:
                timeout = paused * 1000
            else:
                poller.register(self.listener, select.POLLIN)
        # Requests are read as they arrive, all at once: a silent or dribbling connection only
        # ever costs its own second, never another client's.
        for fd, waiting in self.pending.items():
            poller.register(fd, select.POLLIN)
            left = max(0.0, waiting.deadline - now) * 1000
            timeout = left if timeout is None else min(timeout, left)
        watched = {
            connection.fileno(): (pid, connection)
            for pid, connection in self.children.items()
            if connection is not None
        }
        for fd in watched:
            poller.register(fd, select.POLLIN)
        ready = dict(poller.poll(timeout))
        if self.wake_read in ready:
            while True:
                try:
                    os.read(self.wake_read, 4096)
                except BlockingIOError:
                    break
        if self.wake_read in ready or self.reports_read in ready:
            self._read_reports()
            self._reap()
            # A child writes its report before it exits: whatever a reaped child reported is in
            # the pipe by now. Read it before the next fork, which could reuse its pid.
            self._read_reports()
        for fd, (pid, connection) in watched.items():
            if fd in ready and self.children.get(pid) is connection and not self._relay_signals(pid):
                connection.close()  # the client went away: its command runs on, as it would have
                self.children[pid] = None  # without the agent had the `trust` process been killed
                self.unfinished.pop(pid, None)
        for fd, waiting in list(self.pending.items()):
            if fd in ready:
                self._receive(waiting)
            elif waiting.deadline <= time.monotonic():
                self._answer(waiting, "no request in time")
        if self.listener is not None and self.listener.fileno() in ready:
            self._accept()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            connection, _ = self.listener.accept()
        except OSError as error:  # out of descriptors or memory: leave the queue for a moment
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
            return
        try:
            connection.settimeout(_REQUEST_TIMEOUT)  # for the answer; reading is non-blocking
            why = self._peer_refusal(connection)  # before reading anything from it
            if why is None and len(self.pending) >= _MAX_PENDING:
                why = "the agent is busy reading other requests"
            if why is not None:
                connection.sendall(encode({"refused": why}))
                connection.close()
                return
        except OSError:
            connection.close()
            return
        self.pending[connection.fileno()] = _Pending(connection, time.monotonic() + _REQUEST_TIMEOUT)

    def _receive(self, waiting: _Pending) -> None:
        """Read what arrived of a pending request; answer it once it is whole (or cannot be)."""
        connection = waiting.connection
        try:
            connection.setblocking(False)
            chunk, received, flags, _ = socket.recv_fds(connection, 65536, 3)
        except BlockingIOError:
            return
        except OSError:
            chunk, received, flags = b"", [], 0
        finally:
            with contextlib.suppress(OSError):
                connection.settimeout(_REQUEST_TIMEOUT)
        waiting.fds.extend(received)
        if flags & socket.MSG_CTRUNC:
            self._answer(waiting, "expected stdin, stdout and stderr")
            return
        waiting.data += chunk
        if chunk and b"\n" not in chunk and len(waiting.data) <= MAX_MESSAGE_BYTES:
            return  # more to come
        self._answer(waiting, None)

    def _answer(self, waiting: _Pending, why: str | None) -> None:
        """Refuse the request, or run it in a fork (which then owns the connection)."""
        connection, fds = waiting.connection, waiting.fds
        del self.pending[connection.fileno()]
        kept = False
        try:
            request: dict[str, Any] | None = None
            if why is None:
                request = _parse_request(waiting.data)
                why = _request_refusal(request, fds)
            if why is not None:
                connection.sendall(encode({"refused": why}))
                return
            assert request is not None
            if _hung_up(connection):  # killed while it waited: no one would see the command
                return
            kept = self._fork(request, fds, connection)
        except OSError:
            pass
        finally:
            for fd in fds:
                os.close(fd)
            if not kept:
                connection.close()

    def _peer_refusal(self, connection: socket.socket) -> str | None:
        """Why the process at the other end of `connection` may not use this agent, if it may not."""
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", credentials)
        if uid != os.geteuid():
            return f"only uid {os.geteuid()} may use this agent"
        try:
            pidfd: int | None = connection.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
        except OSError as error:
            if error.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
                return f"cannot inspect the client (pid {pid}): {error.strerror}"  # gone: ESRCH
            pidfd = None  # an older kernel: the pid may (rarely) be another process's by now
        try:
            try:
                client = _confinement(str(pid))
            except OSError as error:
                return f"cannot inspect the client (pid {pid}): {error.strerror}"
            if pidfd is not None and _exited(pidfd):  # what was read may be a new process's
                return "the client has exited"
        finally:
            if pidfd is not None:
                os.close(pidfd)
        differences = [what for what, value in self.confinement.items() if client.get(what) != value]
        if differences:
            verb = "differs" if len(differences) == 1 else "differ"
            return (
                f"the client's {', '.join(differences)} {verb} from the agent's: "
                "it runs the command itself, confined as it is"
            )
        return None

    def _fork(self, request: dict[str, Any], fds: list[int], connection: socket.socket) -> bool:
        """Start the command in a child; whether `connection` is kept (the child's client)."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._run_child(request, fds, connection, mask)
        except OSError as error:
            connection.sendall(encode({"refused": f"cannot fork: {error.strerror}"}))
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.children[pid] = connection
        try:
            connection.sendall(encode({"accepted": pid}))
        except OSError:  # the client went away: the command runs on, unwatched
            self.children[pid] = None
            return False
        return True

    def _run_child(
        self, request: dict[str, Any], fds: list[int], connection: socket.socket, mask: Iterable[int]
    ) -> NoReturn:
        """In the fork: become the client's `trust` process and run its command. Never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in _CHILD_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.close(self.wake_read)
            os.close(self.wake_write)
            os.close(self.reports_read)
            if self.listener is not None:
                self.listener.close()
            connection.close()
            for other in self.children.values():
                if other is not None:
                    other.close()
            for waiting in self.pending.values():  # other clients' requests and descriptors
                if waiting.connection is not connection:
                    waiting.connection.close()
                    for fd in waiting.fds:
                        if fd not in fds:
                            os.close(fd)
            # A session of its own: the agent's terminal, if it has one, is not the client's.
            os.setsid()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                os.close(fd)  # now 0, 1 and 2: nothing else of the client's stays open to leak
            os.chdir(request["cwd"])
            os.umask(request["umask"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = ["trust", *request["argv"]]
            if isinstance(sys.stdout, io.TextIOWrapper):  # buffered as for the agent's stdout, not this one
                sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal the client sent early lands here
            from trust.cli.console import run_here

            code = run_here(request["argv"], exits_soon=True)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except KeyboardInterrupt:  # a ^C before the command started: as `main` reports one
            print("trust: interrupted", file=sys.stderr)
            code = 130
        except BaseException:  # what a new `trust` process would print before exiting 1
            traceback.print_exc()
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
                sys.stderr.flush()
            _report_exit(self.reports_write, code)
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            self.unfinished.pop(pid, None)
            if connection is not None:  # not reported (`_read_reports`): a signal ended it
                code = os.waitstatus_to_exitcode(status)
                self._answer_exit(connection, 128 - code if code < 0 else code)

    def _read_reports(self) -> None:
        """Pass on the exit codes children reported as they exited (`_report_exit`)."""
        while True:
            try:
                data = os.read(self.reports_read, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            # Each report is one write of a few bytes (less than PIPE_BUF): whole, never mixed.
            for report in data.decode("ascii", "replace").splitlines():
                with contextlib.suppress(ValueError):
                    pid_text, code_text = report.split()
                    pid, code = int(pid_text), int(code_text)
                    connection = self.children.get(pid)
                    if connection is not None:
                        self.children[pid] = None
                        self.unfinished.pop(pid, None)
                        self._answer_exit(connection, code)

    @staticmethod
    def _answer_exit(connection: socket.socket, code: int) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(encode({"exit": code}))
        connection.close()

    def _relay_signals(self, pid: int) -> bool:
        """Pass on the signals a client sent; False when the client has gone away."""
        connection = self.children[pid]
        assert connection is not None
        try:
            data = connection.recv(4096)
        except OSError:
            data = b""
        if not data:
            return False
        *lines, rest = (self.unfinished.get(pid, b"") + data).split(b"\n")
        self.unfinished[pid] = rest if len(rest) <= _MAX_SIGNAL_LINE else b""
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError, RecursionError):
                signum = int(json.loads(line)["signal"])
                if signum in DELEGATED_SIGNALS:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
        return True


def _report_exit(reports: int, code: int) -> None:
    """In a child about to exit: tell the agent its exit code now, so that the client has it
    without waiting for the exit itself: unmapping a process the size of the agent takes ~3 ms.
    The client's stdio is closed first, so whoever reads the client's output sees its end as soon
    as the client exits. A child that does not report was ended by a signal; reaping it says so."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.write(reports, f"{os.getpid()} {code & 0xFF}\n".encode())  # what os._exit(code) leaves


def _warm_up() -> None:
    """Import what `run` and `create` use, so that each fork starts with it loaded."""
    for module in (
        "trust.cli.app",
        "trust.cli.containers",
        "trust.cli.fastparse",
        "policy.admission",
        "policy.loader",
        "policy.reuse",
        "pull.clients",
        "pull.pipeline",
        "run.containers",
        "run.snapshots",
        "run.bundle",
        "encodings.ascii",  # for the runtime's output and log files
        "typer._click.decorators",  # what click imports when a command runs
    ):
        importlib.import_module(module)
    from policy.reuse import code_fingerprint
    from run.seccomp import known_syscalls
    from trust.cli.app import prepare

    for command in ("run", "create"):
        prepare(command)
    code_fingerprint()  # of the code imported now, which every fork runs
    known_syscalls()  # read once here, not by every fork that builds a seccomp filter


def _listen(path: Path) -> socket.socket:
    """Bind `path` (0600, in a 0700 folder made if missing). Raises UsageError if the folder is not
    private (another user's, or writable by others), another agent listens there or it is something
    other than a socket; a socket nobody listens on (a killed agent's) is replaced."""
    from pull.errors import UsageError

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = path.parent.stat()
    if folder.st_uid != os.geteuid():
        raise UsageError(
            f"{path.parent} belongs to uid {folder.st_uid}, not {os.geteuid()}: "
            "the agent's socket needs a folder of its own user"
        )
    if folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(
            f"{path.parent} is writable by others (mode {stat.S_IMODE(folder.st_mode):04o}): "
            "the agent's socket needs a private folder (0700)"
        )
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise UsageError(f"{path} exists and is not a socket: pick another --socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()  # left by an agent that was killed
        else:
            raise UsageError(f"an agent already listens on {path}")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)  # the socket file is created 0600
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    return listener


def _confinement(pid: str) -> dict[str, str]:
    """What limits process `pid` ("self": this one) beyond its uid. Raises OSError if it is gone."""
    proc = f"/proc/{pid}"
    found: dict[str, str] = {}
    with open(f"{proc}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in _STATUS_FIELDS:
                found[_STATUS_FIELDS[key]] = value.strip()
    for name in _NAMESPACES:
        try:
            found[f"{name} namespace"] = os.readlink(f"{proc}/ns/{name}")
        except FileNotFoundError:  # a kernel without this kind of namespace
            found[f"{name} namespace"] = ""
    root = os.stat(f"{proc}/root")
    found["root directory"] = f"{root.st_dev}:{root.st_ino}"
    try:
        with open(f"{proc}/attr/current", "rb") as label:
            found["security label"] = label.read().rstrip(b"\0\n").decode(errors="replace")
    except OSError:  # no LSM that keeps one (EINVAL)
        found["security label"] = ""
    return found


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)  # a pidfd is readable once its process has exited
    return bool(poller.poll(0))


@dataclass
class _Pending:
    """A connection whose request is still arriving: by `deadline` (monotonic) or refused."""

    connection: socket.socket
    deadline: float
    data: bytes = b""
    fds: list[int] = field(default_factory=list)


def _parse_request(data: bytes) -> dict[str, Any] | None:
    """The request on the first line of `data`, or None if it is not one."""
    line, newline, _ = data.partition(b"\n")
    if not newline or len(line) > MAX_MESSAGE_BYTES:
        return None
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        return None
    return request if isinstance(request, dict) else None


def _request_refusal(request: dict[str, Any] | None, fds: list[int]) -> str | None:
    if len(fds) != 3:
        return "expected stdin, stdout and stderr"
    if request is None or not _well_formed(request):
        return "malformed request"
    if request["version"] != __version__:
        return f"this agent runs trust {__version__}, the client is {request['version']}"
    return None


def _hung_up(connection: socket.socket) -> bool:
    """Whether the client closed its end (killed while it waited for the answer)."""
    poller = select.poll()
    poller.register(connection, select.POLLRDHUP)
    return any(events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _well_formed(request: dict[str, Any]) -> bool:
    argv, env = request.get("argv"), request.get("env")
    return (
        isinstance(argv, list)
        and bool(argv)
        and all(isinstance(arg, str) for arg in argv)
        and argv[0] in DELEGATED
        and isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        and isinstance(request.get("cwd"), str)
        and type(request.get("umask")) is int
        and isinstance(request.get("version"), str)
    )
