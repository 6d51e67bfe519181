"""`trust agent`: a warm process that runs `trust run` and `trust create` for the `trust` executable.

A fresh `trust run` spends most of its time starting Python and importing its modules (~70 ms of
~140 on a warm start); the container itself takes ~40. The agent imports everything once, then for
each command it receives it forks: the child is a copy of a process that has imported trust but
never run a command, so it runs the command exactly as a new `trust` process would (same code,
same checks, fresh state), only without the start-up. The client side is `trust.console.delegate`,
what the `trust` executable runs first: it imports nothing but json, socket and signal.

    trust agent &                   # or as a service; socket: $TRUST_AGENT_SOCKET or /run/trust/agent.sock
    trust run --rm app@sha256:…     # handed to the agent when its socket exists, else run in-process

The protocol, over a Unix stream socket, one JSON object per line:

    client → agent   {"version", "argv", "cwd", "umask", "env"} with its stdin, stdout and stderr
                     attached (SCM_RIGHTS)
    agent → client   {"accepted": PID} or {"refused": WHY}  (the client then runs the command itself)
    client → agent   {"signal": N}      for each SIGINT, SIGTERM, … the client receives
    agent → client   {"exit": CODE}     when the child is done (128+N if signal N ended it)

Who may connect: only processes of the agent's own user (root, for containers), checked with
SO_PEERCRED on every connection, and the socket is mode 0600 in a 0700 directory. Anyone who can
connect could run `trust` as that user anyway: the agent adds no privilege. An agent of another
trust version refuses, so an upgrade never runs old code. Only `run` and `create` are delegated:
the commands that start containers and gain the most; everything else (a password prompt, a
progress bar) runs in-process as before.
"""

from __future__ import annotations

import contextlib
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
import traceback
from pathlib import Path
from typing import Any, NoReturn

from trust import __version__
from trust.console import (
    DELEGATED,
    FORWARDED_SIGNALS,
    MAX_MESSAGE_BYTES,
    Messages,
    encode,
)

_REQUEST_TIMEOUT = 1.0
"""Seconds a connection has to send its request."""


def serve(path: Path) -> NoReturn:
    """Listen on `path` and run each delegated command in a fork of this process.

    SIGTERM or SIGINT stops it: the socket is removed at once (new commands run in-process), and
    the agent exits 0 once the commands it runs have finished and their clients have their exit
    codes. A second signal exits at once (the commands go on; their clients report the agent gone).
    """
    _warm_up()
    listener = _listen(path)
    listening = os.stat(path).st_ino
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select() through the pipe
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on ^C
    children: dict[int, socket.socket | None] = {}  # child pid → its client's connection, if open
    print(f"trust agent {__version__}: listening on {path}", file=sys.stderr, flush=True)
    try:
        while True:
            _serve_once(listener, wake_read, children)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == listening:  # not a newer agent's socket
                path.unlink()
        listener.close()
    with contextlib.suppress(KeyboardInterrupt):
        while children:
            _serve_once(None, wake_read, children)
    sys.exit(0)


def _serve_once(
    listener: socket.socket | None, wake_read: int, children: dict[int, socket.socket | None]
) -> None:
    """Wait for a new client (unless `listener` is None), a signal from a client, or a child's end."""
    connections = [connection for connection in children.values() if connection is not None]
    watched: list[Any] = [wake_read, *connections, *([listener] if listener is not None else [])]
    readable, _, _ = select.select(watched, [], [])
    if wake_read in readable:
        while True:
            try:
                os.read(wake_read, 4096)
            except BlockingIOError:
                break
        _reap(children)
    if listener is not None and listener in readable:
        _accept(listener, children)
    for pid, connection in list(children.items()):
        if connection is not None and connection in readable and not _relay_signals(pid, connection):
            connection.close()  # the client went away: its command runs on, as it would have
            children[pid] = None  # without the agent had the `trust` process been killed


def _warm_up() -> None:
    """Import what `run` and `create` use, so that each fork starts with it loaded."""
    for module in (
        "trust.cli",
        "trust.container_cli",
        "policy.admission",
        "policy.loader",
        "policy.reuse",
        "pull.clients",
        "pull.pipeline",
        "run.containers",
        "run.snapshots",
        "run.bundle",
    ):
        importlib.import_module(module)


def _listen(path: Path) -> socket.socket:
    """Bind `path` (0600, in a 0700 folder). Raises UsageError if another agent listens there or
    it is something other than a socket; a socket nobody listens on (a killed agent's) is replaced."""
    from pull.errors import UsageError

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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


def _accept(listener: socket.socket, children: dict[int, socket.socket | None]) -> None:
    connection, _ = listener.accept()
    fds: list[int] = []
    try:
        uid = _peer_uid(connection)
        # The request is read on the one serving loop: a client that sends nothing may hold it up
        # for this long, no more. (Clients have no timeout: one that gave up after the fork would
        # run its command twice.)
        connection.settimeout(_REQUEST_TIMEOUT)
        data, fds, _, _ = socket.recv_fds(connection, MAX_MESSAGE_BYTES, 3)
        try:
            request = Messages(connection, data).next()
        except (ValueError, RecursionError):  # not JSON, too long, or nested too deep
            request = None
        connection.settimeout(None)
        why = _refusal(uid, request, fds)
        if why is not None:
            connection.sendall(encode({"refused": why}))
            connection.close()
            return
        assert request is not None
        pid = os.fork()
        if pid == 0:
            _run_child(request, fds, listener, connection, children)
        connection.sendall(encode({"accepted": pid}))
        children[pid] = connection
    except OSError:
        connection.close()
    finally:
        for fd in fds:
            os.close(fd)


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    return int(uid)


def _refusal(uid: int, request: dict[str, Any] | None, fds: list[int]) -> str | None:
    if uid != os.geteuid():
        return f"only uid {os.geteuid()} may use this agent"
    if len(fds) != 3:
        return "expected stdin, stdout and stderr"
    if request is None or not _well_formed(request):
        return "malformed request"
    if request["version"] != __version__:
        return f"this agent runs trust {__version__}, the client is {request['version']}"
    return None


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


def _run_child(
    request: dict[str, Any],
    fds: list[int],
    listener: socket.socket,
    connection: socket.socket,
    children: dict[int, socket.socket | None],
) -> NoReturn:
    """In the fork: become the client's `trust` process and run its command. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, *FORWARDED_SIGNALS):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        listener.close()
        connection.close()
        for other in children.values():
            if other is not None:
                other.close()
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
        from trust.cli import main

        code = main(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # what a new `trust` process would print before exiting 1
        traceback.print_exc()
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap(children: dict[int, socket.socket | None]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                connection.sendall(encode({"exit": 128 - code if code < 0 else code}))
            connection.close()


def _relay_signals(pid: int, connection: socket.socket) -> bool:
    """Pass on the signals a client sent; False when the client has gone away."""
    try:
        data = connection.recv(4096)
    except OSError:
        data = b""
    if not data:
        return False
    for line in data.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError, RecursionError):
            signum = int(json.loads(line)["signal"])
            if signum in FORWARDED_SIGNALS:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
    return True
