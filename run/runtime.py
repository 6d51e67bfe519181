"""Driving an OCI runtime binary (runc or crun) through its command line, plus the host's cgroup facts.

    runtime = Runtime.for_store(store.meta, "runc")     # state under STORE/meta/runtime/runc
    argv = runtime.create_argv(cid, bundle, pid_file, log_file)   # run by the container's monitor
    runtime.start(cid); runtime.state(cid); runtime.kill(cid, signal.SIGTERM)
    runtime.pause(cid); runtime.resume(cid); runtime.delete(cid, force=True)

Every command gets a dedicated `--root` under the trust store, so trust never reads or changes the
host's default runc/crun state (`/run/runc`), and `runc list --root …` shows exactly trust's containers.
A failing command raises `RuntimeFailure` with the runtime's own one-line message.

`create` is not run here but by the container's monitor process (run/monitor.py): the process that
runs `runc create` becomes the container's parent, and only a parent learns the exit status.

Cgroups: runc 1.1 applies memory/pids/CPU limits with cgroup v1, v2 and the hybrid layout (v1
controllers plus a v2 mount at /sys/fs/cgroup/unified). crun 1.x does not support the hybrid layout:
it refuses to run *any* container when the v2 hierarchy has a controller attached. On such a host every
crun command runs in a private mount namespace where /sys/fs/cgroup/unified is unmounted, so crun sees
a plain cgroup v1 host and applies limits through the v1 controllers, exactly as runc does there.
The namespace is the command's own (unshare(1)); the host's mounts are untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
from enum import StrEnum
from pathlib import Path

from pull.errors import UsageError
from pull.records import dataclass
from run.errors import ContainerStateError, RuntimeFailure

SUPPORTED_RUNTIMES = ("runc", "crun")
DEFAULT_RUNTIME = "runc"
"""runc: the runtime that applies cgroup limits on every layout, including hybrid v1/v2."""

_COMMAND_TIMEOUT = 60.0
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# runc: `time="…" level=error msg="container does not exist"`; crun: a plain line.
_LOGRUS_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
_MISSING = re.compile(r"does not exist|not exist|/status`?: No such file or directory")
_FIFO_ALREADY_REMOVED = re.compile(r"remove \S*/exec\.fifo: no such file or directory")
# "process already finished" is Go's os.ErrProcessDone: runc signalled an init that had just exited.
_NOT_RUNNING = re.compile(
    r"not running|stopped container|is stopped|container not running|process already finished|no such process"
)


class CgroupMode(StrEnum):
    UNIFIED = "unified"
    """cgroup v2 only (/sys/fs/cgroup is cgroup2)."""
    HYBRID = "hybrid"
    """v1 controllers, plus a v2 hierarchy at /sys/fs/cgroup/unified."""
    LEGACY = "legacy"
    """cgroup v1 only."""


@dataclass(frozen=True)
class RuntimeState:
    """What `runc state` reports: status is created | running | paused | stopped."""

    status: str
    pid: int


class Runtime:
    """One OCI runtime binary with its own state directory."""

    def __init__(self, name: str, root: Path, binary: str | None = None) -> None:
        if name not in SUPPORTED_RUNTIMES:
            raise UsageError(f"unknown runtime {name!r}: use one of {', '.join(SUPPORTED_RUNTIMES)}")
        self.name = name
        self.root = root
        self._binary = binary

    @classmethod
    def for_store(cls, meta: Path, name: str) -> Runtime:
        """The runtime `name` with its state under `meta/runtime/<name>` (created, mode 0700)."""
        runtime = cls(name, meta / "runtime" / name)
        runtime.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return runtime

    @property
    def binary(self) -> str:
        """The executable, looked up on first use so that cleanup works even when it is missing."""
        if self._binary is None:
            found = shutil.which(self.name) or next(
                (p for p in (f"/usr/sbin/{self.name}", f"/usr/bin/{self.name}") if os.access(p, os.X_OK)),
                None,
            )
            if found is None:
                raise UsageError(
                    f"the OCI runtime {self.name} is not installed (apt-get install {self.name})"
                )
            self._binary = found
        return self._binary

    def state_dir(self, container_id: str) -> Path:
        """Where the runtime keeps this container's state (gone after `delete`)."""
        return self.root / container_id

    # -- commands --------------------------------------------------------------------------

    def create_argv(
        self,
        container_id: str,
        bundle: Path,
        pid_file: Path,
        log_file: Path,
        *,
        start: bool = False,
        console_socket: Path | None = None,
    ) -> list[str]:
        """The `create` command line; with `start`, `run --detach`, which creates and starts in one
        runtime process (`trust run` saves a second one, ~5 ms). Without a terminal the runtime
        passes its own stdio to the container."""
        return [
            *self._base(),
            "--log",
            str(log_file),
            "--log-format",
            "json",
            *(["run", "--detach"] if start else ["create"]),
            "--bundle",
            str(bundle),
            "--pid-file",
            str(pid_file),
            *(["--console-socket", str(console_socket)] if console_socket is not None else []),
            container_id,
        ]

    def exec_argv(
        self,
        container_id: str,
        process_file: Path,
        log_file: Path,
        *,
        detach: bool = False,
        pid_file: Path | None = None,
        console_socket: Path | None = None,
    ) -> list[str]:
        """The `exec` command line: a new process in the running container, described by an OCI
        `process` object (`--process`), in its namespaces, cgroup, seccomp filter and capabilities.
        Without `detach`, the runtime waits and exits with the process's status (128+N for signal N)."""
        return [
            *self._base(),
            "--log",
            str(log_file),
            "--log-format",
            "json",
            "exec",
            "--process",
            str(process_file),
            *(["--detach"] if detach else []),
            *(["--pid-file", str(pid_file)] if pid_file is not None else []),
            # runc checks `--tty` on the command line, whatever `process.terminal` says.
            *(["--tty", "--console-socket", str(console_socket)] if console_socket is not None else []),
            container_id,
        ]

    def start(self, container_id: str) -> None:
        try:
            self._run("start", container_id)
        except RuntimeFailure as err:
            # runc removes exec.fifo only after the container has read it, i.e. after it started.
            # A short-lived container can exit, and its monitor delete the state directory, first.
            if not _FIFO_ALREADY_REMOVED.search(str(err)):
                raise

    def state(self, container_id: str) -> RuntimeState | None:
        """The runtime's view of the container, or None if it has no such container."""
        try:
            out = self._run("state", container_id)
        except RuntimeFailure as err:
            if _MISSING.search(str(err)):
                return None
            raise
        try:
            doc = json.loads(out)
            return RuntimeState(str(doc["status"]), int(doc.get("pid") or 0))
        except (ValueError, KeyError, TypeError):
            raise RuntimeFailure(
                f"{self.name} state {container_id}: unreadable output {out[:200]!r}"
            ) from None

    def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> bool:
        """Send `signal` to the container's init (or all its processes). False if it was not running."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal)]
        try:
            self._run(*args)
        except RuntimeFailure as err:
            if _NOT_RUNNING.search(str(err)) or _MISSING.search(str(err)):
                return False
            raise
        return True

    def pause(self, container_id: str) -> None:
        """Freeze the container. ContainerStateError (exit 2) if it exited or went away meanwhile."""
        self._gone_is_a_state_error("pause", container_id)

    def resume(self, container_id: str) -> None:
        """Thaw the container. ContainerStateError (exit 2) if it exited or went away meanwhile."""
        self._gone_is_a_state_error("resume", container_id)

    def _gone_is_a_state_error(self, action: str, container_id: str) -> None:
        # A container removed (`rm -f`) or exited between trust reading its state and the runtime
        # acting is the user's race, not a runtime failure: exit 2, as for any container not running.
        try:
            self._run(action, container_id)
        except RuntimeFailure as err:
            # The runtime's words for losing this race vary (a freezer file gone with the cgroup,
            # a state file half removed), so when they are not the known ones, ask it again.
            if _MISSING.search(str(err)) or _NOT_RUNNING.search(str(err)) or not self._alive(container_id):
                raise ContainerStateError(
                    f"container {container_id[:12]} is no longer running (it exited or was removed)"
                ) from None
            raise

    def _alive(self, container_id: str) -> bool:
        try:
            state = self.state(container_id)
        except RuntimeFailure:
            return False  # its state cannot even be read: it is being removed
        return state is not None and state.status in ("running", "paused", "pausing")

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove the runtime's state (and cgroup) of a container; a missing container is not an error."""
        try:
            self._run("delete", *(["--force"] if force else []), container_id)
        except RuntimeFailure as err:
            if not _MISSING.search(str(err)):
                raise

    # -- helpers ---------------------------------------------------------------------------

    def _base(self) -> list[str]:
        if self.name == "crun" and cgroup_mode() is CgroupMode.HYBRID:
            return [*_V1_VIEW, self.binary, "--root", str(self.root)]
        return [self.binary, "--root", str(self.root)]

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [*self._base(), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(
                f"{self.name} {args[0]} did not finish in {_COMMAND_TIMEOUT:.0f} s"
            ) from None
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self.binary}: {exc.strerror}") from None
        if done.returncode != 0:
            raise RuntimeFailure(f"{self.name} {' '.join(args)}: {error_message(done.stderr)}")
        return done.stdout


def error_message(output: str) -> str:
    """The runtime's error as one line: logrus' `msg="…"` (runc), JSON log lines, or the last line."""
    message = ""
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(line)
                if doc.get("level") in ("error", "fatal"):
                    message = str(doc.get("msg", ""))
                continue
        match = _LOGRUS_MSG.search(line)
        message = match.group(1).replace('\\"', '"') if match else line
    return message or "failed without a message"


def last_logged_error(log_file: Path) -> str | None:
    """The last error a runtime wrote to its `--log` file (JSON lines), if any."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return None
    message = error_message("\n".join(line for line in text.splitlines() if '"error"' in line))
    return None if message == "failed without a message" else message


# -- the host's cgroups -----------------------------------------------------------------------


def _cgroup_mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every cgroup/cgroup2 mount, from /proc/self/mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mountinfo:
        for line in mountinfo:
            fields = line.split(" ")
            # After the optional fields comes "-", then the filesystem type.
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append((fields[4], fstype))
    return mounts


_V1_VIEW = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "/bin/sh",
    "-c",
    'umount -l /sys/fs/cgroup/unified && exec "$@"',
    "crun-v1-view",
)
"""Runs the rest of the command line in a mount namespace of its own without the v2 hierarchy."""


def cgroup_mode() -> CgroupMode:
    mounts = dict(_cgroup_mounts())
    if mounts.get(str(_CGROUP_ROOT)) == "cgroup2":
        return CgroupMode.UNIFIED
    if mounts.get(str(_CGROUP_ROOT / "unified")) == "cgroup2":
        return CgroupMode.HYBRID
    return CgroupMode.LEGACY


def unified_controllers() -> list[str]:
    """Controllers attached to the v2 hierarchy of a hybrid host (crun refuses to run if any)."""
    try:
        return (_CGROUP_ROOT / "unified" / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def check_host_support(runtime: str, *, wants_limits: bool) -> None:
    """Refuse, in one actionable line, what `runtime` cannot do on this host (before anything is made).

    Raises:
        UsageError: crun on a hybrid cgroup host without unshare(1) to give it a v1-only view.
    """
    if runtime != "crun" or cgroup_mode() is not CgroupMode.HYBRID:
        return
    if shutil.which(_V1_VIEW[0]) is None:
        raise UsageError(
            "crun needs unshare(1) on this hybrid cgroup v1/v2 host (apt-get install util-linux); "
            "or use --runtime runc (the default)"
        )


def cgroup_dirs(cgroups_path: str) -> list[Path]:
    """The directories of an absolute `cgroupsPath` in every mounted cgroup hierarchy."""
    relative = cgroups_path.strip("/")
    if not cgroups_path.startswith("/") or not relative or ".." in relative.split("/"):
        return []
    return [Path(point) / relative for point, _ in _cgroup_mounts()]


def oom_killed(cgroups_path: str) -> bool:
    """Whether the kernel's OOM killer killed a process of this cgroup (read before `delete`)."""
    for directory in cgroup_dirs(cgroups_path):
        for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
            with contextlib.suppress(OSError, ValueError):
                for line in (directory / name).read_text().splitlines():
                    field, _, value = line.partition(" ")
                    if field == key and int(value) > 0:
                        return True
    return False


def remove_cgroups(cgroups_path: str) -> None:
    """Remove a container's (empty) cgroup directories that a crashed runtime left behind."""
    for directory in cgroup_dirs(cgroups_path):
        try:
            directory.rmdir()
        except OSError as exc:
            # Absent (the runtime removed it), or still has processes: not ours to force.
            if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTDIR):
                raise
