"""Helper processes the test fixtures start (Sigstore services, the npm stand-in, kube): a free
loopback port for each, and every one stopped at exit even when a test run is interrupted."""

from __future__ import annotations

import atexit
import socket
import subprocess

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def track(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Stop `process` at exit if nobody has by then."""
    _LIVE[process.pid] = process
    return process


def terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _LIVE.pop(process.pid, None)


@atexit.register
def _stop_all() -> None:
    for process in list(_LIVE.values()):
        terminate(process)
