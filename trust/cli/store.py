"""`trust audit | rmi | gc | prune`: check what the store holds, drop images, reclaim space.

The logic lives in `trust.store_ops.audit` (audit) and `pull.gc` (reachability, untagging, mark and sweep);
these commands parse flags, open the stores, bind progress and render results.
"""

from __future__ import annotations

import sys
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from pull.errors import TrustError, UsageError
from trust.cli.options import InsecureOption, StoreOption
from trust.cli.output import OutputFormat, emit_json, emit_line, emit_table, human_size, note

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress, TaskID

    from policy.admission import ClientFor
    from pull.digest import Digest
    from pull.gc import Closure
    from pull.inventory import ImageRow
    from pull.store import ContentStore
    from run.containers import Container, ContainerStore
    from trust.store_ops.audit import AuditReport


class AuditOutput(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


def register(app: typer.Typer) -> None:
    """Add the store commands to `app` (called once by trust/cli.py)."""
    app.command("audit")(audit)
    app.command("rmi")(rmi)
    app.command("gc")(gc)
    app.command("prune", help="Alias of `trust gc`.")(gc)


# -- trust audit -------------------------------------------------------------------------------


def audit(
    image: Annotated[
        str | None, typer.Option("--image", help="Audit only this image (tag or digest).")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file (default: $TRUST_POLICY, then STORE/policy.yaml)."),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Never contact a registry: use the signatures cached in the store."),
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Hashing threads (default: one per core).", min=1)
    ] = None,
    store: StoreOption = None,
    output: Annotated[
        AuditOutput, typer.Option("--output", "-o", help="text, json or sarif.")
    ] = AuditOutput.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Re-hash every blob and snapshot, re-verify signatures under the current policy, read the decision log.

    Exits 4 if anything was tampered with, else 3 if an image no longer passes policy, else 5 if
    something could not be checked, else 0.
    """
    from policy.admission import load
    from pull.clients import RegistryClients
    from run.rootfs import open_snapshots
    from trust.cli.common import default_store_path, open_store
    from trust.store_ops.audit import audit as run_audit

    root = (store or default_store_path()).absolute()
    if not root.exists():
        # Never make a store to audit: a mistyped path would come back "audited 0 images", clean.
        raise UsageError(f"no store at {root}: nothing to audit")
    content = open_store(store)
    if content.read_only:
        note(
            f"trust: note: the store {content.root} is read-only: auditing it as it is, without "
            "recording anything (no signature cache, no lock files)"
        )
    loaded = load(policy, content)
    snapshots = open_snapshots(content)
    bar = RichAuditProgress() if output is AuditOutput.text and sys.stderr.isatty() else None
    with RegistryClients.insecure(insecure_registry) as clients:
        report = run_audit(
            content,
            snapshots,
            loaded,
            clients=None if offline else clients,
            offline_clients=_offline_clients(content) if offline else None,
            image=image,
            workers=workers,
            progress=bar,
        )
    _render_audit(report, output)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _offline_clients(content: ContentStore) -> Callable[[str], ClientFor]:
    """Per repository, a client that reads the store's OCI layout as a registry would be read."""
    from pull.layout import LayoutClient
    from pull.registry import RegistryClient

    def for_repository(repository: str) -> ClientFor:
        client = cast(RegistryClient, LayoutClient(content.root, ref_prefix=f"{repository}:"))
        return lambda api_host: client

    return for_repository


def _render_audit(report: AuditReport, output: AuditOutput) -> None:
    if output is AuditOutput.json:
        emit_json(report.to_json())
        return
    if output is AuditOutput.sarif:
        from importlib.metadata import version

        from policy.gate import GateResult
        from trust.cli.sarif import gate_report

        results = [
            GateResult(
                f"{image.repository}@{image.digest}",
                image.exit_code,
                _summary(image),
                image.verdict.evaluation if image.verdict else None,
            )
            for image in report.images
        ]
        if report.unreferenced_blobs or report.unreferenced_files:
            what = [f"blob {t.digest}: {t.problem}" for t in report.unreferenced_blobs]
            what += [f"snapshot {t.snapshot} {t.path}: {t.problem}" for t in report.unreferenced_files]
            results.append(GateResult(report.store, 4, "unreferenced content tampered: " + "; ".join(what)))
        emit_json(gate_report(results, report.policy or report.store, version("trust")))
        return
    rows = []
    for image in report.images:
        decision = (image.last_decision or {}).get("decision") or "never"
        rows.append(
            [
                image.references[0] if image.references else image.repository,
                str(image.digest)[:19],
                image.pulled_at or "-",
                str(decision),
                image.verdict.outcome if image.verdict else "not-checked",
                "TAMPERED" if image.tampered else "ok",
            ]
        )
    emit_table(["IMAGE", "DIGEST", "PULLED", "ADMITTED", "NOW", "INTEGRITY"], rows)
    for image in report.images:
        for blob in image.tampered_blobs:
            emit_line(f"tampered: {image.repository}@{image.digest}: blob {blob.digest}: {blob.problem}")
        for file in image.tampered_files:
            where = f"snapshot {file.snapshot} file {file.path or '-'}"
            emit_line(f"tampered: {image.repository}@{image.digest}: {where}: {file.problem}")
        if image.verdict and image.verdict.outcome not in ("pass",):
            emit_line(f"policy: {image.repository}@{image.digest}: {image.verdict.message}")
        for warning in image.warnings:
            note(f"trust: warning: {image.repository}@{image.digest}: {warning}")
    for blob in report.unreferenced_blobs:
        emit_line(f"tampered: unreferenced blob {blob.digest}: {blob.problem}")
    for file in report.unreferenced_files:
        emit_line(f"tampered: unreferenced snapshot {file.snapshot} file {file.path or '-'}: {file.problem}")
    note(
        f"audited {len(report.images)} image(s): {report.blobs_checked} blobs, "
        f"{human_size(report.bytes_hashed)} re-hashed in {report.seconds:.2f} s "
        f"({report.throughput:.0f} MB/s)"
    )


def _summary(image: object) -> str:
    from trust.store_ops.audit import ImageAudit

    assert isinstance(image, ImageAudit)
    parts = [f"blob {t.digest}: {t.problem}" for t in image.tampered_blobs]
    parts += [f"snapshot {t.snapshot} file {t.path}: {t.problem}" for t in image.tampered_files]
    if image.verdict is not None and image.verdict.outcome != "pass":
        parts.append(image.verdict.message)
    return "; ".join(parts) or "intact and allowed"


class RichAuditProgress:
    """One bar over all the bytes re-hashed (stderr, terminals only)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._progress: Progress = Progress(
            TextColumn("re-hashing"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: TaskID | None = None
        self._lock = threading.Lock()

    def started(self, total_bytes: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("re-hashing", total=total_bytes)

    def advanced(self, nbytes: int) -> None:
        with self._lock:
            if self._task is not None:
                self._progress.advance(self._task, nbytes)

    def finished(self) -> None:
        self._progress.stop()


# -- trust rmi ---------------------------------------------------------------------------------


def rmi(
    reference: Annotated[str, typer.Argument(help="Image to remove: REPO:TAG or REPO@sha256:…")],
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Stop and remove the containers using the image first.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Remove an image's names from the store; `trust gc` then frees the blobs nothing else uses.

    Refuses while a container uses the image, unless --force.
    """
    from pull.gc import plan_untag
    from run.errors import ContainerStateError
    from trust.cli.common import open_store

    content = open_store(store)
    plan = plan_untag(content, reference)
    if plan.image_gone:
        containers = _containers(content)
        users = [c for c in _all_containers(containers) if _uses(c, plan.repository, plan.digests)]
        if users and not force:
            ids = ", ".join(f"{c.short_id} ({c.state})" for c in users)
            raise ContainerStateError(
                f"image {reference} is used by container(s) {ids}: remove them first, or use `trust rmi -f`"
            )
        assert containers is not None or not users
        for container in users:
            assert containers is not None
            containers.stop(container.id)
            containers.remove(container.id, force=True)
            note(f"removed container {container.short_id}")
    content.remove_refs(list(plan.names))
    for name in plan.names:
        emit_line(f"untagged: {name}")
    if plan.image_gone:
        note("run `trust gc` to free the space of blobs and snapshots nothing else uses")


def _containers(content: ContentStore) -> ContainerStore | None:
    from run.containers import CONTAINERS_DIR, ContainerStore

    if not (content.meta / CONTAINERS_DIR).is_dir():
        return None  # no container was ever created in this store
    return ContainerStore(content)


def _all_containers(containers: ContainerStore | None) -> list[Container]:
    return [] if containers is None else containers.list(all=True)


def _uses(container: Container, repository: str, digests: tuple[Digest, ...]) -> bool:
    image = container.image
    names = {str(d) for d in digests}
    return image.get("repository") == repository and bool(
        {image.get("digest"), image.get("indexDigest")} & names
    )


# -- trust gc / prune --------------------------------------------------------------------------


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed, remove nothing.")
    ] = False,
    store: StoreOption = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")] = OutputFormat.text,
) -> None:
    """Remove blobs and snapshots that no image, signature or container references (mark and sweep).

    Runs under the store's exclusive gc lock: it waits for pulls in progress, and pulls wait for it.
    """
    from pull.digest import Digest
    from pull.errors import HostFault
    from pull.gc import collect
    from run.rootfs import open_snapshots
    from run.snapshots import snapshot_chain_ids
    from trust.cli.common import open_store

    content = open_store(store)
    if content.read_only and not dry_run:
        raise HostFault(
            f"the store {content.root} is read-only: gc can remove nothing (--dry-run lists what it would)"
        )
    snapshots = open_snapshots(content)
    containers = _containers(content)

    def container_roots() -> list[Digest]:
        roots = []
        for container in _all_containers(containers):
            for key in ("digest", "indexDigest"):  # manifests: they reach the config and layers
                value = container.image.get(key)
                if isinstance(value, str):
                    roots.append(Digest.parse(value))
        return roots

    def live_snapshots(closure: Closure) -> set[Digest]:
        return {chain for config in closure.configs.values() for chain in snapshot_chain_ids(config.diff_ids)}

    report = collect(
        content,
        extra_roots=container_roots,
        snapshots=snapshots,
        live_snapshots=live_snapshots,
        dry_run=dry_run,
    )
    # Extractions left by crashed unpackers (their chain ID's lock is free) are never in use.
    stale = 0 if dry_run else snapshots.remove_stale()
    # Lock files pile up, one per blob and per chain ID ever handled; those nobody holds can go.
    locks = 0 if dry_run else content.remove_stale_locks() + snapshots.remove_stale_locks()
    # Addresses, ports and rules still held by containers that are over (a monitor killed early).
    networks = 0 if dry_run or containers is None else containers.release_networks()
    if output is OutputFormat.json:
        emit_json(
            {**report.to_json(), "staleExtractions": stale, "staleLocks": locks, "releasedNetworks": networks}
        )
        return
    if networks:
        note(f"released the network of {networks} exited container(s)")
    if stale:
        note(f"removed {stale} unfinished snapshot extraction(s) left by crashed unpacks")
    if locks:
        note(f"removed {locks} unused lock file(s)")
    verb = "would remove" if dry_run else "removed"
    for removal in report.removed:
        emit_line(f"{verb} {removal.kind} {removal.name} ({human_size(removal.size)})")
    note(
        f"{verb} {len(report.removed)} item(s), {human_size(report.freed)}; "
        f"kept {report.kept_blobs} blobs and {report.kept_snapshots} snapshots"
    )


# -- trust images ------------------------------------------------------------------------------


def with_unpacked_sizes(content: ContentStore, rows: list[ImageRow]) -> list[ImageRow]:
    """`rows` with the bytes of each image's unpacked snapshots (as recorded when they were committed)."""
    from pull.gc import reach
    from pull.records import replace
    from run.rootfs import SNAPSHOTS_DIR
    from run.snapshots import SnapshotNotFound, SnapshotStore, snapshot_chain_ids

    if not (content.meta / SNAPSHOTS_DIR).is_dir():
        return rows
    snapshots = SnapshotStore(content.meta / SNAPSHOTS_DIR)
    out = []
    for row in rows:
        total = 0
        for config in reach(content, [row.digest]).configs.values():
            for chain_id in snapshot_chain_ids(config.diff_ids):
                try:
                    total += snapshots.info(chain_id).content_size or 0
                except (SnapshotNotFound, TrustError):
                    continue
        out.append(replace(row, unpacked_size=total))
    return out
