"""The policy as values: authorities (who may sign), rules (what each scope requires), the default.

Everything here is already checked: `policy.loader` builds these objects only from a file that
passed every load-time check (keys parsed, regexps compiled, certificates read, names resolved),
so evaluation code never meets a half-valid policy. The model holds no I/O and makes no decision
about signatures; it answers "which rule applies to this reference" and describes itself.

Threshold semantics: a rule with `threshold = k` is satisfied when at least k *distinct
authorities* of its `signed-by` list each have at least one valid signature. An authority with
several keys counts once however many of its keys signed; the loader refuses a rule whose
authorities share a key, so one signer can never count twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from policy.admitted import ImageLimits, RuntimePermissions
from policy.conditions import Condition
from policy.scope import Scope
from pull.records import dataclass, field
from pull.reference import Reference
from trust.cosign import CosignKeyAuthority, CosignPkiAuthority
from trust.notation import NotationAuthority, NotationLevel
from trust.sigstore import KeylessAuthority

POLICY_VERSION = 1


class RuleKind(StrEnum):
    SIGNED = "signed"
    REJECT = "reject"
    ACCEPT_ANYTHING = "insecure-accept-anything"


class Mode(StrEnum):
    ENFORCE = "enforce"
    """A failed requirement denies (exit 3)."""
    AUDIT = "audit"
    """A failed requirement is recorded and printed, and the image is allowed."""


class SignTarget(StrEnum):
    """For a multi-platform index: which object the authorities must have signed."""

    MANIFEST = "manifest"
    """The selected platform's manifest (what `cosign sign` signs when given a platform digest)."""
    INDEX = "index"
    """The index (what `cosign sign` signs when given a tag that names an index)."""
    BOTH = "both"


Authority = CosignKeyAuthority | CosignPkiAuthority | KeylessAuthority | NotationAuthority
"""Who may sign: each signature family defines its own kind (`trust.verifiers` maps kind to checker)."""

__all__ = [
    "AttestationRequirement",
    "Authority",
    "CosignKeyAuthority",
    "CosignPkiAuthority",
    "KeylessAuthority",
    "KubernetesSettings",
    "MatchedRule",
    "Mode",
    "NotationAuthority",
    "NotationLevel",
    "Policy",
    "Rule",
    "RuleKind",
    "SignTarget",
]


@dataclass(frozen=True)
class AttestationRequirement:
    """An attestation a rule requires: of `predicate_type`, signed by one of `authorities`, about
    the digest, and (if given) making `condition` true. One such attestation meets it."""

    name: str
    predicate_type: str
    authorities: tuple[Authority, ...]
    condition: Condition | None = None
    line: int = 0


@dataclass(frozen=True)
class Rule:
    """One rule of the policy, or its default (`scope` None).

    For `REJECT` and `ACCEPT_ANYTHING`, `authorities` is empty and `threshold` is 0.
    """

    scope: Scope | None
    kind: RuleKind
    authorities: tuple[Authority, ...] = ()
    threshold: int = 0
    mode: Mode = Mode.ENFORCE
    require_digest: bool = True
    sign_target: SignTarget = SignTarget.MANIFEST
    ignore_reference: bool = False
    attestations: tuple[AttestationRequirement, ...] = ()
    limits: ImageLimits = field(default_factory=ImageLimits)
    """What unpacking an image this rule admits may cost (`limits:`; run/unpack.py enforces them)."""
    runtime: RuntimePermissions = field(default_factory=RuntimePermissions)
    """What its containers may ask the runtime for (`runtime:`; run/containers.py enforces it)."""
    line: int = 0
    number: int | None = None
    """1-based position under `rules:` (as in messages), None for the default."""

    @property
    def label(self) -> str:
        if self.number is None:
            return f"default (line {self.line})"
        return f"rule {self.number} (line {self.line}, scope {self.scope})"


@dataclass(frozen=True)
class MatchedRule:
    """The rule that applies to a reference: `rule`, its scope as written, its 0-based index."""

    rule: Rule
    scope: str | None
    index: int | None

    @property
    def is_default(self) -> bool:
        return self.index is None

    def __str__(self) -> str:
        return self.rule.label


@dataclass(frozen=True)
class KubernetesSettings:
    """The policy file's `kubernetes:` section, read by the admission webhook only.

    Pods in `exempt_namespaces` are admitted without looking at their images (the cluster's own
    `kube-system`, the webhook's namespace); an image under one of `exempt_images` is admitted
    without a decision (a scope, as in rules). Everything else goes through the rules.
    """

    exempt_namespaces: tuple[str, ...] = ()
    exempt_images: tuple[Scope, ...] = ()
    line: int = 0

    def exempts_image(self, reference: Reference) -> Scope | None:
        return next((scope for scope in self.exempt_images if scope.matches(reference)), None)


@dataclass(frozen=True)
class Policy:
    """A loaded policy: `rules` in file order, the `default`, the authorities by name.

    `source_path` is the file it came from (None when loaded from text).
    """

    rules: tuple[Rule, ...]
    default: Rule
    authorities: Mapping[str, Authority] = field(hash=False)  # a read-only mapping; not hashable
    source_path: Path | None = None
    inputs: tuple[tuple[Path, str | None], ...] = ()
    """The policy file and each file or folder it names (keys, trust stores, trusted roots), as
    absolute paths with symlinks kept, each with a digest of the bytes the loader read (None: it
    cannot vouch for them, e.g. a policy read from a pipe). What `policy.reuse` re-checks."""
    reuse_seconds: int = 0
    """`reuse-decisions`: how long `trust run` may reuse an admission decision (0: never)."""
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    allow_nondistributable_urls: bool = False
    """`allow-nondistributable-urls`: a non-distributable layer the registry lacks may be fetched
    from its descriptor's `urls` (digest and size checked as for any blob)."""

    def rule_for(self, reference: Reference) -> MatchedRule:
        """The most specific rule whose scope matches `reference` (see `policy.scope`), else default."""
        best: tuple[tuple[int, int, int, int, int], int] | None = None
        for index, rule in enumerate(self.rules):
            assert rule.scope is not None
            if rule.scope.matches(reference):
                key = (*rule.scope.specificity(reference), -index)
                if best is None or key > best[0]:
                    best = (key, index)
        if best is None:
            return MatchedRule(self.default, None, None)
        rule = self.rules[best[1]]
        assert rule.scope is not None
        return MatchedRule(rule, rule.scope.text, best[1])


def describe(policy: Policy) -> list[str]:
    """A summary for humans (`trust policy check`): one line per authority and rule, then warnings."""
    source = str(policy.source_path) if policy.source_path is not None else "policy"
    n_rules = len(policy.rules)
    lines = [
        f"{source}: version {POLICY_VERSION}, {n_rules} rule{'s' if n_rules != 1 else ''}, "
        f"{len(policy.authorities)} authorit{'ies' if len(policy.authorities) != 1 else 'y'}"
    ]
    if policy.reuse_seconds:
        lines.append(
            f"reuse-decisions: trust run may reuse a passing decision for {policy.reuse_seconds} s "
            "while the policy, its keys and the image are unchanged, without asking the registry"
        )
    for authority in policy.authorities.values():
        lines.append(f"authority {authority.name}: {_describe_authority(authority)}")
    for rule in policy.rules:
        lines.append(f"rule {rule.number} {rule.scope} (line {rule.line}): {_describe_rule(rule)}")
    lines.append(f"default (line {policy.default.line}): {_describe_rule(policy.default)}")
    used = {a.name for rule in (*policy.rules, policy.default) for a in rule.authorities}
    for name in policy.authorities:
        if name not in used:
            lines.append(f"warning: authority {name} is not used by any rule")
    return lines


def _describe_authority(authority: Authority) -> str:
    if isinstance(authority, CosignKeyAuthority):
        keys = ", ".join(f"{k.name} (sha256:{k.fingerprint[:12]})" for k in authority.keys)
        text = f"cosign key{'s' if len(authority.keys) > 1 else ''} {keys}"
        if authority.rekor_keys:
            text += "; Rekor SET required, by " + ", ".join(k.name for k in authority.rekor_keys)
        return text
    if isinstance(authority, KeylessAuthority):
        issuer = (
            f"issuer matching {authority.issuer_regexp.pattern}"
            if authority.issuer_regexp is not None
            else f"issuer {authority.issuer}"
        )
        subject = (
            f"subject matching {authority.subject_regexp.pattern}"
            if authority.subject_regexp is not None
            else f"subject {authority.subject}"
        )
        root = f", trusted root {authority.trusted_root}" if authority.trusted_root else ""
        claims = "".join(f", {name} {value}" for name, value in authority.github_claims.items())
        return f"keyless, {issuer}, {subject}{claims}{root}"
    if isinstance(authority, CosignPkiAuthority):
        subjects = [s for s in (authority.subject_email, authority.subject_hostname) if s]
        return (
            f"cosign certificates from CA roots {authority.roots_path} ({len(authority.roots)}), "
            f"for {' and '.join(subjects)}"
        )
    n = len(authority.certificates)
    text = (
        f"notation, trust store {authority.trust_store} ({n} certificate{'s' if n != 1 else ''}), "
        f"level {authority.level}, identities {', '.join(authority.trusted_identities)}"
    )
    if authority.tsa_store is not None:
        text += f", tsa store {authority.tsa_store} (verify-timestamp {authority.verify_timestamp})"
    if authority.revocation == "skip":
        text += ", revocation not checked"
    return text


def _describe_rule(rule: Rule) -> str:
    audit = " (audit: failures are recorded, not enforced)" if rule.mode is Mode.AUDIT else ""
    if rule.kind is RuleKind.REJECT:
        return f"reject{audit}"
    digest = "digest required" if rule.require_digest else "tag-only references allowed"
    limits = _describe_limits(rule.limits) + (
        "; privileged containers allowed" if rule.runtime.allow_privileged else ""
    )
    if rule.kind is RuleKind.ACCEPT_ANYTHING:
        return f"INSECURE: accepts any image without checking signatures; {digest}{limits}"
    names = ", ".join(a.name for a in rule.authorities)
    who = (
        f"{names} must sign"
        if len(rule.authorities) == 1
        else f"at least {rule.threshold} of {names} must sign"
    )
    what = "the index and the manifest" if rule.sign_target is SignTarget.BOTH else f"the {rule.sign_target}"
    parts = [f"{who} {what}", digest]
    if rule.ignore_reference:
        parts.append("signatures naming another repository accepted")
    for required in rule.attestations:
        signers = ", ".join(a.name for a in required.authorities)
        condition = f" where {required.condition.text}" if required.condition else ""
        parts.append(f"attestation {required.name}: {required.predicate_type} by {signers}{condition}")
    return "; ".join(parts) + limits + audit


def _describe_limits(limits: ImageLimits) -> str:
    if limits == ImageLimits():
        return ""
    return (
        f"; limits: {limits.max_layers} layers, {limits.max_unpacked_bytes} unpacked bytes, "
        f"{limits.max_files} files"
    )
