"""Notary Project (Notation) signatures: JWS and COSE envelopes with X.509 chains.

The public face: the authority a policy names, its verifier for `trust.verifiers`, and the
trusted-identity parser the policy loader checks identities with (no cryptography import).
Behind it: `signatures` (verification and signing), `artifact` (the referrer manifest), `jws`
and `cose` (the two envelopes), `certificates` (the X.509 rules), `identity` (identity syntax).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from trust.notation.authority import NotationAuthority, NotationLevel, Revocation, VerifyTimestamp
from trust.notation.identity import overlapping, parse_identity
from trust.notation.revocation_settings import store_cache as revocation_cache

if TYPE_CHECKING:
    from pull.digest import Digest
    from trust.attached import AttachedSignatures
    from trust.cosign.simple_signing import SignatureOutcome

__all__ = [
    "NotationAuthority",
    "NotationLevel",
    "Revocation",
    "VerifyTimestamp",
    "overlapping",
    "parse_identity",
    "revocation_cache",
    "verify_authority",
]


def verify_authority(
    authority: NotationAuthority,
    attached: AttachedSignatures,
    digest: Digest,
    *,
    repository: str,
    ignore_reference: bool,
) -> Sequence[SignatureOutcome]:
    """Notation signatures attached to `digest`, against the authority's trust store and level.

    `repository` and `ignore_reference` do not apply: a Notation signature names no repository.
    """
    from trust.notation.signatures import verify_notation_attached

    return verify_notation_attached(attached, digest, authority)
