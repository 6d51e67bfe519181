"""The seam between the policy and the signature families: an authority kind -> its verifier.

`policy.evaluate` asks `verifier_for(authority.kind)` for the function that checks the artifacts
attached to one digest on behalf of one authority, and gets back one `SignatureOutcome` per
signature it looked at. It never branches on the family. A new family (a package under `trust/`)
adds one line to `FAMILIES` and a `verify_authority` function in its `__init__.py` with the
`Verifier` signature; its authority dataclass (with a `kind` property naming the same key) goes in
the family's `authority.py` and into `policy.model.Authority`.

Families are imported only when an authority of their kind is evaluated: sigstore-python alone
costs ~150 ms to import, which a policy of cosign keys never pays.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from pull.digest import Digest
    from trust.attached import AttachedSignatures
    from trust.attest.attached import Attestation
    from trust.cosign.simple_signing import SignatureOutcome

FAMILIES: dict[str, str] = {
    "cosign-keys": "trust.cosign",
    "cosign-pki": "trust.cosign",
    "keyless": "trust.sigstore",
    "notation": "trust.notation",
}
"""Authority kind (as written in a policy file) -> the package whose `verify_authority` checks it."""


class Verifier(Protocol):
    def __call__(
        self,
        authority: Any,
        attached: AttachedSignatures,
        digest: Digest,
        *,
        repository: str,
        ignore_reference: bool,
    ) -> Sequence[SignatureOutcome]:
        """One outcome per signature attached to `digest` that this authority's family reads."""
        ...


def verifier_for(kind: str) -> Verifier:
    """The verifier of an authority kind; a kind no family claims is a programming error."""
    try:
        package = FAMILIES[kind]
    except KeyError:
        raise LookupError(f"no signature family verifies authorities of kind {kind!r}") from None
    return cast(Verifier, importlib.import_module(package).verify_authority)


ENVELOPE_SIGNERS: dict[str, str] = {
    "cosign-keys": "trust.cosign",
    "keyless": "trust.sigstore",
}
"""Authority kinds that can sign attestations -> the package whose `open_envelope` checks the
DSSE envelope of one (`trust.attest` judges what is inside). Notation and cosign-pki authorities
sign no attestations: the policy loader refuses them in an `attestations` requirement."""


class EnvelopeOpener(Protocol):
    def __call__(self, authority: Any, attestation: Attestation) -> tuple[str, str, bytes]:
        """(signer, payload type, payload) of an envelope `authority` signed; raises
        `trust.errors.SignatureInvalid` (with a `Reason` value) otherwise."""
        ...


def envelope_opener_for(kind: str) -> EnvelopeOpener | None:
    """The opener of an authority kind, or None if that kind does not sign attestations."""
    package = ENVELOPE_SIGNERS.get(kind)
    if package is None:
        return None
    return cast(EnvelopeOpener, importlib.import_module(package).open_envelope)
