"""Put the host's network back as the test run found it.

Containers release their own veth, lease and port rules (the tests check that). What stays is
shared plumbing made on first use: the `trust0` bridge (CNI's bridge plugin), trust's `TRUST-*`
iptables chains (run/hostrules.py) and any `CNI-*` ones with their jumps from the built-in chains,
and the lease folder under /run/trust; /run/trust-userns, the folder user-namespaced
containers are reached through; and the `/trust` parent cgroup that runc makes in each hierarchy
for the containers' own (both empty once the containers are gone). A user's host keeps those from
`trust run` as it keeps `docker0`; a test run must not, so `conftest.py` snapshots them before the
run and removes what the run added after it (only what was not there before: a host that
already runs trust or podman keeps its own).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from run.bundle import DEFAULT_CGROUP_PARENT
from run.runtime import cgroup_dirs

BRIDGE = "trust0"
RUN_DIR = Path("/run/trust")
USERNS_DIR = Path("/run/trust-userns")
TABLES = ("filter", "nat")


@dataclass(frozen=True)
class HostNetwork:
    bridge: bool
    chains: frozenset[tuple[str, str]]
    """(table, chain) of every TRUST-* and CNI-* chain."""
    run_dir: bool
    userns_dir: bool
    cgroup_parents: frozenset[Path] = frozenset()
    """The `/trust` parent cgroup in each hierarchy where it existed."""


def _shared_chains(table: str) -> set[str]:
    done = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
    if done.returncode != 0:
        return set()
    return {line.split()[1] for line in done.stdout.splitlines() if line.startswith(("-N TRUST-", "-N CNI-"))}


def snapshot() -> HostNetwork:
    bridge = Path("/sys/class/net", BRIDGE).exists()
    chains = frozenset((table, chain) for table in TABLES for chain in _shared_chains(table))
    parents = frozenset(path for path in cgroup_dirs(DEFAULT_CGROUP_PARENT) if path.is_dir())
    return HostNetwork(bridge, chains, RUN_DIR.exists(), USERNS_DIR.exists(), parents)


def restore(before: HostNetwork) -> None:
    """Remove the bridge, chains and run folder the run created; leave everything else alone."""
    if not before.bridge and Path("/sys/class/net", BRIDGE).exists():
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    for table in TABLES:
        added = _shared_chains(table) - {chain for t, chain in before.chains if t == table}
        if not added:
            continue
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        for rule in rules.splitlines():
            words = shlex.split(rule)  # comments are quoted
            target = words[words.index("-j") + 1] if "-j" in words else None
            if words[:1] == ["-A"] and words[1] not in added and target in added:  # a jump into one
                subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True)
        for chain in added:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        for chain in added:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)
    if not before.run_dir and RUN_DIR.exists():
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    if not before.userns_dir and USERNS_DIR.exists():
        with contextlib.suppress(OSError):  # not empty: a container still uses it
            USERNS_DIR.rmdir()
    for parent in cgroup_dirs(DEFAULT_CGROUP_PARENT):
        if parent not in before.cgroup_parents:
            with contextlib.suppress(OSError):  # gone, or a container's cgroup still below it
                parent.rmdir()
