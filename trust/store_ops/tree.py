"""`trust tree`: everything attached to an image in its registry, by digest (as `cosign tree`).

Read-only and unverified: it shows what is there (`.sig` and `.att` layers, every OCI referrer
with its artifact type and claimed predicate type), so an operator can see what a verifier will
find. The registry's answers are still size-capped and digest-checked by the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pull.digest import Digest
from pull.records import dataclass, field
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.attached import SignatureLocation, read_signature_manifest
from trust.attest.attached import BUNDLE_PREDICATE_ANNOTATION, PREDICATE_TYPE_ANNOTATION, attestation_location
from trust.cosign.simple_signing import manifest_layers


@dataclass(frozen=True)
class Attached:
    digest: Digest
    kind: str
    """A media type or artifact type."""
    detail: str = ""


@dataclass
class Tree:
    reference: str
    digest: Digest
    signatures_tag: str
    signatures: list[Attached] = field(default_factory=list)
    attestations_tag: str = ""
    attestations: list[Attached] = field(default_factory=list)
    referrers: list[Attached] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def items(found: list[Attached]) -> list[dict[str, str]]:
            return [{"digest": str(a.digest), "type": a.kind, "detail": a.detail} for a in found]

        return {
            "reference": self.reference,
            "digest": str(self.digest),
            "signatures": {"tag": self.signatures_tag, "layers": items(self.signatures)},
            "attestations": {"tag": self.attestations_tag, "layers": items(self.attestations)},
            "referrers": items(self.referrers),
        }

    def lines(self) -> list[str]:
        groups = [
            (f"signatures ({self.signatures_tag})", self.signatures),
            (f"attestations ({self.attestations_tag})", self.attestations),
            ("referrers", self.referrers),
        ]
        out = [f"{self.reference.split('@')[0]}@{self.digest}"]
        for number, (title, found) in enumerate(groups):
            last_group = number == len(groups) - 1
            out.append(f"{'└──' if last_group else '├──'} {title}: {len(found) or 'none'}")
            for position, item in enumerate(found):
                branch = "└──" if position == len(found) - 1 else "├──"
                text = f"{item.digest} {item.kind}" + (f" ({item.detail})" if item.detail else "")
                out.append(f"{'    ' if last_group else '│   '}{branch} {text}")
        return out


def attached_tree(client_for: Callable[[str], RegistryClient], reference: Reference) -> Tree:
    from pull.pipeline import resolve
    from pull.referrers import list_referrers

    client = client_for(reference.api_host)
    document = resolve(client, reference)
    signatures = SignatureLocation.for_image(reference, document.digest)
    attestations = attestation_location(signatures)
    tree = Tree(str(reference), document.digest, str(signatures), attestations_tag=str(attestations))
    for layer in _layers(client, signatures):
        tree.signatures.append(Attached(layer.digest, layer.media_type))
    for layer in _layers(client, attestations):
        tree.attestations.append(
            Attached(layer.digest, layer.media_type, layer.annotations.get(PREDICATE_TYPE_ANNOTATION, ""))
        )
    for entry in list_referrers(client, reference.repository, document.digest):
        claimed = (entry.annotations or {}).get(BUNDLE_PREDICATE_ANNOTATION, "")
        tree.referrers.append(Attached(entry.digest, entry.artifact_type or entry.media_type, claimed))
    return tree


def _layers(client: RegistryClient, location: SignatureLocation) -> list[Any]:
    raw = read_signature_manifest(client, location)
    return [] if raw is None else manifest_layers(raw)
