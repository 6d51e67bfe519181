"""`trust keygen | sign | verify | verify-blob`: make keys, sign image digests, check signatures.

`verify --policy` is the CI gate (text, JSON or SARIF); `verify --key` and the keyless flags check
one authority without a policy file. The formats live in the signature families (`trust.cosign`,
`trust.sigstore`, `trust.notation`); these commands parse flags and render results.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pull.errors import TrustError, UsageError
from pull.userfile import open_regular_file
from trust.cli.output import OutputFormat, emit_json, emit_line, note

if TYPE_CHECKING:
    from policy.model import KeylessAuthority
    from pull.reference import Reference
    from trust.keys.keyfiles import Signer
    from trust.sigstore.services import Instance
from trust.cli.common import (
    error_line,
    exit_code_for,
    load_signer,
    open_store,
    qualified,
    sigstore_instance,
    tlog_upload_flag,
    write_file,
)
from trust.cli.options import (
    CertificateIdentityOption,
    CertificateIdentityRegexpOption,
    CertificateIssuerOption,
    CertificateIssuerRegexpOption,
    FulcioUrlOption,
    GateOutput,
    GithubNameOption,
    GithubRefOption,
    GithubRepositoryOption,
    GithubShaOption,
    GithubTriggerOption,
    InsecureOption,
    OidcIssuerOption,
    OutputOption,
    RekorUrlOption,
    SignatureFormat,
    StoreOption,
    TimestampServerOption,
    TlogUploadOption,
    TrustConfigOption,
    TrustedRootOption,
)


def register(app: typer.Typer) -> None:
    app.command()(keygen)
    app.command("public-key")(public_key_command)
    app.command()(sign)
    app.command()(verify)
    app.command("verify-blob")(verify_blob)
    app.command("sign-blob")(sign_blob)


def keygen(
    output_prefix: Annotated[
        str, typer.Option("--output-prefix", help="Write PREFIX.key and PREFIX.pub.")
    ] = "cosign",
    pkcs11: Annotated[
        str | None,
        typer.Option(
            "--pkcs11",
            help="Create the key pair on a PKCS#11 token instead (pkcs11:token=…;object=…?module-path=…) "
            "and print its public key.",
        ),
    ] = None,
) -> None:
    """Generate a cosign-compatible key pair (ECDSA P-256, encrypted with scrypt + secretbox), or
    one on a PKCS#11 token (--pkcs11 URI; the private key never leaves the token)."""
    from trust.keys.keyfiles import generate_keypair, get_password, public_key_pem, write_keypair

    if pkcs11 is not None:
        from trust.keys.pkcs11 import generate_key

        public = generate_key(pkcs11)
        note(f"key pair created on the token: {pkcs11.split('?', 1)[0]}")
        sys.stdout.write(public_key_pem(public).decode())
        return

    password = get_password(confirm=True, purpose="the new private key")
    private_pem, public_pem = generate_keypair(password)
    key_path, pub_path = write_keypair(Path(output_prefix), private_pem, public_pem)
    note(f"private key written to {key_path}")
    note(f"public key written to {pub_path}")


def public_key_command(
    key: Annotated[
        str,
        typer.Option(
            "--key", help="A key file, env://VAR, pkcs11:… or awskms://… (the public half is printed)."
        ),
    ],
    outfile: Annotated[
        Path | None, typer.Option("--outfile", help="Write the PEM here instead of stdout.")
    ] = None,
) -> None:
    """Print the public key (PEM) of a key reference, as `cosign public-key` does."""
    from trust.keys.keyfiles import public_key_pem
    from trust.keys.references import public_key_for

    pem = public_key_pem(public_key_for(key))
    if outfile is None:
        sys.stdout.write(pem.decode())
        return
    write_file(outfile, pem)
    note(f"public key written to {outfile}")


def sign(
    reference: Annotated[str, typer.Argument(help="Image to sign; a tag is resolved to its digest first.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Key file (cosign or PEM), env://VAR, pkcs11:…, awskms://…, or a securesystemslib URI.",
        ),
    ] = None,
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
    signature_format: Annotated[
        SignatureFormat,
        typer.Option("--format", help="cosign (the .sig tag) or notation (a JWS referrer, needs --cert)."),
    ] = SignatureFormat.cosign,
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            help="Notation: PEM chain, signing certificate first, root last. cosign: the key's certificate.",
        ),
    ] = None,
    cert_chain: Annotated[
        Path | None,
        typer.Option("--cert-chain", help="cosign: PEM chain of the certificate's issuers, root last."),
    ] = None,
    keyless: Annotated[
        bool,
        typer.Option("--keyless", help="Sigstore keyless: OIDC identity, Fulcio cert, Rekor (online)."),
    ] = False,
    identity_token: Annotated[
        str | None,
        typer.Option("--identity-token", help="Keyless: an OIDC token (default: ambient CI credentials)."),
    ] = None,
    expiry: Annotated[
        str | None,
        typer.Option("--expiry", help="Notation: the signature expires after this long (24h, 90m, 30d)."),
    ] = None,
    timestamp_url: Annotated[
        str | None,
        typer.Option("--timestamp-url", help="Notation: RFC 3161 timestamp authority to countersign with."),
    ] = None,
    timestamp_root_cert: Annotated[
        Path | None,
        typer.Option("--timestamp-root-cert", help="Notation: the TSA's root certificate (PEM) to check it."),
    ] = None,
    tlog_upload: TlogUploadOption = "true",
    timestamp_server_url: TimestampServerOption = None,
    trust_config: TrustConfigOption = None,
    fulcio_url: FulcioUrlOption = None,
    rekor_url: RekorUrlOption = None,
    oidc_issuer: OidcIssuerOption = None,
    trusted_root: TrustedRootOption = None,
) -> None:
    """Sign an image digest: cosign, keyless Sigstore (--keyless) or Notary Project (--format notation).

    cosign with --key: a simple-signing signature on the sha256-<hex>.sig tag and cosign v3's
    Sigstore bundle as an OCI referrer, both logged in Rekor (--tlog-upload=false: not logged).
    --keyless: a Sigstore bundle (Fulcio certificate, Rekor entry) pushed as an OCI referrer.
    --format notation --key --cert: a JWS signature with its X.509 chain, pushed as an OCI referrer.
    The Sigstore instance: public good, or --trust-config FILE, or --fulcio-url/--rekor-url/--oidc-issuer."""
    from pull.clients import RegistryClients
    from pull.reference import Reference
    from trust.cosign.signing import sign_image

    ref = Reference.parse(qualified(reference))
    instance = sigstore_instance(
        trust_config, fulcio_url, rekor_url, oidc_issuer, timestamp_server_url, trusted_root
    )
    upload = tlog_upload_flag(tlog_upload)
    sigstore_flags = instance.overridden or trust_config is not None or trusted_root is not None
    if keyless:
        if (
            key
            or public_key
            or annotation
            or signature_repository
            or recursive
            or cert
            or expiry
            or timestamp_url
        ):
            raise UsageError(
                "--keyless attaches a Sigstore bundle: it takes no --key, --public-key, --annotation, "
                "--signature-repository, --recursive, --cert or --expiry"
            )
        if signature_format is not SignatureFormat.cosign:
            raise UsageError("--keyless signs in the cosign (Sigstore bundle) format")
        if not upload:
            raise UsageError(
                "--keyless always logs to Rekor: its certificate is only good with the log's time"
            )
        _sign_keyless(ref, identity_token, output, insecure_registry, instance)
        return
    if identity_token is not None:
        raise UsageError("--identity-token belongs to --keyless")
    if fulcio_url is not None or oidc_issuer is not None:
        raise UsageError("--fulcio-url and --oidc-issuer belong to --keyless")
    if key is None:
        raise UsageError("give --key (a key file, PEM key or signer URI), or --keyless")
    if signature_format is SignatureFormat.notation:
        if sigstore_flags or timestamp_server_url is not None:
            raise UsageError(
                "--trust-config, --rekor-url, --trusted-root and --timestamp-server-url are Sigstore "
                "options; "
                "Notation takes --timestamp-url"
            )
        if public_key or annotation or signature_repository or recursive:
            raise UsageError(
                "--public-key, --annotation, --signature-repository and --recursive are cosign options"
            )
        if cert is None:
            raise UsageError("--format notation needs --cert CHAIN.pem (signing certificate first)")
        if cert_chain is not None:
            raise UsageError("--cert-chain is for cosign: Notation's --cert holds the whole chain")
        _sign_notation(ref, key, cert, expiry, output, insecure_registry, timestamp_url, timestamp_root_cert)
        return
    if expiry is not None:
        raise UsageError("--expiry belongs to --format notation")
    if timestamp_url is not None or timestamp_root_cert is not None:
        raise UsageError("--timestamp-url and --timestamp-root-cert belong to --format notation")
    if cert_chain is not None and cert is None:
        raise UsageError("--cert-chain needs --cert (the signing key's certificate)")
    annotations = _parse_annotations(annotation or [])
    log = instance.key_signing_log(upload)
    if log is not None and log.major_version == 2 and signature_repository is not None:
        raise UsageError(
            "a Rekor v2 entry travels in the Sigstore bundle referrer, which --signature-repository "
            "does not write: drop it, or use --tlog-upload=false or a Rekor v1 log (--rekor-url)"
        )
    signer = load_signer(key, public_key)
    certificate, chain = _cosign_certificate(cert, cert_chain, signer) if cert is not None else (None, None)
    with RegistryClients.insecure(insecure_registry) as clients:
        results = sign_image(
            clients,
            ref,
            signer,
            annotations=annotations,
            signature_repository=signature_repository,
            recursive=recursive,
            certificate=certificate,
            chain=chain,
            log=log,
            timestamp_url=instance.timestamp_authority(),
            bundle_referrer=signature_repository is None,  # referrers live beside the image
        )
    if output is OutputFormat.json:
        emit_json([result.to_json() for result in results])
        return
    for result in results:
        state = "signed" if result.added else "already signed by this key"
        note(f"{state}: {ref.name}@{result.digest} -> {result.location}")
        emit_line(f"{ref.name}@{result.digest}")


def _sign_notation(
    ref: Reference,
    key: str,
    cert: Path,
    expiry: str | None,
    output: OutputFormat,
    insecure_registry: list[str] | None,
    timestamp_url: str | None,
    timestamp_root: Path | None,
) -> None:
    from pull.clients import RegistryClients
    from trust.notation.signatures import parse_expiry, sign_notation_with_files

    lifetime = parse_expiry(expiry) if expiry is not None else None
    with RegistryClients.insecure(insecure_registry) as clients:
        signed = sign_notation_with_files(
            clients,
            ref,
            key,
            cert,
            expiry=lifetime,
            timestamp_url=timestamp_url,
            timestamp_root=timestamp_root,
        )
    if output is OutputFormat.json:
        emit_json([signed.to_json()])
        return
    note(f"signed (notation): {ref.name}@{signed.digest} -> {signed.repository}@{signed.signature_digest}")
    emit_line(f"{ref.name}@{signed.digest}")


def _sign_keyless(
    ref: Reference,
    identity_token: str | None,
    output: OutputFormat,
    insecure_registry: list[str] | None,
    instance: Instance,
) -> None:
    from pull.clients import RegistryClients
    from trust.sigstore.sign import obtain_identity_token, sign_image_keyless

    # The token comes first: without one nothing is resolved, signed or pushed (exit 5).
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    token = obtain_identity_token(identity_token, interactive=interactive, instance=instance)
    with RegistryClients.insecure(insecure_registry) as clients:
        result = sign_image_keyless(clients, ref, token, instance)
    if output is OutputFormat.json:
        emit_json([result.to_json()])
        return
    note(f"signed (keyless, {result.identity}): {ref.name}@{result.digest} -> referrer {result.referrer}")
    emit_line(f"{ref.name}@{result.digest}")


def verify(
    references: Annotated[list[str], typer.Argument(help="Images to verify.")],
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            help="Trusted cosign public key: a PEM file, env://VAR, pkcs11:… or awskms://… (repeatable).",
        ),
    ] = None,
    pull: Annotated[
        bool,
        typer.Option(
            "--pull",
            help="--policy: pull each image into the store (layers included) before deciding, as run does.",
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Check revocation from STORE/cache/crl only, never the network (stale: exit 5).",
        ),
    ] = False,
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
    certificate_identity: CertificateIdentityOption = None,
    certificate_identity_regexp: CertificateIdentityRegexpOption = None,
    certificate_oidc_issuer: CertificateIssuerOption = None,
    certificate_oidc_issuer_regexp: CertificateIssuerRegexpOption = None,
    github_workflow_repository: GithubRepositoryOption = None,
    github_workflow_ref: GithubRefOption = None,
    github_workflow_name: GithubNameOption = None,
    github_workflow_trigger: GithubTriggerOption = None,
    github_workflow_sha: GithubShaOption = None,
    trusted_root: TrustedRootOption = None,
) -> None:
    """Verify signatures on image digests: with --key (cosign keys), --policy (a policy file), or
    keyless with --certificate-identity[-regexp] and --certificate-oidc-issuer[-regexp].

    Exits with the worst outcome over all references: 3 denied, 4 integrity failure, 5 could not check.
    """
    from trust.cli.keyless import IdentityFlags, keyless_authority

    flags = IdentityFlags(
        certificate_identity,
        certificate_identity_regexp,
        certificate_oidc_issuer,
        certificate_oidc_issuer_regexp,
        github_workflow_repository,
        github_workflow_ref,
        github_workflow_name,
        github_workflow_trigger,
        github_workflow_sha,
    )
    keyless = flags.given or (trusted_root is not None and not key)
    if [bool(key), policy is not None, keyless].count(True) != 1:
        raise UsageError(
            "give one of --key (public keys), --policy FILE, or --certificate-identity with "
            "--certificate-oidc-issuer (keyless)"
        )
    if keyless:
        if rekor_key:
            raise UsageError("--rekor-key is for --key; keyless signatures use the trusted root's Rekor keys")
        if output is GateOutput.sarif:
            raise UsageError("--output sarif needs --policy")
        authority = keyless_authority(flags, trusted_root)
        _verify_with_keys(
            references, [], None, ignore_reference, signature_repository, output, insecure_registry, authority
        )
        return
    if policy is not None:
        if rekor_key or ignore_reference or signature_repository:
            raise UsageError(
                "--rekor-key, --ignore-reference and --signature-repository belong in the policy file"
            )
        _verify_with_policy(references, policy, platform, store, output, insecure_registry, offline, pull)
        return
    if offline:
        raise UsageError("--offline is for --policy (it concerns the revocation of Notation certificates)")
    if pull:
        raise UsageError("--pull is for --policy (the gate)")
    if output is GateOutput.sarif:
        raise UsageError("--output sarif needs --policy")
    assert key is not None
    if trusted_root is not None and rekor_key:
        raise UsageError("give --trusted-root (its Rekor logs) or --rekor-key, not both")
    _verify_with_keys(
        references,
        key,
        rekor_key,
        ignore_reference,
        signature_repository,
        output,
        insecure_registry,
        trusted_root=trusted_root,
    )


def verify_blob(
    artifact: Annotated[Path, typer.Argument(help="The file that was signed.")],
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Sigstore bundle over the file (v0.1 to v0.3, message signature or DSSE statement "
            "naming the file), or cosign's older --bundle JSON (base64Signature, cert, rekorBundle).",
        ),
    ] = None,
    signature: Annotated[
        Path | None,
        typer.Option("--signature", help="A detached signature (base64, as cosign writes it) instead."),
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option("--certificate", help="Keyless with --signature: the Fulcio certificate (PEM)."),
    ] = None,
    rfc3161_timestamp: Annotated[
        Path | None,
        typer.Option(
            "--rfc3161-timestamp", help="Keyless with --signature: cosign's RFC 3161 timestamp JSON."
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="Trusted public key (instead of keyless); with --trusted-root the log is checked."
        ),
    ] = None,
    certificate_identity: CertificateIdentityOption = None,
    certificate_identity_regexp: CertificateIdentityRegexpOption = None,
    certificate_oidc_issuer: CertificateIssuerOption = None,
    certificate_oidc_issuer_regexp: CertificateIssuerRegexpOption = None,
    github_workflow_repository: GithubRepositoryOption = None,
    github_workflow_ref: GithubRefOption = None,
    github_workflow_name: GithubNameOption = None,
    github_workflow_trigger: GithubTriggerOption = None,
    github_workflow_sha: GithubShaOption = None,
    trusted_root: TrustedRootOption = None,
    output: OutputOption = OutputFormat.text,
) -> None:
    """Verify a signature over a file that is not an image: with --key PUB, or keyless with
    --certificate-identity[-regexp] and --certificate-oidc-issuer[-regexp]. Exit 3 if it does not verify."""
    from trust.cli.keyless import BlobNotVerified, IdentityFlags, keyless_authority
    from trust.cli.keyless import verify_blob as check_blob

    flags = IdentityFlags(
        certificate_identity,
        certificate_identity_regexp,
        certificate_oidc_issuer,
        certificate_oidc_issuer_regexp,
        github_workflow_repository,
        github_workflow_ref,
        github_workflow_name,
        github_workflow_trigger,
        github_workflow_sha,
    )
    keyless = flags.given or (trusted_root is not None and key is None)
    if (key is not None) == keyless:
        raise UsageError("give either --key PUB or --certificate-identity with --certificate-oidc-issuer")
    if trusted_root is not None and not trusted_root.is_file():
        raise UsageError(f"trusted root {trusted_root} is not a file")
    authority = keyless_authority(flags, trusted_root) if keyless else None
    record: dict[str, object] = {"artifact": str(artifact), "bundle": str(bundle or signature)}
    try:
        outcome = check_blob(
            artifact,
            bundle=bundle,
            signature=signature,
            certificate=certificate,
            timestamp=rfc3161_timestamp,
            key=key,
            authority=authority,
            trusted_root=trusted_root if key is not None else None,
        )
    except BlobNotVerified as err:
        if output is OutputFormat.json:
            emit_json({**record, "verified": False, "signature": err.outcome.to_json()})
        raise
    if output is OutputFormat.json:
        emit_json({**record, "verified": True, "signature": outcome.to_json()})
    else:
        note(f"verified {artifact}: {outcome.detail}")


def _verify_with_policy(
    references: list[str],
    policy_path: Path,
    platform: str | None,
    store: Path | None,
    output: GateOutput,
    insecure: list[str] | None,
    offline: bool = False,
    pull: bool = False,
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
    revocation: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if any(authority.kind == "notation" for authority in policy.authorities.values()):
        from trust.notation.revocation_settings import configured

        revocation = configured(cache_dir=content.root / "cache" / "crl", offline=offline)
    with revocation, RegistryClients.insecure(insecure) as clients:
        results = run_gate(references, policy, content, clients, platform=wanted, pull=pull)
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
        from trust.cli.sarif import gate_report

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
    key: list[str],
    rekor_key: list[Path] | None,
    ignore_reference: bool,
    signature_repository: str | None,
    output: GateOutput,
    insecure_registry: list[str] | None,
    keyless: KeylessAuthority | None = None,
    *,
    trusted_root: Path | None = None,
) -> None:
    from pull.clients import RegistryClients
    from pull.reference import Reference
    from trust.cosign.signing import verify_image
    from trust.cosign.simple_signing import require_verified
    from trust.keys.keyfiles import TrustedKey, load_public_key_file
    from trust.keys.references import public_key_for

    refs = [Reference.parse(qualified(text)) for text in references]
    keys = [TrustedKey(_key_name(text), public_key_for(text)) for text in key]
    rekor = [load_public_key_file(path) for path in rekor_key] if rekor_key else None
    if trusted_root is not None:  # --key with --trusted-root: every log entry is checked against it
        from trust.sigstore.trusted_root import load_trusted_root

        rekor = [log.key for log in load_trusted_root(trusted_root).rekor_logs]
    records: list[dict[str, object]] = []
    worst = 0
    with RegistryClients.insecure(insecure_registry) as clients:
        for ref in refs:
            result = None
            try:
                if keyless is not None:
                    from trust.sigstore.keyless import require_keyless_verified, verify_image_keyless

                    result = verify_image_keyless(
                        clients,
                        ref,
                        keyless,
                        ignore_reference=ignore_reference,
                        signature_repository=signature_repository,
                    )
                    valid = require_keyless_verified(result.outcomes, result.subject)
                else:
                    result = verify_image(
                        clients,
                        ref,
                        keys,
                        rekor_keys=rekor,
                        ignore_reference=ignore_reference,
                        signature_repository=signature_repository,
                        trusted_root=trusted_root,
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
                note(error_line(err))
                base = result.to_json() if result else {"reference": str(ref), "verified": False}
                records.append({**base, "error": str(err), "exitCode": code})
    if output is GateOutput.json:
        emit_json(records if len(refs) > 1 else records[0])
    if worst:
        raise typer.Exit(worst)


def _cosign_certificate(cert: Path, chain: Path | None, signer: Signer) -> tuple[str, str | None]:
    """The PEM certificate (which must be for the signer's key) and chain to put in the layer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    texts: list[str | None] = []
    for path in (cert, chain):
        if path is None:
            texts.append(None)
            continue
        try:
            with open_regular_file(path) as handle:
                data = handle.read(1024 * 1024)
            certificates = x509.load_pem_x509_certificates(data)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is not a readable PEM certificate file ({str(exc)[:80]})") from None
        texts.append(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates).decode())
    leaf = x509.load_pem_x509_certificate(str(texts[0]).encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != signer.public_key.public_bytes(*spki):
        raise UsageError(f"certificate {cert} is not for the signing key")
    first = x509.load_pem_x509_certificates(str(texts[0]).encode())
    if len(first) != 1:
        raise UsageError(f"{cert} must hold one certificate; put its issuers in --cert-chain")
    return str(texts[0]), texts[1]


def _key_name(reference: str) -> str:
    """How a key is named in messages: its path or URI, without a PIN."""
    if reference.startswith("pkcs11:"):
        from trust.keys.pkcs11 import parse_uri

        return parse_uri(reference).redacted()
    return reference


def _parse_annotations(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"annotation {item!r} must be key=value")
        out[name] = value
    return out


def sign_blob(
    artifact: Annotated[Path, typer.Argument(help="The file to sign.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Write the Sigstore bundle (v0.3) here.")],
    key: Annotated[
        str | None,
        typer.Option("--key", help="Key file (cosign or PEM), env://VAR, pkcs11:… or awskms://…"),
    ] = None,
    keyless: Annotated[
        bool, typer.Option("--keyless", help="Sigstore keyless: OIDC identity, Fulcio cert, Rekor (online).")
    ] = False,
    identity_token: Annotated[
        str | None,
        typer.Option("--identity-token", help="Keyless: an OIDC token (default: ambient CI credentials)."),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Public key PEM (required with a signer URI).")
    ] = None,
    tlog_upload: TlogUploadOption = "true",
    timestamp_server_url: TimestampServerOption = None,
    trust_config: TrustConfigOption = None,
    fulcio_url: FulcioUrlOption = None,
    rekor_url: RekorUrlOption = None,
    oidc_issuer: OidcIssuerOption = None,
    trusted_root: TrustedRootOption = None,
    output: OutputOption = OutputFormat.text,
) -> None:
    """Sign a file into a Sigstore bundle (a message signature over its SHA-256), with --key or
    --keyless; `trust verify-blob FILE --bundle OUT` checks it. Logged in Rekor unless
    --tlog-upload=false (keys only)."""
    import hashlib

    from trust.cli.keyless import file_digest

    instance = sigstore_instance(
        trust_config, fulcio_url, rekor_url, oidc_issuer, timestamp_server_url, trusted_root
    )
    upload = tlog_upload_flag(tlog_upload)
    if keyless == (key is not None):
        raise UsageError("give --key (a key file, PEM key or signer URI), or --keyless")
    if bundle.exists() and bundle.is_dir():
        raise UsageError(f"--bundle {bundle} is a directory")
    digest = file_digest(artifact)
    if keyless:
        if public_key is not None:
            raise UsageError("--keyless takes no --public-key")
        if not upload:
            raise UsageError(
                "--keyless always logs to Rekor: its certificate is only good with the log's time"
            )
        from trust.sigstore.sign import keyless_sign, obtain_identity_token

        interactive = sys.stdin.isatty() and sys.stderr.isatty()
        token = obtain_identity_token(identity_token, interactive=interactive, instance=instance)
        data = keyless_sign(instance, token, sha256=bytes.fromhex(digest.hex))
        signer_name = str(token.identity)
    else:
        if identity_token is not None or fulcio_url is not None or oidc_issuer is not None:
            raise UsageError("--identity-token, --fulcio-url and --oidc-issuer belong to --keyless")
        assert key is not None
        from trust.cli.keyless import read_artifact
        from trust.sigstore.sign import key_signed_bundle

        log = instance.key_signing_log(upload)
        signer = load_signer(key, public_key)
        content = read_artifact(artifact)
        if hashlib.sha256(content).hexdigest() != digest.hex:
            raise UsageError(f"{artifact} changed while it was being signed")
        data = key_signed_bundle(
            signer,
            data=content,
            log=log,
            timestamp_url=instance.timestamp_authority(),
        )
        signer_name = _key_name(key)
    write_file(bundle, data)
    if output is OutputFormat.json:
        emit_json(
            {"artifact": str(artifact), "digest": str(digest), "bundle": str(bundle), "signer": signer_name}
        )
        return
    note(f"signed {artifact} ({digest}) as {signer_name}: bundle written to {bundle}")
