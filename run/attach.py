"""`trust attach` to a container without a terminal: its output as it comes, its stdin if it has one.

A detached container without `-t` writes straight into stdout.log and stderr.log (the monitor is not
in that path, so a slow reader can never hold the container up). Attaching therefore follows those
files from their current end, stdout to our stdout and stderr to our stderr, as docker's attach
keeps the streams apart; the order between the two streams is kept only as far as the files show it.
A container started with `-i` (`run -di`) reads a FIFO that its monitor holds open
(`Container.stdin_fifo`): our stdin is copied into it, and the detach keys (ctrl-p ctrl-q) end the
attachment, as with a terminal. Without `-i` there is no stdin to give and ^C is the way out.

Signals: with `sig_proxy` (docker's default for a container without a terminal) SIGINT, SIGTERM and
the other forwarded signals go to the container (`runtime kill`) and the attachment lasts until it
exits; without, ^C detaches and the container runs on. Returns when the container has exited (and
its monitor has recorded the exit), or when we detach.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO

from pull.errors import TrustError
from run.record import Container
from run.runtime import Runtime
from run.signals import FORWARDED_SIGNALS

_POLL = 0.05
"""Seconds between looks at the log files (they are plain files: select says "ready" always)."""


def follow(
    container: Container,
    runtime: Runtime,
    running: Callable[[], bool],
    *,
    interactive: bool,
    sig_proxy: bool,
    detach_keys: bytes,
) -> bool:
    """Relay until `running()` turns false (returns False) or we detach (True)."""
    stdin_fd = None
    if interactive and container.open_stdin:
        stdin_fd = os.open(container.stdin_fifo, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with _logs_from_now(container) as logs, _signals(runtime, container.id, sig_proxy):
            held = b""
            watched = [0] if stdin_fd is not None else []
            while True:
                alive = running()
                for source, target in logs:
                    while chunk := source.read(65536):
                        _write_all(target, chunk)
                if not alive:
                    return False  # one more read of the logs happened after the container was seen gone
                ready, _, _ = select.select(watched, [], [], _POLL)
                if not ready or stdin_fd is None:
                    continue
                data = os.read(0, 65536)
                if not data:
                    watched = []  # our input ended; the container's stays open (docker's default)
                    continue
                data, held, detach = _split_detach(held + data, detach_keys)
                if data:
                    _write_all(stdin_fd, data)
                if detach:
                    return True
    except KeyboardInterrupt:
        if sig_proxy:
            raise
        return True  # --sig-proxy=false: ^C leaves the container running, as docker does
    finally:
        if stdin_fd is not None:
            os.close(stdin_fd)


def _split_detach(data: bytes, keys: bytes) -> tuple[bytes, bytes, bool]:
    """(what to pass on, what to hold back as a possible start of `keys`, whether `keys` were typed)."""
    if not keys:
        return data, b"", False
    if keys in data:
        return data[: data.index(keys)], b"", True
    for size in range(min(len(keys) - 1, len(data)), 0, -1):
        if data.endswith(keys[:size]):
            return data[:-size], data[-size:], False
    return data, b"", False


@contextlib.contextmanager
def _logs_from_now(container: Container) -> Iterator[list[tuple[IO[bytes], int]]]:
    """The two log files, positioned at their end, each with the descriptor it is copied to."""
    files: list[tuple[IO[bytes], int]] = []
    try:
        for path, target in ((container.stdout_log, 1), (container.stderr_log, 2)):
            with contextlib.suppress(FileNotFoundError):
                file: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed below)
                file.seek(0, os.SEEK_END)
                files.append((file, target))
        yield files
    finally:
        for file, _ in files:
            file.close()


@contextlib.contextmanager
def _signals(runtime: Runtime, container_id: str, sig_proxy: bool) -> Iterator[None]:
    if not sig_proxy:
        yield
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(TrustError):
            runtime.kill(container_id, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
