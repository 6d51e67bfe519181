"""A container's record: `Container`, stored as state.json in the container's directory.

    container = read_state(directory)
    paused = update_state(directory, frozenset({State.RUNNING}), state=State.PAUSED)

Both the CLI and the container's monitor (run/monitor.py) change state.json, so it is replaced
atomically (write + rename), and every read-modify-write holds an flock on the directory's `lock`
file and only applies if the state is still the one expected (`update_state`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pull.durable import replace_json
from pull.records import dataclass, field, replace
from run.errors import ContainerNotFound
from run.userns import UserNamespace

if TYPE_CHECKING:
    from policy.admitted import AdmittedImage

CONTAINERS_DIR = "containers"
STATE_FILE = "state.json"
_STATE_VERSION = 1


class State(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"


ACTIVE_STATES = frozenset({State.CREATED, State.RUNNING, State.PAUSED})


USERNS_ROOT = Path("/run/trust-userns")
"""Mode 0711, as its per-container folders: traversable, not listable (see `Container.exposed`)."""


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
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: int | None = None
    """What `stop` sends first (None: SIGTERM)."""
    restart_policy: str = "no"
    """`no`, `always`, `on-failure` or `on-failure:N` (run/monitor.py restarts it)."""
    restart_count: int = 0
    stopping: bool = False
    """`stop` or `kill` asked it to end: no restart."""
    tty: bool = False
    """The process has a pseudo-terminal (`-t`): a detached one's output is its terminal's, in stdout.log."""
    open_stdin: bool = False
    """Detached with `-i` and no terminal: stdin is the FIFO `stdin` in its directory (docker's OpenStdin)."""
    user_namespace: UserNamespace | None = None
    """Its uid and gid mappings when it has a user namespace of its own (run/userns.py)."""
    mounts: tuple[Mapping[str, Any], ...] = ()
    """`-v`, `--tmpfs`, `--mount` as given (run/mounts.py `Mount.to_json`)."""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def idmapped_layers(self) -> Path:
        """Where the idmapped mounts of its snapshots go (user-namespaced containers)."""
        return self.directory / "layers"

    @property
    def stdin_fifo(self) -> Path:
        return self.directory / "stdin"

    @property
    def rootfs(self) -> Path:
        return self.exposed / "rootfs"

    @property
    def exposed(self) -> Path:
        """Where the runtime finds the rootfs and the /etc files it mounts: the container's directory,
        or for a user-namespaced one `USERNS_ROOT/<id>`, which its root (an unprivileged host user)
        can reach: the runtime mounts them from inside the namespace, and the store is private."""
        return USERNS_ROOT / self.id if self.user_namespace is not None else self.directory

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
            "labels": dict(self.labels),
            "tty": self.tty,
            "openStdin": self.open_stdin,
            "userNamespace": self.user_namespace.to_json() if self.user_namespace else None,
            "stopSignal": self.stop_signal,
            "restartPolicy": self.restart_policy,
            "restartCount": self.restart_count,
            "stopping": self.stopping,
            "mounts": [dict(m) for m in self.mounts],
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
            labels={str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
            tty=bool(doc.get("tty")),
            open_stdin=bool(doc.get("openStdin")),
            user_namespace=UserNamespace.from_json(doc.get("userNamespace")),
            stop_signal=optional_int("stopSignal"),
            restart_policy=str(doc.get("restartPolicy") or "no"),
            restart_count=int(doc.get("restartCount") or 0),
            stopping=bool(doc.get("stopping")),
            mounts=tuple(dict(m) for m in doc.get("mounts") or ()),
        )


@dataclass(frozen=True)
class Exited:
    """How a foreground container ended."""

    container_id: str
    exit_code: int
    """The process's exit status; 128+N if signal N killed it (137: SIGKILL, e.g. the OOM killer)."""
    oom_killed: bool = False
    detached: bool = False
    """The user detached (ctrl-p ctrl-q): the container goes on, `exit_code` means nothing."""


# -- state files ------------------------------------------------------------------------------


def read_state(directory: Path) -> Container:
    doc = json.loads((directory / STATE_FILE).read_bytes())
    return Container.from_json(doc, directory)


def write_state(container: Container) -> None:
    """Replace state.json atomically (rename). Callers hold the container's lock."""
    replace_json(container.directory / STATE_FILE, container.to_json())


def update_state(directory: Path, only_from: frozenset[State] | None, **changes: Any) -> Container:
    """Change fields of state.json under its lock, if its state is still one of `only_from` (None: any).

    Compare-and-set: the monitor may record an exit between our read and our write; a stale
    "running" must never overwrite "exited". Returns the record as it is afterwards.

    Raises:
        ContainerNotFound: the container was removed meanwhile.
    """
    try:
        with flock(directory / "lock"):
            current = read_state(directory)
            if only_from is not None and current.state not in only_from:
                return current
            updated = replace(current, **changes)
            write_state(updated)
            return updated
    except FileNotFoundError:
        raise ContainerNotFound(f"no such container: {directory.name} (removed)") from None


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether some process holds the flock on `path` (its creator holds a container's `lock`)."""
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


def image_json(image: AdmittedImage) -> dict[str, Any]:
    """The record's `image`: what runs, and the policy decision that admitted it."""
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


def now() -> str:
    """The current time as the record stores it: UTC, ISO 8601, milliseconds, "Z"."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
