"""Run `trust` with a pseudo-terminal as its stdio: what a person at a terminal sees (progress bars)."""

from __future__ import annotations

import os
import pty
import sys


def run_in_terminal(*args: str) -> tuple[int, bytes]:
    """`python -m trust ARGS…` on a new pseudo-terminal; returns (exit code, everything it printed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.execv(sys.executable, [sys.executable, "-m", "trust", *args])
    output = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        output += data
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output
