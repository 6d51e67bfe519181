"""`trust pull | images | login | logout`: bring images into the store, list them, registry logins."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from pull.records import replace
from trust.cli.output import OutputFormat, emit_json, emit_line, emit_table, human_size, note

if TYPE_CHECKING:
    pass
from trust.cli.common import open_store, pull_config, qualified
from trust.cli.options import CertDirOption, InsecureOption, OutputOption, StoreOption


def register(app: typer.Typer) -> None:
    app.command()(pull)
    app.command()(images)
    app.command()(login)
    app.command()(logout)


def pull(
    reference: Annotated[str, typer.Argument(help="Image reference, e.g. busybox:1.36 or host/app@sha256:…")],
    platform: Annotated[
        str | None, typer.Option("--platform", help="os/arch[/variant] to select from an index.")
    ] = None,
    store: StoreOption = None,
    output: OutputOption = OutputFormat.text,
    insecure_registry: InsecureOption = None,
    cert_dir: CertDirOption = None,
    allow_nondistributable_urls: Annotated[
        bool,
        typer.Option(
            "--allow-nondistributable-urls",
            help="Fetch a non-distributable layer the registry lacks from its descriptor's urls "
            "(digest and size checked as for any blob).",
        ),
    ] = False,
) -> None:
    """Pull an image (or an artifact) into the verified content store and print its digest."""
    from pull.clients import open_client
    from pull.credentials import CredentialStore
    from pull.manifest import Platform
    from pull.pipeline import ArtifactResult
    from pull.pipeline import pull_any as run_pull
    from pull.reference import Reference

    ref = Reference.parse(qualified(reference))
    wanted = Platform.parse(platform) if platform else None
    content = open_store(store)
    config = replace(
        pull_config(insecure_registry, cert_dir), allow_nondistributable_urls=allow_nondistributable_urls
    )
    with open_client(ref.api_host, config=config, credentials=CredentialStore()) as client:
        if output is OutputFormat.text and sys.stderr.isatty():
            from trust.cli.progress import RichPullProgress

            with RichPullProgress() as bars:
                result = run_pull(ref, content, client, platform=wanted, config=config, progress=bars)
        else:
            result = run_pull(ref, content, client, platform=wanted, config=config)
    if output is OutputFormat.json:
        emit_json(result.to_json())
        return
    if result.mirrors:
        note(f"served by registries.conf mirror {', '.join(result.mirrors)} (verified as {ref.registry})")
    if isinstance(result, ArtifactResult):
        note(f"pulled {ref} (artifact {result.artifact_type}, {human_size(result.size)}; not runnable)")
    else:
        note(f"pulled {ref} ({result.platform}, {human_size(result.size)})")
    emit_line(f"{ref.name}@{result.digest}")


def images(store: StoreOption = None, output: OutputOption = OutputFormat.text) -> None:
    """List the images in the store: repository, tag, digest, size on disk, last admission, pulled at."""
    from pull.inventory import list_images
    from trust.cli.store import with_unpacked_sizes

    content = open_store(store)
    rows = with_unpacked_sizes(content, list_images(content))
    if output is OutputFormat.json:
        emit_json([row.to_json() for row in rows])
        return
    emit_table(
        ["REPOSITORY", "TAG", "DIGEST", "SIZE ON DISK", "ADMITTED", "PULLED", "TYPE"],
        [
            [
                r.repository,
                r.tag or "<none>",
                str(r.digest)[:19],
                human_size(r.size_on_disk),
                r.admitted or "never",
                r.pulled_at or "-",
                r.artifact_type or "image",
            ]
            for r in rows
        ],
    )


def login(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[str, typer.Option("--username", "-u")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    insecure_registry: InsecureOption = None,
) -> None:
    """Check credentials against a registry and save them in Docker's config.json."""
    from pull.credentials import Credential, CredentialStore
    from pull.errors import UsageError
    from pull.registry import RegistryClient

    if password_stdin:
        try:
            password = sys.stdin.buffer.readline().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            # A registry would get other bytes than the ones typed; Docker's config.json is JSON.
            raise UsageError("the password on stdin is not UTF-8 text") from None
    else:
        password = typer.prompt("Password", hide_input=True)
    creds = CredentialStore()
    config = pull_config(insecure_registry)
    with RegistryClient(
        registry, config=config, credentials=CredentialStore.fixed(registry, Credential(username, password))
    ) as client:
        client.ping()
    creds.store_login(registry, username, password)
    note(f"login succeeded for {username}@{registry}")


def logout(registry: Annotated[str, typer.Argument(help="Registry host[:port].")]) -> None:
    """Remove saved credentials for a registry."""
    from pull.credentials import CredentialStore

    CredentialStore().remove_login(registry)
    note(f"removed credentials for {registry}")
