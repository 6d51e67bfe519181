"""Bridge networking for containers, built from the CNI reference plugins that Debian ships.

    ports = [*parse_publish("127.0.0.1:8080:80"), *parse_publish("53/udp")]
    attachment = attach(container.directory, container.id, ports)      # before `runtime create`
    spec["linux"]["namespaces"] += [{"type": "network", "path": str(attachment.netns)}]
    ...
    release(container.directory, container.id)                         # exit, stop, rm, gc

Why CNI: `containernetworking-plugins` is in Debian 12 (netavark, podman's newer stack, is not), the
plugins are the ones podman 3/4 and containerd use, and the CNI spec fixes how to call them: one
executable per plugin, the config on stdin, `CNI_*` variables, a JSON result on stdout. trust writes
the network configuration list itself (`network_config`) and calls the plugins:

- `bridge`: the host bridge `trust0` (created on first use), a veth pair into the container's network
  namespace as `eth0`, the bridge as the default gateway, hairpin mode (a container reaches its own
  published port);
- `host-local` (IPAM, called by `bridge`): an address from a private /16 (`10.89.0.0/16`,
  `$TRUST_BRIDGE_SUBNET` to change it), its leases under `/run/trust/networks/` (host-wide because
  the bridge is; on tmpfs because veths and rules do not survive a reboot either);
- and, instead of CNI's `portmap` and `firewall` plugins and `bridge`'s `ipMasq` (a dozen iptables
  processes per container each way, ~250 ms of a bridged start), trust's own rules
  (run/hostrules.py): host-wide masquerading and forwarding for the bridge, installed once, and per
  container with published ports one DNAT chain put in and taken out with one `iptables-restore`.

The container's network namespace is made here (by a thread that enters a new one, loopback up)
and bind-mounted on `netns` in the container directory: the runtime joins it by path, the plugins
configure it by path, and `remove_directory` never deletes a directory with it still mounted.
`network.json` in the container directory records the configuration list and the plugins' result
*before* the first plugin runs, so `release` (CNI DEL, in reverse order, with the same
configuration) can undo a half-made attachment after a crash; DEL of something already gone
succeeds, as the spec requires. `release` unmounts the namespace before DEL: the kernel ends it
with its last process and deletes the veth pair with it, in the background, and DEL without a
namespace only frees the address (a veth still there afterwards is deleted by trust).

Host ports: `-p HOSTPORT:…` is refused when another of the store's containers publishes it or a host
process listens on it (DNAT would silently steal its traffic); `-p CONTAINERPORT` and `-P` take a port
the kernel picks from its ephemeral range.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from pull.durable import replace_json
from pull.errors import InvalidManifest, UsageError
from pull.records import dataclass
from run import hostrules, libc
from run.errors import RuntimeFailure
from run.overlay import bind_mount, is_mountpoint, unmount

_T = TypeVar("_T")

CNI_VERSION = "1.0.0"
NETWORK_NAME = "trust"
BRIDGE = "trust0"
DEFAULT_SUBNET = "10.89.0.0/16"
"""Private and unused by docker (172.17/16) and podman (10.88/16) defaults."""
SUBNET_ENV = "TRUST_BRIDGE_SUBNET"
STATE_DIR = Path("/run/trust/networks")
IFNAME = "eth0"
ATTACHMENT_FILE = "network.json"
NETNS_FILE = "netns"
CNI_PATHS = ("/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin")
_PLUGIN_TIMEOUT = 60.0
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_RTM_DELLINK = 17
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NAMESPACE_END_WAIT = 0.1
"""Seconds `release` gives the kernel to delete an unmounted namespace's veth before deleting it."""
_PUBLISH = re.compile(
    r"(?:(?P<ip>\[[0-9a-fA-F:.]+\]|\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>(?:\d+(?:-\d+)?)?):)?"
    r"(?P<container>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp))?"
)
_MAX_PORT_RANGE = 1024
"""Ports one `-p` range may publish: each is a DNAT rule, and a typo like 1-65535 should not be."""
_FALLBACK_RESOLVERS = ("8.8.8.8", "8.8.4.4")
"""podman's answer when the host has only loopback resolvers the container cannot reach."""
_SYSTEMD_RESOLVED = Path("/run/systemd/resolve/resolv.conf")


class NetworkFailure(RuntimeFailure):
    """A CNI plugin failed, or the network namespace could not be made (exit 1: the host's problem)."""

    def diagnostics(self) -> str:
        return "Is containernetworking-plugins installed (apt-get install containernetworking-plugins)?"


# -- published ports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PortMapping:
    """One `-p`: traffic to host_ip:host_port (host_ip "" = every address) goes to container_port."""

    container_port: int
    protocol: str = "tcp"
    host_port: int = 0
    """0: a free port, picked at creation."""
    host_ip: str = ""

    def to_json(self) -> dict[str, Any]:
        """The portmap plugin's `portMappings` entry (its field names, also network.json's)."""
        return {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
            "hostIP": self.host_ip,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PortMapping:
        return cls(
            container_port=int(doc["containerPort"]),
            protocol=str(doc.get("protocol") or "tcp"),
            host_port=int(doc.get("hostPort") or 0),
            host_ip=str(doc.get("hostIP") or ""),
        )

    def __str__(self) -> str:
        """docker port's format: `80/tcp -> 127.0.0.1:8080`."""
        host = self.host_ip or "0.0.0.0"
        host = f"[{host}]" if ":" in host else host
        return f"{self.container_port}/{self.protocol} -> {host}:{self.host_port}"


def parse_publish(text: str) -> list[PortMapping]:
    """`-p [IP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp]`: docker's forms, ranges included.

    A host range maps one to one onto a container range of the same length; a container range
    alone takes a free host port for each. (docker's host range with one container port, "any
    free port of these", is refused: say the port.)
    """
    match = _PUBLISH.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"invalid --publish {text!r}: use [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp] or CONTAINERPORT"
        )
    host_ip = (match.group("ip") or "").strip("[]")
    if host_ip:
        try:
            address = ipaddress.ip_address(host_ip)
        except ValueError:
            raise UsageError(f"invalid --publish {text!r}: {host_ip!r} is not an IP address") from None
        if address.version != 4:
            raise UsageError(f"invalid --publish {text!r}: only IPv4 host addresses are published")
        host_ip = "" if address.is_unspecified else str(address)
    containers = _port_range(text, match.group("container"), lowest=1)
    hosts = _port_range(text, match.group("host") or "0", lowest=0)
    if hosts == [0]:
        hosts = [0] * len(containers)
    elif len(hosts) != len(containers):
        raise UsageError(
            f"invalid --publish {text!r}: the host range and the container range differ in length"
        )
    protocol = match.group("proto") or "tcp"
    return [PortMapping(ctr, protocol, host, host_ip) for host, ctr in zip(hosts, containers, strict=True)]


def _port_range(text: str, spec: str, *, lowest: int) -> list[int]:
    first, _, last = spec.partition("-")
    start, end = int(first), int(last or first)
    if not lowest <= start <= 65535 or not lowest <= end <= 65535:
        raise UsageError(f"invalid --publish {text!r}: ports are 1 to 65535")
    if end < start:
        raise UsageError(f"invalid --publish {text!r}: the range {spec} ends before it starts")
    if end - start >= _MAX_PORT_RANGE:
        raise UsageError(f"invalid --publish {text!r}: at most {_MAX_PORT_RANGE} ports in one range")
    return list(range(start, end + 1))


def exposed_ports(image_config: Mapping[str, Any]) -> list[PortMapping]:
    """`-P`: every `ExposedPorts` entry of the image ("80/tcp": {}) on a free host port."""
    section = image_config.get("config") or {}
    exposed = section.get("ExposedPorts") if isinstance(section, Mapping) else None
    if exposed is None:
        return []
    if not isinstance(exposed, Mapping):
        raise InvalidManifest("image config: ExposedPorts must be an object")
    out = []
    for key in exposed:
        port, _, protocol = str(key).partition("/")
        protocol = protocol or "tcp"
        if not port.isdigit() or not 1 <= int(port) <= 65535 or protocol not in ("tcp", "udp"):
            continue  # sctp and ranges: not published (portmap's iptables backend has no sctp here)
        out.append(PortMapping(int(port), protocol))
    return out


def assign_host_ports(wanted: Sequence[PortMapping], taken: Iterable[PortMapping]) -> list[PortMapping]:
    """Fill in free host ports and refuse conflicts (see the module doc).

    Raises:
        UsageError: the same host port twice, a port another container publishes or a host process uses.
    """
    used = {(m.protocol, m.host_port): m for m in taken}
    out: list[PortMapping] = []
    for mapping in wanted:
        if mapping.host_port == 0:
            port = _free_port(mapping.protocol, mapping.host_ip, {p for (_, p) in used})
            mapping = PortMapping(mapping.container_port, mapping.protocol, port, mapping.host_ip)
        else:
            other = used.get((mapping.protocol, mapping.host_port))
            if other is not None and (
                not other.host_ip or not mapping.host_ip or other.host_ip == mapping.host_ip
            ):
                raise UsageError(
                    f"host port {mapping.host_port}/{mapping.protocol} is already published "
                    "by another container"
                )
            if not _bindable(mapping.protocol, mapping.host_ip, mapping.host_port):
                raise UsageError(
                    f"host port {mapping.host_port}/{mapping.protocol} is in use by a process on the host"
                )
        used[(mapping.protocol, mapping.host_port)] = mapping
        out.append(mapping)
    return out


def _socket(protocol: str) -> socket.socket:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    # Not fooled by connections in TIME_WAIT; a listening socket still makes bind() fail.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _bindable(protocol: str, host_ip: str, port: int) -> bool:
    with _socket(protocol) as sock:
        try:
            sock.bind((host_ip or "0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port(protocol: str, host_ip: str, avoid: set[int]) -> int:
    for _ in range(100):
        with _socket(protocol) as sock:
            sock.bind((host_ip or "0.0.0.0", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise UsageError("no free host port found to publish on")


# -- the configuration -------------------------------------------------------------------------


def subnet() -> str:
    """The bridge's subnet: `$TRUST_BRIDGE_SUBNET` (a private IPv4 network, /8 to /28), else 10.89.0.0/16."""
    text = os.environ.get(SUBNET_ENV) or DEFAULT_SUBNET
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        raise UsageError(
            f"invalid ${SUBNET_ENV} {text!r}: use a private IPv4 network such as 10.89.0.0/16"
        ) from None
    if network.version != 4 or not network.is_private or not 8 <= network.prefixlen <= 28:
        raise UsageError(f"invalid ${SUBNET_ENV} {text!r}: use a private IPv4 network, /8 to /28")
    return str(network)


def network_config(subnet_text: str) -> dict[str, Any]:
    """The CNI network configuration list trust uses (also stored in network.json for DEL).

    Only `bridge` (with `host-local`): masquerading, forwarding and published ports are
    run/hostrules.py's. A network.json written before that lists `portmap` and `firewall` too and
    `ipMasq`; `release` undoes it with the plugins it names, as before."""
    plugins: list[dict[str, Any]] = [
        {
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet_text}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(STATE_DIR),
            },
        },
    ]
    return {"cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": plugins, "hostRules": True}


# -- attachments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """What a container got from the network (network.json)."""

    netns: Path
    config: Mapping[str, Any]
    ports: tuple[PortMapping, ...]
    result: Mapping[str, Any] | None = None

    @property
    def address(self) -> str | None:
        """The container's IPv4 address (no prefix length), once attached."""
        for entry in (self.result or {}).get("ips") or ():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                interface = ipaddress.ip_interface(entry["address"])
                if interface.version == 4:
                    return str(interface.ip)
        return None

    @property
    def gateway(self) -> str | None:
        for entry in (self.result or {}).get("ips") or ():
            if entry.get("gateway"):
                return str(entry["gateway"])
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "netns": str(self.netns),
            "config": dict(self.config),
            "ports": [p.to_json() for p in self.ports],
            "result": dict(self.result) if self.result is not None else None,
            "address": self.address,
            "gateway": self.gateway,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Attachment:
        return cls(
            netns=Path(doc["netns"]),
            config=dict(doc["config"]),
            ports=tuple(PortMapping.from_json(p) for p in doc.get("ports") or ()),
            result=doc.get("result"),
        )


def read_attachment(directory: Path) -> Attachment | None:
    """The container's attachment, None if it has none (no bridge network, or released)."""
    try:
        doc = json.loads((directory / ATTACHMENT_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        raise RuntimeFailure(f"{directory / ATTACHMENT_FILE} is unreadable") from None
    return Attachment.from_json(doc)


def make_namespace(directory: Path, container_id: str, subnet_text: str) -> Path:
    """The container's network namespace, made before `attach` connects it, so that the runtime
    can create the container in it while the plugins run. Recorded first (network.json): a crash
    from here on is undone by `release`, and so is a failure.

    Raises:
        NetworkFailure: the namespace could not be made.
    """
    netns = directory / NETNS_FILE
    _write(directory, Attachment(netns, network_config(subnet_text), ()))
    try:
        _make_netns(netns)
    except BaseException:
        with contextlib.suppress(RuntimeFailure):
            release(directory, container_id)
        raise
    return netns


def attach(directory: Path, container_id: str, ports: Sequence[PortMapping], subnet_text: str) -> Attachment:
    """Connect the container's network namespace to the bridge (CNI ADD), making the namespace
    first unless `make_namespace` did, and publish `ports`.

    On failure, whatever was done (the namespace included) is undone before raising.

    Raises:
        NetworkFailure: a plugin (or the namespace) failed.
    """
    netns = directory / NETNS_FILE
    attachment = Attachment(netns, network_config(subnet_text), tuple(ports))
    _write(directory, attachment)  # first: a crash from here on is undone by `release`
    # The host's rules are looked for beside the namespace and the plugins (an `iptables -C`, ~2 ms);
    # they are installed after them, when the bridge they name exists.
    rules_present = _Background(hostrules.bridge_rules_present, BRIDGE, subnet_text)
    try:
        if not is_mountpoint(netns):
            _make_netns(netns)
        result: dict[str, Any] | None = None
        for plugin in attachment.config["plugins"]:
            result = _call_plugin("ADD", plugin, attachment, container_id, result)
        attachment = Attachment(netns, attachment.config, attachment.ports, result)
        _write(directory, attachment)
        if not rules_present.result():
            hostrules.install_bridge_rules(BRIDGE, subnet_text, STATE_DIR)
        if ports:
            if attachment.address is None:
                raise NetworkFailure("the bridge plugin gave the container no IPv4 address")
            hostrules.publish(container_id, attachment.address, ports)
    except BaseException:
        with contextlib.suppress(Exception):
            rules_present.result()  # no thread of ours outlives the attachment
        with contextlib.suppress(RuntimeFailure):
            release(directory, container_id)
        raise
    return attachment


def release(directory: Path, container_id: str) -> None:
    """Undo `attach`: unmount the namespace, CNI DEL (reverse order, no namespace), delete a veth
    that outlived the namespace's unmount, remove the namespace file and network.json.

    Idempotent; works on a half-made attachment and when the namespace is gone already.

    Raises:
        NetworkFailure: a plugin's DEL failed (network.json is kept, so a later `rm -f` or `gc` retries).
    """
    attachment = read_attachment(directory)
    if attachment is None:
        return
    errors = []
    namespace_gone = not is_mountpoint(attachment.netns)
    unpublishing = None
    if attachment.config.get("hostRules") and attachment.ports:
        # Beside the plugins' DEL, not before it: both mostly wait for the kernel (an nf_tables
        # commit that deletes rules), and those waits can overlap.
        unpublishing = _Background(hostrules.unpublish, container_id)
    if not namespace_gone:
        # Unmounted first, the namespace ends with its last process and the kernel deletes the veth
        # pair with it, in the background. `bridge` DEL given the namespace would delete eth0 itself
        # and wait for the RCU grace periods of a device's unregistering (~15-35 ms of every bridged
        # `run --rm`); given none, it only frees the address lease.
        try:
            unmount(attachment.netns, detach=True)
        except OSError as exc:
            errors.append(f"cannot unmount {attachment.netns}: {exc.strerror or exc}")
    for plugin in reversed(attachment.config.get("plugins") or ()):
        try:
            _call_plugin("DEL", plugin, attachment, container_id, attachment.result)
        except NetworkFailure as err:
            errors.append(str(err))
    for veth in _veths_left(attachment):
        # Another process holds the namespace (a container that joined it with `--network
        # container:`), or the kernel is slow. Deleted as `bridge` DEL would have: one end of a
        # pair takes the other with it.
        try:
            _delete_link(veth)
        except OSError as exc:
            errors.append(f"cannot delete {veth}: {exc.strerror or exc}")
    if unpublishing is not None:
        try:
            unpublishing.result()
        except RuntimeFailure as err:
            errors.append(str(err))
    if namespace_gone:
        errors += _drop_masquerade(container_id)
    if errors:
        raise NetworkFailure("; ".join(errors))
    with contextlib.suppress(FileNotFoundError):
        attachment.netns.unlink()
    with contextlib.suppress(FileNotFoundError):
        (directory / ATTACHMENT_FILE).unlink()


def start_release(directory: Path, container_id: str) -> Callable[[], None]:
    """`release` in a thread of its own, for a caller with other work meanwhile: it mostly waits for
    the kernel (~12 ms of an nf_tables commit that deletes the container's port rules). The returned
    call waits for it and raises what `release` raised."""
    return _Background(release, directory, container_id).result


def _host_veths(attachment: Attachment) -> list[str]:
    """The host ends of the container's veth pairs that still exist: the interfaces of the bridge
    plugin's result outside the namespace that are enslaved to trust's bridge (never the bridge,
    never a device someone else has taken the name of)."""
    found = []
    for interface in (attachment.result or {}).get("interfaces") or ():
        name = interface.get("name") if isinstance(interface, dict) else None
        if not isinstance(name, str) or interface.get("sandbox") or name == BRIDGE or "/" in name:
            continue
        with contextlib.suppress(OSError):
            if os.path.basename(os.readlink(f"/sys/class/net/{name}/master")) == BRIDGE:
                found.append(name)
    return found


def _veths_left(attachment: Attachment) -> list[str]:
    """`_host_veths` once the kernel has had time to end the namespace: its background work takes
    about as long as the plugin's DEL, so this rarely waits. Whatever is left then is not dying."""
    deadline = time.monotonic() + _NAMESPACE_END_WAIT
    while (left := _host_veths(attachment)) and time.monotonic() < deadline:
        time.sleep(0.002)
    return left


def _delete_link(name: str) -> None:
    """`ip link delete NAME` over rtnetlink: RTM_DELLINK by interface index, the kernel's ack read.
    A device that is gone already (ENODEV) is not an error."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        interface = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)  # struct ifinfomsg
        header = struct.pack("=IHHII", 16 + len(interface), _RTM_DELLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0)
        sock.sendall(header + interface)
        reply = sock.recv(4096)  # NLMSG_ERROR: struct nlmsghdr, then the (negative) error number
    error = -struct.unpack_from("=i", reply, 16)[0]
    if error not in (0, errno.ENODEV):
        raise OSError(error, os.strerror(error))


class _Background(Generic[_T]):
    """`function(*args)` in a thread of its own; `result()` waits for it, then returns its value or
    raises its exception. For waits on the kernel or a plugin that can overlap others."""

    def __init__(self, function: Callable[..., _T], *args: Any) -> None:
        self._outcome: list[_T] = []
        self._failure: list[BaseException] = []

        def work() -> None:
            try:
                self._outcome.append(function(*args))
            except BaseException as exc:  # handed to whoever waits in `result`
                self._failure.append(exc)

        self._thread = threading.Thread(target=work, name=f"network-{function.__name__}")
        self._thread.start()

    def result(self) -> _T:
        self._thread.join()
        if self._failure:
            raise self._failure[0]
        return self._outcome[0]


def _drop_masquerade(container_id: str) -> list[str]:
    """The bridge plugin's masquerade rules of a container whose namespace is gone.

    Without the namespace, `bridge` DEL cannot learn the container's addresses and leaves its
    POSTROUTING jump and per-container chain behind; both carry the container id in a comment.
    """
    iptables = shutil.which("iptables")
    if iptables is None:
        return []
    saved = subprocess.run([iptables, "-w", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True)
    errors = []
    for line in saved.stdout.splitlines():
        if f'id: \\"{container_id}\\"' not in line and f'id: "{container_id}"' not in line:
            continue
        rule = shlex.split(line)
        if rule[:2] != ["-A", "POSTROUTING"] or "-j" not in rule:
            continue
        chain = rule[rule.index("-j") + 1]
        for args in (["-D", *rule[1:]], ["-F", chain], ["-X", chain]):
            done = subprocess.run([iptables, "-w", "-t", "nat", *args], capture_output=True, text=True)
            if done.returncode != 0 and not (args[0] != "-D" and chain in ("MASQUERADE", "ACCEPT")):
                errors.append(f"iptables -t nat {' '.join(args[:2])}: {done.stderr.strip()}")
    return errors


def _write(directory: Path, attachment: Attachment) -> None:
    replace_json(directory / ATTACHMENT_FILE, attachment.to_json())


def _make_netns(path: Path) -> None:
    """A new network namespace bind-mounted on `path`, its loopback up (runc does that only for the
    namespaces it makes itself).

    Made by a thread of this process, not by `unshare --net=FILE ip link set lo up` (two programs,
    ~4 ms): a network namespace belongs to a thread, so `unshare(CLONE_NEWNET)` moves only the one
    that calls it, which mounts its namespace on `path` and ends; the process stays in the host's.
    """
    path.touch(mode=0o600)
    failures: list[OSError] = []

    def make() -> None:
        try:
            libc.call("unshare", _CLONE_NEWNET)
            bind_mount("/proc/thread-self/ns/net", path)
            _loopback_up()
        except OSError as exc:
            failures.append(exc)

    thread = threading.Thread(target=make, name="network-namespace")
    thread.start()
    thread.join()
    if failures:
        if is_mountpoint(path):
            with contextlib.suppress(OSError):
                unmount(path, detach=True)
        raise NetworkFailure(f"cannot make a network namespace: {failures[0].strerror or failures[0]}")


def _loopback_up() -> None:
    """`ip link set lo up` in the calling thread's network namespace (the kernel adds 127.0.0.1
    and ::1 as it comes up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def plugin_path() -> str:
    return os.pathsep.join(p for p in CNI_PATHS if os.path.isdir(p))


def _call_plugin(
    command: str,
    plugin: Mapping[str, Any],
    attachment: Attachment,
    container_id: str,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """Run one plugin per the CNI spec; its result (ADD), None (DEL)."""
    kind = str(plugin["type"])
    executable = next((Path(d) / kind for d in CNI_PATHS if (Path(d) / kind).is_file()), None)
    if executable is None:
        if command == "DEL":
            return None  # nothing it could have made
        raise NetworkFailure(
            f"the CNI plugin {kind!r} is not installed (apt-get install containernetworking-plugins)"
        )
    config: dict[str, Any] = {
        "cniVersion": attachment.config["cniVersion"],
        "name": attachment.config["name"],
    }
    config.update(plugin)
    if (plugin.get("capabilities") or {}).get("portMappings"):
        config["runtimeConfig"] = {"portMappings": [p.to_json() for p in attachment.ports]}
    if previous is not None:
        config["prevResult"] = dict(previous)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        # A DEL after the namespace's mount is gone (a crash, a host that unmounted it) passes no
        # namespace, as the CNI spec allows: the plugins then free what lives outside it (address
        # lease, rules); the veth went with the namespace. Given the bare file, they fail instead.
        "CNI_NETNS": str(attachment.netns) if command != "DEL" or is_mountpoint(attachment.netns) else "",
        "CNI_IFNAME": IFNAME,
        "CNI_PATH": plugin_path(),
    }
    try:
        done = subprocess.run(
            [str(executable)],
            input=json.dumps(config),
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_PLUGIN_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkFailure(f"CNI {kind} {command}: {exc}") from None
    if done.returncode != 0:
        raise NetworkFailure(f"CNI {kind} {command}: {_plugin_error(done.stdout, done.stderr)}")
    if command != "ADD":
        return None
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise NetworkFailure(f"CNI {kind} ADD: unreadable result {done.stdout[:200]!r}") from None
    return result


def _plugin_error(stdout: str, stderr: str) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        doc = json.loads(stdout)
        message = str(doc.get("msg") or "")
        if doc.get("details"):
            message += f": {doc['details']}"
        if message:
            return " ".join(message.split())
    return " ".join((stderr or stdout).split())[:500] or "failed without a message"


# -- /etc files --------------------------------------------------------------------------------


def resolv_conf(host_file: Path = Path("/etc/resolv.conf")) -> str:
    """The host's resolvers for a bridged container, as podman does for loopback resolvers.

    A resolver on the host's loopback (systemd-resolved's 127.0.0.53, dnsmasq) is unreachable from
    the container's namespace: with systemd-resolved the real upstream list is used
    (/run/systemd/resolve/resolv.conf); loopback entries are dropped; if none is left, public
    resolvers are used, said in a comment.
    """
    text = _read(host_file)
    if _nameservers(text) and all(_loopback(ns) for ns in _nameservers(text)):
        upstream = _read(_SYSTEMD_RESOLVED)
        if upstream and not all(_loopback(ns) for ns in _nameservers(upstream)):
            text = upstream
    lines = [
        line
        for line in text.splitlines()
        if not (
            line.split()[:1] == ["nameserver"] and _loopback(line.split()[1] if len(line.split()) > 1 else "")
        )
    ]
    if not any(line.split()[:1] == ["nameserver"] for line in lines):
        lines.append("# trust: the host has no resolver a container can reach; public ones are used")
        lines.extend(f"nameserver {server}" for server in _FALLBACK_RESOLVERS)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DnsSettings:
    """`--dns`, `--dns-search`, `--dns-option`: each given list replaces that part of resolv.conf."""

    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.servers or self.search or self.options)

    @classmethod
    def parse(cls, servers: Iterable[str], search: Iterable[str], options: Iterable[str]) -> DnsSettings:
        """Checked before admission: resolv.conf is a line format, so nothing may carry a newline."""
        for server in servers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise UsageError(f"invalid --dns {server!r}: not an IP address") from None
        for domain in search:
            if not _DNS_NAME.fullmatch(domain):
                raise UsageError(f"invalid --dns-search {domain!r}: not a domain name")
        for option in options:
            if not _DNS_OPTION.fullmatch(option):
                raise UsageError(f"invalid --dns-option {option!r}: use an option like ndots:2 or edns0")
        return cls(tuple(servers), tuple(search), tuple(options))

    def apply(self, resolv: str) -> str:
        """`resolv` with the given parts replaced (docker: `--dns-search .` means no search list)."""
        kept = [
            line
            for line in resolv.splitlines()
            if not (self.servers and line.split()[:1] == ["nameserver"])
            and not (self.search and line.split()[:1] in (["search"], ["domain"]))
            and not (self.options and line.split()[:1] == ["options"])
        ]
        if self.search and self.search != (".",):
            kept.append("search " + " ".join(d for d in self.search if d != "."))
        if self.options:
            kept.append("options " + " ".join(self.options))
        kept.extend(f"nameserver {server}" for server in self.servers)
        return "\n".join(kept) + "\n"


_DNS_NAME = re.compile(r"\.|(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_DNS_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?::[0-9]{1,4})?")
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
HOST_GATEWAY = "host-gateway"
"""docker's `--add-host NAME:host-gateway`: the bridge's address on the host."""


def parse_add_host(text: str) -> tuple[str, str]:
    """`--add-host NAME:IP` (or `NAME=IP`, docker 25's spelling; `[v6]` brackets allowed)."""
    name, sep, address = text.partition("=")
    if not sep:
        name, sep, address = text.partition(":")
    address = address.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not sep or not _HOST_NAME.fullmatch(name):
        raise UsageError(f"invalid --add-host {text!r}: use NAME:IP")
    if address != HOST_GATEWAY:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise UsageError(f"invalid --add-host {text!r}: {address!r} is not an IP address") from None
    return name, address


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _nameservers(text: str) -> list[str]:
    return [
        line.split()[1]
        for line in text.splitlines()
        if line.split()[:1] == ["nameserver"] and len(line.split()) > 1
    ]


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
