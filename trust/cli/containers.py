"""`trust create | start | run | stop | kill | pause | unpause | rm | ps | logs | inspect`.

`register(app)` adds the commands to the `trust` app. `run` and `create` take only pinned references
(`name@sha256:…`): a tag is refused before any network call (exit 3) with the digest to pin when the
store knows one; then `policy.admission.admit_reference` decides, and only the `AdmittedImage` it
returns reaches `run/`.

Exit codes: those of DESIGN.md (2 usage, including "no such container" and "container is running";
3 denied; 4 integrity, e.g. a layer that does not match its digest; 5 could not check; 1 runtime
failure). A foreground `trust run` that got as far as starting the container exits with the
container's own exit code (128+N when signal N killed it). See docs/runtime.md.

This module is imported on every `trust` invocation: it imports nothing heavy at module level.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pull.errors import TrustError, UsageError
from trust.cli import launch
from trust.cli.launch import RuntimeChoice, container_store, signal_number
from trust.cli.options import InsecureOption, StoreOption
from trust.cli.output import OutputFormat, emit_json, emit_line, emit_table, note

if TYPE_CHECKING:
    from run.containers import Container, ContainerStore
    from run.stats import Usage


ContainersArg = Annotated[list[str], typer.Argument(help="Container ids, id prefixes or names.")]
ImageArg = Annotated[str, typer.Argument(help="Image pinned by digest: NAME@sha256:<hex>.")]
CommandArg = Annotated[
    list[str] | None,
    typer.Argument(help="Command and arguments (replace the image's Cmd).", show_default=False),
]
NameOption = Annotated[str | None, typer.Option("--name", help="A unique name for the container.")]
EnvOption = Annotated[
    list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE (or KEY: the caller's value); repeatable.")
]
WorkdirOption = Annotated[str | None, typer.Option("--workdir", "-w", help="Absolute working directory.")]
UserOption = Annotated[str | None, typer.Option("--user", "-u", help="uid[:gid] or name[:group].")]
HostnameOption = Annotated[str | None, typer.Option("--hostname", help="Default: the short container id.")]
NetworkOption = Annotated[
    str,
    typer.Option(
        "--network",
        "--net",
        help="bridge (trust0, the default), none (loopback only), host, or container:ID (share its).",
    ),
]
PublishOption = Annotated[
    list[str] | None,
    typer.Option(
        "--publish",
        "-p",
        help="[IP:]HOSTPORT:CONTAINERPORT[/tcp|udp], or CONTAINERPORT (a free host port); repeatable.",
        show_default=False,
    ),
]
DnsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--dns",
        help="A DNS server for the container's resolv.conf (repeatable; replaces the host's).",
        show_default=False,
    ),
]
DnsSearchOption = Annotated[
    list[str] | None,
    typer.Option("--dns-search", help="A DNS search domain (repeatable; `.` for none).", show_default=False),
]
DnsOptionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--dns-option", help="A resolv.conf option such as ndots:2 (repeatable).", show_default=False
    ),
]
AddHostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--add-host",
        help="NAME:IP added to /etc/hosts (repeatable; IP `host-gateway`: the host's bridge address).",
        show_default=False,
    ),
]
PublishAllOption = Annotated[
    bool,
    typer.Option("--publish-all", "-P", help="Publish every port the image exposes on a free host port."),
]
MemoryOption = Annotated[str | None, typer.Option("--memory", "-m", help="Memory limit, e.g. 64m or 1g.")]
PidsOption = Annotated[int | None, typer.Option("--pids-limit", help="Maximum number of processes.")]
CpusOption = Annotated[str | None, typer.Option("--cpus", help="CPU time, in CPUs, e.g. 0.5.")]
RuntimeOption = Annotated[RuntimeChoice, typer.Option("--runtime", help="OCI runtime.")]
RmOption = Annotated[bool, typer.Option("--rm", help="Remove the container when it exits.")]
PolicyOption = Annotated[
    Path | None,
    typer.Option("--policy", help="Policy file (default: $TRUST_POLICY, then STORE/policy.yaml)."),
]
SecurityOption = Annotated[
    list[str] | None,
    typer.Option(
        "--security-opt",
        help="seccomp=unconfined or seccomp=PROFILE.json (default: trust's default-deny profile).",
    ),
]
UsernsOption = Annotated[
    str | None,
    typer.Option(
        "--userns",
        help="host (default), or auto[:size=N]: a user namespace with a free block of host ids.",
        show_default=False,
    ),
]
UidmapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--uidmap",
        help="CONTAINERID:HOSTID:SIZE (repeatable): a user namespace with this uid mapping.",
        show_default=False,
    ),
]
GidmapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--gidmap",
        help="CONTAINERID:HOSTID:SIZE (repeatable; default: as --uidmap).",
        show_default=False,
    ),
]
EnvFileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--env-file", help="A file of KEY=VALUE lines (before --env); repeatable.", show_default=False
    ),
]
EntrypointOption = Annotated[
    str | None,
    typer.Option("--entrypoint", help="Replace the image's Entrypoint (and drop its Cmd); '' clears it."),
]
LabelOption = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="KEY=VALUE metadata; repeatable.", show_default=False),
]
VolumeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--volume",
        "-v",
        help="Bind mount /HOST/PATH:/CONTAINER/PATH[:ro|rw], or a named volume NAME:/PATH[:ro][,nocopy]; "
        "repeatable.",
        show_default=False,
    ),
]
TmpfsOption = Annotated[
    list[str] | None,
    typer.Option("--tmpfs", help="A tmpfs at PATH[:size=64m,mode=1777,…]; repeatable.", show_default=False),
]
MountOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mount",
        help="type=bind,source=/HOST,target=/CTR[,readonly], type=volume,source=NAME,target=/CTR or "
        "type=tmpfs,target=/CTR[,tmpfs-size=N]",
        show_default=False,
    ),
]
StopSignalOption = Annotated[
    str | None,
    typer.Option(
        "--stop-signal", help="Signal `stop` sends first (default: the image's StopSignal, else TERM)."
    ),
]
RestartOption = Annotated[
    str, typer.Option("--restart", help="no, always or on-failure[:N]: the monitor starts it again.")
]
InitOption = Annotated[
    bool, typer.Option("--init", help="Run tini as PID 1: it reaps zombies, passes signals on.")
]
DetachKeysOption = Annotated[
    str, typer.Option("--detach-keys", help="Keys that detach from a terminal, e.g. ctrl-a,d ('' : none).")
]
TtyOption = Annotated[
    bool, typer.Option("--tty", "-t", help="Give the process a pseudo-terminal (detached: logged).")
]
ReadOnlyOption = Annotated[bool, typer.Option("--read-only", help="Mount the root filesystem read-only.")]
PrivilegedOption = Annotated[
    bool,
    typer.Option(
        "--privileged",
        help="All capabilities, no seccomp filter, no masked paths; only if the policy rule allows it.",
    ),
]
CapAddOption = Annotated[
    list[str] | None,
    typer.Option("--cap-add", help="Add a capability (NET_ADMIN, …, ALL).", show_default=False),
]
CapDropOption = Annotated[
    list[str] | None,
    typer.Option("--cap-drop", help="Drop a capability (CHOWN, …, ALL).", show_default=False),
]
_POSITIONAL_AFTER_IMAGE = {"allow_interspersed_args": False}  # `run IMG sh -c …`: -c is the command's


def register(app: typer.Typer) -> None:
    """Add the container commands to `app` (called once by trust/cli.py)."""
    takes_a_command: tuple[Callable[..., None], ...] = (create, run, exec_)
    for function in takes_a_command:
        name = function.__name__.rstrip("_")  # exec_: a function named exec would shadow the builtin
        app.command(name, context_settings=_POSITIONAL_AFTER_IMAGE)(function)
    others: tuple[Callable[..., None], ...] = (
        start,
        stop,
        kill,
        pause,
        unpause,
        rm,
        ps,
        logs,
        inspect,
        port,
        wait,
        stats,
        top,
        cp,
        attach,
    )
    for function in others:
        app.command()(function)


# -- create and run ---------------------------------------------------------------------------


def create(
    image: ImageArg,
    command: CommandArg = None,
    tty: TtyOption = False,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Keep stdin open for `trust attach`.")
    ] = False,
    name: NameOption = None,
    env: EnvOption = None,
    env_file: EnvFileOption = None,
    workdir: WorkdirOption = None,
    user: UserOption = None,
    hostname: HostnameOption = None,
    entrypoint: EntrypointOption = None,
    label: LabelOption = None,
    network: NetworkOption = "bridge",
    publish: PublishOption = None,
    publish_all: PublishAllOption = False,
    dns: DnsOption = None,
    dns_search: DnsSearchOption = None,
    dns_option: DnsOptionOption = None,
    add_host: AddHostOption = None,
    volume: VolumeOption = None,
    tmpfs: TmpfsOption = None,
    mount: MountOption = None,
    read_only: ReadOnlyOption = False,
    privileged: PrivilegedOption = False,
    cap_add: CapAddOption = None,
    cap_drop: CapDropOption = None,
    stop_signal: StopSignalOption = None,
    init: InitOption = False,
    restart: RestartOption = "no",
    memory: MemoryOption = None,
    pids_limit: PidsOption = None,
    cpus: CpusOption = None,
    runtime: RuntimeOption = RuntimeChoice.runc,
    auto_remove: RmOption = False,
    security_opt: SecurityOption = None,
    userns: UsernsOption = None,
    uidmap: UidmapOption = None,
    gidmap: GidmapOption = None,
    policy: PolicyOption = None,
    store: StoreOption = None,
    insecure_registry: InsecureOption = None,
) -> None:
    """Admit an image and create a container from it (not started); print its id."""
    launch.create(launch.ContainerFlags(**locals()))  # locals(): exactly the parameters, by name


def run(
    image: ImageArg,
    command: CommandArg = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; print the id.")
    ] = False,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Pass stdin to the container.")
    ] = False,
    tty: TtyOption = False,
    detach_keys: DetachKeysOption = "ctrl-p,ctrl-q",
    name: NameOption = None,
    env: EnvOption = None,
    env_file: EnvFileOption = None,
    workdir: WorkdirOption = None,
    user: UserOption = None,
    hostname: HostnameOption = None,
    entrypoint: EntrypointOption = None,
    label: LabelOption = None,
    network: NetworkOption = "bridge",
    publish: PublishOption = None,
    publish_all: PublishAllOption = False,
    dns: DnsOption = None,
    dns_search: DnsSearchOption = None,
    dns_option: DnsOptionOption = None,
    add_host: AddHostOption = None,
    volume: VolumeOption = None,
    tmpfs: TmpfsOption = None,
    mount: MountOption = None,
    read_only: ReadOnlyOption = False,
    privileged: PrivilegedOption = False,
    cap_add: CapAddOption = None,
    cap_drop: CapDropOption = None,
    stop_signal: StopSignalOption = None,
    init: InitOption = False,
    restart: RestartOption = "no",
    memory: MemoryOption = None,
    pids_limit: PidsOption = None,
    cpus: CpusOption = None,
    runtime: RuntimeOption = RuntimeChoice.runc,
    auto_remove: RmOption = False,
    security_opt: SecurityOption = None,
    userns: UsernsOption = None,
    uidmap: UidmapOption = None,
    gidmap: GidmapOption = None,
    policy: PolicyOption = None,
    store: StoreOption = None,
    insecure_registry: InsecureOption = None,
) -> None:
    """Admit an image and run a container; exits with the container's exit code (unless -d)."""
    raise typer.Exit(launch.run(launch.ContainerFlags(**locals())))  # locals(): the parameters


def exec_(
    container: Annotated[str, typer.Argument(help="Container id, id prefix or name.")],
    command: Annotated[list[str], typer.Argument(help="Command and arguments.", show_default=False)],
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Pass stdin.")] = False,
    tty: TtyOption = False,
    env: EnvOption = None,
    user: UserOption = None,
    workdir: WorkdirOption = None,
    store: StoreOption = None,
) -> None:
    """Run a command in a running container (its namespaces, cgroup, seccomp filter and
    capabilities); exits with the command's exit code."""
    from run.execution import ExecOptions

    options = ExecOptions(
        command=tuple(command),
        env=tuple(env or ()),
        user=user,
        workdir=workdir,
        detach=detach,
        interactive=interactive,
        tty=tty,
    )
    raise typer.Exit(_store_containers(store, changing="exec in").exec(container, options))


def _store_containers(store: Path | None, *, changing: str | None = None) -> ContainerStore:
    """The containers of the store. `changing` (what the command does, "start", "stop", …): the
    store must be writable, checked before anything is done, so that a read-only store is one
    clear line (exit 5), not the runtime failing half-way with its own words."""
    from trust.cli.common import open_store

    content = open_store(store)
    if changing is not None and content.read_only:
        from pull.errors import HostFault

        raise HostFault(
            f"the store {content.root} is read-only: cannot {changing} its containers (their state lives "
            "there); `trust ps`, `inspect` and `logs` still read it"
        )
    return container_store(content)


# -- lifecycle of existing containers ----------------------------------------------------------


def start(containers: ContainersArg, store: StoreOption = None) -> None:
    """Start created containers (their output goes to `trust logs`)."""
    _each(containers, _store_containers(store, changing="start").start)


def stop(
    containers: ContainersArg,
    time: Annotated[
        int, typer.Option("--time", "-t", help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = 10,
    store: StoreOption = None,
) -> None:
    """Stop containers: SIGTERM, then SIGKILL after --time seconds. Their mounts are gone on return."""
    if time < 0:
        from pull.errors import UsageError

        raise UsageError("--time must be 0 or more seconds")
    found = _store_containers(store, changing="stop")
    _each(containers, lambda ref: found.stop(ref, timeout=float(time)))


def kill(
    containers: ContainersArg,
    signal_name: Annotated[str, typer.Option("--signal", "-s", help="Signal name or number.")] = "KILL",
    store: StoreOption = None,
) -> None:
    """Send a signal to running containers."""
    signum = signal_number(signal_name)
    found = _store_containers(store, changing="kill")
    _each(containers, lambda ref: found.kill(ref, signum))


def pause(containers: ContainersArg, store: StoreOption = None) -> None:
    """Freeze every process of running containers (cgroup freezer)."""
    _each(containers, _store_containers(store, changing="pause").pause)


def unpause(containers: ContainersArg, store: StoreOption = None) -> None:
    """Thaw paused containers."""
    _each(containers, _store_containers(store, changing="unpause").unpause)


def rm(
    containers: ContainersArg,
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill running containers first.")] = False,
    store: StoreOption = None,
) -> None:
    """Remove containers: runtime state, mounts, upper layer and logs. Running ones need -f."""
    found = _store_containers(store, changing="remove")
    _each(containers, lambda ref: found.remove(ref, force=force))


# -- looking at containers ---------------------------------------------------------------------


def ps(
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Include exited containers.")] = False,
    store: StoreOption = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")] = OutputFormat.text,
) -> None:
    """List containers: id, image digest, command, state, exit code, created."""
    listed = _store_containers(store).list(all=show_all)
    if output is OutputFormat.json:
        emit_json([_summary(container) for container in listed])
        return
    emit_table(
        ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAME"],
        [
            [
                c.short_id,
                _image_text(c),
                _shorten(shlex.join(c.command), 30),
                c.created[:19].replace("T", " ") or "-",
                _status(c),
                c.name or "",
            ]
            for c in listed
        ],
    )


def logs(
    container: Annotated[str, typer.Argument(help="Container id, id prefix or name.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the container exits.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Print a detached container's output (stdout to stdout, stderr to stderr)."""
    found = _store_containers(store)
    record = found.get(container)
    if not record.captures_logs:
        note(f"trust: container {record.short_id} ran in the foreground: its output was not logged")
        return
    targets = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    for stream, chunk in found.logs(container, follow=follow):
        targets[stream].write(chunk)
        targets[stream].flush()


def inspect(containers: ContainersArg, store: StoreOption = None) -> None:
    """Print containers' full records as JSON (an object for one container, a list for several)."""
    found = _store_containers(store)
    documents: list[dict[str, Any]] = []
    try:
        _each(containers, lambda ref: documents.append(found.inspect(ref)), echo=False)
    finally:
        if documents:
            emit_json(documents[0] if len(containers) == 1 else documents)


def wait(containers: ContainersArg, store: StoreOption = None) -> None:
    """Wait until containers have exited (and been cleaned up); print each one's exit code."""
    from run.errors import ContainerNotFound

    found = _store_containers(store)

    def one(ref: str) -> None:
        exited = found.wait(ref)
        if exited is None:
            raise ContainerNotFound(
                f"container {ref[:12]} was removed when it exited (--rm): its exit code is gone"
            )
        emit_line(str(exited.exit_code) if exited.exit_code is not None else "unknown")

    _each(containers, one, echo=False)


def attach(
    container: Annotated[str, typer.Argument(help="Container id, id prefix or name.")],
    no_stdin: Annotated[bool, typer.Option("--no-stdin", help="Do not pass stdin.")] = False,
    detach_keys: DetachKeysOption = "ctrl-p,ctrl-q",
    sig_proxy: Annotated[
        bool,
        typer.Option(
            "--sig-proxy/--no-sig-proxy",
            help="Without a terminal: pass signals (^C) on to the container (default); "
            "--no-sig-proxy (docker's --sig-proxy=false): ^C detaches.",
        ),
    ] = True,
    store: StoreOption = None,
) -> None:
    """Attach to a running container: its terminal (-t), or its output and, if it was started
    with -i, its stdin. ctrl-p ctrl-q detaches. Exits with the container's exit code when it ends."""
    from run.terminal import parse_detach_keys

    keys = parse_detach_keys(detach_keys)
    exited = _store_containers(store).attach(
        container, interactive=not no_stdin, detach_keys=keys, sig_proxy=sig_proxy
    )
    if not exited.detached:
        raise typer.Exit(exited.exit_code)


def cp(
    source: Annotated[str, typer.Argument(help="CONTAINER:PATH or a host path.")],
    destination: Annotated[str, typer.Argument(help="A host path or CONTAINER:PATH.")],
    store: StoreOption = None,
) -> None:
    """Copy files between a container and the host (container paths are resolved inside it)."""
    from run.filecopy import copy_in, copy_out

    src, dst = _container_side(source), _container_side(destination)
    if (src is None) == (dst is None):
        raise UsageError("cp copies between a container and the host: one side must be CONTAINER:PATH")
    found = _store_containers(store)
    if src is not None:
        copy_out(found.get(src[0]), src[1], Path(destination))
    else:
        assert dst is not None
        copy_in(found.get(dst[0]), Path(source), dst[1])


def _container_side(text: str) -> tuple[str, str] | None:
    """`CONTAINER:PATH` → (container, path); a host path (with a "/" before any ":") → None."""
    ref, sep, path = text.partition(":")
    if not sep or not ref or "/" in ref:
        return None
    return ref, path


def top(
    container: Annotated[str, typer.Argument(help="Container id, id prefix or name.")],
    store: StoreOption = None,
) -> None:
    """List the processes of a running container (host pids, from its cgroup)."""
    from run.errors import ContainerStateError
    from run.stats import processes

    record = _store_containers(store).get(container)
    if record.state.value not in ("running", "paused"):
        raise ContainerStateError(f"container {record.short_id} is {record.state.value}, not running")
    emit_table(
        ["PID", "PPID", "UID", "COMMAND"], [[str(p), str(pp), str(u), c] for p, pp, u, c in processes(record)]
    )


def stats(
    containers: Annotated[
        list[str] | None, typer.Argument(help="Containers (default: every running one).", show_default=False)
    ] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print once and exit.")] = False,
    store: StoreOption = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text or json (json: once).")
    ] = OutputFormat.text,
) -> None:
    """CPU, memory, pids and network I/O of running containers, every second (or once)."""
    import time

    from run.stats import Usage, read_sample

    found = _store_containers(store)
    records = [found.get(ref) for ref in containers] if containers else found.list()
    records = [r for r in records if r.state.value in ("running", "paused")]
    first = {r.id: read_sample(r) for r in records}
    while True:
        time.sleep(0.5 if no_stream or output is OutputFormat.json else 1.0)
        rows = []
        for record in records:
            sample = read_sample(record)
            rows.append((record, Usage.between(first[record.id], sample)))
            first[record.id] = sample
        if output is OutputFormat.json:
            emit_json([{"id": r.id, "name": r.name, **_usage_json(u)} for r, u in rows])
            return
        emit_table(
            ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS", "NET I/O"],
            [[r.short_id, r.name or "", *_usage_cells(u)] for r, u in rows],
        )
        if no_stream:
            return


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "cpuPercent": None if usage.cpu_percent is None else round(usage.cpu_percent, 2),
        "memory": usage.memory,
        "memoryLimit": usage.memory_limit,
        "pids": usage.pids,
        "rxBytes": usage.rx_bytes,
        "txBytes": usage.tx_bytes,
    }


def _usage_cells(usage: Usage) -> list[str]:
    from trust.cli.output import human_size

    def size(value: int | None) -> str:
        return "-" if value is None else human_size(value)

    cpu = "-" if usage.cpu_percent is None else f"{usage.cpu_percent:.2f}%"
    limit = "-" if usage.memory_limit is None else size(usage.memory_limit)
    net = "-" if usage.rx_bytes is None else f"{size(usage.rx_bytes)} / {size(usage.tx_bytes)}"
    return [cpu, f"{size(usage.memory)} / {limit}", "-" if usage.pids is None else str(usage.pids), net]


def port(
    container: Annotated[str, typer.Argument(help="Container id, id prefix or name.")],
    private_port: Annotated[
        str | None, typer.Argument(help="Only this container port: PORT[/tcp|udp].", show_default=False)
    ] = None,
    store: StoreOption = None,
) -> None:
    """List a container's published ports: `80/tcp -> 127.0.0.1:8080` (docker port's format)."""
    mappings = _store_containers(store).ports(container)
    if private_port is not None:
        number, _, protocol = private_port.partition("/")
        if not number.isdigit() or protocol not in ("", "tcp", "udp"):
            raise UsageError(f"invalid port {private_port!r}: use PORT or PORT/tcp|udp")
        mappings = [
            m for m in mappings if m.container_port == int(number) and m.protocol == (protocol or "tcp")
        ]
        if not mappings:
            raise UsageError(f"no public port {private_port} published for container {container}")
    for mapping in mappings:
        emit_line(str(mapping))


# -- helpers -----------------------------------------------------------------------------------


def _each(refs: list[str], action: Callable[[str], object], *, echo: bool = True) -> None:
    """Apply `action` to every container (printing each ref done, as docker does); go on after an
    error and exit with the worst error's code."""
    from trust.cli.common import error_line, exit_code_for

    worst = 0
    for ref in refs:
        try:
            action(ref)
        except TrustError as err:
            if len(refs) == 1:
                raise  # main() reports it like any other error
            note(error_line(err))
            worst = max(worst, exit_code_for(err))
            continue
        if echo:
            emit_line(ref)
    if worst:
        raise typer.Exit(worst)


def _summary(container: Container) -> dict[str, Any]:
    """One `ps --output json` entry (docs/runtime.md)."""
    return {
        "id": container.id,
        "name": container.name,
        "image": {
            "repository": container.image.get("repository"),
            "digest": container.image.get("digest"),
        },
        "command": list(container.command),
        "state": container.state.value,
        "exitCode": container.exit_code,
        "oomKilled": container.oom_killed,
        "created": container.created,
        "started": container.started,
        "finished": container.finished,
    }


def _image_text(container: Container) -> str:
    digest = str(container.image.get("digest") or "")
    return f"{container.image.get('repository', '?')}@{digest[:19]}" if digest else "-"


def _status(container: Container) -> str:
    if container.state.value != "exited":
        return container.state.value
    if container.exit_code is None:
        return "exited (unknown)"
    return f"exited ({container.exit_code}{', OOM' if container.oom_killed else ''})"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
