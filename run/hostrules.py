"""The host's iptables rules for the bridge: masquerading, forwarding, and published ports.

CNI's `portmap` and `firewall` plugins (and `bridge`'s `ipMasq`) did this with a dozen `iptables`
processes per container and as many again to undo it: ~250 of the ~310 ms a bridged `trust run
--rm -p …` spent on its network. The rules are few and regular, so trust writes them itself, as
docker does for docker0:

- once per host and subnet (`install_bridge_rules` when `bridge_rules_present` finds them missing,
  kept like the bridge itself): chains `TRUST-POSTROUTING` and `TRUST-HOSTPORTS` (nat) and
  `TRUST-FORWARD` (filter), jumped to from the built-in chains; masquerading of what leaves the
  subnet through another interface; masquerading of DNATed connections that come from loopback or
  from the subnet itself (the host reaching a published port through 127.0.0.1, `route_localnet` on
  the bridge; a container reaching its own or another's published port); forwarding to and from
  the bridge accepted (a host whose FORWARD policy drops, docker's default);
- per container with published ports (`publish`, `unpublish`): one chain `TRUST-DN-<id>` of DNAT
  rules, and one jump to it from `TRUST-HOSTPORTS` carrying the container id in a comment. Both go
  in and out in one `iptables-restore` each, so a container's ports appear and disappear at once.

A container without published ports costs no rule at all. The bridge, the veth pair and the
address still come from CNI's `bridge` and `host-local` plugins (run/network.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from run.errors import RuntimeFailure

if TYPE_CHECKING:
    from run.network import PortMapping

HOSTPORTS = "TRUST-HOSTPORTS"
POSTROUTING = "TRUST-POSTROUTING"
FORWARD = "TRUST-FORWARD"
_TIMEOUT = 60.0


class RulesFailure(RuntimeFailure):
    """iptables refused a rule (the message says which)."""


def container_chain(container_id: str) -> str:
    """The container's DNAT chain (iptables allows 28 characters)."""
    return f"TRUST-DN-{container_id[:16]}"


def _masquerade(bridge: str, subnet: str) -> list[str]:
    return ["-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"]


def bridge_rules_present(bridge: str, subnet: str) -> bool:
    """Whether the host-wide rules are in place: the one `install_bridge_rules` adds last is."""
    return _ok("nat", "-C", POSTROUTING, *_masquerade(bridge, subnet))


def install_bridge_rules(bridge: str, subnet: str, lock_dir: Path) -> None:
    """Add whichever of the host-wide rules is missing (the bridge must exist). Under a file lock in
    `lock_dir`: two first containers must not both add them."""
    masquerade = _masquerade(bridge, subnet)
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".rules.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for table, chain in (("nat", POSTROUTING), ("nat", HOSTPORTS), ("filter", FORWARD)):
            if not _ok(table, "-S", chain):
                _run(table, "-N", chain)
        wanted = [
            ("nat", "POSTROUTING", ["-j", POSTROUTING]),
            ("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", HOSTPORTS]),
            ("nat", "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", HOSTPORTS]),
            ("filter", "FORWARD", ["-j", FORWARD]),
        ]
        for table, builtin, rule in wanted:
            if not _ok(table, "-C", builtin, *rule):
                _run(table, "-I", builtin, "1", *rule)
        dnat = ["-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"]
        static = [
            ("nat", POSTROUTING, ["-s", "127.0.0.0/8", *dnat]),
            ("nat", POSTROUTING, ["-s", subnet, "-d", subnet, *dnat]),
            ("filter", FORWARD, ["-o", bridge, "-j", "ACCEPT"]),
            ("filter", FORWARD, ["-i", bridge, "-j", "ACCEPT"]),
            ("nat", POSTROUTING, masquerade),  # last: it is what `bridge_rules_present` looks for
        ]
        for table, chain, rule in static:
            if not _ok(table, "-C", chain, *rule):
                _run(table, "-A", chain, *rule)
    # DNAT of connections to 127.0.0.1 towards the bridge needs the kernel to route loopback
    # addresses there (what portmap's `snat` set too).
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1")


def publish(container_id: str, address: str, ports: Sequence[PortMapping]) -> None:
    """Publish `ports` of the container at `address`: its DNAT chain and the jump to it, at once."""
    chain = container_chain(container_id)
    lines = ["*nat", f":{chain} - [0:0]"]
    for port in ports:
        match = ["-p", port.protocol, "-m", port.protocol, "--dport", str(port.host_port)]
        if port.host_ip:
            match = ["-d", f"{port.host_ip}/32", *match]
        target = f"{address}:{port.container_port}"
        lines.append(" ".join(["-A", chain, *match, "-j", "DNAT", "--to-destination", target]))
    lines += [" ".join(["-A", HOSTPORTS, *_jump(container_id)]), "COMMIT", ""]
    _restore("\n".join(lines), f"cannot publish the ports of container {container_id[:12]}")


def unpublish(container_id: str) -> None:
    """Remove the container's DNAT chain and the jump to it; what is already gone is fine.

    Raises:
        RulesFailure: the chain is there and iptables would not remove it.
    """
    chain = container_chain(container_id)
    jump = _jump(container_id)
    together = ["*nat", " ".join(["-D", HOSTPORTS, *jump]), f":{chain} - [0:0]", f"-X {chain}", "COMMIT", ""]
    with contextlib.suppress(RulesFailure):
        _restore("\n".join(together), "")
        return
    # One of them is missing (a half-made publish, rules flushed by someone else): one at a time.
    _ok("nat", "-D", HOSTPORTS, *jump)
    if _ok("nat", "-S", chain) and not (_ok("nat", "-F", chain) and _ok("nat", "-X", chain)):
        raise RulesFailure(f"cannot remove iptables chain {chain} of container {container_id[:12]}")


def _jump(container_id: str) -> list[str]:
    """The rule in TRUST-HOSTPORTS that sends to the container's chain (its id in the comment)."""
    return ["-m", "comment", "--comment", f"trust:{container_id}", "-j", container_chain(container_id)]


def _ok(table: str, *args: str) -> bool:
    """`iptables -t TABLE ARGS…` succeeded (a check, or a removal whose failure is acceptable)."""
    try:
        _call([shutil.which("iptables") or "/usr/sbin/iptables", "-w", "-t", table, *args])
    except RulesFailure:
        return False
    return True


def _run(table: str, *args: str) -> None:
    """`iptables -t TABLE ARGS…`; raises `RulesFailure`."""
    _call([shutil.which("iptables") or "/usr/sbin/iptables", "-w", "-t", table, *args])


def _restore(rules: str, what: str) -> None:
    """`iptables-restore --noflush` of `rules`: all of them or none. Raises `RulesFailure`."""
    _call([shutil.which("iptables-restore") or "/usr/sbin/iptables-restore", "-w", "--noflush"], rules, what)


def _call(argv: list[str], rules: str | None = None, what: str = "") -> None:
    name = f"{what}: {Path(argv[0]).name}" if what else " ".join([Path(argv[0]).name, *argv[2:6]])
    try:
        done = subprocess.run(
            argv,
            input=rules,
            stdin=subprocess.DEVNULL if rules is None else None,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RulesFailure(f"{name}: {exc}") from None
    if done.returncode != 0:
        raise RulesFailure(f"{name}: {done.stderr.strip()[:200]}")
