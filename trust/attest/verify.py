"""Judging one attestation for one authority: who signed it, what it says, about which digest.

The order of the checks is the order of trust: the envelope's signature first (by the authority:
cosign keys over the PAE, or a keyless identity through the Sigstore bundle), then the statement
inside the signed bytes (in-toto, well-formed), then its subject (this digest, never another),
then its predicate type. Only a statement that passes all four reaches a policy condition.
"""

from __future__ import annotations

from typing import Any

from pull.digest import Digest
from pull.records import dataclass
from trust.attest.attached import Attestation
from trust.attest.statement import Statement, StatementError, parse_statement
from trust.cosign.simple_signing import Reason
from trust.errors import SignatureInvalid
from trust.verifiers import ENVELOPE_SIGNERS, envelope_opener_for


@dataclass(frozen=True)
class AttestationOutcome:
    """One attestation judged for one authority. `statement` is set only when it verified."""

    index: int
    source: str
    blob_digest: Digest
    reason: Reason
    detail: str
    signer: str | None = None
    predicate_type: str | None = None
    statement: Statement | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.VALID

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source,
            "blobDigest": str(self.blob_digest),
            "outcome": self.reason.value,
            "reason": self.detail,
            "signer": self.signer,
            "predicateType": self.predicate_type,
        }


SIGNING_KINDS = tuple(ENVELOPE_SIGNERS)
"""Authority kinds that can sign attestations (the policy loader refuses the others)."""


def verify_attestation(
    index: int,
    attestation: Attestation,
    authority: object,
    digest: Digest | None,
    predicate_type: str | None,
) -> AttestationOutcome:
    """The outcome of `attestation` for `authority` about `digest`, of `predicate_type` (None: any).

    `digest` None skips the subject check: only `verify-blob-attestation --check-claims=false`
    asks for that (as cosign's flag), to read a statement whose subject is not at hand."""

    def outcome(
        reason: Reason, detail: str, signer: str | None = None, found: str | None = None
    ) -> AttestationOutcome:
        return AttestationOutcome(
            index, attestation.source, attestation.blob_digest, reason, detail, signer, found
        )

    if attestation.envelope is None:
        return outcome(
            Reason.MALFORMED, attestation.problem or "no DSSE envelope", None, attestation.claimed_type
        )
    try:
        signer, payload_type, payload = _open(attestation, authority)
    except SignatureInvalid as exc:
        return outcome(Reason(exc.reason), str(exc), None, attestation.claimed_type)
    try:
        statement = parse_statement(payload_type, payload)
    except StatementError as exc:
        return outcome(Reason.MALFORMED, str(exc), signer)
    found = statement.predicate_type
    if digest is not None and not statement.covers(digest):
        return outcome(
            Reason.DIGEST_MISMATCH,
            f"the statement is about {statement.subject_text()}, not {digest}",
            signer,
            found,
        )
    if predicate_type is not None and found != predicate_type:
        return outcome(
            Reason.WRONG_PREDICATE_TYPE, f"predicate type is {found}, not {predicate_type}", signer, found
        )
    return AttestationOutcome(
        index,
        attestation.source,
        attestation.blob_digest,
        Reason.VALID,
        f"signed by {signer}",
        signer,
        found,
        statement,
    )


def _open(attestation: Attestation, authority: object) -> tuple[str, str, bytes]:
    """(signer, payload type, payload) from an envelope this authority signed; else `SignatureInvalid`.
    The family of the authority's kind checks the signature (`trust.verifiers`)."""
    kind = str(getattr(authority, "kind", type(authority).__name__))
    opener = envelope_opener_for(kind)
    if opener is None:
        raise SignatureInvalid(
            Reason.UNKNOWN_KEY.value, f"authorities of kind {kind} do not sign attestations"
        )
    return opener(authority, attestation)
