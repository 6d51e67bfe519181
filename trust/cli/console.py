"""The `trust` executable: a running agent takes `run` and `create` (trust/agent.py), `trust.cli.app`
does the rest here.

This module is the client half of the agent protocol (described in trust/agent.py). It imports
only json, socket, signal, struct and `run.signals` until it knows where the command runs: what it imports is
paid on every `trust` command, agent or not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

from run.signals import DELEGATED_SIGNALS
from trust import __version__

TYPE_CHECKING = False  # typing costs ~8 ms to import; mypy reads these imports all the same
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

SOCKET_ENV = "TRUST_AGENT_SOCKET"
DEFAULT_SOCKET = "/run/trust/agent.sock"
DELEGATED = frozenset({"run", "create"})
"""The commands the `trust` executable hands to an agent."""
NO_AGENT_ENV = "TRUST_NO_AGENT"
"""Set (to anything) to run every command in-process even when an agent listens."""
MAX_MESSAGE_BYTES = 1024 * 1024


def console() -> NoReturn:
    """`trust.cli.app.main` (or the agent), then exit without the interpreter's teardown.

    Tearing down the ~600 modules a command loads takes 20 to 40 ms, a tenth of a warm `trust run`.
    Nothing needs it: every file, lock, connection and thread pool was closed by the `with` block
    that opened it, so only the standard streams are left to flush.
    """
    argv = sys.argv[1:]
    code = delegate(argv)
    if code is None:
        from trust.cli.app import main

        code = main(argv)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away, or a stream already closed
        code = code or 1
    os._exit(code)


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def delegate(argv: Sequence[str]) -> int | None:
    """Run `trust ARGV` in the agent; its exit code, or None if no agent took it (nothing has
    happened then, and the caller runs the command itself).

    A command must never run twice, so None only when the agent surely did not run it: no agent
    to connect to, a peer that is not ours (nothing is sent to it), an explicit refusal, or the
    request reset unread (the agent closed its socket with our connection still queued). An agent
    that ends without answering may have started the command: that is an error, exit 1.
    """
    if not argv or argv[0] not in DELEGATED or os.environ.get(NO_AGENT_ENV):
        return None
    path = socket_path()
    if not os.path.exists(path):
        return None
    try:
        cwd = os.getcwd()
    except OSError:
        return None  # a working directory that was deleted: let the command itself say so
    request = {
        "version": __version__,
        "argv": list(argv),
        "cwd": cwd,
        "umask": _umask(),
        "env": dict(os.environ),
    }
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            client.connect(path)
        except OSError:
            return None  # a socket file left behind (no agent listens), or not ours to use
        if not _ours(client):
            return None  # another user's process: it gets neither our environment nor our stdio
        return _Handover(client).run(encode(request))
    finally:
        client.close()


def _ours(client: socket.socket) -> bool:
    """Whether the peer runs as our user or as root (SO_PEERCRED: pid, uid, gid)."""
    try:
        credentials = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    uid: int = struct.unpack("3i", credentials)[1]
    return uid == os.geteuid() or uid == 0


class _Handover:
    """One command handed to the agent: its signals are caught from before the request is sent,
    kept until the agent has accepted it, then passed on."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.accepted = False
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}

    def run(self, request: bytes) -> int | None:
        for signum in DELEGATED_SIGNALS:
            self.previous[signum] = signal.signal(signum, self.forward)
        try:
            sent = socket.send_fds(self.client, [request], [0, 1, 2])
            if sent < len(request):  # cut short by a signal. Never an empty send: it fails if the
                self.client.sendall(request[sent:])  # agent has read the request and gone already
        except OSError:  # the agent went away before it had the whole request: nothing ran
            return self.fall_back()
        replies = Messages(self.client)
        try:
            answer = replies.next()
        except ConnectionResetError:  # the agent closed its socket with ours still queued
            return self.fall_back()
        except (OSError, ValueError):
            answer = {}
        if answer is None:
            print(
                "trust: error: the agent ended before answering; the command may have started",
                file=sys.stderr,
            )
            return 1
        if "refused" in answer:
            return self.fall_back()
        if "accepted" not in answer:
            print(
                "trust: error: the agent's answer makes no sense; the command may have started",
                file=sys.stderr,
            )
            return 1
        self.accepted = True
        while self.pending:
            self.send(self.pending.pop(0))
        while True:
            try:
                reply = replies.next()  # a signal runs `forward`, then the read resumes (PEP 475)
                if reply is not None and "exit" in reply:
                    return int(reply["exit"])
            except (OSError, ValueError, TypeError):
                reply = None
            if reply is None:
                print("trust: error: the agent ended before the command finished", file=sys.stderr)
                return 1

    def forward(self, signum: int, frame: object) -> None:
        if self.accepted:
            self.send(signum)
        else:
            self.pending.append(signum)

    def send(self, signum: int) -> None:
        try:  # noqa: SIM105 (contextlib costs a millisecond of every command's start)
            self.client.sendall(encode({"signal": signum}))
        except OSError:
            pass  # the agent is gone: the next read says so

    def fall_back(self) -> int | None:
        """The agent did not run the command: the caller runs it, unless a signal came meanwhile:
        then what that signal would have done to the command had it run in-process from the start."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        for signum in self.pending:
            if signum == signal.SIGINT and self.previous[signum] is signal.default_int_handler:
                print("trust: interrupted", file=sys.stderr)  # as `trust.cli.app.main` reports a ^C
                return 130
            signal.raise_signal(signum)  # by default, the end of this process
        return None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def encode(message: dict[str, Any]) -> bytes:
    """One protocol message: a JSON object on one line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Messages:
    """The JSON objects, one per line, that arrive on a socket (`data` is what came with the fds)."""

    def __init__(self, sock: socket.socket, data: bytes = b"") -> None:
        self._sock = sock
        self._buffer = data

    def next(self) -> dict[str, Any] | None:
        """The next message; None at end of stream. Raises ValueError for a malformed one."""
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                raise ValueError("message too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("a message is a JSON object")
        return message
