"""Shared helpers for the benchmarks: timing child processes (wall and CPU) and a local registry.

The benchmarks reuse the test suite's registry launcher and image builder (`tests/support`), so
they measure against the same real CNCF distribution registry the tests use.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Measure what an installed package runs: byte-compiled modules. An editable install compiles
# nothing, and with PYTHONDONTWRITEBYTECODE set (as on the development machine) every `trust`
# started by a benchmark would compile its sources again (~100 ms).
for package in ("trust", "pull", "policy", "run"):
    compileall.compile_dir(ROOT / package, quiet=1)
VENV_BIN = Path(sys.executable).parent
TRUST = str(VENV_BIN / "trust")
RAW = argparse.RawDescriptionHelpFormatter


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    """user + system seconds of the child and its children."""


def timed(command: list[str], *, env: dict[str, str] | None = None) -> Run:
    """Run `command` to completion; raise if it fails. Measures wall time and CPU time (wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(command)}\n{err}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


def median(values: list[float]) -> float:
    return statistics.median(values)


def drop_caches() -> None:
    """Best effort: make each run read from disk the same way (root only)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass
