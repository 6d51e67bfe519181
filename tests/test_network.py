"""Bridge networking end to end: real CNI plugins, real iptables, real runc, through the CLI in-process.

A busybox image with `httpd` and `wget` is pushed once per module under a repository the policy
accepts. Each test checks what it asks for (a page fetched from the host, from another container…)
and then that the container left nothing behind: no iptables rule naming it or its address, no veth,
no address lease, no mounted namespace. Those checks name the container (its id, address and veth),
so containers of other tests running at the same time do not disturb them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.images import BUSYBOX_APPLETS, Layer, build_image, busybox_layer, push_image
from support.registry import Registry

from run.network import STATE_DIR, resolv_conf
from trust.cli.app import main

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="networking needs root")

PAGE = b"hello from a verified web server\n"
APPLETS = (*BUSYBOX_APPLETS, "httpd", "wget", "ip", "grep", "head")


@dataclass(frozen=True)
class Setup:
    store: Path
    image: str
    """Pinned; `ExposedPorts` 80/tcp and 8125/udp."""

    def trust(self, *args: str) -> int:
        return main([args[0], "--store", str(self.store), *args[1:]])


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("network")
    image = build_image(
        [busybox_layer(applets=APPLETS), Layer.from_files({"www/index.html": PAGE})],
        cmd=["httpd", "-f", "-p", "80", "-h", "/www"],
        exposed_ports=["80/tcp", "8125/udp"],
    )
    pushed = push_image(registry, "t/network-httpd", image)
    (folder / "store").mkdir()
    (folder / "store" / "policy.yaml").write_text(
        f"version: 1\nrules:\n  - scope: {registry.host}/t/network-httpd\n"
        "    insecure-accept-anything: true\ndefault:\n  reject: true\n"
    )
    return Setup(folder / "store", pushed.by_digest)


@pytest.fixture
def net(setup: Setup) -> Iterator[Setup]:
    containers = setup.store / "meta" / "containers"
    before = set(containers.iterdir()) if containers.exists() else set()
    yield setup
    if containers.exists():
        for leftover in set(containers.iterdir()) - before:
            if not leftover.name.startswith("."):
                assert setup.trust("rm", "--force", leftover.name) == 0


def out_of(capfd: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capfd.readouterr()
    assert code == 0, err
    return out


def inspect(setup: Setup, capfd: pytest.CaptureFixture[str], ref: str) -> dict[str, object]:
    doc = json.loads(out_of(capfd, setup.trust("inspect", ref)))
    assert isinstance(doc, dict)
    return doc


@dataclass(frozen=True)
class Held:
    """What one container got from the network, to check later that it was all given back."""

    container_id: str
    address: str
    veth: str
    netns: Path


def held(setup: Setup, capfd: pytest.CaptureFixture[str], ref: str) -> Held:
    doc = inspect(setup, capfd, ref)
    directory = Path(str(doc["paths"]["bundle"]))  # type: ignore[index]
    attachment = json.loads((directory / "network.json").read_text())
    (veth,) = [i["name"] for i in attachment["result"]["interfaces"] if i["name"].startswith("veth")]
    return Held(str(doc["id"]), attachment["address"], veth, directory / "netns")


def leftovers(h: Held) -> list[str]:
    """Whatever of `h` is still on the host (empty: all released)."""
    found = []
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    for line in rules.splitlines():
        if h.container_id in line or f"{h.address}/32" in line or f"{h.address}:" in line:
            found.append(f"rule: {line}")
    if subprocess.run(["ip", "link", "show", "dev", h.veth], capture_output=True).returncode == 0:
        found.append(f"veth {h.veth}")
    leases = STATE_DIR / "trust"
    for lease in leases.iterdir() if leases.is_dir() else ():
        try:
            holder = lease.read_text(errors="replace")
        except FileNotFoundError:
            continue  # released between the listing and the read (another test's container)
        if lease.name == h.address or h.container_id in holder:
            found.append(f"lease {lease}")
    with open("/proc/self/mountinfo") as mountinfo:
        found += [f"mount {line.split()[4]}" for line in mountinfo if str(h.netns) == line.split()[4]]
    return found


def fetch(url: str, timeout: float = 10.0) -> bytes:
    """GET `url`, retrying while the server is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def published_port(
    setup: Setup, capfd: pytest.CaptureFixture[str], ref: str, private: str
) -> tuple[str, int]:
    line = out_of(capfd, setup.trust("port", ref, private)).strip()
    # "80/tcp -> 127.0.0.1:40123"
    host, _, port = line.split(" -> ")[1].rpartition(":")
    return host, int(port)


# -- reachable ------------------------------------------------------------------------------------


def test_a_published_port_is_reachable_from_the_host_and_a_second_container_by_address(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert net.trust("run", "-d", "--name", "web", "-p", "127.0.0.1:0:80", net.image) == 0
    capfd.readouterr()
    host, port = published_port(net, capfd, "web", "80")
    assert host == "127.0.0.1" and port > 0
    assert fetch(f"http://127.0.0.1:{port}/") == PAGE
    web = held(net, capfd, "web")
    assert web.address.startswith("10.89.")

    code = net.trust("run", "--rm", net.image, "wget", "-q", "-O", "-", f"http://{web.address}/")
    assert out_of(capfd, code).encode() == PAGE

    assert net.trust("rm", "-f", "web") == 0
    assert leftovers(web) == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # nothing listens and no rule forwards any more


def test_a_bridged_container_has_an_address_a_default_route_and_resolvers(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    script = "ip -4 -o addr show eth0; ip route; cat /etc/resolv.conf; grep $(hostname) /etc/hosts"
    out = out_of(capfd, net.trust("run", "--rm", net.image, "sh", "-c", script))
    assert " inet 10.89." in out
    assert "default via 10.89.0.1 dev eth0" in out
    assert [line for line in out.splitlines() if line.startswith("nameserver")] == [
        line for line in resolv_conf().splitlines() if line.startswith("nameserver")
    ]
    assert "nameserver 127." not in out
    address = out.split(" inet ")[1].split("/")[0]
    assert f"{address}\t" in out  # /etc/hosts maps the hostname to the container's address


def test_dns_flags_and_add_host_write_the_containers_etc_files(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    flags = ("--dns", "192.0.2.53", "--dns", "2001:db8::53", "--dns-search", "corp.example")
    flags += ("--dns-option", "ndots:2", "--add-host", "db:192.0.2.7", "--add-host", "gw:host-gateway")
    out = out_of(capfd, net.trust("run", "--rm", *flags, net.image, "cat", "/etc/resolv.conf", "/etc/hosts"))
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("nameserver")] == [
        "nameserver 192.0.2.53",
        "nameserver 2001:db8::53",
    ]  # the host's resolvers are replaced, not added to
    assert "search corp.example" in lines and "options ndots:2" in lines
    assert "192.0.2.7\tdb" in lines and "10.89.0.1\tgw" in lines  # host-gateway: the bridge

    out = out_of(
        capfd,
        net.trust(
            "run", "--rm", "--network", "none", "--dns", "192.0.2.1", net.image, "cat", "/etc/resolv.conf"
        ),
    )
    assert out == "nameserver 192.0.2.1\n"


def test_a_published_port_range_maps_one_to_one(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    from run.network import parse_publish

    assert [(m.host_port, m.container_port) for m in parse_publish("127.0.0.1:8000-8002:80-82/udp")] == [
        (8000, 80),
        (8001, 81),
        (8002, 82),
    ]
    assert [m.host_port for m in parse_publish("80-81")] == [0, 0]
    for _ in range(5):  # three free ports in a row: another process may take one meanwhile
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        mapping = f"127.0.0.1:{base}-{base + 2}:79-81"
        code = net.trust("run", "-d", "--name", "ranged", "-p", mapping, net.image)
        if code != 2 or "in use" not in capfd.readouterr().err:
            break
    assert code == 0
    capfd.readouterr()
    ports = sorted(out_of(capfd, net.trust("port", "ranged")).splitlines())
    assert ports == [f"{p}/tcp -> 127.0.0.1:{base + p - 79}" for p in (79, 80, 81)]
    assert fetch(f"http://127.0.0.1:{base + 1}/") == PAGE  # 80 is the middle one


def test_loopback_resolvers_are_replaced_as_podman_does(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0\nsearch example.org\n")
    text = resolv_conf(host)
    assert "127.0.0.53" not in text
    assert "search example.org" in text and "options edns0" in text
    assert "nameserver 8.8.8.8" in text
    host.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.53\n")
    assert [line for line in resolv_conf(host).splitlines() if line.startswith("nameserver")] == [
        "nameserver 192.0.2.53"
    ]


def test_publish_all_and_a_container_port_alone_take_free_host_ports(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert net.trust("run", "-d", "--name", "all", "-P", net.image) == 0
    capfd.readouterr()
    lines = sorted(out_of(capfd, net.trust("port", "all")).splitlines())
    assert [line.split(" -> ")[0] for line in lines] == ["80/tcp", "8125/udp"]
    port = int(lines[0].rpartition(":")[2])
    assert fetch(f"http://127.0.0.1:{port}/") == PAGE  # 0.0.0.0 includes loopback

    assert net.trust("run", "-d", "--name", "one", "-p", "80", net.image) == 0
    capfd.readouterr()
    _, other = published_port(net, capfd, "one", "80/tcp")
    assert other not in (0, port)
    assert fetch(f"http://127.0.0.1:{other}/") == PAGE
    assert net.trust("port", "one", "81") == 2


def test_network_container_shares_the_other_containers_namespace(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert net.trust("run", "-d", "--name", "server", net.image) == 0
    capfd.readouterr()
    server = held(net, capfd, "server")
    code = net.trust(
        "run",
        "--rm",
        "--network",
        "container:server",
        net.image,
        "sh",
        "-c",
        "ip -4 -o addr show eth0; wget -q -O - http://127.0.0.1/",
    )
    out = out_of(capfd, code)
    assert f"inet {server.address}/" in out and out.endswith(PAGE.decode())
    assert net.trust("stop", "--time", "0", "server") == 0
    assert leftovers(server) == []  # stop releases, rm is not needed
    assert net.trust("run", "--rm", "--network", "container:server", net.image, "true") == 2


def test_stopping_a_container_whose_namespace_another_holds_still_deletes_its_veth(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    """`release` unmounts the namespace and lets the kernel delete the veth with it; a container that
    joined the namespace keeps it alive, so the veth is deleted by trust (as `bridge` DEL would)."""
    assert net.trust("run", "-d", "--name", "owner", net.image) == 0
    capfd.readouterr()
    owner = held(net, capfd, "owner")
    assert (
        net.trust("run", "-d", "--name", "joiner", "--network", "container:owner", net.image, "sleep", "60")
        == 0
    )
    capfd.readouterr()
    assert net.trust("stop", "--time", "0", "owner") == 0
    capfd.readouterr()
    assert leftovers(owner) == []
    out = out_of(capfd, net.trust("exec", "joiner", "ip", "-o", "link"))
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    assert net.trust("rm", "-f", "joiner", "owner") == 0


def test_none_and_host_stay(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    out = out_of(capfd, net.trust("run", "--rm", "--network", "none", net.image, "ip", "-o", "link"))
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    route = subprocess.run(
        ["ip", "-o", "route", "show", "default"], capture_output=True, text=True, check=True
    )
    host_device = route.stdout.split(" dev ")[1].split()[0]  # other tests' veths come and go: not a count
    out = out_of(capfd, net.trust("run", "--rm", "--network", "host", net.image, "ip", "-o", "link"))
    assert f": {host_device}:" in out or f": {host_device}@" in out


# -- refused --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("-p", "80:abc"),
        ("-p", "70000:80"),
        ("-p", "::1:8080:80"),
        ("-p", "80/sctp"),
        ("-p", "8000-8002:80-81"),
        ("-p", "90-80"),
        ("-p", "1-2000"),
        ("--dns", "not-an-ip"),
        ("--dns-search", "bad domain"),
        ("--dns-option", "ndots:2\nnameserver 1.1.1.1"),
        ("--add-host", "db"),
        ("--add-host", "db:not-an-ip"),
        ("--add-host", "bad name:192.0.2.1"),
        ("--network", "none", "--add-host", "gw:host-gateway"),
        ("--network", "none", "-p", "80"),
        ("--network", "host", "-P"),
        ("--network", "bogus"),
        ("--network", "container:"),
        ("--network", "container:no-such-container"),
    ],
)
def test_bad_network_flags_are_usage_errors(
    net: Setup, capfd: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    capfd.readouterr()
    assert net.trust("run", "--rm", *args, net.image, "true") == 2
    err = capfd.readouterr().err
    assert err.startswith("trust: error:") and len(err.strip().splitlines()) == 1


def test_a_host_port_in_use_is_refused_and_nothing_is_left(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert net.trust("run", "-d", "-p", f"127.0.0.1:{taken}:80", net.image) == 2
        assert "in use by a process on the host" in capfd.readouterr().err
    assert net.trust("run", "-d", "--name", "first", "-p", f"127.0.0.1:{taken}:80", net.image) == 0
    capfd.readouterr()
    assert net.trust("run", "-d", "--name", "second", "-p", f"{taken}:80", net.image) == 2
    assert "already published by another container" in capfd.readouterr().err
    assert net.trust("ps", "-a", "-o", "json") == 0
    names = [c["name"] for c in json.loads(capfd.readouterr().out)]
    assert "second" not in names


# -- released -------------------------------------------------------------------------------------


def test_foreground_rm_and_exit_release_everything(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert net.trust("run", "-d", "--name", "short", "-p", "80", net.image, "sleep", "30") == 0
    capfd.readouterr()
    short = held(net, capfd, "short")
    assert net.trust("kill", "short") == 0
    capfd.readouterr()
    deadline = time.monotonic() + 10
    while leftovers(short) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(short) == []  # the monitor released it when the container exited
    assert inspect(net, capfd, "short")["networkSettings"] is None


def test_a_killed_monitor_leaves_nothing_once_gc_runs(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert net.trust("run", "-d", "--name", "orphan", "-p", "80", net.image, "sleep", "60") == 0
    capfd.readouterr()
    doc = inspect(net, capfd, "orphan")
    orphan = held(net, capfd, "orphan")
    os.kill(int(str(doc["monitorPid"])), signal.SIGKILL)
    os.kill(int(str(doc["pid"])), signal.SIGKILL)  # the container dies with nobody to clean up
    deadline = time.monotonic() + 10
    while Path(f"/proc/{doc['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(orphan) != []
    assert net.trust("gc") == 0
    assert leftovers(orphan) == []
    assert net.trust("rm", "orphan") == 0
    with open("/proc/self/mountinfo") as mountinfo:
        assert orphan.container_id not in mountinfo.read()


def test_rm_releases_everything_when_the_namespace_mount_is_gone(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    """CI saw a container's netns bind mount vanish (a plain file left): the plugins' DEL then failed
    with "unknown FS magic" and rm exited 1. DEL without a namespace frees the lease and rules."""
    assert net.trust("create", "-p", "127.0.0.1:0:80", net.image) == 0
    container_id = capfd.readouterr().out.strip()
    h = held(net, capfd, container_id)
    subprocess.run(["umount", "-l", str(h.netns)], check=True)
    assert net.trust("rm", container_id) == 0, capfd.readouterr().err
    for _ in range(50):  # the veth goes with the namespace, once its last process has
        if not leftovers(h):
            break
        time.sleep(0.1)
    assert leftovers(h) == []


def test_create_and_remove_cycles_leak_nothing(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    cycles = 100
    seen = []
    for n in range(cycles):
        assert net.trust("create", "-p", "127.0.0.1:0:80", net.image) == 0
        container_id = capfd.readouterr().out.strip()
        if n % 10 == 0:
            seen.append(held(net, capfd, container_id))
        assert net.trust("rm", container_id) == 0
        capfd.readouterr()
    for h in seen:
        assert leftovers(h) == []
    leases = STATE_DIR / "trust"
    mine = {h.container_id for h in seen}
    assert not [p for p in leases.iterdir() if p.read_text(errors="replace").strip() in mine]


def test_stats_and_top_read_the_cgroup_and_the_veth(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert net.trust("run", "-d", "--name", "busy", "-m", "32m", "-p", "127.0.0.1:0:80", net.image) == 0
    capfd.readouterr()
    _, port = published_port(net, capfd, "busy", "80")
    assert fetch(f"http://127.0.0.1:{port}/") == PAGE
    (usage,) = json.loads(out_of(capfd, net.trust("stats", "--no-stream", "-o", "json", "busy")))
    assert usage["name"] == "busy"
    assert 0 < usage["memory"] <= usage["memoryLimit"] == 32 << 20
    assert usage["pids"] == 1
    assert usage["rxBytes"] > 0 and usage["txBytes"] >= len(PAGE)  # the request in, the page out
    assert usage["cpuPercent"] >= 0
    table = out_of(capfd, net.trust("stats", "--no-stream", "busy"))
    assert table.splitlines()[0].split()[:3] == ["CONTAINER", "ID", "NAME"] and "busy" in table
    top = out_of(capfd, net.trust("top", "busy")).splitlines()
    assert top[0].split() == ["PID", "PPID", "UID", "COMMAND"]
    assert [line.split(None, 3)[3] for line in top[1:]] == ["httpd -f -p 80 -h /www"]
    assert net.trust("stop", "-t", "0", "busy") == 0
    capfd.readouterr()
    assert net.trust("top", "busy") == 2


def test_bridge_and_published_ports_with_crun(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert (
        net.trust("run", "-d", "--runtime", "crun", "--name", "cweb", "-p", "127.0.0.1:0:80", net.image) == 0
    )
    capfd.readouterr()
    _, port = published_port(net, capfd, "cweb", "80")
    assert fetch(f"http://127.0.0.1:{port}/") == PAGE
    web = held(net, capfd, "cweb")
    assert net.trust("rm", "-f", "cweb") == 0
    assert leftovers(web) == []


def test_run_rm_releases_everything_before_it_returns(net: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    script = "hostname; ip -4 -o addr show eth0"
    out = out_of(capfd, net.trust("run", "--rm", "-p", "127.0.0.1:0:80", net.image, "sh", "-c", script))
    short_id, line = out.splitlines()
    address = line.split(" inet ")[1].split("/")[0]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert short_id not in rules and f"{address}/32" not in rules and f"{address}:" not in rules
    leases = STATE_DIR / "trust"
    assert not (leases / address).exists()
    assert not [p for p in leases.iterdir() if p.read_text(errors="replace").startswith(short_id)]
    with open("/proc/self/mountinfo") as mountinfo:
        assert short_id not in mountinfo.read()


# -- the host's rules (run/hostrules.py) ------------------------------------------------------------


def _rules() -> list[str]:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout.splitlines()


def test_published_ports_are_one_chain_and_a_container_without_ports_adds_no_rule(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    from run.hostrules import container_chain

    assert net.trust("create", "--name", "portless", net.image) == 0
    capfd.readouterr()
    portless = held(net, capfd, "portless")
    assert not [line for line in _rules() if portless.container_id in line or portless.address in line]

    assert net.trust("create", "--name", "ported", "-p", "127.0.0.1:0:80", "-p", "0:8125/udp", net.image) == 0
    capfd.readouterr()
    ported = held(net, capfd, "ported")
    chain = container_chain(ported.container_id)
    mine = [line for line in _rules() if chain in line]
    dnat = [line for line in mine if line.startswith(f"-A {chain} ")]
    assert len(dnat) == 2 and all(f"-j DNAT --to-destination {ported.address}:" in line for line in dnat)
    assert [line for line in mine if line.startswith("-A TRUST-HOSTPORTS")] == [
        f'-A TRUST-HOSTPORTS -m comment --comment "trust:{ported.container_id}" -j {chain}'
    ]
    assert net.trust("rm", "portless") == 0
    assert net.trust("rm", "ported") == 0
    assert leftovers(ported) == [] and leftovers(portless) == []
    assert not [line for line in _rules() if chain in line]


def test_ports_are_taken_back_when_their_jump_was_removed_by_someone_else(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    from run.hostrules import HOSTPORTS, container_chain

    assert net.trust("create", "--name", "halfway", "-p", "127.0.0.1:0:80", net.image) == 0
    capfd.readouterr()
    halfway = held(net, capfd, "halfway")
    chain = container_chain(halfway.container_id)
    comment = f"trust:{halfway.container_id}"
    subprocess.run(
        ["iptables", "-w", "-t", "nat", "-D", HOSTPORTS, "-m", "comment", "--comment", comment, "-j", chain],
        check=True,
    )
    assert net.trust("rm", "halfway") == 0  # one restore fails, the one-by-one removal does the rest
    assert leftovers(halfway) == [] and not [line for line in _rules() if chain in line]


def test_the_host_rules_come_back_after_a_firewall_reload_and_are_never_doubled(
    net: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    from run.hostrules import POSTROUTING, install_bridge_rules
    from run.network import BRIDGE, subnet

    install_bridge_rules(BRIDGE, subnet(), STATE_DIR)
    assert net.trust("create", net.image) == 0  # the bridge exists
    first = capfd.readouterr().out.strip()
    # what a firewall reload does to our chain: its rules are gone
    subprocess.run(["iptables", "-w", "-t", "nat", "-F", POSTROUTING], check=True)
    assert net.trust("run", "-d", "--name", "after-reload", "-p", "127.0.0.1:0:80", net.image) == 0
    capfd.readouterr()
    _, port = published_port(net, capfd, "after-reload", "80")
    assert fetch(f"http://127.0.0.1:{port}/") == PAGE  # masquerading from loopback is back
    install_bridge_rules(BRIDGE, subnet(), STATE_DIR)
    rules = [line for line in _rules() if line.startswith("-A")]
    assert len(rules) == len(set(rules))  # nothing installed twice
    assert net.trust("rm", "-f", "after-reload") == 0
    assert net.trust("rm", first) == 0
