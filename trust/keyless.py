"""Keyless Sigstore verification (issue #7). Placeholder until implemented."""

from __future__ import annotations

from collections.abc import Sequence

from policy.model import KeylessAuthority
from pull.digest import Digest
from trust.attached import AttachedSignatures
from trust.cosign import SignatureOutcome


def verify_keyless_attached(
    attached: AttachedSignatures,
    expected: Digest,
    repository: str,
    authority: KeylessAuthority,
    *,
    ignore_reference: bool = False,
) -> Sequence[SignatureOutcome]:
    """One outcome per signature attached to `expected`, judged against a keyless identity."""
    return []
