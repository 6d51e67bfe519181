"""The `trust` executable: a running agent takes `run` and `create` (trust/agent.py), `trust.cli`
does the rest here.

This module is the client half of the agent protocol (described in trust/agent.py). It imports
only json, socket and signal until it knows where the command runs: what it imports is paid on
every `trust` command, agent or not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

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
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def console() -> NoReturn:
    """`trust.cli.main` (or the agent), then exit without the interpreter's teardown.

    Tearing down the ~600 modules a command loads takes 20 to 40 ms, a tenth of a warm `trust run`.
    Nothing needs it: every file, lock, connection and thread pool was closed by the `with` block
    that opened it, so only the standard streams are left to flush.
    """
    argv = sys.argv[1:]
    code = delegate(argv)
    if code is None:
        from trust.cli import main

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
    happened then, and the caller runs the command itself)."""
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
            return None  # a socket file left behind: no agent listens
        socket.send_fds(client, [encode(request)], [0, 1, 2])
        replies = Messages(client)
        answer = replies.next()
        if answer is None or "accepted" not in answer:
            return None
        return _wait_for_exit(client, replies)
    finally:
        client.close()


def _wait_for_exit(client: socket.socket, replies: Messages) -> int:
    def forward(signum: int, frame: object) -> None:
        try:  # noqa: SIM105 (contextlib costs a millisecond of every command's start)
            client.sendall(encode({"signal": signum}))
        except OSError:
            pass  # the agent is gone: the next read says so

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    while True:
        reply = replies.next()  # a signal runs `forward`, then the read resumes (PEP 475)
        if reply is None:
            print("trust: error: the agent ended before the command finished", file=sys.stderr)
            return 1
        if "exit" in reply:
            return int(reply["exit"])


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
