"""Containers: the lifecycle (created → running → paused → exited → removed) of a trust store's containers.

    containers = ContainerStore(content)
    exited = containers.run(image, RunOptions(command=("sh", "-c", "exit 7")))     # foreground: 7
    c = containers.run_detached(image, RunOptions(auto_remove=True))
    containers.stop(c.id, timeout=10); containers.remove(c.id, force=True)

One directory per container, `STORE/meta/containers/<id>/`:

    state.json      the record (`Container.to_json`, run/record.py), replaced atomically (write + rename)
    lock            flock taken for every read-modify-write of state.json
    config.json     the OCI bundle's spec; this directory is the bundle
    rootfs/         the overlay mount point: snapshots below, `upper/` on top (`work/` is overlay's)
    hostname, hosts, resolv.conf        bind-mounted over the image's /etc files
    stdout.log, stderr.log              the output of a detached container (or of any with -t)
    runtime.log, pid                    the runtime's log (its errors) and the init's pid
    network.json, netns                 a bridged container's network (run/network.py)

Every container has a monitor process, which runs `runtime create`, waits for the container's init,
records its exit code, restarts it (`--restart`), holds its terminal (`-t`) and cleans up: see
run/monitor.py. Networking is run/network.py, `exec` run/execution.py, terminals run/terminal.py,
mounts run/mounts.py, `cp` run/filecopy.py, `stats`/`top` run/stats.py.

The runtime is the source of truth for created/running/paused; the monitor's record for "exited" and
the exit code. `list`/`get` refresh a container from both, so state survives CLI restarts, and a
monitor that died (or a runtime that crashed) shows as "exited" with no exit code. `remove(force=True)`
always cleans up: it kills, deletes runtime state (or removes it by hand if the runtime cannot), gives
back the network (CNI DEL), removes the cgroups, unmounts and checks /proc/self/mountinfo before
deleting the directory.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pull.errors import TrustError, UsageError
from pull.records import dataclass, replace
from run.bundle import (
    Network,
    ProcessSpec,
    RunOptions,
    build_spec,
    find_init,
    resolve_process,
    write_bundle,
    write_etc_files,
)
from run.errors import ContainerNotFound, ContainerStateError, RuntimeFailure, RuntimeRefused
from run.execution import ExecOptions, exec_in
from run.monitor import MonitorLink, forward_signals, remove_directory, spawn_monitor, teardown
from run.mounts import Mount
from run.network import (
    HOST_GATEWAY,
    NETNS_FILE,
    Attachment,
    PortMapping,
    assign_host_ports,
    attach,
    exposed_ports,
    make_namespace,
    read_attachment,
    release,
    resolv_conf,
    subnet,
)
from run.overlay import is_mountpoint
from run.processes import KILL_WAIT, alive, kill_process, wait_gone
from run.record import (
    ACTIVE_STATES,
    CONTAINERS_DIR,
    USERNS_ROOT,
    Container,
    Exited,
    State,
    flock,
    image_json,
    is_locked,
    now,
    read_state,
    update_state,
    write_state,
)
from run.rootfs import mount_rootfs, open_snapshots, prepare_layers
from run.runtime import CgroupMode, Runtime, cgroup_mode, check_host_support
from run.signals import parse_signal
from run.terminal import DETACH_KEYS, attach_path, console_size, relay_attached
from run.userns import UserNamespace, mount_idmapped_layers
from run.volumes import Volumes

if TYPE_CHECKING:
    from policy.admitted import AdmittedImage
    from pull.store import ContentStore

__all__ = ["CONTAINERS_DIR", "Container", "ContainerStore", "Exited", "RunOptions", "State"]

_CREATE_TIMEOUT = 120.0
"""How long the CLI waits for `runtime create` (the layers are already unpacked by then)."""


class ContainerStore:
    """The containers of one trust store. Every method re-reads state from disk: no cached state."""

    def __init__(self, content: ContentStore, *, exits_soon: bool = False) -> None:
        """`exits_soon`: the calling process ends with its command, so a monitor needs one fork, not
        two (`spawn_monitor`'s `fork_once`)."""
        self.content = content
        self.exits_soon = exits_soon
        self.root = content.meta / CONTAINERS_DIR
        self.volumes = Volumes(content.meta)
        if not content.read_only:  # a read-only store can still be listed: it simply has none
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._runtimes: dict[str, Runtime] = {}

    def runtime(self, name: str) -> Runtime:
        if name not in self._runtimes:
            self._runtimes[name] = Runtime.for_store(self.content.meta, name)
        return self._runtimes[name]

    # -- lookups ---------------------------------------------------------------------------

    def list(self, *, all: bool = False) -> list[Container]:  # `all` mirrors `ps --all`
        """Containers, newest first, refreshed from the runtime; exited ones only with `all`."""
        found = []
        for entry in self._entries():
            if _is_id(entry.name):
                with contextlib.suppress(ContainerNotFound):  # removed while we looked
                    container = self._refresh(self._load(entry.name))
                    if all or container.state in ACTIVE_STATES:
                        found.append(container)
        return sorted(found, key=lambda c: c.created, reverse=True)

    def get(self, ref: str) -> Container:
        """The container named by a full id, a unique id prefix or a name; refreshed.

        Raises:
            ContainerNotFound: nothing (or more than one container, for a prefix) matches.
        """
        return self._refresh(self._load(self._resolve(ref)))

    def inspect(self, ref: str) -> dict[str, Any]:
        """The record plus what the host shows now (`trust inspect`)."""
        container = self.get(ref)
        attachment = read_attachment(container.directory)
        network = None
        if attachment is not None:
            network = {
                "bridge": attachment.config["plugins"][0].get("bridge"),
                "address": attachment.address,
                "gateway": attachment.gateway,
                "ports": [p.to_json() for p in attachment.ports],
            }
        return {
            **container.to_json(),
            "rootfsMounted": is_mountpoint(container.rootfs),
            "networkSettings": network,
        }

    def ports(self, ref: str) -> builtins.list[PortMapping]:
        """The host ports a container publishes (`trust port`); empty if none or not running."""
        attachment = read_attachment(self.get(ref).directory)
        return list(attachment.ports) if attachment is not None else []

    def release_networks(self) -> int:
        """Release what containers that are over still hold of the network (a monitor killed before its
        cleanup, an interrupted `rm`): `trust gc`. Returns how many were released."""
        released = 0
        for container in self.list(all=True):
            over = container.state is State.EXITED and not alive(
                container.monitor_pid, container.monitor_start
            )
            if over and read_attachment(container.directory) is not None:
                release(container.directory, container.id)
                released += 1
        return released

    # -- lifecycle -------------------------------------------------------------------------

    def create(self, image: AdmittedImage, options: RunOptions) -> Container:
        """Build the rootfs and bundle and have the runtime create the container (not started).

        Its output will go to stdout.log/stderr.log. Raises (besides the layer errors of
        `rootfs.prepare_layers`: DigestMismatch etc., exit 4): UsageError for options the runtime
        cannot honour here, RuntimeFailure if the runtime fails. Nothing is left behind on failure.
        """
        container, link = self._create(image, options, attach=False, interactive=False, start=False)
        link.close()
        return container

    def start(self, ref: str) -> Container:
        container = self.get(ref)
        if container.state is not State.CREATED:
            raise ContainerStateError(
                f"container {container.short_id} is {container.state}: "
                "only a created container can be started"
            )
        return self._start(container)

    def run_detached(self, image: AdmittedImage, options: RunOptions) -> Container:
        """`trust run -d`: create and start; output goes to the log files."""
        container, link = self._create(image, options, attach=False, interactive=False, start=True)
        link.close()
        return container

    def run(
        self,
        image: AdmittedImage,
        options: RunOptions,
        *,
        interactive: bool = False,
        detach_keys: bytes = DETACH_KEYS,
    ) -> Exited:
        """`trust run`: create, start and wait, the container using this process's stdout and stderr
        (and stdin, if `interactive`). Signals this process receives are forwarded to the container.

        Returns once the container has exited and its mounts are gone (and it is removed, with
        `auto_remove`).
        """
        with contextlib.ExitStack() as signals:
            # With a terminal, output goes through the monitor (and is logged): created, attached
            # to, then started, as docker does, so that nothing the process writes is missed.
            container, link = self._create(
                image,
                options,
                attach=not options.tty,
                interactive=interactive,
                start=not options.tty,
                signals=signals,
            )
            with contextlib.closing(link):
                if options.tty:
                    with self._connect_terminal(container) as connection:
                        try:
                            self._start(container)
                        except BaseException:
                            self._force_remove(container)  # created, never started: nothing to keep
                            raise
                        if relay_attached(connection, interactive=interactive, detach_keys=detach_keys):
                            return Exited(container.id, 0, detached=True)  # ctrl-p ctrl-q: it goes on
                event = link.wait_for("exited")
                link.wait_closed()  # the monitor closes the pipe after unmounting (and removing)
        if event is None:
            raise RuntimeFailure(f"the monitor of container {container.short_id} died before it exited")
        return Exited(container.id, int(event["exitCode"]), bool(event.get("oomKilled")))

    def attach(
        self, ref: str, *, interactive: bool = True, detach_keys: bytes = DETACH_KEYS, sig_proxy: bool = True
    ) -> Exited:
        """`trust attach`: relay this process's terminal to a running container's terminal, or for
        a container without one its output (and stdin, if started with `-i`: run/attach.py), until
        it exits (its exit code) or the user detaches (`detached`, exit code 0): ctrl-p ctrl-q, or
        ^C without `sig_proxy` for a container without a terminal.

        Raises:
            ContainerStateError: not running, or its output is not logged (a foreground container).
        """
        container = self.get(ref)
        if container.state is not State.RUNNING:
            raise ContainerStateError(f"container {container.short_id} is {container.state}, not running")
        if not container.tty:
            if not container.captures_logs:
                raise ContainerStateError(
                    f"container {container.short_id} runs in the foreground of another trust command"
                )
            from run.attach import follow

            def running() -> bool:
                try:
                    return self.get(container.id).state in (State.RUNNING, State.PAUSED)
                except ContainerNotFound:
                    return False  # --rm: its record is gone with it

            runtime = self.runtime(container.runtime)
            if follow(
                container,
                runtime,
                running,
                interactive=interactive,
                sig_proxy=sig_proxy,
                detach_keys=detach_keys,
            ):
                return Exited(container.id, 0, detached=True)
            exited = self.wait(container.id)  # None: removed with it (--rm)
            code = exited.exit_code if exited is not None and exited.exit_code is not None else 0
            return Exited(container.id, code, exited.oom_killed if exited is not None else False)
        with self._connect_terminal(container) as connection:
            if relay_attached(connection, interactive=interactive, detach_keys=detach_keys):
                return Exited(container.id, 0, detached=True)
        exited = self.wait(container.id)
        code = exited.exit_code if exited is not None and exited.exit_code is not None else 0
        return Exited(container.id, code, exited.oom_killed if exited is not None else False)

    @contextlib.contextmanager
    def _connect_terminal(self, container: Container) -> Iterator[socket.socket]:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with connection:
            try:
                connection.connect(str(attach_path(container.id)))
            except OSError as exc:
                raise ContainerStateError(
                    f"cannot attach to container {container.short_id}: {exc.strerror or exc}"
                ) from None
            yield connection

    def wait(self, ref: str, timeout: float | None = None) -> Container | None:
        """Wait until the container has exited and been cleaned up; None if it was removed (--rm).

        Raises:
            ContainerStateError: it did not exit within `timeout` seconds.
            ContainerNotFound: `ref` names no container (a full id of a removed one gives None).
        """
        try:
            container = self.get(ref)
        except ContainerNotFound:
            if _is_id(ref):
                return None  # an --rm container can be gone before anyone waits for it
            raise
        if not self._wait_exit(container, timeout):
            raise ContainerStateError(f"container {container.short_id} is still {container.state}")
        return self._settle(container)

    def stop(self, ref: str, timeout: float = 10.0) -> Container | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exited container (None if --rm)."""
        container = self.get(ref)
        if container.state is State.EXITED:
            self._wait_exit(container, KILL_WAIT)  # its monitor may still be cleaning up
            return self._settle(container)
        runtime = self.runtime(container.runtime)
        with contextlib.suppress(ContainerNotFound):
            update_state(container.directory, None, stopping=True)  # its monitor must not restart it
        first = container.stop_signal or signal.SIGTERM
        if container.state is State.CREATED:
            first = signal.SIGKILL
        runtime.kill(container.id, first)
        if container.state is State.PAUSED:
            with contextlib.suppress(ContainerStateError):  # gone already: nothing left to thaw
                runtime.resume(container.id)  # a frozen process cannot act on the signal
        if not self._wait_exit(container, timeout):
            runtime.kill(container.id, signal.SIGKILL, all_processes=True)
            if not self._wait_exit(container, KILL_WAIT):
                raise RuntimeFailure(f"container {container.short_id} did not exit after SIGKILL")
        return self._settle(container)

    def exec(self, ref: str, options: ExecOptions) -> int:
        """`trust exec`: run a process in a running container; its exit status (0 when detached).

        Raises:
            ContainerStateError: the container is not running (created, paused, exited: exit 2).
        """
        container = self.get(ref)
        if container.state is not State.RUNNING:
            raise ContainerStateError(
                f"container {container.short_id} is {container.state}: exec needs a running container"
            )
        return exec_in(self.runtime(container.runtime), container, options)

    def kill(self, ref: str, signum: int = signal.SIGKILL) -> None:
        """Send `signum` to the container's first process (it may take a moment to act on it)."""
        container = self.get(ref)
        if container.state not in (State.RUNNING, State.PAUSED):
            raise ContainerStateError(f"container {container.short_id} is {container.state}, not running")
        runtime = self.runtime(container.runtime)
        if not runtime.kill(container.id, signum):
            raise ContainerStateError(f"container {container.short_id} is not running")
        if container.state is State.PAUSED and signum == signal.SIGKILL:
            with contextlib.suppress(ContainerStateError):  # it died already: nothing to thaw
                runtime.resume(container.id)  # cgroup v1's freezer holds even SIGKILL until thawed

    def pause(self, ref: str) -> Container:
        container = self.get(ref)
        if container.state is not State.RUNNING:
            raise ContainerStateError(f"container {container.short_id} is {container.state}, not running")
        self.runtime(container.runtime).pause(container.id)
        return update_state(container.directory, frozenset({State.RUNNING}), state=State.PAUSED)

    def unpause(self, ref: str) -> Container:
        container = self.get(ref)
        if container.state is not State.PAUSED:
            raise ContainerStateError(f"container {container.short_id} is {container.state}, not paused")
        self.runtime(container.runtime).resume(container.id)
        return update_state(container.directory, frozenset({State.PAUSED}), state=State.RUNNING)

    def remove(self, ref: str, *, force: bool = False) -> str:
        """Remove a container that is not running (with `force`: any, killing it). Returns its id.

        Raises:
            ContainerStateError: it is running or paused and `force` is False.
            RuntimeFailure: its rootfs could not be unmounted (the directory is then kept).
        """
        container = self.get(ref)
        if container.state in (State.RUNNING, State.PAUSED) and not force:
            raise ContainerStateError(
                f"container {container.short_id} is {container.state}: stop it first, or use rm -f"
            )
        self._force_remove(container)
        return container.id

    def logs(self, ref: str, *, follow: bool = False, poll: float = 0.1) -> Iterator[tuple[str, bytes]]:
        """("stdout" | "stderr", bytes) chunks of a detached container's output.

        The two streams are kept apart, so their relative order is not preserved. With `follow`,
        waits for more until the container has exited.
        """
        container = self.get(ref)
        if not container.captures_logs:
            return
        files: dict[str, IO[bytes]] = {}
        try:
            for stream, path in (("stdout", container.stdout_log), ("stderr", container.stderr_log)):
                with contextlib.suppress(FileNotFoundError):
                    files[stream] = open(path, "rb")  # noqa: SIM115 (closed in `finally`)
            while True:
                active = follow and alive(container.monitor_pid, container.monitor_start)
                got = False
                for stream, file in files.items():
                    while chunk := file.read(65536):
                        got = True
                        yield stream, chunk
                if not active:
                    return  # one last read happened after the monitor was seen gone
                if not got:
                    time.sleep(poll)
        finally:
            for file in files.values():
                file.close()

    # -- creation --------------------------------------------------------------------------

    def _create(
        self,
        image: AdmittedImage,
        options: RunOptions,
        *,
        attach: bool,
        interactive: bool,
        start: bool,
        signals: contextlib.ExitStack | None = None,
    ) -> tuple[Container, MonitorLink]:
        """With `signals` (a foreground run), signal forwarding is entered on it just before the
        runtime starts the container, and stays on until the caller closes it."""
        _check_permissions(image, options)  # before anything exists: a refusal leaves nothing
        check_host_support(options.runtime, wants_limits=options.limits.any)
        runtime = self.runtime(options.runtime)
        _ = runtime.binary  # fail now, with advice, if it is not installed
        # Layers first: a bad layer (exit 4) fails before any container state exists.
        lowers = prepare_layers(image, self.content, open_snapshots(self.content))

        container_id = os.urandom(32).hex()  # what secrets.token_hex does, without importing it
        hostname = options.hostname or container_id[:12]
        joined = self._joined_network(options)
        with contextlib.ExitStack() as creating:
            container, mounts, fresh_volumes = self._claim(
                container_id,
                options,
                image,
                hostname=hostname,
                attach=attach,
                hold=creating,
                network=f"container:{joined.id}" if joined is not None else options.network.value,
            )
            link: MonitorLink | None = None
            try:
                if container.exposed != container.directory:  # user namespace: a reachable place
                    USERNS_ROOT.mkdir(mode=0o711, exist_ok=True)
                    os.chmod(USERNS_ROOT, 0o711)
                    container.exposed.mkdir(mode=0o711)
                    os.chmod(container.exposed, 0o711)
                for sub, mode in (
                    (container.upper, 0o755),
                    (container.work, 0o700),
                    (container.rootfs, 0o755),
                ):
                    sub.mkdir(mode=mode)
                    os.chmod(sub, mode)  # the upper dir's mode is the container's "/" mode: not umasked
                if container.user_namespace is not None:
                    lowers = _idmapped_lowers(container, container.user_namespace, lowers)
                mount_rootfs(container.rootfs, lowers, upper=container.upper, work=container.work)
                options = replace(options, mounts=mounts)
                if fresh_volumes:
                    from run.filecopy import copy_up  # tarfile: only for a volume's first use

                    for mount in fresh_volumes:
                        copy_up(container.rootfs, mount.destination, Path(mount.source))
                process = resolve_process(
                    image.config.raw, options, rootfs=container.rootfs, hostname=hostname
                )
                container = replace(container, command=process.args)
                # A bridged container is created in its namespace, then connected while the runtime
                # creates it (the plugins' ADD and the port rules, ~14 ms, beside runc's ~35), then
                # started: `create` + `start` costs ~6 ms more than `run --detach`.
                connect_later = start and options.network is Network.BRIDGE and joined is None
                if connect_later:
                    netns = make_namespace(container.directory, container.id, subnet())
                    network = _Network(netns=str(netns), resolv=resolv_conf())
                else:
                    network = self._connect(container, options, image, joined)
                write_bundle(container.directory, self._spec(container, process, options, network))
                write_state(container)
                replay_signals = (
                    signals.enter_context(forward_signals(runtime, container_id)) if signals else None
                )
                link = spawn_monitor(
                    container,
                    attach=attach,
                    interactive=interactive,
                    start=start and not connect_later,
                    fork_once=self.exits_soon,
                )
                if connect_later:
                    network = self._connect(container, options, image, joined)
                    self._write_etc_files(container, options, network)  # with its address now
                event = link.wait_for("created", timeout=_CREATE_TIMEOUT)
                if event is None:
                    raise RuntimeFailure(f"the monitor of container {container.short_id} died during create")
                if connect_later:
                    runtime.start(container.id)
                # Under the container's lock (`creating`), so the monitor records an exit after this.
                container = replace(
                    container,
                    state=State.RUNNING if start else State.CREATED,
                    started=now() if start else None,
                    pid=event["pid"],
                    pid_start=event.get("pidStartTime"),
                    monitor_pid=event["monitorPid"],
                    monitor_start=event.get("monitorStartTime"),
                )
                write_state(container)
                if replay_signals is not None:
                    replay_signals()  # those that came while the runtime was creating it
            except BaseException:
                if link is not None:
                    link.close()
                creating.close()  # the monitor records an exit under this lock: do not make it wait
                self._force_remove(container)
                raise
        assert link is not None
        return container, link

    def _claim(
        self,
        container_id: str,
        options: RunOptions,
        image: AdmittedImage,
        *,
        hostname: str,
        attach: bool,
        hold: contextlib.ExitStack,
        network: str,
    ) -> tuple[Container, tuple[Mount, ...], tuple[Mount, ...]]:
        """Make the container's directory and record, refusing a name in use (checked and claimed
        under one lock); `hold` receives the container's lock. Returns the record, the mounts with
        named volumes resolved (made if new: under this lock, which `volume rm` takes too), and the
        mounts of the volumes made now that want the image's files copied up."""
        directory = self.root / container_id
        with flock(self.root / ".lock"):
            if options.name is not None and any(c.name == options.name for c in self._all_records()):
                raise UsageError(
                    f"the name {options.name!r} is in use: remove that container or pick another"
                )
            mounts: list[Mount] = []
            fresh: list[Mount] = []
            for mount in options.mounts:
                if mount.volume:
                    volume, made = self.volumes.ensure(mount.volume)
                    mount = replace(mount, source=str(volume.data))
                    if made and mount.copy_up:
                        fresh.append(mount)
                mounts.append(mount)
            user_namespace = None
            if options.userns is not None:  # `auto` picks a block no other container maps
                taken = [c.user_namespace for c in self._all_records() if c.user_namespace is not None]
                user_namespace = options.userns.resolve(taken)
            directory.mkdir(mode=0o700)
            container = Container(
                id=container_id,
                directory=directory,
                name=options.name,
                image=image_json(image),
                command=(),
                created=now(),
                state=State.CREATED,
                runtime=options.runtime,
                hostname=hostname,
                network=network,
                limits=options.limits.to_json(),
                labels=dict(options.labels),
                tty=options.tty,
                open_stdin=options.open_stdin and not options.tty and not attach,
                user_namespace=user_namespace,
                stop_signal=options.stop_signal or _image_stop_signal(image),
                restart_policy=options.restart,
                mounts=tuple(m.to_json() for m in mounts),
                cgroups_path=f"{options.cgroup_parent.rstrip('/')}/{container_id}",
                auto_remove=options.auto_remove,
                captures_logs=not attach,
            )
            # The container's lock is taken before its record is visible and held until it exists in
            # the runtime, so `list` in another process knows a record without a monitor is being
            # created, not abandoned.
            hold.enter_context(flock(directory / "lock"))
            write_state(container)
        return container, tuple(mounts), tuple(fresh)

    def remove_volume(self, name: str) -> None:
        """`trust volume rm`: refused while any container (whatever its state) names the volume."""
        with flock(self.root / ".lock"):
            users = [
                c.id
                for c in self._all_records()
                if any(m.get("type") == "volume" and m.get("source") == name for m in c.mounts)
            ]
            self.volumes.remove(name, users)

    def _joined_network(self, options: RunOptions) -> Container | None:
        """`--network container:ID`: the running container whose network namespace is shared."""
        if options.network_container is None:
            return None
        other = self.get(options.network_container)
        if other.state is not State.RUNNING or other.pid is None:
            raise ContainerStateError(
                f"container {other.short_id} is {other.state}: --network container: needs a running one"
            )
        return other

    def _connect(
        self, container: Container, options: RunOptions, image: AdmittedImage, joined: Container | None
    ) -> _Network:
        """The container's network namespace and /etc files: made and attached for a bridge (the
        store's lock is held while host ports are chosen and taken), borrowed for container:ID."""
        if joined is not None:
            netns = joined.directory / NETNS_FILE
            return _Network(
                netns=str(netns) if read_attachment(joined.directory) else f"/proc/{joined.pid}/ns/net",
                hosts=(joined.directory / "hosts").read_text(),
                resolv=(joined.directory / "resolv.conf").read_text(),
            )
        if options.network is not Network.BRIDGE:
            return _Network()
        wanted = list(options.publish)
        if options.publish_all:
            wanted += exposed_ports(image.config.raw)
        subnet_text = subnet()
        with flock(self.root / ".lock") if wanted else contextlib.nullcontext():
            taken = [port for other in self._attachments() for port in other.ports]
            ports = assign_host_ports(wanted, taken)
            attachment = attach(container.directory, container.id, ports, subnet_text)
        return _Network(
            netns=str(attachment.netns),
            address=attachment.address,
            gateway=attachment.gateway,
            resolv=resolv_conf(),
        )

    def _attachments(self) -> builtins.list[Attachment]:
        out = []
        for entry in self.root.iterdir():
            if _is_id(entry.name):
                with contextlib.suppress(TrustError, OSError):
                    found = read_attachment(entry)
                    if found is not None:
                        out.append(found)
        return out

    def _spec(
        self, container: Container, process: ProcessSpec, options: RunOptions, network: _Network
    ) -> dict[str, Any]:
        spec = self._base_spec(container, process, options, network)
        if container.user_namespace is not None:
            spec["linux"]["namespaces"].append({"type": "user"})
            spec["linux"]["uidMappings"] = [r.to_json() for r in container.user_namespace.uids]
            spec["linux"]["gidMappings"] = [r.to_json() for r in container.user_namespace.gids]
            if network.netns is not None or options.network is Network.HOST:
                # sysfs can be mounted only by the owner of the network namespace, and this one
                # was made outside the container's user namespace: the host's /sys, read-only,
                # as podman gives user-namespaced containers (the masked paths still apply).
                for mount in spec["mounts"]:
                    if mount.get("destination") == "/sys" and mount.get("type") == "sysfs":
                        mount.update(
                            type="bind", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"]
                        )
        return spec

    def _write_etc_files(
        self, container: Container, options: RunOptions, network: _Network
    ) -> dict[str, Path]:
        """/etc/hostname, hosts and resolv.conf of the container: written in place, so a second
        call (a bridged container's, once it has its address) changes what the bundle mounts."""
        return write_etc_files(
            container.exposed,
            container.hostname,
            options.network,
            address=network.address,
            resolv=network.resolv,
            hosts=network.hosts,
            dns=options.dns,
            extra_hosts=[
                (name, network.gateway if address == HOST_GATEWAY and network.gateway else address)
                for name, address in options.extra_hosts
            ],
        )

    def _base_spec(
        self, container: Container, process: ProcessSpec, options: RunOptions, network: _Network
    ) -> dict[str, Any]:
        return build_spec(
            process,
            rootfs=container.rootfs,
            hostname=container.hostname,
            network=options.network,
            limits=options.limits,
            cgroups_path=container.cgroups_path,
            etc_files=self._write_etc_files(container, options, network),
            cgroup_namespace=cgroup_mode() is CgroupMode.UNIFIED,
            seccomp=None if options.privileged else options.seccomp,
            netns=network.netns,
            capabilities=options.capabilities,
            read_only=options.read_only,
            mounts=options.mounts,
            terminal=options.tty,
            console_size=console_size() if options.tty else None,
            init=find_init() if options.init else None,
            privileged=options.privileged,
            annotations={
                **dict(options.labels),
                "dev.trust.image.repository": str(container.image.get("repository", "")),
                "dev.trust.image.digest": str(container.image.get("digest", "")),
            },
        )

    def _start(self, container: Container) -> Container:
        self.runtime(container.runtime).start(container.id)
        started = now()
        # The process may have exited, and the monitor recorded it, already: only "created" moves on.
        try:
            current = update_state(
                container.directory, frozenset({State.CREATED}), state=State.RUNNING, started=started
            )
            if current.started is None:
                current = update_state(container.directory, None, started=started)
        except ContainerNotFound:  # --rm, and it is over already: its monitor removed it
            return replace(container, state=State.EXITED, started=started)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # It runs: a full disk only keeps its record behind (the next command refreshes it).
            return replace(container, state=State.RUNNING, started=started)
        return current

    # -- ending ----------------------------------------------------------------------------

    def _wait_exit(self, container: Container, timeout: float | None) -> bool:
        """Wait until the container's monitor is gone (it exits after cleanup); poll the runtime if
        there is no monitor. True if it is over within `timeout` seconds."""
        if alive(container.monitor_pid, container.monitor_start):
            assert container.monitor_pid is not None
            return wait_gone(container.monitor_pid, container.monitor_start, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        runtime = self.runtime(container.runtime)
        while True:
            try:
                state = runtime.state(container.id)
            except TrustError:
                return True  # the runtime cannot tell: nothing more to wait for
            if state is None or state.status == "stopped":
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _settle(self, container: Container) -> Container | None:
        """After an exit: the record as the monitor left it, or (monitor dead) finished here."""
        try:
            current = self._load(container.id)
        except ContainerNotFound:
            return None  # --rm: the monitor removed it
        if current.state is State.EXITED or alive(current.monitor_pid, current.monitor_start):
            return current
        finished = update_state(
            current.directory,
            ACTIVE_STATES,
            state=State.EXITED,
            finished=now(),
            error="the container's monitor was gone: exit code unknown",
        )
        teardown(finished, self.runtime(finished.runtime))
        return finished

    def _force_remove(self, container: Container) -> None:
        """Kill whatever is left, delete runtime state, unmount and remove the directory. Idempotent."""
        runtime = self.runtime(container.runtime)
        with contextlib.suppress(ContainerNotFound, OSError, ValueError, KeyError, TypeError):
            update_state(container.directory, None, stopping=True)  # no restart
        current = self._load_or(container)
        if current.state in ACTIVE_STATES or alive(current.monitor_pid, current.monitor_start):
            with contextlib.suppress(TrustError):
                runtime.kill(current.id, signal.SIGKILL, all_processes=True)
            if current.state is State.PAUSED:
                with contextlib.suppress(TrustError):
                    runtime.resume(current.id)
            if not self._wait_exit(current, KILL_WAIT) and current.monitor_pid is not None:
                kill_process(current.monitor_pid, current.monitor_start)
        if not current.directory.exists():
            return  # the monitor of an --rm container finished the job
        teardown(current, runtime)
        remove_directory(current.directory)

    # -- state -----------------------------------------------------------------------------

    def _refresh(self, container: Container) -> Container:
        """Bring an active record up to date with the runtime and the monitor (see module doc)."""
        if container.state is State.EXITED:
            return container
        if container.monitor_pid is None:
            if is_locked(container.directory / "lock"):
                return container  # another process is creating it right now
            return _released(
                _noted(
                    container,
                    state=State.EXITED,
                    finished=now(),
                    error="creation did not finish",
                )
            )
        try:
            state = self.runtime(container.runtime).state(container.id)
        except TrustError:
            return container  # the runtime cannot tell us; keep what we know
        if state is not None and state.status in ("created", "running", "paused"):
            if state.status != container.state.value:
                return _noted(container, state=State(state.status))
            return container
        # The runtime has no live container. Its monitor records the exit in a moment, if alive.
        if alive(container.monitor_pid, container.monitor_start):
            wait_gone(container.monitor_pid, container.monitor_start, 2.0)
            current = self._load(container.id)
            if current.state is State.EXITED or alive(container.monitor_pid, container.monitor_start):
                return current
        return _released(
            _noted(
                container,
                state=State.EXITED,
                finished=now(),
                error="the container's monitor was gone: exit code unknown",
            )
        )

    def _resolve(self, ref: str) -> str:
        if _is_id(ref) and (self.root / ref).is_dir():
            return ref
        records = self._all_records()
        named = [c.id for c in records if c.name == ref]
        if named:
            return named[0]
        if ref and all(ch in "0123456789abcdef" for ch in ref):
            matches = [
                entry.name for entry in self._entries() if _is_id(entry.name) and entry.name.startswith(ref)
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ContainerNotFound(f"container id prefix {ref!r} is ambiguous: give more characters")
        raise ContainerNotFound(f"no such container: {ref}")

    def _entries(self) -> builtins.list[Path]:
        return builtins.list(self.root.iterdir()) if self.root.is_dir() else []

    def _all_records(self) -> builtins.list[Container]:
        out = []
        for entry in self._entries():
            if _is_id(entry.name):
                with contextlib.suppress(ContainerNotFound):
                    out.append(self._load(entry.name))
        return out

    def _load(self, container_id: str) -> Container:
        directory = self.root / container_id
        try:
            return read_state(directory)
        except FileNotFoundError:
            if not directory.is_dir():
                raise ContainerNotFound(f"no such container: {container_id}") from None
            reason = "its state.json is missing"
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"its state.json is unreadable ({exc})"
        # A directory without a usable record (a crash while creating): show it, so `rm -f` can clean it.
        return Container(
            id=container_id,
            directory=directory,
            name=None,
            image={},
            command=(),
            created="",
            state=State.EXITED,
            runtime="runc",
            hostname="",
            network="none",
            limits={},
            cgroups_path="",
            auto_remove=False,
            captures_logs=False,
            error=reason,
        )

    def _load_or(self, container: Container) -> Container:
        try:
            return self._load(container.id)
        except ContainerNotFound:
            return container


def _image_stop_signal(image: AdmittedImage) -> int | None:
    """The image config's `StopSignal` ("SIGQUIT", "3"); an unusable one is ignored (docker warns)."""
    section = image.config.raw.get("config") or {}
    text = section.get("StopSignal") if isinstance(section, dict) else None
    return parse_signal(text) if isinstance(text, str) else None


def _noted(container: Container, **changes: Any) -> Container:
    """`container` brought up to date: recorded in its state.json, or, when the store cannot take the
    write (a full disk, a read-only store), only shown so: `ps`, `rm -f`, `rmi` and `gc` must still
    work there, and a record that cannot be refreshed is refreshed again by the next command."""
    try:
        return update_state(container.directory, ACTIVE_STATES, **changes)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        return replace(container, **changes)


def _released(container: Container) -> Container:
    """A container found over without its monitor: nobody else will give back its address and ports."""
    with contextlib.suppress(TrustError):
        release(container.directory, container.id)
    return container


@dataclass(frozen=True)
class _Network:
    """How a new container is networked: the namespace to join (None: the runtime makes one, or the
    host's), its address on the bridge, and given /etc file contents."""

    netns: str | None = None
    address: str | None = None
    gateway: str | None = None
    resolv: str | None = None
    hosts: str | None = None


def _is_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _check_permissions(image: AdmittedImage, options: RunOptions) -> None:
    """What the container asks for beyond the defaults must be allowed by the policy rule that
    admitted its image (`runtime:` in the rule). Audit mode does not relax this: it records
    signature failures, it does not grant a container more of the host."""
    if options.privileged and not image.runtime.allow_privileged:
        where = f" in {image.decision.policy}" if image.decision.policy else ""
        scope = (
            "the default rule"
            if image.decision.rule == "default"
            else f"the rule for {image.decision.rule!r}"
        )
        raise RuntimeRefused(
            f"--privileged is refused for {image.pinned}: {scope}{where} does not allow it "
            "(add 'runtime: {allow-privileged: true}' to that rule to allow it)"
        )


def _idmapped_lowers(container: Container, mapping: UserNamespace, lowers: Sequence[Path]) -> list[Path]:
    """The snapshots as the container's users see them (run/userns.py): an idmapped mount of each
    under the container's directory, and upper/work owned by the container's root."""
    targets = [container.idmapped_layers / str(number) for number in range(len(lowers))]
    container.idmapped_layers.mkdir(mode=0o700)
    for target in targets:
        target.mkdir(mode=0o700)
    mount_idmapped_layers(lowers, targets, mapping)
    uid, gid = mapping.root
    for sub in (container.upper, container.work):
        os.chown(sub, uid, gid)
    return targets
