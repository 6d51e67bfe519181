"""Processes we are not the parent of, identified by pid *and* start time (pids are reused).

    start = start_time(pid)               # recorded with the pid
    alive(pid, start); wait_gone(pid, start, timeout=2.0); kill_process(pid, start)

Waiting uses a pidfd, which works for any process, not only our children.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from pathlib import Path

KILL_WAIT = 10.0
"""How long a container may take to die after SIGKILL (and its monitor to clean up)."""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (identifies it across pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ")": split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    """Whether `pid` is still the (non-zombie) process that started at `start`."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


def wait_gone(pid: int, start: int | None, timeout: float | None) -> bool:
    """Wait (without being its parent) until `pid` exits; True if it did within `timeout`."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not alive(pid, start):
            return True
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def kill_process(pid: int, start: int | None) -> None:
    """SIGKILL `pid` if it is still the process we recorded (same start time), and wait for it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if start_time(pid) != start and start is not None:
            return  # the pid was reused by another process
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], KILL_WAIT)
    finally:
        os.close(pidfd)
