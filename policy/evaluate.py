"""Evaluate one policy rule against the signatures found for an image. No I/O here.

Given the matched rule, the digests that must be signed (the platform manifest, the index, or
both), and a way to read the signature layers attached to a digest, decide per authority whether
it signed every required digest, then apply the threshold. `policy.admission` does the fetching
and the logging; `trust policy explain` renders the same `Evaluation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from policy.model import (
    AttestationRequirement,
    Authority,
    MatchedRule,
    Mode,
    Rule,
    RuleKind,
    SignTarget,
)
from pull.digest import Digest
from pull.records import dataclass, field, replace
from trust.attached import AttachedSignatures
from trust.cosign import Reason, SignatureOutcome
from trust.verifiers import verifier_for

if TYPE_CHECKING:
    from policy.conditions import Condition
    from trust.attest import Attestation, AttestationOutcome

SignatureSource = Callable[[Digest], AttachedSignatures]
"""Returns the cosign signatures (`.sig` layers and bundle referrers) attached to a digest."""
AttestationSource = Callable[[Digest, str], "Sequence[Attestation]"]
"""Returns the attestations attached to a digest (those annotated with another predicate type
than the one asked for may be left out)."""


@dataclass(frozen=True)
class TargetResult:
    """One authority's verdict on one digest that must be signed."""

    what: str
    """"manifest" or "index"."""
    digest: Digest
    satisfied: bool
    outcomes: tuple[SignatureOutcome, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.what,
            "digest": str(self.digest),
            "satisfied": self.satisfied,
            "note": self.note,
            "signatures": [outcome.to_json() for outcome in self.outcomes],
        }


@dataclass(frozen=True)
class AuthorityResult:
    name: str
    kind: str
    satisfied: bool
    reason: str
    targets: tuple[TargetResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "authority": self.name,
            "kind": self.kind,
            "satisfied": self.satisfied,
            "reason": self.reason,
            "targets": [target.to_json() for target in self.targets],
        }


@dataclass(frozen=True)
class AttestationResult:
    """One attestation requirement of the rule, on one digest: met or not, and why."""

    name: str
    predicate_type: str
    digest: Digest
    satisfied: bool
    reason: str
    outcomes: tuple[AttestationOutcome, ...] = ()
    line: int = 0
    """The requirement's line in the policy file."""

    def to_json(self) -> dict[str, Any]:
        return {
            "attestation": self.name,
            "line": self.line,
            "predicateType": self.predicate_type,
            "digest": str(self.digest),
            "satisfied": self.satisfied,
            "reason": self.reason,
            "attestations": [outcome.to_json() for outcome in self.outcomes],
        }


@dataclass(frozen=True)
class Evaluation:
    """The policy's verdict on one image, with everything needed to explain it."""

    reference: str
    matched: MatchedRule
    digest: Digest | None
    """What the reference resolved to (None when refused before any network call)."""
    manifest_digest: Digest | None = None
    index_digest: Digest | None = None
    authorities: tuple[AuthorityResult, ...] = ()
    passed: bool = False
    """Whether the rule's requirements were met (before `mode` is applied)."""
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    attestations: tuple[AttestationResult, ...] = ()

    @property
    def mode(self) -> Mode:
        return self.matched.rule.mode

    @property
    def admitted(self) -> bool:
        """Enforce: only if passed. Audit: always (the failure is recorded and printed)."""
        return self.passed or self.mode is Mode.AUDIT

    @property
    def revocation_unknown(self) -> str | None:
        """Why revocation could not be checked, when that alone may have denied the image: a
        signature's revocation status was unknown and none was found revoked (then the answer is
        "could not check", exit 5, not "denied")."""
        if self.passed:
            return None
        outcomes = [o for a in self.authorities for t in a.targets for o in t.outcomes]
        if any(outcome.reason is Reason.REVOKED for outcome in outcomes):
            return None
        unknown = [outcome for outcome in outcomes if outcome.reason is Reason.REVOCATION_UNKNOWN]
        return unknown[0].detail.removeprefix("notation: ") if unknown else None

    @property
    def decision(self) -> str:
        if self.passed:
            return "allow"
        return "allow-audit" if self.admitted else "deny"

    def to_json(self) -> dict[str, Any]:
        """The decision record (decision log line, `--output json`); documented in docs/policy.md."""
        rule = self.matched.rule
        return {
            "reference": self.reference,
            "digest": str(self.digest) if self.digest else None,
            "manifestDigest": str(self.manifest_digest) if self.manifest_digest else None,
            "indexDigest": str(self.index_digest) if self.index_digest else None,
            "rule": "default" if self.matched.is_default else self.matched.scope,
            "ruleLine": rule.line,
            "ruleKind": rule.kind.value,
            "threshold": rule.threshold,
            "mode": self.mode.value,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "authorities": [authority.to_json() for authority in self.authorities],
            "attestations": [result.to_json() for result in self.attestations],
        }


def required_targets(
    sign_target: SignTarget, manifest_digest: Digest, index_digest: Digest | None
) -> list[tuple[str, Digest]]:
    """Which digests must be signed. Without an index there is only the manifest."""
    if index_digest is None or sign_target is SignTarget.MANIFEST:
        return [("manifest", manifest_digest)]
    if sign_target is SignTarget.INDEX:
        return [("index", index_digest)]
    return [("index", index_digest), ("manifest", manifest_digest)]


def evaluate_signatures(
    reference: str,
    matched: MatchedRule,
    repository: str,
    top_digest: Digest,
    manifest_digest: Digest,
    index_digest: Digest | None,
    signatures: SignatureSource,
    attestations: AttestationSource | None = None,
) -> Evaluation:
    """Apply a `signed` rule: count the authorities that signed every required digest, then check
    each attestation requirement on every required digest (`attestations` is asked only then)."""
    rule = matched.rule
    assert rule.kind is RuleKind.SIGNED
    targets = required_targets(rule.sign_target, manifest_digest, index_digest)
    found = {digest: signatures(digest) for _, digest in targets}
    results = tuple(
        _check_authority(authority, targets, found, repository, rule.ignore_reference)
        for authority in rule.authorities
    )
    satisfied = [result for result in results if result.satisfied]
    signers = _distinct_signers(satisfied)
    passed = signers >= rule.threshold
    reasons: tuple[str, ...] = ()
    if not passed:
        shared = (
            f", by only {signers} distinct signer{'s' if signers != 1 else ''} "
            "(one signer never counts twice)"
            if signers < len(satisfied)
            else ""
        )
        reasons = (
            f"{len(satisfied)} of the required {rule.threshold} authorities signed "
            f"({', '.join(r.name for r in satisfied) or 'none'}){shared}; "
            + "; ".join(f"{r.name}: {r.reason}" for r in results if not r.satisfied),
        )
        hint = _index_only_hint(rule, results, repository, manifest_digest, index_digest, signatures)
        if hint:
            reasons = (*reasons, hint)
    attested: tuple[AttestationResult, ...] = ()
    if rule.attestations:
        if attestations is None:
            raise ValueError("the rule requires attestations and no attestation source was given")
        attested = tuple(
            check_attestation(required, digest, attestations(digest, required.predicate_type))
            for required in rule.attestations
            for _, digest in targets
        )
        unmet = [result for result in attested if not result.satisfied]
        if unmet:
            passed = False
            reasons = (*reasons, *(f"attestation {r.name} on {r.digest}: {r.reason}" for r in unmet))
    return Evaluation(
        reference,
        matched,
        top_digest,
        manifest_digest,
        index_digest,
        results,
        passed,
        reasons,
        attestations=attested,
    )


def check_attestation(
    required: AttestationRequirement, digest: Digest, found: Sequence[Attestation]
) -> AttestationResult:
    """Met when one attestation, signed by one of the requirement's authorities, is a statement of
    its predicate type about `digest` for which its condition holds."""
    outcomes: list[AttestationOutcome] = []
    for index, attestation in enumerate(found):
        for authority in required.authorities:
            outcome = judge_attestation(
                index, attestation, authority, digest, required.predicate_type, required.condition
            )
            outcomes.append(outcome)
            if outcome.ok:
                return AttestationResult(
                    required.name,
                    required.predicate_type,
                    digest,
                    True,
                    f"{outcome.detail} ({outcome.source} {outcome.blob_digest})",
                    tuple(outcomes),
                    required.line,
                )
            if outcome.reason is not Reason.UNKNOWN_KEY:
                break  # this authority signed it: the others cannot make it say something else
    if not found:
        reason = f"no attestations found (none of predicate type {required.predicate_type})"
    elif not outcomes:
        reason = "no attestation verified"
    else:
        best = most_telling(outcomes)
        reason = f"{len(found)} attestation(s), none met it: {best.reason.value} ({best.detail})"
    return AttestationResult(
        required.name, required.predicate_type, digest, False, reason, tuple(outcomes), required.line
    )


def judge_attestation(
    index: int,
    attestation: Attestation,
    authority: object,
    digest: Digest | None,
    predicate_type: str,
    condition: Condition | None,
) -> AttestationOutcome:
    """`trust.attest.verify_attestation`, then `condition` on the verified statement (CEL sees the
    subject entry naming `digest`, or the first one when no digest is checked)."""
    from trust.attest import verify_attestation

    outcome = verify_attestation(index, attestation, authority, digest, predicate_type)
    if not outcome.ok or condition is None or outcome.statement is None:
        return outcome
    holds, why = condition.holds(outcome.statement.document, outcome.statement.subject_for(digest))
    return outcome if holds else replace(outcome, reason=Reason.CONDITION_FALSE, detail=why)


def most_telling(outcomes: Sequence[AttestationOutcome]) -> AttestationOutcome:
    """The failure that says most: a false condition over a wrong type over a key we do not know."""
    order = [
        Reason.CONDITION_FALSE,
        Reason.DIGEST_MISMATCH,
        Reason.WRONG_PREDICATE_TYPE,
        Reason.WRONG_IDENTITY,
        Reason.MALFORMED,
    ]
    for reason in order:
        for outcome in outcomes:
            if outcome.reason is reason:
                return outcome
    return outcomes[0]


def _index_only_hint(
    rule: Rule,
    results: Sequence[AuthorityResult],
    repository: str,
    manifest_digest: Digest,
    index_digest: Digest | None,
    signatures: SignatureSource,
) -> str | None:
    """When the rule wants the platform manifest signed and an authority that did not sign it
    signed the index instead (`cosign sign` of a multi-platform tag without `--recursive`), say
    so and what to do. Looked up only after a denial: one more fetch, never on the passing path."""
    if index_digest is None or rule.sign_target is not SignTarget.MANIFEST:
        return None
    unsatisfied = [r.name for r in results if not r.satisfied]
    on_index = signatures(index_digest)
    signed_index = [
        authority.name
        for authority in rule.authorities
        if authority.name in unsatisfied
        and any(
            outcome.ok
            for outcome in verifier_for(authority.kind)(
                authority,
                on_index,
                index_digest,
                repository=repository,
                ignore_reference=rule.ignore_reference,
            )
        )
    ]
    if not signed_index:
        return None
    return (
        f"{', '.join(signed_index)} signed the index {index_digest} but not the platform manifest "
        f"{manifest_digest}: sign every platform (`trust sign --recursive` or `cosign sign --recursive`), "
        "or set the rule's sign-target to index"
    )


def _distinct_signers(satisfied: Sequence[AuthorityResult]) -> int:
    """How many of the satisfied authorities can be credited to different signers at once.

    The loader keeps cosign authorities from sharing keys, but a certificate can match the
    identities of two Notation authorities (same CA) or two keyless ones (overlapping issuer and
    subject): one signer must still count once. A signer is the outcome's `key` (key name, leaf
    subject, keyless identity); this is a maximum matching of authorities to their signers.
    """
    signers_of = [
        sorted({o.key or str(o.layer_digest) for t in r.targets for o in t.outcomes if o.ok})
        for r in satisfied
    ]
    credited: dict[str, int] = {}

    def credit(authority: int, tried: set[str]) -> bool:
        for signer in signers_of[authority]:
            if signer not in tried:
                tried.add(signer)
                if signer not in credited or credit(credited[signer], tried):
                    credited[signer] = authority
                    return True
        return False

    return sum(credit(authority, set()) for authority in range(len(satisfied)))


def _check_authority(
    authority: Authority,
    targets: list[tuple[str, Digest]],
    found: dict[Digest, AttachedSignatures],
    repository: str,
    ignore_reference: bool,
) -> AuthorityResult:
    verify = verifier_for(authority.kind)
    checked = []
    for what, digest in targets:
        outcomes = verify(
            authority, found[digest], digest, repository=repository, ignore_reference=ignore_reference
        )
        ok = any(outcome.ok for outcome in outcomes)
        if ok:
            note = next(outcome.detail for outcome in outcomes if outcome.ok)
        elif not outcomes:
            note = f"no signatures found for the {what}"
        else:
            note = f"{len(outcomes)} signature(s) on the {what}, none valid: " + "; ".join(
                f"{o.reason.value} ({o.detail})" for o in outcomes
            )
        checked.append(TargetResult(what, digest, ok, tuple(outcomes), note))
    satisfied = all(target.satisfied for target in checked)
    reason = (
        "signed " + " and ".join(t.what for t in checked)
        if satisfied
        else next(t.note for t in checked if not t.satisfied)
    )
    return AuthorityResult(authority.name, authority.kind, satisfied, reason, tuple(checked))
