"""`trust stats` and `trust top`: what a running container uses, read from its cgroup and its veth.

    sample = read_sample(container)                    # counters now
    later = read_sample(container)                     # … a moment later
    usage = Usage.between(sample, later)               # CPU %, memory, pids, network bytes
    processes(container)                               # [(pid, ppid, uid, command)] for `top`

Everything comes from files the kernel keeps, whatever the runtime: the container's cgroup
directories (`cgroupsPath` in every mounted hierarchy, v1 or v2: `cpuacct.usage` or `cpu.stat`
usage_usec, `memory.usage_in_bytes`/`memory.limit_in_bytes` or `memory.current`/`memory.max`,
`pids.current`, `cgroup.procs`) and, for a bridged container, the host side of its veth (what the
host's end transmits, the container received). Pids are the host's.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from pull.records import dataclass
from run.network import read_attachment
from run.record import Container
from run.runtime import cgroup_dirs

_UNLIMITED = 1 << 62
"""A v1 memory limit at or above this is "no limit" (the kernel reports PAGE_COUNTER_MAX pages)."""


@dataclass(frozen=True)
class Sample:
    at: float
    """time.monotonic() when read"""
    cpu_ns: int | None
    memory: int | None
    memory_limit: int | None
    pids: int | None
    rx_bytes: int | None
    tx_bytes: int | None


@dataclass(frozen=True)
class Usage:
    cpu_percent: float | None
    """Of one CPU (docker's convention: 200% is two CPUs busy)."""
    memory: int | None
    memory_limit: int | None
    pids: int | None
    rx_bytes: int | None
    tx_bytes: int | None

    @classmethod
    def between(cls, first: Sample, second: Sample) -> Usage:
        cpu = None
        elapsed = second.at - first.at
        if first.cpu_ns is not None and second.cpu_ns is not None and elapsed > 0:
            cpu = max(0.0, (second.cpu_ns - first.cpu_ns) / (elapsed * 1e9) * 100)
        return cls(cpu, second.memory, second.memory_limit, second.pids, second.rx_bytes, second.tx_bytes)


def read_sample(container: Container) -> Sample:
    directories = cgroup_dirs(container.cgroups_path)
    cpu_ns = _first_int(directories, "cpuacct.usage")
    if cpu_ns is None:
        usage_usec = _keyed(directories, "cpu.stat", "usage_usec")
        cpu_ns = usage_usec * 1000 if usage_usec is not None else None
    memory = _first_int(directories, "memory.usage_in_bytes", "memory.current")
    limit = _first_int(directories, "memory.limit_in_bytes", "memory.max")
    if limit is not None and limit >= _UNLIMITED:
        limit = None
    rx = tx = None
    attachment = read_attachment(container.directory)
    if attachment is not None:
        veth = next(
            (
                i["name"]
                for i in (attachment.result or {}).get("interfaces") or ()
                if str(i.get("name", "")).startswith("veth")
            ),
            None,
        )
        if veth is not None:  # the host's side: what it sends, the container receives
            rx = _int(Path(f"/sys/class/net/{veth}/statistics/tx_bytes"))
            tx = _int(Path(f"/sys/class/net/{veth}/statistics/rx_bytes"))
    return Sample(time.monotonic(), cpu_ns, memory, limit, _first_int(directories, "pids.current"), rx, tx)


def processes(container: Container) -> list[tuple[int, int, int, str]]:
    """(pid, ppid, uid, command line) of every process in the container's cgroup, by pid."""
    pids: set[int] = set()
    for directory in cgroup_dirs(container.cgroups_path):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
    out = []
    for pid in sorted(pids):
        with contextlib.suppress(OSError, ValueError, IndexError):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            fields = dict(line.split(":", 1) for line in status if ":" in line)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
            command = cmdline.decode(errors="replace") or f"[{fields['Name'].strip()}]"
            out.append((pid, int(fields["PPid"]), int(fields["Uid"].split()[0]), command))
    return out


def _int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _first_int(directories: list[Path], *names: str) -> int | None:
    for name in names:
        for directory in directories:
            value = _int(directory / name)
            if value is not None:
                return value
    return None


def _keyed(directories: list[Path], name: str, key: str) -> int | None:
    for directory in directories:
        with contextlib.suppress(OSError, ValueError):
            for line in (directory / name).read_text().splitlines():
                field, _, value = line.partition(" ")
                if field == key:
                    return int(value)
    return None
