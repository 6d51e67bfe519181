"""The `trust` command line: typer commands that build results and hand them to `output`.

Every deliberate error is a `TrustError`; `main()` maps its class to an exit code in one table
(`EXIT_CODES`) and prints one line. Heavy modules (httpx, cryptography, sigstore) are imported
inside the commands that need them, so `trust --help` and `trust run` start fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pull.errors import CouldNotCheck, DeniedError, IntegrityError, TrustError, UsageError
from trust.output import OutputFormat, emit_json, emit_line, emit_table, human_size, note

if TYPE_CHECKING:
    from pull.config import PullConfig
    from pull.store import ContentStore

EXIT_CODES: list[tuple[type[TrustError], int]] = [
    (UsageError, 2),
    (DeniedError, 3),
    (IntegrityError, 4),
    (CouldNotCheck, 5),
]
"""Error class → exit code (DESIGN.md "Exit codes"). Anything not listed exits 1."""

app = typer.Typer(
    name="trust",
    help="Verified pulls, signatures, policy admission and a namespaced runtime for OCI images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        envvar="TRUST_STORE",
        help="Content store directory (default /var/lib/trust as root, else the XDG data dir).",
        show_default=False,
    ),
]
OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")]
InsecureOption = Annotated[
    list[str] | None,
    typer.Option(
        "--insecure-registry",
        help="Allow plain HTTP to this host[:port] (loopback registries are always allowed).",
    ),
]


def default_store_path() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/trust")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "trust"


def open_store(path: Path | None) -> ContentStore:
    from pull.store import ContentStore

    return ContentStore.open(path or default_store_path())


def pull_config(insecure: list[str] | None) -> PullConfig:
    from pull.config import PullConfig

    return PullConfig(insecure_registries=frozenset(insecure or ()))


@app.command()
def pull(
    reference: Annotated[str, typer.Argument(help="Image reference, e.g. busybox:1.36 or host/app@sha256:…")],
    platform: Annotated[
        str | None, typer.Option("--platform", help="os/arch[/variant] to select from an index.")
    ] = None,
    store: StoreOption = None,
    output: OutputOption = OutputFormat.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Pull an image into the verified content store and print its digest."""
    from pull.credentials import CredentialStore
    from pull.manifest import Platform
    from pull.pipeline import pull as run_pull
    from pull.reference import Reference
    from pull.registry import RegistryClient

    ref = Reference.parse(reference)
    wanted = Platform.parse(platform) if platform else None
    content = open_store(store)
    config = pull_config(insecure_registry)
    with RegistryClient(ref.api_host, config=config, credentials=CredentialStore()) as client:
        if output is OutputFormat.text and sys.stderr.isatty():
            from trust.progress import RichPullProgress

            with RichPullProgress() as bars:
                result = run_pull(ref, content, client, platform=wanted, config=config, progress=bars)
        else:
            result = run_pull(ref, content, client, platform=wanted, config=config)
    if output is OutputFormat.json:
        emit_json(result.to_json())
        return
    note(f"pulled {ref} ({result.platform}, {human_size(result.size)})")
    emit_line(f"{ref.name}@{result.digest}")


@app.command()
def images(store: StoreOption = None, output: OutputOption = OutputFormat.text) -> None:
    """List the images in the store: repository, tag, digest, size, pulled at."""
    from pull.inventory import list_images

    rows = list_images(open_store(store))
    if output is OutputFormat.json:
        emit_json([row.to_json() for row in rows])
        return
    emit_table(
        ["REPOSITORY", "TAG", "DIGEST", "SIZE", "PULLED"],
        [
            [r.repository, r.tag or "<none>", str(r.digest)[:19], human_size(r.size), r.pulled_at or "-"]
            for r in rows
        ],
    )


@app.command()
def login(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[str, typer.Option("--username", "-u")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    insecure_registry: InsecureOption = None,
) -> None:
    """Check credentials against a registry and save them in Docker's config.json."""
    from pull.credentials import Credential, CredentialStore
    from pull.registry import RegistryClient

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
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


@app.command()
def logout(registry: Annotated[str, typer.Argument(help="Registry host[:port].")]) -> None:
    """Remove saved credentials for a registry."""
    from pull.credentials import CredentialStore

    CredentialStore().remove_login(registry)
    note(f"removed credentials for {registry}")


def exit_code_for(error: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return 1


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and map errors to exit codes."""
    try:
        result = app(args=argv, standalone_mode=False)
    except TrustError as err:
        note(f"trust: error: {err}")
        if os.environ.get("TRUST_DEBUG"):
            raise
        return exit_code_for(err)
    except typer.Abort:
        note("trust: aborted")
        return 1
    except typer.TyperException as err:  # bad flags and arguments: exit_code 2
        err.show()
        return int(getattr(err, "exit_code", 2))
    except typer.Exit as err:
        return int(err.exit_code)
    except KeyboardInterrupt:
        note("trust: interrupted")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
