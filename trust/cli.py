"""The `trust` command line: typer commands that build results and hand them to `output`.

Every deliberate error is a `TrustError`; `main()` maps its class to an exit code in one table
(`EXIT_CODES`) and prints one line. Heavy modules (httpx, cryptography, sigstore) are imported
inside the commands that need them, so `trust --help` and `trust run` start fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from pull.errors import CouldNotCheck, DeniedError, IntegrityError, TrustError, UsageError
from trust.output import OutputFormat, emit_json, emit_line, emit_table, human_size, note

if TYPE_CHECKING:
    from pull.config import PullConfig
    from pull.store import ContentStore
    from trust.keys import Signer

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
    rich_markup_mode=None,  # plain click help: rich's markdown renderer costs 0.1 s per start
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


class GateOutput(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


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
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
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


@app.command()
def keygen(
    output_prefix: Annotated[
        str, typer.Option("--output-prefix", help="Write PREFIX.key and PREFIX.pub.")
    ] = "cosign",
) -> None:
    """Generate a cosign-compatible key pair (ECDSA P-256, encrypted with scrypt + secretbox)."""
    from trust.keys import generate_keypair, get_password, write_keypair

    password = get_password(confirm=True, purpose="the new private key")
    private_pem, public_pem = generate_keypair(password)
    key_path, pub_path = write_keypair(Path(output_prefix), private_pem, public_pem)
    note(f"private key written to {key_path}")
    note(f"public key written to {pub_path}")


@app.command()
def sign(
    reference: Annotated[str, typer.Argument(help="Image to sign; a tag is resolved to its digest first.")],
    key: Annotated[
        str, typer.Option("--key", help="cosign key file, PEM key, or securesystemslib signer URI.")
    ],
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Public key PEM (required with a signer URI).")
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", "-a", help="key=value added to the payload's optional."),
    ] = None,
    signature_repository: Annotated[
        str | None,
        typer.Option("--signature-repository", help="Store signatures in this repository instead."),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="For an index, sign each manifest too.")
    ] = False,
    output: OutputOption = OutputFormat.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Sign an image digest with a cosign simple-signing signature (pushed as the sha256-<hex>.sig tag)."""
    from pull.clients import RegistryClients
    from pull.reference import Reference
    from trust.signing import sign_image

    ref = Reference.parse(reference)
    annotations = _parse_annotations(annotation or [])
    signer = _load_signer(key, public_key)
    with RegistryClients.insecure(insecure_registry) as clients:
        results = sign_image(
            clients,
            ref,
            signer,
            annotations=annotations,
            signature_repository=signature_repository,
            recursive=recursive,
        )
    if output is OutputFormat.json:
        emit_json([result.to_json() for result in results])
        return
    for result in results:
        state = "signed" if result.added else "already signed by this key"
        note(f"{state}: {ref.name}@{result.digest} -> {result.location}")
        emit_line(f"{ref.name}@{result.digest}")


@app.command()
def verify(
    references: Annotated[list[str], typer.Argument(help="Images to verify.")],
    key: Annotated[
        list[Path] | None, typer.Option("--key", help="Trusted cosign public key (repeatable).")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Decide with a policy file instead of --key (the CI gate)."),
    ] = None,
    rekor_key: Annotated[
        list[Path] | None, typer.Option("--rekor-key", help="Rekor public key: require a valid SET.")
    ] = None,
    ignore_reference: Annotated[
        bool,
        typer.Option("--ignore-reference", help="Accept signatures naming another repository (mirrors)."),
    ] = False,
    signature_repository: Annotated[
        str | None, typer.Option("--signature-repository", help="Where the signatures are stored.")
    ] = None,
    platform: Annotated[
        str | None, typer.Option("--platform", help="os/arch[/variant] for an index.")
    ] = None,
    store: StoreOption = None,
    output: Annotated[
        GateOutput, typer.Option("--output", "-o", help="text, json or sarif.")
    ] = GateOutput.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Verify signatures on image digests: with --key (cosign keys) or --policy (a policy file).

    Exits with the worst outcome over all references: 3 denied, 4 integrity failure, 5 could not check.
    """
    if (policy is None) == (not key):
        raise UsageError("give either --key (one or more public keys) or --policy FILE")
    if policy is not None:
        if rekor_key or ignore_reference or signature_repository:
            raise UsageError(
                "--rekor-key, --ignore-reference and --signature-repository belong in the policy file"
            )
        _verify_with_policy(references, policy, platform, store, output, insecure_registry)
        return
    if output is GateOutput.sarif:
        raise UsageError("--output sarif needs --policy")
    assert key is not None
    _verify_with_keys(
        references, key, rekor_key, ignore_reference, signature_repository, output, insecure_registry
    )


def _verify_with_policy(
    references: list[str],
    policy_path: Path,
    platform: str | None,
    store: Path | None,
    output: GateOutput,
    insecure: list[str] | None,
) -> None:
    from importlib.metadata import version

    from policy.gate import run_gate, worst_exit_code
    from policy.loader import load_policy
    from pull.clients import RegistryClients
    from pull.manifest import Platform
    from pull.reference import Reference

    policy = load_policy(policy_path)
    wanted = Platform.parse(platform) if platform else None
    content = open_store(store)
    with RegistryClients.insecure(insecure) as clients:
        results = run_gate(references, policy, content, clients, platform=wanted)
    for result in results:
        if result.evaluation is not None:
            for warning in result.evaluation.warnings:
                note(f"trust: warning: {result.reference}: {warning}")
        if result.exit_code:
            note(f"trust: error: {result.reference}: {result.message}")
        elif result.evaluation is not None and not result.evaluation.passed:
            note(f"trust: audit: {result.reference}: {result.message}")
        elif output is GateOutput.text:
            note(f"allowed {result.reference}: {result.message}")
    if output is GateOutput.json:
        emit_json([result.to_json() for result in results])
    elif output is GateOutput.sarif:
        from trust.sarif import gate_report

        emit_json(gate_report(results, str(policy_path), version("trust")))
    else:
        for result in results:
            if result.exit_code == 0 and result.evaluation is not None and result.evaluation.digest:
                emit_line(f"{Reference.parse(result.reference).name}@{result.evaluation.digest}")
    worst = worst_exit_code(results)
    if worst:
        raise typer.Exit(worst)


def _verify_with_keys(
    references: list[str],
    key: list[Path],
    rekor_key: list[Path] | None,
    ignore_reference: bool,
    signature_repository: str | None,
    output: GateOutput,
    insecure_registry: list[str] | None,
) -> None:
    from pull.clients import RegistryClients
    from pull.reference import Reference
    from trust.cosign import require_verified
    from trust.keys import TrustedKey, load_public_key_file
    from trust.signing import verify_image

    refs = [Reference.parse(text) for text in references]
    keys = [TrustedKey.from_file(path) for path in key]
    rekor = [load_public_key_file(path) for path in rekor_key] if rekor_key else None
    records: list[dict[str, object]] = []
    worst = 0
    with RegistryClients.insecure(insecure_registry) as clients:
        for ref in refs:
            result = None
            try:
                result = verify_image(
                    clients,
                    ref,
                    keys,
                    rekor_keys=rekor,
                    ignore_reference=ignore_reference,
                    signature_repository=signature_repository,
                )
                valid = require_verified(result.outcomes, result.subject)
                records.append(result.to_json())
                if output is GateOutput.text:
                    signers = ", ".join(sorted({outcome.key or "?" for outcome in valid}))
                    note(f"verified {result.subject}: signed by {signers}")
                    emit_line(result.subject)
            except TrustError as err:
                code = exit_code_for(err)
                worst = max(worst, code)
                note(f"trust: error: {err}")
                base = result.to_json() if result else {"reference": str(ref), "verified": False}
                records.append({**base, "error": str(err), "exitCode": code})
    if output is GateOutput.json:
        emit_json(records if len(refs) > 1 else records[0])
    if worst:
        raise typer.Exit(worst)


def _parse_annotations(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"annotation {item!r} must be key=value")
        out[name] = value
    return out


def _load_signer(key: str, public_key: Path | None) -> Signer:
    import re

    from trust.keys import KeySigner, get_password, load_private_key_file, signer_from_uri

    if Path(key).exists():
        return KeySigner(load_private_key_file(key, lambda: get_password(confirm=False, purpose=key)))
    if re.match(r"^[a-z][a-z0-9+]*:", key):
        if public_key is None:
            raise UsageError(f"signer URI {key} needs --public-key PEM")
        try:
            pem = public_key.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read public key {public_key}: {exc.strerror}") from None
        return signer_from_uri(key, pem)
    raise UsageError(f"key file {key} does not exist")


def _register_subcommands() -> None:
    from trust import policy_cli

    policy_cli.register(app)
    try:
        container_cli = importlib.import_module("trust.container_cli")
    except ImportError:  # the runtime commands are optional while they are being built
        return
    container_cli.register(app)


_register_subcommands()


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
        cast(Any, err).show()
        return int(getattr(err, "exit_code", 2))
    except typer.Exit as err:
        return int(err.exit_code)
    except KeyboardInterrupt:
        note("trust: interrupted")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
