"""Decisions about images that will run elsewhere: the manifests and signatures, never the layers.

`policy.admission.evaluate` pulls the whole image because `trust run` is about to run it here. A
Kubernetes admission webhook decides for a kubelet on another machine, which pulls the layers
itself: it needs the verified manifest digest (and, for an index, the platform manifest the rule's
sign-target names) and the signatures on them. Everything else is the same rule, the same
verifiers and the same `Evaluation`, so a decision here means what `trust verify --policy` means.

The digests are computed from the bytes the registry sends (`pull.pipeline.resolve`); a
`@sha256:` reference must match. Nothing is written to a store: the webhook keeps no content.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from policy.evaluate import Evaluation, evaluate_signatures
from policy.model import MatchedRule, Policy, RuleKind
from pull.errors import InvalidManifest
from pull.manifest import ImageIndex, ImageManifest, Platform, VerifiedDocument, verify_document
from pull.pipeline import resolve

if TYPE_CHECKING:
    from policy.admission import ClientFor
    from pull.digest import Digest
    from pull.reference import Reference
    from pull.registry import RegistryClient


def evaluate_remote(
    reference: Reference,
    policy: Policy,
    clients: ClientFor,
    *,
    platform: Platform | None = None,
) -> Evaluation:
    """The policy's verdict on `reference` as the registry serves it now.

    A tag-only reference is judged as `admission.evaluate` judges it: refused when the rule
    requires a digest (the caller resolves tags first when it may pin them). Raises
    `IntegrityError` and `CouldNotCheck` as the pull pipeline does.
    """
    matched = policy.rule_for(reference)
    rule = matched.rule
    text = str(reference)
    if rule.kind is RuleKind.REJECT:
        return Evaluation(text, matched, None, reasons=(f"{matched} rejects every image in its scope",))
    if rule.require_digest and reference.digest is None:
        return Evaluation(
            text,
            matched,
            None,
            reasons=(f"tag-only reference {reference}: pin a digest ({reference.name}@sha256:…)",),
        )
    client = clients(reference.api_host)
    top = resolve(client, reference)
    manifest_digest, index_digest = _platform_manifest(client, reference, top, platform)
    top_digest = index_digest or manifest_digest
    if rule.kind is RuleKind.ACCEPT_ANYTHING:
        return _accepted(text, matched, top_digest, manifest_digest, index_digest)
    from policy.admission import attestation_source, signature_source

    return evaluate_signatures(
        text,
        matched,
        reference.name,
        top_digest,
        manifest_digest,
        index_digest,
        signature_source(reference, clients),
        attestation_source(reference, clients),
    )


def _platform_manifest(
    client: RegistryClient, reference: Reference, top: VerifiedDocument, platform: Platform | None
) -> tuple[Digest, Digest | None]:
    """(manifest digest, index digest or None): an index is narrowed to the wanted platform's
    manifest, whose digest must be listed in the verified index bytes."""
    if not isinstance(top.document, ImageIndex):
        return top.digest, None
    wanted = platform or Platform.host()
    child = top.document.select(wanted)
    fetched = client.get_manifest(reference.repository, str(child.digest))
    document = verify_document(fetched.data, content_type=fetched.content_type, expected=child.digest)
    if not isinstance(document.document, ImageManifest):
        raise InvalidManifest(f"index entry {child.digest} for {wanted} is not an image manifest")
    return document.digest, top.digest


def _accepted(
    text: str, matched: MatchedRule, top: Digest, manifest: Digest, index: Digest | None
) -> Evaluation:
    return Evaluation(
        text,
        matched,
        top,
        manifest,
        index,
        passed=True,
        warnings=(f"{matched} accepts anything: no signature was checked",),
    )
