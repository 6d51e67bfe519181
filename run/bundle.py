"""The OCI runtime bundle: `config.json` from the image config, the user's options and safe defaults.

    options = RunOptions(command=("sh", "-c", "echo hi"), limits=Limits(memory=parse_memory("64m")))
    process = resolve_process(image.config.raw, options, rootfs=…/rootfs, hostname="3f2a9c1d0b7e")
    spec = build_spec(process, rootfs=…, hostname=…, network=options.network, limits=options.limits,
                      cgroups_path="/trust/<id>", etc_files=write_etc_files(container_dir, …))
    write_bundle(container_dir, spec)

What the spec holds (runc 1.1 reads it as spec 1.0.2), and why:

- namespaces pid, mount, uts, ipc and network (a fresh one has only loopback; `--network host`
  leaves it out); a cgroup namespace only on a cgroup v2 host, as Docker and Podman do (on v1 the
  runtime bind-mounts the container's own cgroup directories instead);
- Podman's default capabilities in the bounding set; in effective/permitted only for uid 0 (a
  non-root process gets none, as with Podman); never inheritable or ambient; `noNewPrivileges`;
- the masked and read-only /proc and /sys paths of runc's and Podman's defaults;
- RLIMIT_NOFILE 1024/1024: the runtime cannot raise a hard limit above its own (20000 here);
- cgroup limits only when asked (`--memory`, `--pids-limit`, `--cpus`) and a device deny-all rule
  (the runtimes add their default devices: null, zero, full, random, urandom, tty, ptmx);
- /etc/hostname, /etc/hosts and /etc/resolv.conf bind-mounted from files in the container directory:
  the runtime resolves mount targets inside the rootfs safely, whereas writing into the rootfs from
  the host would follow an image's symlinks (`/etc/hosts -> /host/path`).

User names (`--user app`) are looked up in the image's /etc/passwd and /etc/group, read without
following any symlink (`rootfs.read_image_file`); an image whose /etc/passwd is a symlink must be run
with a numeric `uid[:gid]`.
"""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pull.durable import replace_json
from pull.errors import InvalidManifest, UsageError
from pull.records import dataclass, field
from run.capabilities import ALL_CAPABILITIES, capability_set
from run.mounts import Mount, sorted_for_mounting
from run.network import DnsSettings, PortMapping
from run.rootfs import read_image_file
from run.runtime import DEFAULT_RUNTIME, SUPPORTED_RUNTIMES
from run.seccomp import default_profile
from run.userns import UsernsRequest

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CGROUP_PARENT = "/trust"
CPU_PERIOD_US = 100_000
MIN_MEMORY = 6 * 1024 * 1024
"""Below this the runtime's own setup inside the cgroup is OOM-killed (Docker's minimum too)."""
NOFILE = 1024
HOST_NOFILE_CEILING = 20_000
"""The hard RLIMIT_NOFILE the runtime itself runs with here: a spec may not ask for more."""
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel

CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)
"""Podman's default set (containers.conf `default_capabilities`)."""

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
)
READONLY_PATHS = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    # On a cgroup v1 host the runtime puts a tmpfs at /sys/fs/cgroup (for the per-controller
    # mounts), and neither runc nor crun makes that tmpfs read-only: a container could create
    # files and folders there. Listed here, it is remounted read-only after every mount, as
    # Docker's is; on cgroup v2 the mount is read-only already.
    "/sys/fs/cgroup",
)
_FORBIDDEN_WORKDIRS = ("/proc", "/sys")
INIT_PATH = "/dev/init"
"""Where `--init` puts tini: /dev is the runtime's tmpfs, so nothing is written into the image."""
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/podman/catatonit")
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_HOSTNAME = re.compile(
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)
_ENV_KEY = re.compile(r"[^=\0]+")
_MEMORY = re.compile(r"(\d+)([bkmg]?)b?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class Network(StrEnum):
    NONE = "none"
    """A fresh network namespace: loopback only."""
    HOST = "host"
    """The host's network namespace (opt-in)."""
    BRIDGE = "bridge"
    """A namespace of its own on the host bridge `trust0` (run/network.py); the CLI's default."""
    CONTAINER = "container"
    """Another container's namespace (`--network container:ID`, `RunOptions.network_container`)."""


@dataclass(frozen=True)
class Limits:
    """cgroup limits; None means unlimited."""

    memory: int | None = None
    """Bytes (no swap on top of it)."""
    pids: int | None = None
    cpus: float | None = None
    """CPUs' worth of time per period, e.g. 0.5."""

    def __post_init__(self) -> None:
        if self.memory is not None and self.memory < MIN_MEMORY:
            raise UsageError(f"--memory must be at least {MIN_MEMORY // (1 << 20)}m")
        if self.pids is not None and self.pids < 1:
            raise UsageError("--pids-limit must be a positive number of processes")
        if self.cpus is not None:
            available = os.cpu_count() or 1
            if not (math.isfinite(self.cpus) and 0.01 <= self.cpus <= available):
                raise UsageError(f"--cpus must be between 0.01 and {available} (the CPUs of this host)")

    @property
    def any(self) -> bool:
        return (self.memory, self.pids, self.cpus) != (None, None, None)

    def to_json(self) -> dict[str, Any]:
        return {"memory": self.memory, "pidsLimit": self.pids, "cpus": self.cpus}


def parse_memory(text: str) -> int:
    """`--memory`: bytes, or a number with a b, k, m or g suffix (binary units): "64m" → 67108864."""
    match = _MEMORY.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"invalid --memory {text!r}: use a number with an optional k, m or g suffix")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"invalid --cpus {text!r}: use a number such as 0.5 or 2") from None
    return value


@dataclass(frozen=True)
class RunOptions:
    """Everything `trust create` / `trust run` lets a user choose about a container."""

    command: tuple[str, ...] = ()
    """Replaces the image's Cmd (the Entrypoint stays), as with `docker run IMAGE COMMAND…`."""
    env: tuple[str, ...] = ()
    """`KEY=VALUE` entries overriding the image's Env (a bare `KEY` takes the caller's value)."""
    workdir: str | None = None
    user: str | None = None
    """`uid[:gid]` or `name[:group]` (names looked up in the image)."""
    hostname: str | None = None
    """Defaults to the short container id."""
    network: Network = Network.NONE
    limits: Limits = field(default_factory=Limits)
    runtime: str = DEFAULT_RUNTIME
    name: str | None = None
    auto_remove: bool = False
    cgroup_parent: str = DEFAULT_CGROUP_PARENT
    seccomp: Mapping[str, Any] | None = field(default_factory=default_profile)
    """The `linux.seccomp` filter (`run.seccomp`); None runs unconfined."""
    publish: tuple[PortMapping, ...] = ()
    """`-p`: host ports forwarded to the container (bridge network only)."""
    publish_all: bool = False
    """`-P`: every port the image exposes, each on a free host port."""
    dns: DnsSettings = field(default_factory=DnsSettings)
    """`--dns`, `--dns-search`, `--dns-option`: replace those parts of the container's resolv.conf."""
    extra_hosts: tuple[tuple[str, str], ...] = ()
    """`--add-host NAME:IP`: lines added to /etc/hosts (IP `host-gateway`: the bridge's address)."""
    network_container: str | None = None
    """With Network.CONTAINER: the container (id, prefix or name) whose network namespace is joined."""
    mounts: tuple[Mount, ...] = ()
    """`-v`, `--tmpfs`, `--mount` (run/mounts.py)."""
    read_only: bool = False
    """`--read-only`: the root filesystem is mounted read-only (mounts and /dev stay writable)."""
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    """`--entrypoint`: replaces the image's Entrypoint, and drops its Cmd (as docker); () clears it."""
    labels: tuple[tuple[str, str], ...] = ()
    """`--label KEY=VALUE`: kept in the record and the bundle's annotations."""
    tty: bool = False
    """`-t`: the process gets a pseudo-terminal (run/terminal.py)."""
    open_stdin: bool = False
    """`-i` on a detached container without `-t`: its stdin is a FIFO its monitor holds open, which
    `trust attach` writes to (run/attach.py); otherwise a detached container's stdin is /dev/null."""
    userns: UsernsRequest | None = None
    """`--uidmap`/`--gidmap`/`--userns=auto`: a user namespace (run/userns.py); None: the host's."""
    stop_signal: int | None = None
    """What `stop` sends first; None: the image's StopSignal, else SIGTERM."""
    init: bool = False
    """`--init`: tini as PID 1 (`INIT_PATH`), reaping zombies and passing signals on."""
    restart: str = "no"
    """`--restart no|always|on-failure[:N]`: the monitor starts it again (run/monitor.py)."""
    privileged: bool = False
    """`--privileged` (only if the admitting policy rule allows it): every capability, no seccomp
    filter, no masked or read-only /proc paths, /sys and the cgroup tree writable."""

    @property
    def capabilities(self) -> tuple[str, ...]:
        # Privileged starts from every capability; an explicit --cap-drop still applies (as docker).
        default = _host_capabilities() if self.privileged else CAPABILITIES
        return capability_set(default, add=self.cap_add, drop=self.cap_drop)

    def __post_init__(self) -> None:
        policy, sep, limit = self.restart.partition(":")
        if policy not in ("no", "always", "on-failure") or (
            sep and (policy != "on-failure" or not limit.isdigit() or int(limit) < 1)
        ):
            raise UsageError(f"invalid --restart {self.restart!r}: use no, always or on-failure[:N]")
        if policy != "no" and self.auto_remove:
            raise UsageError("--restart and --rm conflict: a restarted container is not removed")
        _ = self.capabilities  # an unknown name fails here, before anything is made
        sorted_for_mounting(self.mounts)  # and two mounts on one destination
        for key, _value in self.labels:
            if not key or "\0" in key:
                raise UsageError(f"invalid --label {key!r}: expected KEY=VALUE")
        if (self.publish or self.publish_all) and self.network is not Network.BRIDGE:
            raise UsageError(f"publishing ports needs --network bridge, not {self.network}")
        if (self.network is Network.CONTAINER) != (self.network_container is not None):
            raise UsageError("--network container:ID needs the container's id or name")
        if self.runtime not in SUPPORTED_RUNTIMES:
            raise UsageError(
                f"unknown --runtime {self.runtime!r}: use one of {', '.join(SUPPORTED_RUNTIMES)}"
            )
        if self.name is not None and (not _NAME.fullmatch(self.name) or _looks_like_id(self.name)):
            raise UsageError(
                f"invalid container name {self.name!r}: "
                "letters, digits, '_', '.', '-', and not 64 hex characters"
            )
        if self.hostname is not None and (len(self.hostname) > 253 or not _HOSTNAME.fullmatch(self.hostname)):
            raise UsageError(f"invalid --hostname {self.hostname!r}")
        for entry in self.env:
            if not _ENV_KEY.fullmatch(entry.partition("=")[0]) or "\0" in entry:
                raise UsageError(f"invalid --env {entry!r}: expected KEY=VALUE")
        if any("\0" in arg for arg in self.command):
            raise UsageError("the command may not contain NUL characters")
        parts = self.cgroup_parent.split("/")
        if (
            not self.cgroup_parent.startswith("/")
            or ".." in parts
            or any(not _NAME.fullmatch(p) for p in parts[1:])
        ):
            raise UsageError(f"invalid cgroup parent {self.cgroup_parent!r}: an absolute path like /trust")


def _looks_like_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


# -- the process ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSpec:
    """The container's first process, resolved against the image."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


def resolve_process(
    image_config: Mapping[str, Any], options: RunOptions, *, rootfs: Path, hostname: str
) -> ProcessSpec:
    """Combine the image config's `config` section with the user's options.

    `rootfs` is the mounted root filesystem, read only to resolve user and group names.

    Raises:
        UsageError: no command, a relative or /proc working directory, an unknown or invalid user.
        InvalidManifest: the image config's fields have the wrong types (exit 4).
    """
    section = image_config.get("config") or {}
    if not isinstance(section, Mapping):
        raise InvalidManifest("image config: 'config' must be an object")
    if options.entrypoint is not None:  # docker: a new Entrypoint does not take the image's Cmd
        entrypoint, cmd = list(options.entrypoint), list(options.command)
    else:
        entrypoint = _strings(section, "Entrypoint")
        cmd = list(options.command) if options.command else _strings(section, "Cmd")
    args = tuple(entrypoint + cmd)
    if not args:
        raise UsageError("the image has no Entrypoint or Cmd: give a command after the image")

    workdir = options.workdir if options.workdir is not None else _string(section, "WorkingDir") or "/"
    cwd = check_workdir(workdir)

    user_text = options.user if options.user is not None else _string(section, "User") or ""
    user = resolve_user(user_text, rootfs)

    env = merge_env(
        [("PATH", DEFAULT_PATH), ("HOSTNAME", hostname)],
        _strings(section, "Env"),
        options.env,
    )
    if "HOME" not in env:
        env["HOME"] = user.home or "/"
    return ProcessSpec(
        args=args,
        env=tuple(f"{key}={value}" for key, value in env.items()),
        cwd=cwd,
        uid=user.uid,
        gid=user.gid,
        additional_gids=user.additional_gids,
    )


def check_workdir(workdir: str) -> str:
    """An absolute, normalised working directory that is not under /proc or /sys."""
    if not workdir.startswith("/") or "\0" in workdir:
        raise UsageError(f"working directory {workdir!r} must be an absolute path")
    normal = posixpath.normpath(workdir)
    normal = "/" + normal.lstrip("/")  # normpath keeps a leading "//"
    for forbidden in _FORBIDDEN_WORKDIRS:
        if normal == forbidden or normal.startswith(forbidden + "/"):
            raise UsageError(f"working directory {workdir!r} is refused: it is under {forbidden}")
    return normal


def merge_env(
    defaults: Sequence[tuple[str, str]], image: Sequence[str], overrides: Sequence[str]
) -> dict[str, str]:
    env = dict(defaults)
    for entry in image:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise InvalidManifest(f"image config: Env entry {entry[:80]!r} is not KEY=VALUE")
        env[key] = value
    for entry in overrides:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
        elif key in os.environ:  # `-e KEY`: pass the caller's value through, as docker does
            env[key] = os.environ[key]
        else:
            env.pop(key, None)
    return env


def _strings(section: Mapping[str, Any], key: str) -> list[str]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidManifest(f"image config: {key} must be a list of strings")
    return list(value)


def _string(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidManifest(f"image config: {key} must be a string")
    return value


# -- users ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str | None = None


def resolve_user(text: str, rootfs: Path) -> User:
    """`""` (root), `uid`, `uid:gid`, `name`, `name:group`, `uid:group`… → numeric ids.

    A numeric uid needs no /etc/passwd (its gid is then the passwd entry's, or 0). Names must exist
    in the image's /etc/passwd or /etc/group. Supplementary groups come from /etc/group membership.
    """
    user_part, sep, group_part = text.partition(":")
    if sep and not group_part:
        raise UsageError(f"invalid user {text!r}: expected uid[:gid] or name[:group]")
    if not user_part:
        if sep:
            raise UsageError(f"invalid user {text!r}: expected uid[:gid] or name[:group]")
        user_part = "0"

    passwd = _table(rootfs, "/etc/passwd", needed=not user_part.isdigit())
    entry: list[str] | None
    if user_part.isdigit():
        uid = _numeric_id(user_part, text)
        entry = next((row for row in passwd if row[2] == str(uid)), None)
    else:
        entry = next((row for row in passwd if row[0] == user_part), None)
        if entry is None:
            raise UsageError(f"user {user_part!r} is not in the image's /etc/passwd: use a numeric uid")
        uid = _numeric_id(entry[2], f"/etc/passwd entry of {user_part}")
    gid = _numeric_id(entry[3], f"/etc/passwd entry of {user_part}") if entry else 0
    home = entry[5] if entry and entry[5] else None

    groups = _table(rootfs, "/etc/group", needed=bool(group_part) and not group_part.isdigit())
    if group_part:
        if group_part.isdigit():
            gid = _numeric_id(group_part, text)
        else:
            row = next((row for row in groups if row[0] == group_part), None)
            if row is None:
                raise UsageError(f"group {group_part!r} is not in the image's /etc/group: use a numeric gid")
            gid = _numeric_id(row[2], f"/etc/group entry of {group_part}")
    additional: list[int] = []
    if entry is not None:
        for row in groups:
            if entry[0] in row[3].split(","):
                with contextlib.suppress(UsageError):
                    extra = _numeric_id(row[2], "")
                    if extra != gid and extra not in additional:
                        additional.append(extra)
    return User(uid, gid, tuple(additional), home)


def _numeric_id(text: str, where: str) -> int:
    if not text.isdigit() or not text.isascii() or int(text) > _MAX_ID:
        raise UsageError(f"invalid user or group id {text!r} in {where!r}: 0 to {_MAX_ID}")
    return int(text)


def _table(rootfs: Path, path: str, *, needed: bool) -> list[list[str]]:
    """Rows of a colon-separated file (at least 7 or 4 fields padded); empty if the image has none."""
    try:
        data = read_image_file(rootfs, path)
    except UsageError as err:
        if needed:
            raise UsageError(f"cannot look up names: {err}; use a numeric uid[:gid]") from None
        return []
    if data is None:
        if needed:
            raise UsageError(f"the image has no {path}: use a numeric uid[:gid]")
        return []
    width = 7 if path.endswith("passwd") else 4
    rows = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            rows.append(fields + [""] * (width - len(fields)))
    return rows


# -- /etc files -------------------------------------------------------------------------------


def write_etc_files(
    directory: Path,
    hostname: str,
    network: Network,
    *,
    address: str | None = None,
    resolv: str | None = None,
    hosts: str | None = None,
    dns: DnsSettings = DnsSettings(),
    extra_hosts: Sequence[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Write hostname, hosts and resolv.conf for the container; returns {container path: host file}.

    `address`: the container's own address (bridge), mapped to its hostname in /etc/hosts.
    `resolv` / `hosts`: given contents (a bridged container's resolvers; `container:ID`'s files).
    `dns` / `extra_hosts`: `--dns…` and `--add-host` (checked by their parsers: one line each).
    """
    if hosts is None:
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts += f"{address}\t{hostname}\n" if address else f"127.0.1.1\t{hostname}\n"
    if resolv is None:
        resolv = "# trust: no network (loopback only); run with --network bridge or host for DNS\n"
        if network is Network.HOST:
            with contextlib.suppress(OSError):
                resolv = Path("/etc/resolv.conf").read_text()
    if dns.any:
        resolv = dns.apply("" if network is Network.NONE else resolv)
    hosts += "".join(f"{address}\t{name}\n" for name, address in extra_hosts)
    files = {"/etc/hostname": f"{hostname}\n", "/etc/hosts": hosts, "/etc/resolv.conf": resolv}
    out = {}
    for target, content in files.items():
        path = directory / posixpath.basename(target)
        path.write_text(content)
        os.chmod(path, 0o644)
        out[target] = path
    return out


def _host_capabilities() -> tuple[str, ...]:
    """Every capability this process's bounding set holds: a runtime cannot grant one it lacks
    (runc fails "unable to apply caps"), so privileged means "all the host has", as in docker."""
    with open("/proc/self/status") as status:
        bounding = next(int(line.split()[1], 16) for line in status if line.startswith("CapBnd:"))
    return tuple(name for number, name in enumerate(ALL_CAPABILITIES) if bounding >> number & 1)


# -- the spec ---------------------------------------------------------------------------------


def build_spec(
    process: ProcessSpec,
    *,
    rootfs: Path,
    hostname: str,
    network: Network,
    limits: Limits,
    cgroups_path: str,
    etc_files: Mapping[str, Path],
    cgroup_namespace: bool = False,
    annotations: Mapping[str, str] | None = None,
    seccomp: Mapping[str, Any] | None = None,
    netns: str | None = None,
    capabilities: Sequence[str] = CAPABILITIES,
    read_only: bool = False,
    mounts: Sequence[Mount] = (),
    terminal: bool = False,
    console_size: Mapping[str, int] | None = None,
    init: Path | None = None,
    privileged: bool = False,
) -> dict[str, Any]:
    """The runtime spec (`config.json`) as a dict.

    `netns`: the network namespace to join (bridge: the one run/network.py made; container:ID: the
    other container's); without it, `network` none gets a new namespace and host none.
    `privileged`: no masked or read-only paths, /sys and /sys/fs/cgroup read-write (the caller
    also passes every capability and no seccomp filter).
    """
    caps = list(capabilities)
    # A non-root process gets no capabilities to use, only the bounding set (as Podman does).
    usable = caps if process.uid == 0 else []
    user: dict[str, Any] = {"uid": process.uid, "gid": process.gid}
    if process.additional_gids:
        user["additionalGids"] = list(process.additional_gids)
    assert NOFILE <= HOST_NOFILE_CEILING
    namespaces: list[dict[str, str]] = [{"type": kind} for kind in ("pid", "mount", "uts", "ipc")]
    if netns is not None:
        namespaces.append({"type": "network", "path": netns})
    elif network is not Network.HOST:
        namespaces.append({"type": "network"})
    if cgroup_namespace:
        namespaces.append({"type": "cgroup"})
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": [] if privileged else list(MASKED_PATHS),
        "readonlyPaths": [] if privileged else list(READONLY_PATHS),
        "cgroupsPath": cgroups_path,
        "resources": _resources(limits),
    }
    if seccomp is not None:
        linux["seccomp"] = dict(seccomp)
    process_spec: dict[str, Any] = {
        "terminal": terminal,
        "user": user,
        "args": [INIT_PATH, "--", *process.args] if init is not None else list(process.args),
        "env": list(process.env),
        "cwd": process.cwd,
        "capabilities": {"bounding": caps, "effective": usable, "permitted": usable},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE}],
        "noNewPrivileges": True,
    }
    if terminal and console_size is not None:
        process_spec["consoleSize"] = dict(console_size)
    return {
        "ociVersion": OCI_VERSION,
        "process": process_spec,
        "root": {"path": str(rootfs), "readonly": read_only},
        "hostname": hostname,
        "mounts": _mounts(etc_files, writable_sys=privileged)
        + _init_mount(init)
        + [m.to_spec() for m in sorted_for_mounting(mounts)],
        "linux": linux,
        "annotations": dict(annotations or {}),
    }


def _mounts(etc_files: Mapping[str, Path], *, writable_sys: bool = False) -> list[dict[str, Any]]:
    sys_mode = "rw" if writable_sys else "ro"
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", sys_mode],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode],
        },
    ]
    for target, source in sorted(etc_files.items()):
        mounts.append(
            {
                "destination": target,
                "type": "bind",
                "source": str(source),
                "options": ["rbind", "rprivate", "nosuid", "nodev", "noexec"],
            }
        )
    return mounts


def find_init() -> Path:
    """The host's static tini, bind-mounted read-only at `INIT_PATH` for `--init` (as docker's
    docker-init). Static: it must run whatever libc the image has, or none.

    Raises:
        UsageError: tini is not installed.
    """
    for candidate in INIT_BINARIES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    raise UsageError("--init needs tini's static binary (apt-get install tini)")


def _init_mount(init: Path | None) -> list[dict[str, Any]]:
    if init is None:
        return []
    return [
        {
            "destination": INIT_PATH,
            "type": "bind",
            "source": str(init),
            "options": ["rbind", "ro", "nosuid", "nodev"],
        }
    ]


def _resources(limits: Limits) -> dict[str, Any]:
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if limits.memory is not None:
        # swap == limit: no swap on top, so the limit is what the process really gets.
        resources["memory"] = {"limit": limits.memory, "swap": limits.memory}
    if limits.pids is not None:
        resources["pids"] = {"limit": limits.pids}
    if limits.cpus is not None:
        resources["cpu"] = {"quota": max(1000, round(limits.cpus * CPU_PERIOD_US)), "period": CPU_PERIOD_US}
    return resources


def write_bundle(directory: Path, spec: Mapping[str, Any]) -> Path:
    """Write `directory/config.json` atomically (rename), readable by root only."""
    path = directory / "config.json"
    replace_json(path, spec)
    return path
