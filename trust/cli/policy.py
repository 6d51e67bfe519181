"""`trust policy check | explain | import | test`: lint, debug a decision, convert, test a suite."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from trust.cli.output import OutputFormat, emit_json, emit_line, note

policy_app = typer.Typer(
    help="Check, explain and import policy files.", no_args_is_help=True, rich_markup_mode=None
)


class ImportFormat(StrEnum):
    auto = "auto"
    containers = "containers"
    notation = "notation"


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="Policy file (YAML).")]) -> None:
    """Load a policy with every check `trust run` applies; print a summary or the first error (exit 2)."""
    from policy.loader import load_policy
    from policy.model import describe

    for line in describe(load_policy(file)):
        emit_line(line)


@policy_app.command("explain")
def explain(
    reference: Annotated[str, typer.Argument(help="Image reference.")],
    policy: Annotated[Path, typer.Option("--policy", help="Policy file.")],
    platform: Annotated[
        str | None, typer.Option("--platform", help="os/arch[/variant] for an index.")
    ] = None,
    store: Annotated[Path | None, typer.Option("--store", envvar="TRUST_STORE")] = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.text,
    insecure_registry: Annotated[list[str] | None, typer.Option("--insecure-registry")] = None,
) -> None:
    """Show the matched rule, each requirement and each signature found, with why it passed or failed."""
    from policy.admission import evaluate
    from policy.loader import load_policy
    from pull.clients import RegistryClients
    from pull.manifest import Platform
    from pull.reference import Reference
    from trust.cli.common import open_store, qualified

    loaded = load_policy(policy)
    ref = Reference.parse(qualified(reference))
    content = open_store(store)
    with RegistryClients.insecure(insecure_registry) as clients:
        evaluation = evaluate(
            ref,
            loaded,
            content,
            clients,
            platform=Platform.parse(platform) if platform else None,
            log=False,
            artifacts=True,
        ).evaluation
    if output is OutputFormat.json:
        emit_json(evaluation.to_json())
    else:
        for line in explain_lines(evaluation):
            emit_line(line)
    if not evaluation.admitted:
        raise typer.Exit(3)


def explain_lines(evaluation: object) -> list[str]:
    from policy.evaluate import Evaluation

    assert isinstance(evaluation, Evaluation)
    rule = evaluation.matched.rule
    lines = [f"reference: {evaluation.reference}"]
    if evaluation.digest:
        lines.append(f"resolved:  {evaluation.digest}")
    if evaluation.index_digest:
        lines.append(f"platform manifest: {evaluation.manifest_digest} (index {evaluation.index_digest})")
    lines.append(f"rule:      {evaluation.matched} — {rule.kind.value}, mode {rule.mode.value}")
    if rule.authorities:
        names = ", ".join(a.name for a in rule.authorities)
        lines.append(f"requires:  {rule.threshold} of [{names}] to sign the {rule.sign_target.value}")
    for authority in evaluation.authorities:
        mark = "PASS" if authority.satisfied else "FAIL"
        lines.append(f"  [{mark}] {authority.name} ({authority.kind}): {authority.reason}")
        for target in authority.targets:
            lines.append(f"      {target.what} {target.digest}: {len(target.outcomes)} signature(s) found")
            for outcome in target.outcomes:
                lines.append(f"        #{outcome.index} {outcome.reason.value}: {outcome.detail}")
    for attested in evaluation.attestations:
        mark = "PASS" if attested.satisfied else "FAIL"
        lines.append(
            f"  [{mark}] attestation {attested.name} ({attested.predicate_type}) on {attested.digest}: "
            f"{attested.reason}"
        )
        for found in attested.outcomes:
            lines.append(f"        #{found.index} {found.source} {found.reason.value}: {found.detail}")
    for warning in evaluation.warnings:
        lines.append(f"warning:   {warning}")
    for reason in evaluation.reasons:
        lines.append(f"reason:    {reason}")
    lines.append(f"decision:  {evaluation.decision}")
    return lines


@policy_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="containers-policy.json (or a Notation trustpolicy.json).")],
    format_: Annotated[
        ImportFormat,
        typer.Option("--format", help="auto (by content), containers or notation."),
    ] = ImportFormat.auto,
) -> None:
    """Convert another tool's policy to a trust policy on stdout; what cannot be converted goes to stderr."""
    from policy.importer import import_containers_policy
    from policy.notation_import import (
        MAX_TRUST_POLICY_BYTES,
        import_notation_policy,
        is_notation_trust_policy,
    )
    from pull.userfile import open_regular_file

    chosen = format_
    if chosen is ImportFormat.auto:
        try:
            with open_regular_file(file) as handle:
                head = handle.read(MAX_TRUST_POLICY_BYTES)
        except OSError:
            head = b""  # the importer reports the unreadable file
        chosen = ImportFormat.notation if is_notation_trust_policy(head) else ImportFormat.containers
    if chosen is ImportFormat.notation:
        result = import_notation_policy(file)
    else:
        result = import_containers_policy(file)
    for warning in result.warnings:
        note(f"trust: warning: {warning}")
    typer.echo(result.yaml_text, nl=not result.yaml_text.endswith("\n"))


class TestOutput(StrEnum):
    text = "text"
    json = "json"
    junit = "junit"
    sarif = "sarif"


@policy_app.command("test")
def test(
    suite: Annotated[Path, typer.Argument(help="Suite YAML: cases with an image or a Kubernetes object.")],
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy (default: the suite's).")] = None,
    output: Annotated[TestOutput, typer.Option("--output", "-o", help="text, json, junit or sarif.")] = (
        TestOutput.text
    ),
    insecure_registry: Annotated[list[str] | None, typer.Option("--insecure-registry")] = None,
) -> None:
    """Check that a policy decides each case of a suite as expected (exit 3 when one does not)."""
    from pull.errors import UsageError
    from trust.webhook.suite import junit_xml, load_suite, run_suite, sarif

    named, cases = load_suite(suite)
    policy_path = policy or named
    if policy_path is None:
        raise UsageError(f"suite {suite} names no policy: give --policy")
    results = run_suite(cases, policy_path, insecure=insecure_registry)
    failed = [result for result in results if not result.passed]
    if output is TestOutput.junit:
        emit_line(junit_xml(results, suite.name))
    elif output is TestOutput.sarif:
        emit_json(sarif(results, suite))
    elif output is TestOutput.json:
        emit_json([result.to_json() for result in results])
    else:
        for result in results:
            mark = "PASS" if result.passed else "FAIL"
            emit_line(f"{mark} {result.case.name}: {result.decision} (expected {result.case.expect})")
            if not result.passed:
                emit_line(f"     {result.message}")
    note(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(3)
