"""Notary Project (Notation) signatures (issue #6). Placeholder until implemented."""

from __future__ import annotations

from collections.abc import Sequence

from policy.model import NotationAuthority
from pull.digest import Digest
from trust.attached import AttachedSignatures
from trust.cosign import SignatureOutcome


def verify_notation_attached(
    attached: AttachedSignatures, expected: Digest, authority: NotationAuthority
) -> Sequence[SignatureOutcome]:
    """One outcome per Notation signature attached to `expected`, judged against the authority."""
    return []
