"""`-t`: a pseudo-terminal for the container's process, through the OCI runtime's console socket.

    with ConsoleSocket() as console:                 # listens on a fresh, private unix socket
        argv = runtime.create_argv(…, console_socket=console.path)   # process.terminal = true
        …
        master = console.receive(alive=lambda: monitor_is_there)      # the pty's master side
        relay(master, interactive=True)              # until the container's side is closed

With `process.terminal`, the runtime makes the pty inside the container (its /dev/pts), connects to
the console socket and passes the master side over it (SCM_RIGHTS); the container's stdin, stdout and
stderr are the pty's slave. Whoever holds the master talks to the container: a foreground `trust run
-t` / `trust exec -t` relays between it and its own terminal (raw mode while it does, the terminal's
size copied at start and on every SIGWINCH, so the kernel tells the container's foreground process
group); a detached container's monitor copies what the container writes to stdout.log
(`copy_to_log`). The socket lives in its own 0700 directory under the system's temp dir: unix socket
paths are limited to 107 bytes, which a store's container directory can exceed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from pull.errors import UsageError
from run.errors import RuntimeFailure

_RECEIVE_TIMEOUT = 120.0
_WINSIZE = struct.Struct("HHHH")


class ConsoleSocket:
    """A listening console socket; `receive` returns the pty master the runtime sends."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="trust-tty-"))  # mode 0700
        self.path = self._directory / "console.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen(1)

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._listener.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def receive(self, alive: Callable[[], bool], timeout: float = _RECEIVE_TIMEOUT) -> int:
        """The master's file descriptor, once the runtime sends it.

        Raises:
            RuntimeFailure: `alive()` turned false (the runtime gave up) or `timeout` passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self._listener], [], [], 0.05)
            if ready:
                break
            if not alive() or time.monotonic() > deadline:
                raise RuntimeFailure("the runtime did not send the container's terminal")
        connection, _ = self._listener.accept()
        with connection:
            _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
        if not fds:
            raise RuntimeFailure("the runtime connected to the console socket but sent no terminal")
        os.set_inheritable(fds[0], False)
        return fds[0]


DETACH_KEYS = b"\x10\x11"
"""ctrl-p ctrl-q, docker's and podman's default."""
_CTRL = {
    **{chr(c): c - 0x60 for c in range(0x61, 0x7B)},
    "@": 0,
    "[": 27,
    "\\": 28,
    "]": 29,
    "^": 30,
    "_": 31,
}


def parse_detach_keys(text: str) -> bytes:
    """`--detach-keys` in docker's format: comma-separated `ctrl-<a-z@[\\]^_>` or single characters,
    e.g. `ctrl-p,ctrl-q` or `ctrl-a,d`; "" disables detaching.

    Raises:
        UsageError: anything else.
    """
    out = bytearray()
    for key in filter(None, text.split(",")):
        if key.startswith("ctrl-") and len(key) == 6 and key[5].lower() in _CTRL:
            out.append(_CTRL[key[5].lower()])
        elif len(key) == 1 and key.isascii() and key.isprintable():
            out.append(ord(key))
        else:
            raise UsageError(f"invalid --detach-keys {text!r}: use e.g. ctrl-p,ctrl-q or ctrl-a,d")
    return bytes(out)


_FRAME = struct.Struct("!cI")
"""Client → monitor frames on the attach socket: kind (b"d" data, b"w" window size), length."""
ATTACH_DIR = Path("/run/trust/attach")


def attach_path(container_id: str) -> Path:
    """The monitor's attach socket for a container with a terminal (short: unix paths are ≤ 107 bytes)."""
    return ATTACH_DIR / f"{container_id}.sock"


class _Endpoint:
    """Where the relay's input goes and output comes from: the pty master itself, or a monitor's
    attach socket (framed input, raw output)."""

    def __init__(self, fd: int, *, framed: bool) -> None:
        self.fd = fd
        self.framed = framed

    def read(self) -> bytes:
        try:
            return os.read(self.fd, 65536)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET):  # EIO: the last slave descriptor closed
                return b""
            raise

    def write(self, data: bytes) -> None:
        _write_all(self.fd, _FRAME.pack(b"d", len(data)) + data if self.framed else data)

    def resize(self, size: bytes) -> None:
        if self.framed:
            _write_all(self.fd, _FRAME.pack(b"w", len(size)) + size)
        else:
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, size)


def relay(master: int, *, interactive: bool) -> None:
    """Copy between this process's terminal (or stdio) and a pty master until the container's side
    is closed; stdin only if `interactive`. Raw mode and window size as the module doc says."""
    _relay(_Endpoint(master, framed=False), interactive=interactive, detach=b"")


def relay_attached(connection: socket.socket, *, interactive: bool, detach_keys: bytes = DETACH_KEYS) -> bool:
    """Copy between this process's terminal and a container's monitor (its attach socket) until
    the container's terminal closes (False) or the user types the detach keys (True: detached, the
    container goes on)."""
    return _relay(_Endpoint(connection.fileno(), framed=True), interactive=interactive, detach=detach_keys)


def _relay(endpoint: _Endpoint, *, interactive: bool, detach: bytes) -> bool:
    stdin, stdout = 0, 1  # the descriptors themselves: sys.stdin may be replaced (pytest, the agent)
    sys.stdout.flush()
    held = b""  # keys typed so far that may start the detach sequence
    with _raw(stdin if interactive else None), _window_size(endpoint, stdin if os.isatty(stdin) else stdout):
        watched = [endpoint.fd, stdin] if interactive else [endpoint.fd]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if endpoint.fd in ready:
                data = endpoint.read()
                if not data:
                    return False
                _write_all(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:  # our input ended: say so to the container (^D), as docker does
                    watched.remove(stdin)
                    endpoint.write(held + b"\x04")
                    held = b""
                    continue
                if detach:
                    data = held + data
                    held = b""
                    if detach in data:
                        endpoint.write(data[: data.index(detach)])
                        return True
                    # Hold back the longest tail that could still become the sequence.
                    for size in range(min(len(detach) - 1, len(data)), 0, -1):
                        if data.endswith(detach[:size]):
                            data, held = data[:-size], data[-size:]
                            break
                if data:
                    endpoint.write(data)


class AttachServer:
    """The monitor's side of a detached terminal: drains the pty master into stdout.log, keeps what
    came before the first client connected (up to `_BACKLOG` bytes, so a foreground `run -t` that
    attaches a moment after the start misses nothing), and relays for every client of the attach
    socket: output to all, input and window sizes from each. Runs in a daemon thread."""

    _BACKLOG = 1 << 16

    def __init__(self, master: int, log: Path, path: Path) -> None:
        self.master = master
        self.log = log
        self.path = path
        ATTACH_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        os.chmod(path, 0o600)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, name="tty-attach", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        clients: dict[int, tuple[socket.socket, bytearray]] = {}
        backlog: bytearray | None = bytearray()
        try:
            with open(self.log, "ab", buffering=0) as log:
                while True:
                    watched = [self.master, self.listener.fileno(), *clients]
                    ready, _, _ = select.select(watched, [], [])
                    if self.master in ready:
                        data = _Endpoint(self.master, framed=False).read()
                        if not data:
                            return
                        log.write(data)
                        if backlog is not None:
                            backlog += data
                            del backlog[: max(0, len(backlog) - self._BACKLOG)]
                        for fd, (client, _) in list(clients.items()):
                            try:
                                client.sendall(data)
                            except OSError:
                                clients.pop(fd)[0].close()
                    if self.listener.fileno() in ready:
                        client, _ = self.listener.accept()
                        if backlog is not None:
                            with contextlib.suppress(OSError):
                                client.sendall(bytes(backlog))
                            backlog = None  # only the first client gets what came before it
                        clients[client.fileno()] = (client, bytearray())
                    for fd in [fd for fd in clients if fd in ready]:
                        self._from_client(clients, fd)
        finally:
            for client, _ in clients.values():
                client.close()
            self.close()

    def _from_client(self, clients: dict[int, tuple[socket.socket, bytearray]], fd: int) -> None:
        client, buffer = clients[fd]
        try:
            chunk = client.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            clients.pop(fd)[0].close()
            return
        buffer += chunk
        while len(buffer) >= _FRAME.size:
            kind, length = _FRAME.unpack_from(buffer)
            if len(buffer) < _FRAME.size + length:
                break
            payload = bytes(buffer[_FRAME.size : _FRAME.size + length])
            del buffer[: _FRAME.size + length]
            with contextlib.suppress(OSError):
                if kind == b"d":
                    _write_all(self.master, payload)
                elif kind == b"w" and len(payload) == _WINSIZE.size:
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ, payload)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def console_size() -> dict[str, int] | None:
    """Our terminal's size as the OCI `process.consoleSize` (the runtime sizes the pty before the
    process starts, so its first look is right), None without a terminal."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            rows, columns, _, _ = _WINSIZE.unpack(
                fcntl.ioctl(fd, termios.TIOCGWINSZ, _WINSIZE.pack(0, 0, 0, 0))
            )
            if rows and columns:
                return {"height": rows, "width": columns}
    return None


@contextlib.contextmanager
def _raw(fd: int | None) -> Iterator[None]:
    """Our terminal in raw mode (every key, ^C included, goes to the container), restored after."""
    if fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: what was typed ahead still goes in
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _window_size(endpoint: _Endpoint, terminal: int) -> Iterator[None]:
    """Copy our terminal's size to the container's pty now and on every SIGWINCH."""

    def copy(signum: int = 0, frame: FrameType | None = None) -> None:
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(terminal, termios.TIOCGWINSZ, _WINSIZE.pack(0, 0, 0, 0))
            if _WINSIZE.unpack(size)[:2] != (0, 0):
                endpoint.resize(size)

    if not os.isatty(terminal):
        yield
        return
    copy()
    previous: Any = None
    with contextlib.suppress(ValueError):  # not the main thread: no SIGWINCH handling
        previous = signal.signal(signal.SIGWINCH, copy)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
