"""Attestations: in-toto statements in DSSE envelopes (SLSA provenance, SBOMs, scan results).

The public face for `policy`: find the attestations attached to a digest and judge one for an
authority. Behind it: `statement` (in-toto statements, predicate type names), `envelope` (DSSE),
`attached` (the `.att` tag and bundle referrers, reading and writing), `verify` (the checks).
A statement's *content* is judged by the policy's CEL conditions (`policy.conditions`).
"""

from __future__ import annotations

from trust.attest.attached import Attestation, attestation_location, discover_attestations
from trust.attest.statement import PREDICATE_TYPES, Statement, predicate_type_for
from trust.attest.verify import SIGNING_KINDS, AttestationOutcome, verify_attestation

__all__ = [
    "PREDICATE_TYPES",
    "SIGNING_KINDS",
    "Attestation",
    "AttestationOutcome",
    "Statement",
    "attestation_location",
    "discover_attestations",
    "predicate_type_for",
    "verify_attestation",
]
