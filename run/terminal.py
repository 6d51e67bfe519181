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


def relay(master: int, *, interactive: bool) -> None:
    """Copy between this process's terminal (or stdio) and the container's pty until the container's
    side is closed; stdin only if `interactive`. Raw mode and window size as the module doc says."""
    stdin, stdout = 0, 1  # the descriptors themselves: sys.stdin may be replaced (pytest, the agent)
    sys.stdout.flush()
    with _raw(stdin if interactive else None), _window_size(master, stdin if os.isatty(stdin) else stdout):
        watched = [master, stdin] if interactive else [master]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: the last slave descriptor was closed
                        raise
                    data = b""
                if not data:
                    return
                _write_all(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:  # our input ended: say so to the container (^D), as docker does
                    watched.remove(stdin)
                    _write_all(master, b"\x04")
                    continue
                _write_all(master, data)


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


def copy_to_log(master: int, log: Path) -> threading.Thread:
    """A detached container's terminal: what it writes goes to its stdout.log (a daemon thread)."""

    def copy() -> None:
        with open(log, "ab", buffering=0) as out:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return
                if not data:
                    return
                out.write(data)

    thread = threading.Thread(target=copy, name="tty-log", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _raw(fd: int | None) -> Iterator[None]:
    """Our terminal in raw mode (every key, ^C included, goes to the container), restored after."""
    if fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _window_size(master: int, terminal: int) -> Iterator[None]:
    """Copy our terminal's size to the pty now and on every SIGWINCH."""

    def copy(signum: int = 0, frame: FrameType | None = None) -> None:
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(terminal, termios.TIOCGWINSZ, _WINSIZE.pack(0, 0, 0, 0))
            if _WINSIZE.unpack(size)[:2] != (0, 0):
                fcntl.ioctl(master, termios.TIOCSWINSZ, size)

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
