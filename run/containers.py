"""Containers: the lifecycle (created → running → paused → exited → removed) and its persistent state.

    containers = ContainerStore(content)
    exited = containers.run(image, RunOptions(command=("sh", "-c", "exit 7")))     # foreground: 7
    c = containers.run_detached(image, RunOptions(auto_remove=True))
    containers.stop(c.id, timeout=10); containers.remove(c.id, force=True)

One directory per container, `STORE/meta/containers/<id>/`:

    state.json      the record (`Container.to_json`), replaced atomically (write + rename)
    lock            flock taken for every read-modify-write of state.json
    config.json     the OCI bundle's spec; this directory is the bundle
    rootfs/         the overlay mount point: snapshots below, `upper/` on top (`work/` is overlay's)
    hostname, hosts, resolv.conf        bind-mounted over the image's /etc files
    stdout.log, stderr.log              the output of a detached container
    runtime.log, pid                    the runtime's log (its errors) and the init's pid

## The monitor: how exit codes are kept

Only a process's parent learns its exit status. Every container therefore gets a small monitor
process (a double fork of the CLI, in its own session, see `_spawn_monitor`) which marks itself a
*child subreaper* and runs `runc create`. When `runc create` exits, the container's init process is
orphaned and the kernel re-parents it to the nearest subreaper: the monitor. The monitor then waits for
it, records the exit code (128+N for signal N) and whether the OOM killer struck in state.json,
deletes the runtime state, removes the cgroup, unmounts the rootfs and, for `--rm`, removes the
directory. This is conmon's design, in ~150 lines of Python.

The monitor talks to the CLI that started it over a pipe, one JSON line per event:
`created` (with the pids) or `error` (create failed), then `exited`; it closes the pipe when its
cleanup is done. A foreground `trust run` starts the container, forwards the signals it receives
(`runtime kill`), and reads the pipe until it closes: so when it returns, the exit code is known and
the mounts are gone. A detached container's CLI closes its end after `created`.

The runtime is the source of truth for created/running/paused; the monitor's record for "exited" and
the exit code. `list`/`get` refresh a container from both, so state survives CLI restarts, and a
monitor that died (or a runtime that crashed) shows as "exited" with no exit code. `remove(force=True)`
always cleans up: it kills, deletes runtime state (or removes it by hand if the runtime cannot), removes
the cgroups, unmounts and checks /proc/self/mountinfo before deleting the directory.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

from pull.errors import TrustError, UsageError
from run.bundle import (
    ProcessSpec,
    RunOptions,
    build_spec,
    resolve_process,
    write_bundle,
    write_etc_files,
)
from run.errors import ContainerNotFound, ContainerStateError, RuntimeFailure
from run.overlay import is_mountpoint
from run.rootfs import mount_rootfs, open_snapshots, prepare_layers, unmount_rootfs
from run.runtime import (
    CgroupMode,
    Runtime,
    cgroup_mode,
    check_host_support,
    last_logged_error,
    oom_killed,
    remove_cgroups,
)

if TYPE_CHECKING:
    from policy.admitted import AdmittedImage
    from pull.store import ContentStore

__all__ = ["Container", "ContainerStore", "Exited", "RunOptions", "State"]

CONTAINERS_DIR = "containers"
STATE_FILE = "state.json"
_STATE_VERSION = 1
_CREATE_TIMEOUT = 120.0
"""How long the CLI waits for `runtime create` (the layers are already unpacked by then)."""
_KILL_WAIT = 10.0
"""How long a container may take to die after SIGKILL (and its monitor to clean up)."""
_FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36


class State(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"


_ACTIVE = frozenset({State.CREATED, State.RUNNING, State.PAUSED})


@dataclass(frozen=True)
class Container:
    """One container's record (state.json) and where its files are."""

    id: str
    directory: Path
    name: str | None
    image: Mapping[str, Any]
    """repository, digest (the manifest that runs), configDigest, indexDigest, tag, decision."""
    command: tuple[str, ...]
    created: str
    state: State
    runtime: str
    hostname: str
    network: str
    limits: Mapping[str, Any]
    cgroups_path: str
    auto_remove: bool
    captures_logs: bool
    """Output goes to stdout.log/stderr.log (detached); False: to the foreground CLI's own stdio."""
    started: str | None = None
    finished: str | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    monitor_pid: int | None = None
    monitor_start: int | None = None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def stdout_log(self) -> Path:
        return self.directory / "stdout.log"

    @property
    def stderr_log(self) -> Path:
        return self.directory / "stderr.log"

    @property
    def runtime_log(self) -> Path:
        return self.directory / "runtime.log"

    def to_json(self) -> dict[str, Any]:
        """The state.json document (also `trust inspect`'s, see docs/runtime.md)."""
        return {
            "version": _STATE_VERSION,
            "id": self.id,
            "name": self.name,
            "image": dict(self.image),
            "command": list(self.command),
            "state": self.state.value,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "exitCode": self.exit_code,
            "oomKilled": self.oom_killed,
            "error": self.error,
            "runtime": self.runtime,
            "pid": self.pid,
            "pidStartTime": self.pid_start,
            "monitorPid": self.monitor_pid,
            "monitorStartTime": self.monitor_start,
            "hostname": self.hostname,
            "network": self.network,
            "limits": dict(self.limits),
            "cgroupsPath": self.cgroups_path,
            "autoRemove": self.auto_remove,
            "capturesLogs": self.captures_logs,
            "paths": {
                "bundle": str(self.directory),
                "rootfs": str(self.rootfs),
                "upper": str(self.upper),
                "work": str(self.work),
                "stdout": str(self.stdout_log) if self.captures_logs else None,
                "stderr": str(self.stderr_log) if self.captures_logs else None,
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], directory: Path) -> Container:
        def optional_int(key: str) -> int | None:
            value = doc.get(key)
            return int(value) if value is not None else None

        return cls(
            id=str(doc["id"]),
            directory=directory,
            name=doc.get("name"),
            image=dict(doc.get("image") or {}),
            command=tuple(str(arg) for arg in doc.get("command") or ()),
            created=str(doc["created"]),
            state=State(doc["state"]),
            runtime=str(doc["runtime"]),
            hostname=str(doc.get("hostname") or ""),
            network=str(doc.get("network") or "none"),
            limits=dict(doc.get("limits") or {}),
            cgroups_path=str(doc.get("cgroupsPath") or ""),
            auto_remove=bool(doc.get("autoRemove")),
            captures_logs=bool(doc.get("capturesLogs")),
            started=doc.get("started"),
            finished=doc.get("finished"),
            exit_code=optional_int("exitCode"),
            oom_killed=bool(doc.get("oomKilled")),
            error=doc.get("error"),
            pid=optional_int("pid"),
            pid_start=optional_int("pidStartTime"),
            monitor_pid=optional_int("monitorPid"),
            monitor_start=optional_int("monitorStartTime"),
        )


@dataclass(frozen=True)
class Exited:
    """How a foreground container ended."""

    container_id: str
    exit_code: int
    """The process's exit status; 128+N if signal N killed it (137: SIGKILL, e.g. the OOM killer)."""
    oom_killed: bool = False


class ContainerStore:
    """The containers of one trust store. Every method re-reads state from disk: no cached state."""

    def __init__(self, content: ContentStore) -> None:
        self.content = content
        self.root = content.meta / CONTAINERS_DIR
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
        for entry in self.root.iterdir():
            if _is_id(entry.name):
                with contextlib.suppress(ContainerNotFound):  # removed while we looked
                    container = self._refresh(self._load(entry.name))
                    if all or container.state in _ACTIVE:
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
        return {**container.to_json(), "rootfsMounted": is_mountpoint(container.rootfs)}

    # -- lifecycle -------------------------------------------------------------------------

    def create(self, image: AdmittedImage, options: RunOptions) -> Container:
        """Build the rootfs and bundle and have the runtime create the container (not started).

        Its output will go to stdout.log/stderr.log. Raises (besides the layer errors of
        `rootfs.prepare_layers`: DigestMismatch etc., exit 4): UsageError for options the runtime
        cannot honour here, RuntimeFailure if the runtime fails. Nothing is left behind on failure.
        """
        container, link = self._create(image, options, attach=False, interactive=False)
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
        container = self.create(image, options)
        try:
            return self._start(container)
        except BaseException:
            self._force_remove(container)
            raise

    def run(self, image: AdmittedImage, options: RunOptions, *, interactive: bool = False) -> Exited:
        """`trust run`: create, start and wait, the container using this process's stdout and stderr
        (and stdin, if `interactive`). Signals this process receives are forwarded to the container.

        Returns once the container has exited and its mounts are gone (and it is removed, with
        `auto_remove`).
        """
        container, link = self._create(image, options, attach=True, interactive=interactive)
        with contextlib.closing(link):
            runtime = self.runtime(container.runtime)
            with _forward_signals(runtime, container.id):
                try:
                    self._start(container)
                except BaseException:
                    self._force_remove(container)
                    raise
                event = link.wait_for("exited")
                link.wait_closed()  # the monitor closes the pipe after unmounting (and removing)
        if event is None:
            raise RuntimeFailure(f"the monitor of container {container.short_id} died before it exited")
        return Exited(container.id, int(event["exitCode"]), bool(event.get("oomKilled")))

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
            self._wait_exit(container, _KILL_WAIT)  # its monitor may still be cleaning up
            return self._settle(container)
        runtime = self.runtime(container.runtime)
        first = signal.SIGKILL if container.state is State.CREATED else signal.SIGTERM
        runtime.kill(container.id, first)
        if container.state is State.PAUSED:
            runtime.resume(container.id)  # a frozen process cannot act on the signal
        if not self._wait_exit(container, timeout):
            runtime.kill(container.id, signal.SIGKILL, all_processes=True)
            if not self._wait_exit(container, _KILL_WAIT):
                raise RuntimeFailure(f"container {container.short_id} did not exit after SIGKILL")
        return self._settle(container)

    def kill(self, ref: str, signum: int = signal.SIGKILL) -> None:
        """Send `signum` to the container's first process (it may take a moment to act on it)."""
        container = self.get(ref)
        if container.state not in (State.RUNNING, State.PAUSED):
            raise ContainerStateError(f"container {container.short_id} is {container.state}, not running")
        runtime = self.runtime(container.runtime)
        if not runtime.kill(container.id, signum):
            raise ContainerStateError(f"container {container.short_id} is not running")
        if container.state is State.PAUSED and signum == signal.SIGKILL:
            runtime.resume(container.id)  # cgroup v1's freezer holds even SIGKILL until thawed

    def pause(self, ref: str) -> Container:
        container = self.get(ref)
        if container.state is not State.RUNNING:
            raise ContainerStateError(f"container {container.short_id} is {container.state}, not running")
        self.runtime(container.runtime).pause(container.id)
        return _update(container.directory, frozenset({State.RUNNING}), state=State.PAUSED)

    def unpause(self, ref: str) -> Container:
        container = self.get(ref)
        if container.state is not State.PAUSED:
            raise ContainerStateError(f"container {container.short_id} is {container.state}, not paused")
        self.runtime(container.runtime).resume(container.id)
        return _update(container.directory, frozenset({State.PAUSED}), state=State.RUNNING)

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
                active = follow and _alive(container.monitor_pid, container.monitor_start)
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
        self, image: AdmittedImage, options: RunOptions, *, attach: bool, interactive: bool
    ) -> tuple[Container, _MonitorLink]:
        check_host_support(options.runtime, wants_limits=options.limits.any)
        runtime = self.runtime(options.runtime)
        _ = runtime.binary  # fail now, with advice, if it is not installed
        # Layers first: a bad layer (exit 4) fails before any container state exists.
        lowers = prepare_layers(image, self.content, open_snapshots(self.content))

        container_id = secrets.token_hex(32)
        hostname = options.hostname or container_id[:12]
        with contextlib.ExitStack() as creating:
            container = self._claim(
                container_id, options, image, hostname=hostname, attach=attach, hold=creating
            )
            link: _MonitorLink | None = None
            try:
                for sub, mode in (
                    (container.upper, 0o755),
                    (container.work, 0o700),
                    (container.rootfs, 0o755),
                ):
                    sub.mkdir(mode=mode)
                    os.chmod(sub, mode)  # the upper dir's mode is the container's "/" mode: not umasked
                mount_rootfs(container.rootfs, lowers, upper=container.upper, work=container.work)
                process = resolve_process(
                    image.config.raw, options, rootfs=container.rootfs, hostname=hostname
                )
                container = replace(container, command=process.args)
                write_bundle(container.directory, self._spec(container, process, options))
                _write_state(container)
                link = self._spawn_monitor(container, attach=attach, interactive=interactive)
                event = link.wait_for("created", timeout=_CREATE_TIMEOUT)
                if event is None:
                    raise RuntimeFailure(f"the monitor of container {container.short_id} died during create")
                container = replace(
                    container,
                    pid=event["pid"],
                    pid_start=event.get("pidStartTime"),
                    monitor_pid=event["monitorPid"],
                    monitor_start=event.get("monitorStartTime"),
                )
                _write_state(container)
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
    ) -> Container:
        """Make the container's directory and record, refusing a name in use (checked and claimed
        under one lock); `hold` receives the container's lock."""
        directory = self.root / container_id
        with _flock(self.root / ".lock"):
            if options.name is not None and any(c.name == options.name for c in self._all_records()):
                raise UsageError(
                    f"the name {options.name!r} is in use: remove that container or pick another"
                )
            directory.mkdir(mode=0o700)
            container = Container(
                id=container_id,
                directory=directory,
                name=options.name,
                image=_image_json(image),
                command=(),
                created=_now(),
                state=State.CREATED,
                runtime=options.runtime,
                hostname=hostname,
                network=options.network.value,
                limits=options.limits.to_json(),
                cgroups_path=f"{options.cgroup_parent.rstrip('/')}/{container_id}",
                auto_remove=options.auto_remove,
                captures_logs=not attach,
            )
            # The container's lock is taken before its record is visible and held until it exists in
            # the runtime, so `list` in another process knows a record without a monitor is being
            # created, not abandoned.
            hold.enter_context(_flock(directory / "lock"))
            _write_state(container)
        return container

    def _spec(self, container: Container, process: ProcessSpec, options: RunOptions) -> dict[str, Any]:
        return build_spec(
            process,
            rootfs=container.rootfs,
            hostname=container.hostname,
            network=options.network,
            limits=options.limits,
            cgroups_path=container.cgroups_path,
            etc_files=write_etc_files(container.directory, container.hostname, options.network),
            cgroup_namespace=cgroup_mode() is CgroupMode.UNIFIED,
            seccomp=options.seccomp,
            annotations={
                "dev.trust.image.repository": str(container.image.get("repository", "")),
                "dev.trust.image.digest": str(container.image.get("digest", "")),
            },
        )

    def _spawn_monitor(self, container: Container, *, attach: bool, interactive: bool) -> _MonitorLink:
        """Fork the container's monitor (see the module doc); returns our end of its event pipe.

        A double fork of this process, not a new interpreter: the monitor needs nothing that is not
        loaded already, and a fresh Python would add ~50 ms to every start. It is `multiprocessing`'s
        fork method, with the same rule: we fork while single-threaded (the unpack pool has ended).
        """
        read_end, write_end = os.pipe()
        with contextlib.ExitStack() as opened:
            # The container's stdio, set up in the monitor before it runs `runtime create`.
            stdio: list[int | None] = [None, None, None]  # None: inherited from this process
            if not interactive or not attach:
                stdio[0] = _open_fd(opened, os.devnull, os.O_RDONLY)
            if not attach:
                for index, path in ((1, container.stdout_log), (2, container.stderr_log)):
                    stdio[index] = _open_fd(opened, path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            sys.stdout.flush()
            sys.stderr.flush()  # nothing buffered may be written twice
            first = os.fork()
            if first == 0:
                _run_monitor_child(container.directory, stdio, read_end, write_end)
        os.close(write_end)  # only the monitor holds it now: EOF means it is done
        os.waitpid(first, 0)  # the first child exits at once; the monitor is re-parented
        return _MonitorLink(read_end)

    def _start(self, container: Container) -> Container:
        self.runtime(container.runtime).start(container.id)
        started = _now()
        # The process may have exited, and the monitor recorded it, already: only "created" moves on.
        try:
            current = _update(
                container.directory, frozenset({State.CREATED}), state=State.RUNNING, started=started
            )
            if current.started is None:
                current = _update(container.directory, None, started=started)
        except ContainerNotFound:  # --rm, and it is over already: its monitor removed it
            return replace(container, state=State.EXITED, started=started)
        return current

    # -- ending ----------------------------------------------------------------------------

    def _wait_exit(self, container: Container, timeout: float | None) -> bool:
        """Wait until the container's monitor is gone (it exits after cleanup); poll the runtime if
        there is no monitor. True if it is over within `timeout` seconds."""
        if _alive(container.monitor_pid, container.monitor_start):
            assert container.monitor_pid is not None
            return _wait_gone(container.monitor_pid, container.monitor_start, timeout)
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
        if current.state is State.EXITED or _alive(current.monitor_pid, current.monitor_start):
            return current
        finished = _update(
            current.directory,
            _ACTIVE,
            state=State.EXITED,
            finished=_now(),
            error="the container's monitor was gone: exit code unknown",
        )
        _teardown(finished, self.runtime(finished.runtime))
        return finished

    def _force_remove(self, container: Container) -> None:
        """Kill whatever is left, delete runtime state, unmount and remove the directory. Idempotent."""
        runtime = self.runtime(container.runtime)
        current = self._load_or(container)
        if current.state in _ACTIVE or _alive(current.monitor_pid, current.monitor_start):
            with contextlib.suppress(TrustError):
                runtime.kill(current.id, signal.SIGKILL, all_processes=True)
            if current.state is State.PAUSED:
                with contextlib.suppress(TrustError):
                    runtime.resume(current.id)
            if not self._wait_exit(current, _KILL_WAIT) and current.monitor_pid is not None:
                _kill_process(current.monitor_pid, current.monitor_start)
        if not current.directory.exists():
            return  # the monitor of an --rm container finished the job
        _teardown(current, runtime)
        _remove_directory(current.directory)

    # -- state -----------------------------------------------------------------------------

    def _refresh(self, container: Container) -> Container:
        """Bring an active record up to date with the runtime and the monitor (see module doc)."""
        if container.state is State.EXITED:
            return container
        if container.monitor_pid is None:
            if _is_locked(container.directory / "lock"):
                return container  # another process is creating it right now
            return _update(
                container.directory,
                _ACTIVE,
                state=State.EXITED,
                finished=_now(),
                error="creation did not finish",
            )
        try:
            state = self.runtime(container.runtime).state(container.id)
        except TrustError:
            return container  # the runtime cannot tell us; keep what we know
        if state is not None and state.status in ("created", "running", "paused"):
            if state.status != container.state.value:
                return _update(container.directory, _ACTIVE, state=State(state.status))
            return container
        # The runtime has no live container. Its monitor records the exit in a moment, if alive.
        if _alive(container.monitor_pid, container.monitor_start):
            _wait_gone(container.monitor_pid, container.monitor_start, 2.0)
            current = self._load(container.id)
            if current.state is State.EXITED or _alive(container.monitor_pid, container.monitor_start):
                return current
        return _update(
            container.directory,
            _ACTIVE,
            state=State.EXITED,
            finished=_now(),
            error="the container's monitor was gone: exit code unknown",
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
                entry.name
                for entry in self.root.iterdir()
                if _is_id(entry.name) and entry.name.startswith(ref)
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ContainerNotFound(f"container id prefix {ref!r} is ambiguous: give more characters")
        raise ContainerNotFound(f"no such container: {ref}")

    def _all_records(self) -> builtins.list[Container]:
        out = []
        for entry in self.root.iterdir():
            if _is_id(entry.name):
                with contextlib.suppress(ContainerNotFound):
                    out.append(self._load(entry.name))
        return out

    def _load(self, container_id: str) -> Container:
        directory = self.root / container_id
        try:
            return _read_state(directory)
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


# -- the monitor ------------------------------------------------------------------------------


def _run_monitor_child(directory: Path, stdio: list[int | None], read_end: int, write_end: int) -> NoReturn:
    """In the first child of `_spawn_monitor`: leave the session, fork the monitor, exit. Never returns."""
    code = 1
    try:
        os.setsid()  # no controlling terminal: a ^C or hang-up meant for the CLI never reaches it
        if os.fork() == 0:
            os.close(read_end)
            for target, fd in enumerate(stdio):
                if fd is not None:
                    os.dup2(fd, target)
            # Keep only stdio and the event pipe: an inherited lock or pipe would stay open (and a
            # flock held) for as long as the container runs.
            os.closerange(3, write_end)
            os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
            code = _Monitor(directory, write_end).run()
        else:
            code = 0
    finally:
        os._exit(code)  # never return into the CLI's (or a test runner's) code


class _Monitor:
    def __init__(self, directory: Path, status_fd: int) -> None:
        self.directory = directory
        self.status_fd: int | None = status_fd

    def run(self) -> int:
        # Handlers inherited from the CLI (its signal forwarding) do not apply here. ^C and hang-ups
        # are ignored; SIGTERM stays fatal (`rm -f` kills a stuck monitor with SIGKILL anyway).
        for signum in _FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            container = _read_state(self.directory)
            runtime = Runtime.for_store(self.directory.parents[1], container.runtime)
            _become_subreaper()
            return self._supervise(container, runtime)
        except Exception as exc:  # a bug here must still reach the CLI, not vanish
            self._send({"event": "error", "message": f"monitor failed: {exc!r}"})
            return 1
        finally:
            self._close()

    def _supervise(self, container: Container, runtime: Runtime) -> int:
        pid_file = self.directory / "pid"
        argv = runtime.create_argv(container.id, self.directory, pid_file, container.runtime_log)
        # stdin/stdout/stderr are inherited: they are the container's (log files or the CLI's).
        created = subprocess.run(argv, check=False)
        if created.returncode != 0:
            message = last_logged_error(container.runtime_log) or f"exit status {created.returncode}"
            self._send({"event": "error", "message": f"{runtime.name} create failed: {message}"})
            return 1
        pid = int(pid_file.read_text().strip())
        me = os.getpid()
        self._send(
            {
                "event": "created",
                "pid": pid,
                "pidStartTime": _start_time(pid),
                "monitorPid": me,
                "monitorStartTime": _start_time(me),
            }
        )
        exit_code = _wait_child(pid)
        oom = oom_killed(container.cgroups_path)  # before `delete` removes the cgroup
        with contextlib.suppress(ContainerNotFound):  # removed meanwhile (rm -f)
            container = _update(
                self.directory,
                _ACTIVE,
                state=State.EXITED,
                finished=_now(),
                exit_code=exit_code,
                oom_killed=oom,
                error=None if exit_code is not None else "the exit status could not be collected",
            )
        self._send(
            {"event": "exited", "exitCode": exit_code if exit_code is not None else 255, "oomKilled": oom}
        )
        try:
            _teardown(container, runtime)
            if container.auto_remove:
                _remove_directory(self.directory)
        except RuntimeFailure as err:  # e.g. the rootfs is busy: `trust rm -f` will try again
            with contextlib.suppress(ContainerNotFound):
                _update(self.directory, None, error=str(err))
        return exit_code if exit_code is not None else 255

    def _send(self, event: dict[str, Any]) -> None:
        if self.status_fd is None:
            return
        try:
            os.write(self.status_fd, (json.dumps(event) + "\n").encode())
        except OSError:  # a detached CLI closed its end: nobody is listening any more
            self._close()

    def _close(self) -> None:
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None


def _wait_child(pid: int) -> int | None:
    """Reap children until `pid` exits; its exit code (128+N for signal N), None if not our child."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            # Not re-parented to us (no subreaper support?): wait without an exit status.
            _wait_gone(pid, None, None)
            return None
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _become_subreaper() -> None:
    """Adopt orphaned descendants (the container's init), and show as "trust-monitor" in `ps`."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    libc.prctl(_PR_SET_NAME, b"trust-monitor", 0, 0, 0)  # cosmetic: failure does not matter


class _MonitorLink:
    """The CLI's end of the monitor's pipe: JSON events, one per line."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._buffer = b""

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event; None when the monitor closed the pipe."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if self._fd is None:
                return None
            if deadline is not None:
                ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise RuntimeFailure(f"the container monitor did not answer within {timeout:.0f} s")
            chunk = os.read(self._fd, 4096)
            if not chunk:
                self.close()
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event

    def wait_for(self, kind: str, timeout: float | None = None) -> dict[str, Any] | None:
        """Skip to the event `kind`; an `error` event raises RuntimeFailure; None at end of stream."""
        while (event := self.next(timeout)) is not None:
            if event.get("event") == "error":
                raise RuntimeFailure(str(event.get("message")))
            if event.get("event") == kind:
                return event
        return None

    def wait_closed(self) -> None:
        while self.next() is not None:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def _forward_signals(runtime: Runtime, container_id: str) -> Iterator[None]:
    """While a foreground container runs, pass the signals we get on to it (docker's sig-proxy)."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(TrustError):
            runtime.kill(container_id, signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for forwarded in _FORWARDED_SIGNALS:
            previous[forwarded] = signal.signal(forwarded, forward)
    except ValueError:  # not the main thread: signals cannot be caught here, so none are forwarded
        pass
    try:
        yield
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)


# -- teardown ---------------------------------------------------------------------------------


def _teardown(container: Container, runtime: Runtime) -> None:
    """Delete runtime state, cgroups and the rootfs mount; works when the runtime crashed or is gone.

    Raises:
        RuntimeFailure: the rootfs cannot be unmounted (the caller must keep the directory).
    """
    with contextlib.suppress(TrustError):
        runtime.delete(container.id, force=True)
    if container.pid is not None and _alive(container.pid, container.pid_start):
        # The runtime could not kill it (its state is gone?): init's death ends the pid namespace.
        _kill_process(container.pid, container.pid_start)
    shutil.rmtree(runtime.state_dir(container.id), ignore_errors=True)
    if container.cgroups_path:
        with contextlib.suppress(OSError):
            remove_cgroups(container.cgroups_path)
    try:
        unmount_rootfs(container.rootfs)
    except OSError as exc:
        raise RuntimeFailure(f"cannot unmount {container.rootfs}: {exc.strerror or exc}") from None


def _remove_directory(directory: Path) -> None:
    # rmtree descends into mount points: never start while anything is mounted below the directory.
    prefix = str(directory) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mountinfo:
        for line in mountinfo:
            point = line.split(" ")[4]
            if point.startswith(prefix) or point == str(directory):
                raise RuntimeFailure(f"refusing to remove {directory}: {point} is still mounted")

    def already_gone(
        function: object, path: str, exc_info: tuple[type[BaseException], BaseException, Any]
    ) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    # The monitor of an --rm container may be removing the same directory.
    shutil.rmtree(directory, onerror=already_gone)


def _kill_process(pid: int, start: int | None) -> None:
    """SIGKILL `pid` if it is still the process we recorded (same start time), and wait for it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if _start_time(pid) != start and start is not None:
            return  # the pid was reused by another process
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], _KILL_WAIT)
    finally:
        os.close(pidfd)


# -- processes --------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (identifies it across pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ")": split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
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


def _wait_gone(pid: int, start: int | None, timeout: float | None) -> bool:
    """Wait (without being its parent) until `pid` exits; True if it did within `timeout`."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not _alive(pid, start):
            return True
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


# -- state files ------------------------------------------------------------------------------


def _read_state(directory: Path) -> Container:
    doc = json.loads((directory / STATE_FILE).read_bytes())
    return Container.from_json(doc, directory)


def _write_state(container: Container) -> None:
    """Replace state.json atomically (rename). Callers hold the container's lock."""
    directory = container.directory
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{STATE_FILE}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(container.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, directory / STATE_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _update(directory: Path, only_from: frozenset[State] | None, **changes: Any) -> Container:
    """Change fields of state.json under its lock, if its state is still one of `only_from` (None: any).

    Compare-and-set: the monitor may record an exit between our read and our write; a stale
    "running" must never overwrite "exited". Returns the record as it is afterwards.

    Raises:
        ContainerNotFound: the container was removed meanwhile.
    """
    try:
        with _flock(directory / "lock"):
            current = _read_state(directory)
            if only_from is not None and current.state not in only_from:
                return current
            updated = replace(current, **changes)
            _write_state(updated)
            return updated
    except FileNotFoundError:
        raise ContainerNotFound(f"no such container: {directory.name} (removed)") from None


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _image_json(image: AdmittedImage) -> dict[str, Any]:
    decision = image.decision
    return {
        "repository": image.repository,
        "digest": str(image.manifest_digest),
        "configDigest": str(image.config_digest),
        "indexDigest": str(image.index_digest) if image.index_digest else None,
        "tag": image.tag,
        "decision": {
            "rule": decision.rule,
            "mode": decision.mode,
            "allowed": decision.allowed,
            "reasons": list(decision.reasons),
            "policy": decision.policy,
        },
    }


def _open_fd(stack: contextlib.ExitStack, path: str | Path, flags: int, mode: int = 0o600) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    stack.callback(os.close, fd)
    return fd


def _is_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
