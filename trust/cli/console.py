"""`trust-python`, the Python half of the `trust` executable: a running agent takes `run` and
`create` (trust/cli/agent.py), `trust.cli.app` does the rest here.

The `trust` executable is trust/cli/console.c: it hands `run` and `create` to an agent itself,
without starting Python, and runs this for everything else (with `TRUST_NO_AGENT=1` when the agent
refused). This module is the same client of the agent protocol, for `trust-python` called
directly and for a `trust` installed where nothing compiled C; tests/test_agent.py runs the client
tests against both. What it imports is paid on every command, agent or not, so until it knows
where the command runs it uses only what the interpreter has built in or loads in a fraction of a
millisecond: `_socket`, `_signal` and `_json` rather than `socket`, `signal` and `json`, which
import `enum`, `re`, `selectors` and `array` (~12 ms of a ~110 ms warm `trust run`).
"""

from __future__ import annotations

import _json
import _socket
import os
import sys

from run.signals import DELEGATED_SIGNALS
from trust import __version__

TYPE_CHECKING = False  # typing costs ~8 ms to import; mypy reads these imports all the same
if TYPE_CHECKING:
    import signal as _signal  # typeshed describes `signal` only; `_signal` has the same names
    from collections.abc import Sequence
    from typing import Any, NoReturn
else:
    import _signal

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
    _fill_closed_stdio()
    argv = sys.argv[1:]
    code = delegate(argv)
    if code is None:
        code = run_here(argv, exits_soon=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started with that descriptor closed
                stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away, or a stream already closed
            code = code or 1
    os._exit(code)


def _fill_closed_stdio() -> None:
    """/dev/null for a stdin, stdout or stderr that was closed when this process started (the
    interpreter then makes that stream None): output has somewhere to go, and no socket or file
    opened later takes the number and gets read or written as that stream. The C executable
    does the same before it starts this one."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is None and os.open(os.devnull, os.O_RDWR) == fd:  # the lowest free number
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def run_here(argv: list[str], *, exits_soon: bool = False) -> int:
    """Run `trust ARGV` in this process: `run` and `create` without typer when `trust.cli.fastparse`
    can read their flags (the agent's forks too), everything else through `trust.cli.app`.

    `exits_soon`: this process ends with the command (the executable, an agent's fork). `run` and
    `create` then fork the container's monitor once, not twice (`launch.exits_soon`), and run
    without the cycle collector: a `trust run` frees what it allocates by reference counting, and
    the collector would run ~30 times over the modules it imports, for nothing (~6 ms). The monitor
    turns it on again.
    """
    if argv and argv[0] in DELEGATED:
        if exits_soon:
            import gc

            gc.disable()
        from trust.cli import launch

        launch.exits_soon = exits_soon
        from trust.cli.fastparse import parse

        parsed = parse(argv, os.environ)
        if parsed is not None:
            from trust.cli.common import exit_status

            command, flags = parsed
            if command == "run":
                return exit_status(lambda: launch.run(flags))
            return exit_status(lambda: launch.create(flags))
    from trust.cli.app import main

    return main(argv)


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
    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
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


def _ours(client: _socket.socket) -> bool:
    """Whether the peer runs as our user or as root (SO_PEERCRED: pid, uid, gid, native ints)."""
    try:
        credentials = client.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    except OSError:
        return False
    uid = int.from_bytes(credentials[4:8], sys.byteorder)
    return uid == os.geteuid() or uid == 0


class _Handover:
    """One command handed to the agent: its signals are caught from before the request is sent,
    kept until the agent has accepted it, then passed on."""

    def __init__(self, client: _socket.socket) -> None:
        self.client = client
        self.accepted = False
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}

    def run(self, request: bytes) -> int | None:
        for signum in DELEGATED_SIGNALS:
            self.previous[signum] = _signal.signal(signum, self.forward)
        try:
            sent = self.client.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _STDIO_FDS)])
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
                    code = reply["exit"]
                    if type(code) is int and 0 <= code <= 255:  # an exit status: not a bool or a float
                        return code
                    reply = None
            except (OSError, ValueError):
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
            _signal.signal(signum, handler)
        for signum in self.pending:
            if signum == _signal.SIGINT and self.previous[signum] is _signal.default_int_handler:
                print("trust: interrupted", file=sys.stderr)  # as `trust.cli.app.main` reports a ^C
                return 130
            _signal.raise_signal(signum)  # by default, the end of this process
        return None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_STDIO_FDS = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
"""Descriptors 0, 1 and 2 as an SCM_RIGHTS message carries them: an array of native ints."""


def encode(message: dict[str, Any]) -> bytes:
    """One protocol message: a JSON object on one line (ASCII: every other character escaped)."""
    return (_encode_value(message) + "\n").encode()


def _encode_value(value: object) -> str:
    # The protocol's messages hold strings, integers, lists of strings and objects of them.
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if type(value) is int:  # not a bool
        return int.__repr__(value)
    if isinstance(value, list):
        return "[" + ",".join(_encode_value(item) for item in value) + "]"
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        members = (f"{_encode_value(key)}:{_encode_value(item)}" for key, item in value.items())
        return "{" + ",".join(members) + "}"
    raise TypeError(f"a protocol message holds no {type(value).__name__}")


class _Strict:
    """What the C JSON scanner reads from a decoder: json.loads's defaults, NaN and Infinity refused."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not JSON")


_scan = _json.make_scanner(_Strict())  # type: ignore[arg-type]  # typeshed: any object with those attributes


def decode(line: bytes) -> object:
    """The JSON value that is the whole of `line`. Raises ValueError (UnicodeDecodeError and
    json.JSONDecodeError are ValueErrors) if it is not one, or is nested too deep to read."""
    text = line.decode()
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    except RecursionError:
        raise ValueError("JSON nested too deep") from None
    except SystemError:
        # CPython's scanner reports a bad escape or a missing colon as json.decoder's
        # JSONDecodeError, which it looks up in sys.modules only: without `json` imported (this
        # module does not import it) that lookup fails and leaves it an error with no exception.
        raise ValueError("not JSON") from None
    if text[end:].strip(" \t\r"):
        raise ValueError("extra data after the JSON value")
    return value


class Messages:
    """The JSON objects, one per line, that arrive on a socket."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

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
        message = decode(line)
        if not isinstance(message, dict):
            raise ValueError("a message is a JSON object")
        return message
