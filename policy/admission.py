"""Admission: reference + policy → an `AdmittedImage`, or a denial with reasons. Every decision is logged.

This is the one function `trust verify --policy`, the CI gate and `trust run` call:

    1. match the reference against the policy (most specific rule wins);
    2. refuse a tag-only reference before any network call when the rule requires a digest;
    3. refuse outright for a `reject` rule;
    4. pull the image through the verifying pipeline (every digest and size checked);
    5. for a `signed` rule, verify the signatures on the required digests and apply the threshold;
    6. append the decision to the store's decision log (`meta/decisions.jsonl`);
    7. return the admitted image (enforce: only if it passed; audit: always, with the failure).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from policy.admitted import AdmittedImage, Decision
from pull.errors import CouldNotCheck, DeniedError, IntegrityError, NotAnImage, UsageError
from pull.records import dataclass
from pull.reference import Reference
from trust.errors import RevocationUnknown

if TYPE_CHECKING:  # a reused decision (`trust run`, policy.reuse) needs none of these: keep it fast
    from policy.evaluate import AttestationSource, Evaluation, SignatureSource
    from policy.model import MatchedRule, Policy
    from pull.digest import Digest
    from pull.manifest import Platform
    from pull.pipeline import PullResult
    from pull.registry import RegistryClient
    from pull.store import ContentStore
    from trust.attached import AttachedSignatures
    from trust.attest import Attestation

POLICY_ENV = "TRUST_POLICY"
STORE_POLICY = "policy.yaml"


class PolicyDenied(DeniedError):
    """The policy refused the image (exit 3). `evaluation` says why, authority by authority."""

    def __init__(self, message: str, evaluation: Evaluation) -> None:
        super().__init__(message)
        self.evaluation = evaluation


ClientFor = Callable[[str], "RegistryClient"]


@dataclass(frozen=True)
class Admission:
    """An evaluation and, when admitted, the image that may run."""

    evaluation: Evaluation
    image: AdmittedImage | None


def find_policy(policy_path: Path | None, store: ContentStore) -> Path:
    """`--policy FILE`, else `$TRUST_POLICY`, else `STORE/policy.yaml`."""
    if policy_path is not None:
        return policy_path
    if os.environ.get(POLICY_ENV):
        return Path(os.environ[POLICY_ENV])
    candidate = store.root / STORE_POLICY
    if candidate.exists():
        return candidate
    raise UsageError(f"no policy: pass --policy FILE, set {POLICY_ENV}, or write {candidate}")


def load(policy_path: Path | None, store: ContentStore) -> Policy:
    from policy.loader import load_policy

    return load_policy(find_policy(policy_path, store))


def admit(
    reference: Reference,
    policy: Policy,
    store: ContentStore,
    clients: ClientFor,
    *,
    platform: Platform | None = None,
    log: bool = True,
) -> AdmittedImage:
    """Decide; return the admitted image.

    Raises:
        PolicyDenied: the policy refused (exit 3). IntegrityError: bytes did not match (exit 4).
        CouldNotCheck: the registry could not be asked, or a revocation status could not be
            learned (exit 5).
    """
    admission = evaluate(reference, policy, store, clients, platform=platform, log=log)
    if admission.image is None:
        evaluation = admission.evaluation
        unknown = evaluation.revocation_unknown
        if unknown is not None:
            raise RevocationUnknown(f"{reference}: {unknown}")
        raise PolicyDenied(
            f"{reference} denied by {evaluation.matched}: {'; '.join(evaluation.reasons)}", evaluation
        )
    return admission.image


def admit_reference(
    reference_text: str,
    *,
    policy_path: Path | None,
    store: ContentStore,
    insecure_registries: Sequence[str] = (),
    platform: Platform | None = None,
    reuse: bool = False,
) -> AdmittedImage:
    """`admit` for callers holding strings: parse, load the policy, open clients, decide.

    With `reuse` (`trust run`, `trust create`), a recorded decision whose inputs are unchanged is
    reused when the policy allows it (`policy.reuse`), without asking the registry.
    """
    reference = Reference.parse(reference_text)
    if reuse:
        from policy.reuse import recall

        reused = recall(store, reference, platform, find_policy(policy_path, store))
        if reused is not None:
            return reused
    from pull.clients import RegistryClients

    policy = load(policy_path, store)
    from trust.notation import revocation_cache  # loaded with the policy anyway; not on the reuse path

    # Notation certificates' CRLs and OCSP answers are cached beside the content they vouch for.
    with revocation_cache(store.root), RegistryClients.insecure(insecure_registries) as clients:
        return admit(reference, policy, store, clients, platform=platform)


def evaluate(
    reference: Reference,
    policy: Policy,
    store: ContentStore,
    clients: ClientFor,
    *,
    platform: Platform | None = None,
    log: bool = True,
    artifacts: bool = False,
) -> Admission:
    """Like `admit`, but a denial is returned (for `explain` and the CI gate) instead of raised.

    With `artifacts`, a signed artifact that is not a container image (a Notation-signed file, an
    SBOM, a Helm chart) is judged by its signatures like an image; it is never admitted to run
    (`image` stays None). Without it, such a reference fails as `NotAnImage` (exit 4).
    """
    from policy.evaluate import Evaluation, evaluate_signatures
    from policy.model import RuleKind

    matched = policy.rule_for(reference)
    rule = matched.rule
    text = str(reference)

    def finish(evaluation: Evaluation, image: AdmittedImage | None) -> Admission:
        if log:
            _log(store, policy, evaluation)
        return Admission(evaluation, image)

    if rule.kind is RuleKind.REJECT:
        return finish(
            Evaluation(text, matched, None, reasons=(f"{matched} rejects every image in its scope",)), None
        )
    if rule.require_digest and reference.digest is None:
        return finish(Evaluation(text, matched, None, reasons=(_pin_hint(reference, store),)), None)

    pulled: PullResult | None = None
    reusable_inputs = None
    if reference.digest is not None:
        from policy.reuse import inputs_before_deciding

        reusable_inputs = inputs_before_deciding(policy)
    try:
        try:
            pulled = _pull(reference, store, clients, platform, policy.allow_nondistributable_urls)
            manifest_digest = pulled.manifest.digest
            index_digest = pulled.index.digest if pulled.index else None
        except NotAnImage as artifact:
            if not artifacts:
                raise
            manifest_digest, index_digest = artifact.manifest_digest, artifact.index_digest
        top_digest = index_digest or manifest_digest
        if rule.kind is RuleKind.ACCEPT_ANYTHING:
            evaluation = Evaluation(
                text,
                matched,
                top_digest,
                manifest_digest,
                index_digest,
                passed=True,
                warnings=(f"{matched} accepts anything: no signature was checked",),
            )
        else:
            evaluation = evaluate_signatures(
                text,
                matched,
                reference.name,
                top_digest,
                manifest_digest,
                index_digest,
                signature_source(reference, clients, store),
                attestation_source(reference, clients, store),
            )
    except (IntegrityError, CouldNotCheck) as err:
        if log:
            _log_error(store, policy, text, matched, err)
        raise
    image = _admitted(pulled, reference, evaluation, policy) if pulled and evaluation.admitted else None
    if image is not None and reusable_inputs is not None:
        from policy.reuse import remember

        remember(store, reference, platform, policy, evaluation, image, reusable_inputs)
    return finish(evaluation, image)


def _pull(
    reference: Reference,
    store: ContentStore,
    clients: ClientFor,
    platform: Platform | None,
    allow_nondistributable_urls: bool = False,
) -> PullResult:
    from pull.config import PullConfig
    from pull.pipeline import pull

    config = PullConfig(allow_nondistributable_urls=allow_nondistributable_urls)
    return pull(reference, store, clients(reference.api_host), platform=platform, config=config)


def signature_source(
    reference: Reference, clients: ClientFor, cache: ContentStore | None = None
) -> SignatureSource:
    """Where `evaluate_signatures` reads the signatures of `reference`'s digests.

    With `cache`, every signature artifact read (the `.sig` manifest and payloads, referrers
    indexes, referrer manifests, bundles) is kept in that store, so `trust audit --offline` can
    re-verify the image later without a registry (`pull.sigcache`).
    """
    from trust.attached import SignatureLocation, discover

    def source(digest: Digest) -> AttachedSignatures:
        location = SignatureLocation.for_image(reference, digest)
        client = clients(location.api_host)
        if cache is not None and not cache.read_only:  # a read-only store is read, never written
            from pull.sigcache import CachingClient

            # CachingClient offers the read calls `discover` makes, with RegistryClient's signatures.
            client = cast("RegistryClient", CachingClient(client, cache, location.registry))
        return discover(client, reference.repository, digest, location)

    return source


def attestation_source(
    reference: Reference, clients: ClientFor, cache: ContentStore | None = None
) -> AttestationSource:
    """Where `evaluate_signatures` reads the attestations of `reference`'s digests: the `.att` tag
    beside the `.sig` tag, and bundle referrers (kept in `cache` as signatures are)."""

    def source(digest: Digest, predicate_type: str) -> Sequence[Attestation]:
        # Imported here: a rule without attestations never loads the attestation code.
        from trust.attached import SignatureLocation
        from trust.attest import attestation_location, discover_attestations

        location = attestation_location(SignatureLocation.for_image(reference, digest))
        client = clients(location.api_host)
        if cache is not None and not cache.read_only:  # a read-only store is read, never written
            from pull.sigcache import CachingClient

            client = cast("RegistryClient", CachingClient(client, cache, location.registry))
        return discover_attestations(
            client, reference.repository, digest, location, predicate_type=predicate_type
        )

    return source


def _admitted(
    pulled: PullResult, reference: Reference, evaluation: Evaluation, policy: Policy
) -> AdmittedImage:
    decision = Decision(
        rule=evaluation.matched.scope or "default",
        mode=evaluation.mode.value,
        allowed=evaluation.passed,
        reasons=evaluation.reasons,
        authorities=tuple(result.to_json() for result in evaluation.authorities),
        policy=str(policy.source_path) if policy.source_path else None,
    )
    return AdmittedImage(
        repository=reference.name,
        manifest_digest=pulled.manifest.digest,
        config_digest=pulled.config_descriptor.digest,
        config=pulled.config,
        layers=pulled.image_manifest.layers,
        decision=decision,
        index_digest=pulled.index.digest if pulled.index else None,
        tag=reference.tag,
        limits=evaluation.matched.rule.limits,
        runtime=evaluation.matched.rule.runtime,
        mirrors=pulled.mirrors,
    )


def _pin_hint(reference: Reference, store: ContentStore) -> str:
    known = store.resolve(f"{reference.name}:{reference.tag}") if reference.tag else None
    if known is not None:
        return f"tag-only reference {reference}: pin the digest, e.g. {reference.name}@{known.digest}"
    return (
        f"tag-only reference {reference}: pin a digest ({reference.name}@sha256:…); "
        f"`trust pull {reference}` prints it"
    )


def log_decision(store: ContentStore, policy: Policy, evaluation: Evaluation) -> None:
    """Append `evaluation` to the store's decision log (STORE/meta/decisions.jsonl)."""
    _log(store, policy, evaluation)


def log_failure(store: ContentStore, policy: Policy, reference: Reference, err: Exception) -> None:
    """Append a decision that could not be made (integrity failure, could not check) to the log."""
    _log_error(store, policy, str(reference), policy.rule_for(reference), err)


def _log(store: ContentStore, policy: Policy, evaluation: Evaluation) -> None:
    record = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": str(policy.source_path) if policy.source_path else None,
        **evaluation.to_json(),
    }
    store.append_record("decisions", record)


def _log_error(store: ContentStore, policy: Policy, text: str, matched: MatchedRule, err: Exception) -> None:
    store.append_record(
        "decisions",
        {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "policy": str(policy.source_path) if policy.source_path else None,
            "reference": text,
            "rule": matched.scope or "default",
            "mode": matched.rule.mode.value,
            "decision": "error",
            "reasons": [str(err)],
        },
    )
