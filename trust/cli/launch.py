"""`trust run` and `trust create` once their flags are parsed: check the flags, admit the image,
start the container.

This module imports neither typer nor the runtime at module level. Both the typer commands
(`trust.cli.containers`) and the typer-free parser of the common case (`trust.cli.fastparse`)
build a `ContainerFlags` and call `run` or `create` here, so the two can only differ in how argv
became flags, never in what the flags do.
"""

from __future__ import annotations

import shlex
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pull.errors import DeniedError, TrustError, UsageError
from pull.records import dataclass, replace
from trust.cli.output import emit_line, note

if TYPE_CHECKING:
    from policy.admitted import AdmittedImage
    from pull.reference import Reference
    from pull.store import ContentStore
    from run.bundle import RunOptions
    from run.containers import ContainerStore


class RuntimeChoice(StrEnum):
    runc = "runc"
    crun = "crun"


@dataclass
class ContainerFlags:
    """The flags of `trust run` (and of `trust create`, which has all but `detach` and `detach_keys`)
    as typer passes them: a flag not given holds its default, a repeatable one not given None."""

    image: str
    command: list[str] | None = None
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    detach_keys: str = "ctrl-p,ctrl-q"
    name: str | None = None
    env: list[str] | None = None
    env_file: list[Path] | None = None
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    entrypoint: str | None = None
    label: list[str] | None = None
    network: str = "bridge"
    publish: list[str] | None = None
    publish_all: bool = False
    dns: list[str] | None = None
    dns_search: list[str] | None = None
    dns_option: list[str] | None = None
    add_host: list[str] | None = None
    volume: list[str] | None = None
    tmpfs: list[str] | None = None
    mount: list[str] | None = None
    read_only: bool = False
    privileged: bool = False
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    stop_signal: str | None = None
    init: bool = False
    restart: str = "no"
    memory: str | None = None
    pids_limit: int | None = None
    cpus: str | None = None
    runtime: RuntimeChoice = RuntimeChoice.runc
    auto_remove: bool = False
    security_opt: list[str] | None = None
    userns: str | None = None
    uidmap: list[str] | None = None
    gidmap: list[str] | None = None
    policy: Path | None = None
    store: Path | None = None
    insecure_registry: list[str] | None = None


def create(flags: ContainerFlags) -> None:
    """Admit the image and create a container from it (not started); print its id."""
    options = replace(_options(flags), open_stdin=flags.interactive)  # -i: `trust attach` writes stdin
    content, admitted = _admit(flags.image, flags.policy, flags.store, flags.insecure_registry)
    emit_line(container_store(content).create(admitted, options).id)


def run(flags: ContainerFlags) -> int:
    """Admit the image and run a container; the container's exit code (0 once detached)."""
    if flags.tty and not flags.detach and flags.restart != "no":
        raise UsageError("--restart with a foreground --tty is not supported: add --detach")
    from run.terminal import parse_detach_keys

    keys = parse_detach_keys(flags.detach_keys)
    options = _options(flags)
    content, admitted = _admit(flags.image, flags.policy, flags.store, flags.insecure_registry)
    containers = container_store(content)
    if flags.detach:
        # -di: stdin stays open for `trust attach` (a FIFO the monitor holds; -dit has its terminal)
        emit_line(containers.run_detached(admitted, replace(options, open_stdin=flags.interactive)).id)
        return 0
    exited = containers.run(admitted, options, interactive=flags.interactive, detach_keys=keys)
    if exited.detached:
        return 0  # ctrl-p ctrl-q: the container goes on (`trust attach` to come back)
    if exited.oom_killed:
        note(f"trust: container {exited.container_id[:12]} was killed for using more memory than its limit")
    return exited.exit_code


def _options(flags: ContainerFlags) -> RunOptions:
    """The runtime's options from the flags, every one checked before admission: a typo costs no
    network round trip."""
    from run.bundle import Limits, Network, RunOptions, parse_cpus, parse_memory
    from run.mounts import parse_mount, parse_tmpfs, parse_volume
    from run.network import HOST_GATEWAY, DnsSettings, parse_add_host, parse_publish
    from run.runtime import check_host_support
    from run.userns import userns_request

    f = flags
    mode, _, joined = f.network.partition(":")
    if mode not in {n.value for n in Network} or (mode == "container") != bool(joined):
        raise UsageError(f"invalid --network {f.network!r}: use bridge, none, host or container:ID")
    dns_settings = DnsSettings.parse(f.dns or (), f.dns_search or (), f.dns_option or ())
    extra_hosts = tuple(parse_add_host(item) for item in f.add_host or ())
    if joined and (dns_settings.any or extra_hosts):
        raise UsageError("--dns… and --add-host conflict with --network container: (its files are shared)")
    if mode != Network.BRIDGE.value and any(address == HOST_GATEWAY for _, address in extra_hosts):
        raise UsageError("--add-host NAME:host-gateway needs --network bridge (the gateway is the bridge)")
    mounts = [
        *(parse_volume(item) for item in f.volume or ()),
        *(parse_tmpfs(item) for item in f.tmpfs or ()),
        *(parse_mount(item) for item in f.mount or ()),
    ]
    options = RunOptions(
        command=tuple(f.command or ()),
        env=(*_env_files(f.env_file or []), *(f.env or ())),
        workdir=f.workdir,
        user=f.user,
        hostname=f.hostname,
        network=Network(mode),
        network_container=joined or None,
        publish=tuple(mapping for item in f.publish or () for mapping in parse_publish(item)),
        publish_all=f.publish_all,
        dns=dns_settings,
        extra_hosts=extra_hosts,
        mounts=tuple(mounts),
        read_only=f.read_only,
        privileged=f.privileged,
        cap_add=tuple(f.cap_add or ()),
        cap_drop=tuple(f.cap_drop or ()),
        entrypoint=None if f.entrypoint is None else tuple(shlex.split(f.entrypoint)),
        labels=tuple(_label(item) for item in f.label or ()),
        limits=Limits(
            memory=parse_memory(f.memory) if f.memory is not None else None,
            pids=f.pids_limit,
            cpus=parse_cpus(f.cpus) if f.cpus is not None else None,
        ),
        runtime=f.runtime.value,
        name=f.name,
        auto_remove=f.auto_remove,
        stop_signal=signal_number(f.stop_signal) if f.stop_signal is not None else None,
        init=f.init,
        restart=f.restart,
        tty=f.tty,
        userns=userns_request(f.userns, f.uidmap or (), f.gidmap or ()),
        **_security_options(f.security_opt or []),
    )
    check_host_support(options.runtime, wants_limits=options.limits.any)
    if f.init:
        from run.bundle import find_init

        find_init()  # missing: say so before admission
    return options


def _env_files(paths: list[Path]) -> list[str]:
    """`--env-file`: KEY=VALUE lines (a bare KEY takes the caller's value); blank and # lines skipped."""
    entries = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read --env-file {path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.lstrip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.partition("=")[0].strip() == "" or " " in stripped.partition("=")[0]:
                raise UsageError(f"--env-file {path}, line {number}: expected KEY=VALUE")
            entries.append(stripped)
    return entries


def _label(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key:
        raise UsageError(f"invalid --label {text!r}: expected KEY=VALUE")
    return key, value


def _security_options(security_opt: list[str]) -> dict[str, Any]:
    """`--security-opt seccomp=unconfined|PROFILE.json` (the last one wins, as in Podman) and
    `no-new-privileges[=true]` (trust's default already; turning it off is refused)."""
    from run.seccomp import profile_for

    choice: str | None = None
    for item in security_opt:
        if item.startswith("no-new-privileges"):
            if item[len("no-new-privileges") :] in ("", "=true", ":true"):
                continue
            raise UsageError(f"--security-opt {item} is refused: trust always sets no-new-privileges")
        key, sep, value = item.partition("=")
        if key != "seccomp" or not sep or not value:
            raise UsageError(
                f"unsupported --security-opt {item!r}: use seccomp=unconfined, seccomp=PROFILE.json "
                "or no-new-privileges"
            )
        choice = value
    return {"seccomp": profile_for(choice)}


def _admit(
    reference_text: str, policy: Path | None, store: Path | None, insecure: list[str] | None
) -> tuple[ContentStore, AdmittedImage]:
    from pull.reference import Reference
    from trust.cli.common import open_store, qualified

    reference_text = qualified(reference_text)
    reference = Reference.parse(reference_text)
    if reference.digest is None:
        raise DeniedError(_pin_hint(reference, store))
    # Imported only now: admission brings the registry client and the signature verifiers.
    from policy.admission import admit_reference

    content = open_store(store)
    admitted = admit_reference(
        reference_text,
        policy_path=policy,
        store=content,
        insecure_registries=tuple(insecure or ()),
        reuse=True,
    )
    if admitted.mirrors:
        note(f"trust: {admitted.pinned} served by registries.conf mirror {', '.join(admitted.mirrors)}")
    if not admitted.decision.allowed:
        reasons = "; ".join(admitted.decision.reasons) or "policy not satisfied"
        note(f"trust: audit: {admitted.pinned} runs although the policy failed (audit mode): {reasons}")
    return content, admitted


def _pin_hint(reference: Reference, store: Path | None) -> str:
    """The tag-only refusal, naming the digest to pin if the local store knows the tag (no network)."""
    from pull.store import ContentStore
    from trust.cli.common import default_store_path

    root = store or default_store_path()
    known = None
    if (root / "index.json").is_file():  # look, but do not create a store just to refuse
        try:
            known = ContentStore(root).resolve(f"{reference.name}:{reference.tag}")
        except TrustError:
            known = None
    if known is not None:
        return (
            f"tag-only reference {reference} refused: run needs a pinned digest; "
            f"use {reference.name}@{known.digest}"
        )
    return (
        f"tag-only reference {reference} refused: run needs a pinned digest "
        f"({reference.name}@sha256:…); `trust pull {reference}` prints it"
    )


exits_soon = False
"""Set by `trust.cli.console.run_here` when this process ends with its command (see ContainerStore)."""


def container_store(content: ContentStore) -> ContainerStore:
    from run.containers import ContainerStore

    return ContainerStore(content, exits_soon=exits_soon)


def signal_number(text: str) -> int:
    from run.signals import parse_signal

    number = parse_signal(text)
    if number is None:
        raise UsageError(f"unknown signal {text!r}: use a name like TERM or KILL, or a number")
    return number
