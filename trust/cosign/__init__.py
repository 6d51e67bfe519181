"""Cosign signatures made with keys: simple signing on `.sig` tags, and key-signed bundles.

The public face: the authority a policy names (`CosignKeyAuthority`), its verifier for
`trust.verifiers`, and the outcome type every family reports with. Behind it: `simple_signing`
(payloads, `.sig` manifests, Rekor SETs, the verification core), `signing` (`trust sign` /
`trust verify` against a registry), `dir_image` (containers/image `dir:` signatures).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from trust.cosign.authority import CosignKeyAuthority, CosignPkiAuthority
from trust.cosign.simple_signing import Reason, SignatureOutcome

if TYPE_CHECKING:
    from pull.digest import Digest
    from trust.attached import AttachedSignatures
    from trust.attest.attached import Attestation

__all__ = [
    "CosignKeyAuthority",
    "CosignPkiAuthority",
    "Reason",
    "SignatureOutcome",
    "open_envelope",
    "verify_authority",
]


def verify_authority(
    authority: CosignKeyAuthority | CosignPkiAuthority,
    attached: AttachedSignatures,
    digest: Digest,
    *,
    repository: str,
    ignore_reference: bool,
) -> Sequence[SignatureOutcome]:
    """Simple-signing layers and key-signed bundles attached to `digest`, checked with the keys;
    for a PKI authority, the simple-signing layers whose certificates chain to its CA roots."""
    from trust.attached import verify_attached

    if isinstance(authority, CosignPkiAuthority):
        from trust.cosign.pki import verify_pki_layers

        return verify_pki_layers(
            attached.layers, attached.loader, digest, repository, authority, ignore_reference=ignore_reference
        )

    rekor_keys = [key.public_key for key in authority.rekor_keys] or None
    return verify_attached(
        attached,
        digest,
        repository,
        authority.keys,
        rekor_keys=rekor_keys,
        ignore_reference=ignore_reference,
    )


def open_envelope(authority: CosignKeyAuthority, attestation: Attestation) -> tuple[str, str, bytes]:
    """An attestation's DSSE envelope signed (over the PAE) by one of the authority's keys."""
    from trust.errors import SignatureInvalid

    if authority.trusted_root is not None:
        from trust.sigstore import verify_dsse_bundle

        if attestation.bundle is None:
            raise SignatureInvalid(
                Reason.BAD_SET.value,
                "the log is required (--trusted-root) and this .att layer carries no log entry: "
                "attest with --format bundle and the log",
            )
        verified = verify_dsse_bundle(
            attestation.bundle, keys=authority.keys, trusted_root=authority.trusted_root
        )
        assert verified.payload_type is not None and verified.payload is not None
        return verified.signer, verified.payload_type, verified.payload
    envelope = attestation.envelope
    assert envelope is not None
    if authority.rekor_keys:
        raise SignatureInvalid(
            Reason.BAD_SET.value,
            f"authority {authority.name} requires a Rekor SET; trust does not check SETs on attestations",
        )
    key = envelope.signer_among(authority.keys)
    if key is None:
        raise SignatureInvalid(
            Reason.UNKNOWN_KEY.value,
            f"the DSSE signature verifies with none of {authority.name}'s keys ({len(authority.keys)})",
        )
    return key.name, envelope.payload_type, envelope.payload
