"""`trust attest | verify-attestation | attest-blob | verify-blob-attestation | tree`.

Attestations are in-toto statements in DSSE envelopes (`trust.attest`). These commands parse
flags, read the predicate, and render what was verified: on a terminal a line per attestation,
the decoded statements on stdout one JSON per line (for `jq`), `--output json` a document.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pull.errors import DeniedError, IntegrityError, UsageError
from pull.userfile import open_regular_file
from trust.cli.common import load_signer, qualified, sigstore_instance, tlog_upload_flag, write_file
from trust.cli.options import (
    CertificateIdentityOption,
    CertificateIdentityRegexpOption,
    CertificateIssuerOption,
    CertificateIssuerRegexpOption,
    GateOutput,
    GithubNameOption,
    GithubRefOption,
    GithubRepositoryOption,
    GithubShaOption,
    GithubTriggerOption,
    InsecureOption,
    OutputOption,
    RekorUrlOption,
    StoreOption,
    TimestampServerOption,
    TlogUploadOption,
    TrustedRootOption,
)
from trust.cli.output import OutputFormat, emit_json, emit_line, note

if TYPE_CHECKING:
    from policy.conditions import Condition
    from pull.digest import Digest
    from trust.attest import AttestationOutcome
    from trust.cli.keyless import IdentityFlags

MAX_PREDICATE_BYTES = 32 * 1024 * 1024

TypeOption = Annotated[
    str,
    typer.Option(
        "--type",
        help="Predicate type: a URI, or slsaprovenance, slsaprovenance02, slsaprovenance1, spdx, spdxjson, "
        "cyclonedx, vuln, openvex, link, custom.",
    ),
]
ConditionOption = Annotated[
    str | None,
    typer.Option("--condition", help="CEL over predicate, statement and subject that must be true."),
]
TrustConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--trust-config",
        help="A Sigstore ClientTrustConfig (private instance): keyless signing, or the log and "
        "timestamp authority a key's attestation goes to.",
    ),
]


class AttestationNotVerified(DeniedError):
    """No attestation of the type, by the signer, about the digest (and meeting the condition)."""


class AttestationMalformed(IntegrityError):
    """Every attestation found was malformed: nothing could even be judged."""


def register(app: typer.Typer) -> None:
    app.command()(attest)
    app.command("verify-attestation")(verify_attestation)
    app.command("attest-blob")(attest_blob)
    app.command("verify-blob-attestation")(verify_blob_attestation)
    app.command()(tree)


def attest(
    reference: Annotated[str, typer.Argument(help="Image to attest; a tag is resolved to its digest first.")],
    predicate: Annotated[Path, typer.Option("--predicate", help="The predicate file (JSON).")],
    type_: TypeOption = "custom",
    key: Annotated[
        str | None, typer.Option("--key", help="Key file, env://VAR, pkcs11:…, awskms://… or a signer URI.")
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Public key PEM (required with a signer URI).")
    ] = None,
    attestation_format: Annotated[
        str,
        typer.Option("--format", help="cosign (the .att tag), bundle (a Sigstore bundle referrer) or both."),
    ] = "both",
    keyless: Annotated[bool, typer.Option("--keyless", help="Sigstore keyless (Fulcio, Rekor).")] = False,
    identity_token: Annotated[
        str | None, typer.Option("--identity-token", help="Keyless: an OIDC token (default: ambient).")
    ] = None,
    trust_config: TrustConfigOption = None,
    tlog_upload: TlogUploadOption = "true",
    rekor_url: RekorUrlOption = None,
    timestamp_server_url: TimestampServerOption = None,
    output: OutputOption = OutputFormat.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Attest an image digest: an in-toto statement (subject = the manifest digest) in a signed DSSE
    envelope, attached as cosign's .att layer and as a Sigstore bundle referrer (--format).

    With --key the bundle is logged in Rekor (the trust config's log: v2 or v1; --rekor-url: a v1
    log; the public-good one by default) and timestamped with --timestamp-server-url or the trust
    config's authority; --tlog-upload=false logs nothing."""
    from pull.clients import RegistryClients
    from pull.reference import Reference
    from trust.attest.create import attest_image, attest_image_keyless

    formats = {"both": ("cosign", "bundle"), "cosign": ("cosign",), "bundle": ("bundle",)}.get(
        attestation_format
    )
    if formats is None:
        raise UsageError(f"--format {attestation_format!r}: use cosign, bundle or both")
    predicate_type, content = _predicate(predicate, type_)
    ref = Reference.parse(qualified(reference))
    if keyless:
        if key or public_key:
            raise UsageError("--keyless takes no --key or --public-key")
        if attestation_format == "cosign":
            raise UsageError("--keyless writes a Sigstore bundle referrer: use --format bundle (or both)")
        config = _trust_config(trust_config)
        token = _token(identity_token, config)
        with RegistryClients.insecure(insecure_registry) as clients:
            result, identity = attest_image_keyless(clients, ref, token, config, predicate_type, content)
        _report(result.to_json() | {"identity": identity}, output)
        return
    if identity_token:
        raise UsageError("--identity-token belongs to --keyless")
    if key is None:
        raise UsageError("give --key (a key file, PEM key or signer URI), or --keyless")
    instance = sigstore_instance(trust_config, None, rekor_url, None, timestamp_server_url, None)
    log = instance.key_signing_log(tlog_upload_flag(tlog_upload))
    if log is not None and "bundle" not in formats:
        raise UsageError(
            "the log entry travels in the Sigstore bundle referrer: use --format bundle (or both), "
            "or --tlog-upload=false"
        )
    signer = load_signer(key, public_key)
    with RegistryClients.insecure(insecure_registry) as clients:
        result = attest_image(
            clients,
            ref,
            signer,
            predicate_type,
            content,
            formats=formats,
            log=log,
            timestamp_url=instance.timestamp_authority(),
        )
    _report(result.to_json(), output)


def _report(record: dict[str, Any], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        emit_json([record])
        return
    for where in record["written"]:
        note(f"attested ({record['predicateType']}): {where}")
    name = record["reference"].split("@")[0]
    emit_line(f"{name}@{record['digest']}" if "@" not in name else record["reference"])


def verify_attestation(
    references: Annotated[list[str], typer.Argument(help="Images to check (pin a digest).")],
    type_: TypeOption = "custom",
    key: Annotated[list[str] | None, typer.Option("--key", help="Trusted public key (repeatable).")] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Decide with a policy file (its rules' attestations).")
    ] = None,
    condition: ConditionOption = None,
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
    store: StoreOption = None,
    output: OutputOption = OutputFormat.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Verify attestations on image digests: with --key, keyless identity flags, or --policy.

    Exit 0 when each image has a verified statement of the type about its digest (meeting
    --condition), 3 when not, 4 when everything found was malformed, 5 when it could not check."""
    from pull.clients import RegistryClients
    from pull.reference import Reference
    from trust.cli.keyless import IdentityFlags

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
    if policy is not None:
        if condition is not None:
            raise UsageError("--condition belongs in the policy file (the attestation's 'condition')")
        _gate(references, policy, store, output, insecure_registry)
        return
    predicate_type = _predicate_type(type_)
    compiled = _condition(condition)
    authority = _authority(key or [], flags if keyless else None, trusted_root)
    records = []
    failure: Exception | None = None
    with RegistryClients.insecure(insecure_registry) as clients:
        for text in references:
            ref = Reference.parse(qualified(text))
            digest, outcomes = _check_image(clients, ref, authority, predicate_type, compiled)
            records.append(_render(str(ref), digest, outcomes, output))
            verified = [o for o in outcomes if o.ok]
            if not verified:
                failure = failure or _failure(str(ref), predicate_type, outcomes)
    if output is OutputFormat.json:
        emit_json(records)
    if failure is not None:
        raise failure


def _check_image(
    clients: Any, ref: Any, authority: object, predicate_type: str, condition: Condition | None
) -> tuple[Digest, list[AttestationOutcome]]:
    from pull.pipeline import resolve
    from trust.attached import SignatureLocation
    from trust.attest import attestation_location, discover_attestations

    document = resolve(clients(ref.api_host), ref)
    location = attestation_location(SignatureLocation.for_image(ref, document.digest))
    found = discover_attestations(
        clients(location.api_host),
        ref.repository,
        document.digest,
        location,
        predicate_type=predicate_type,
        referrers_client=clients(ref.api_host),
    )
    return document.digest, _judge(found, authority, document.digest, predicate_type, condition)


def _judge(
    found: Any, authority: object, digest: Digest | None, predicate_type: str, condition: Condition | None
) -> list[AttestationOutcome]:
    from policy.evaluate import judge_attestation

    return [
        judge_attestation(index, attestation, authority, digest, predicate_type, condition)
        for index, attestation in enumerate(found)
    ]


def _render(
    subject: str, digest: Digest, outcomes: list[AttestationOutcome], output: OutputFormat
) -> dict[str, Any]:
    record = {
        "reference": subject,
        "digest": str(digest),
        "verified": any(o.ok for o in outcomes),
        "attestations": [
            o.to_json() | ({"statement": o.statement.document} if o.ok and o.statement else {})
            for o in outcomes
        ],
    }
    if output is OutputFormat.json:
        return record
    for outcome in outcomes:
        where = f"{outcome.source} {outcome.blob_digest}"
        if outcome.ok and outcome.statement is not None:
            note(f"verified {outcome.predicate_type} attestation of {subject} ({where}): {outcome.detail}")
            emit_line(json.dumps(outcome.statement.document, separators=(",", ":"), sort_keys=True))
        else:
            note(f"not accepted ({where}): {outcome.reason.value}: {outcome.detail}")
    return record


def _failure(subject: str, predicate_type: str, outcomes: list[AttestationOutcome]) -> Exception:
    from policy.evaluate import most_telling
    from trust.cosign.simple_signing import Reason

    if not outcomes:
        return AttestationNotVerified(f"{subject}: no attestations of type {predicate_type} found")
    if all(o.reason is Reason.MALFORMED for o in outcomes):
        return AttestationMalformed(f"{subject}: every attestation is malformed: {outcomes[0].detail}")
    best = most_telling(outcomes)
    return AttestationNotVerified(
        f"{subject}: {len(outcomes)} attestation(s), none verified: {best.reason.value}: {best.detail}"
    )


def _gate(
    references: list[str], policy_path: Path, store: Path | None, output: OutputFormat, insecure: Any
) -> None:
    """--policy: the CI gate over the policy's rules, attestation requirements included."""
    from policy.gate import run_gate, worst_exit_code
    from policy.loader import load_policy
    from pull.clients import RegistryClients
    from trust.cli.common import open_store

    policy = load_policy(policy_path)
    content = open_store(store)
    with RegistryClients.insecure(insecure) as clients:
        results = run_gate(references, policy, content, clients)
    if output is OutputFormat.json:
        emit_json([result.to_json() for result in results])
    else:
        for result in results:
            evaluation = result.evaluation
            for attested in evaluation.attestations if evaluation else ():
                state = "met" if attested.satisfied else "NOT met"
                note(f"{result.reference}: attestation {attested.name} {state}: {attested.reason}")
            note(f"{result.reference}: {result.outcome}: {result.message}")
    code = worst_exit_code(results)
    if code:
        raise typer.Exit(code)


def attest_blob(
    artifact: Annotated[Path, typer.Argument(help="The file the statement is about.")],
    predicate: Annotated[Path, typer.Option("--predicate", help="The predicate file (JSON).")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Write the Sigstore bundle here.")],
    type_: TypeOption = "custom",
    key: Annotated[
        str | None, typer.Option("--key", help="Key file, env://VAR, pkcs11:…, awskms://….")
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Public key PEM for a signer URI.")
    ] = None,
    keyless: Annotated[bool, typer.Option("--keyless", help="Sigstore keyless (Fulcio, Rekor).")] = False,
    identity_token: Annotated[
        str | None, typer.Option("--identity-token", help="Keyless: an OIDC token.")
    ] = None,
    trust_config: TrustConfigOption = None,
) -> None:
    """Make a Sigstore bundle (DSSE, in-toto statement) about a file, as `cosign attest-blob`."""
    from trust.attest.create import attest_blob as make_bundle
    from trust.attest.create import sign_statement_keyless
    from trust.attest.statement import build_statement
    from trust.cli.keyless import file_digest

    predicate_type, content = _predicate(predicate, type_)
    digest = file_digest(artifact)
    if keyless:
        if key or public_key:
            raise UsageError("--keyless takes no --key or --public-key")
        config = _trust_config(trust_config)
        token = _token(identity_token, config)
        data = sign_statement_keyless(
            build_statement(artifact.name, digest, predicate_type, content), token, config
        )
    else:
        if key is None:
            raise UsageError("give --key, or --keyless")
        data = make_bundle(digest, artifact.name, load_signer(key, public_key), predicate_type, content)
    write_file(bundle, data)
    note(f"attested {artifact} ({predicate_type}): bundle written to {bundle}")


def verify_blob_attestation(
    artifact: Annotated[Path, typer.Argument(help="The file the statement must be about.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Sigstore bundle with a DSSE envelope.")],
    type_: TypeOption = "custom",
    key: Annotated[str | None, typer.Option("--key", help="Trusted public key (instead of keyless).")] = None,
    condition: ConditionOption = None,
    check_claims: Annotated[
        str,
        typer.Option(
            "--check-claims",
            help="false: do not require the file's digest among the subjects (cosign's flag).",
        ),
    ] = "true",
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
    """Verify a DSSE Sigstore bundle about a file (`cosign verify-blob-attestation`): signer, the
    file's SHA-256 among the subjects, the predicate type, --condition. Prints the statement."""
    from pull.digest import Digest
    from trust.attest import Attestation
    from trust.attest.attached import bundle_envelope
    from trust.cli.keyless import IdentityFlags, file_digest

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
    keyless = flags.given or trusted_root is not None
    if (key is not None) == keyless:
        raise UsageError("give either --key PUB or --certificate-identity with --certificate-oidc-issuer")
    predicate_type = _predicate_type(type_)
    if check_claims not in ("true", "false"):
        raise UsageError(f"--check-claims={check_claims[:20]}: write true or false")
    compiled = _condition(condition)
    authority = _authority([key] if key else [], flags if keyless else None, trusted_root)
    data = _read(bundle, 48 * 1024 * 1024, "bundle")
    digest = file_digest(artifact)
    envelope, problem = bundle_envelope(data)
    if envelope is None:
        raise IntegrityError(f"{bundle}: {problem or 'a message-signature bundle, not an attestation'}")
    found = [Attestation("bundle", Digest.of_bytes(data), envelope, None, data)]
    outcomes = _judge(found, authority, digest if check_claims == "true" else None, predicate_type, compiled)
    record = _render(str(artifact), digest, outcomes, output)
    if output is OutputFormat.json:
        emit_json(record)
    if not outcomes[0].ok:
        raise _failure(str(artifact), predicate_type, outcomes)


def tree(
    reference: Annotated[str, typer.Argument(help="Image to show.")],
    output: Annotated[GateOutput, typer.Option("--output", "-o", help="text or json.")] = GateOutput.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Show what is attached to an image (as `cosign tree`): signatures, attestations (with their
    predicate types), SBOMs and every other referrer, by digest. Nothing here is verified."""
    from pull.clients import RegistryClients
    from pull.reference import Reference
    from trust.store_ops.tree import attached_tree

    if output is GateOutput.sarif:
        raise UsageError("--output sarif is for policy decisions; use text or json")
    ref = Reference.parse(qualified(reference))
    with RegistryClients.insecure(insecure_registry) as clients:
        found = attached_tree(clients, ref)
    if output is GateOutput.json:
        emit_json(found.to_json())
        return
    for line in found.lines():
        emit_line(line)


# --- helpers ------------------------------------------------------------------------------------


def _predicate_type(name: str) -> str:
    from trust.attest import predicate_type_for

    try:
        return predicate_type_for(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _authority(keys: list[str], flags: IdentityFlags | None, trusted_root: Path | None) -> object:
    """Who must have signed: the keyless identity of `flags`, else the public keys `keys`."""
    from trust.cli.keyless import keyless_authority
    from trust.cosign import CosignKeyAuthority
    from trust.keys.keyfiles import TrustedKey
    from trust.keys.references import public_key_for

    if flags is not None:
        return keyless_authority(flags, trusted_root)
    # With --trusted-root, a key's attestations must be logged (checked against that root).
    return CosignKeyAuthority(
        "--key",
        tuple(TrustedKey(_key_name(text), public_key_for(text)) for text in keys),
        trusted_root=trusted_root,
    )


def _predicate(path: Path, type_name: str) -> tuple[str, Any]:
    from trust.attest.statement import read_predicate

    predicate_type = _predicate_type(type_name)
    data = _read(path, MAX_PREDICATE_BYTES, "predicate")
    try:
        return predicate_type, read_predicate(data, predicate_type)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with open_regular_file(path) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data


def _key_name(reference: str) -> str:
    """A key as named in messages: a PKCS#11 URI without its query (where a PIN may be)."""
    return reference.split("?", 1)[0] if reference.startswith("pkcs11:") else reference


def _condition(text: str | None) -> Condition | None:
    if text is None:
        return None
    from policy.conditions import ConditionError, compile_condition

    try:
        return compile_condition(text)
    except ConditionError as exc:
        raise UsageError(f"--condition does not compile: {exc}") from None


def _trust_config(path: Path | None) -> Any:
    from sigstore.models import ClientTrustConfig

    if path is None:
        return ClientTrustConfig.production()
    text = _read(path, 4 * 1024 * 1024, "trust config").decode("utf-8", "replace")
    try:
        return ClientTrustConfig.from_json(text)
    except Exception as exc:  # sigstore raises pydantic and its own errors for a bad file
        raise UsageError(
            f"{path} is not a Sigstore ClientTrustConfig: {str(exc).splitlines()[0][:160]}"
        ) from None


def _token(explicit: str | None, config: Any) -> Any:
    from trust.sigstore.sign import obtain_identity_token

    return obtain_identity_token(explicit, interactive=sys.stdin.isatty() and sys.stderr.isatty())
