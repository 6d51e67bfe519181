"""The Notary Project COSE envelope (`application/cose`): a `COSE_Sign1_Tagged` object, verified.

    18([ protected: bstr .cbor {1: alg, 2: crit, 3: cty, "io.cncf.notary.signingScheme": …,
                                "io.cncf.notary.signingTime": 1(epoch), ?"io.cncf.notary.expiry": 1(epoch)},
         unprotected: {33: [bstr DER certificates, leaf first], ?"io.cncf.notary.signingAgent": tstr, …},
         payload: bstr (the JSON Notary payload),
         signature: bstr ])

The signature covers `["Signature1", protected, h'', payload]` (RFC 9052 `Sig_structure`). The
rules are those of the JWS envelope (`trust.notation.jws`), with COSE's integer labels and
algorithm numbers. CBOR is decoded strictly: no duplicate map keys, no indefinite lengths, no
trailing bytes, bounded nesting.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import cbor2

from trust.notation.certificates import CertificateProblem, load_chain
from trust.notation.jws import (
    ALGORITHMS,
    HEADER_AUTHENTIC_TIME,
    HEADER_EXPIRY,
    HEADER_PLUGIN,
    HEADER_PLUGIN_VERSION,
    HEADER_SCHEME,
    HEADER_SIGNING_AGENT,
    HEADER_SIGNING_TIME,
    MAX_ENVELOPE_BYTES,
    PAYLOAD_CONTENT_TYPE,
    BadSignature,
    Envelope,
    EnvelopeError,
    algorithm_for,
    check_signing_scheme,
    parse_payload,
    verify_signature,
)

COSE_SIGN1_TAG = 18
LABEL_ALG, LABEL_CRIT, LABEL_CTY, LABEL_X5CHAIN = 1, 2, 3, 33
COSE_ALGORITHMS = {-37: "PS256", -38: "PS384", -39: "PS512", -7: "ES256", -35: "ES384", -36: "ES512"}
"""COSE algorithm numbers (IANA) of the six Notary Project algorithms."""
_KNOWN_CRITICAL = frozenset({HEADER_SCHEME, HEADER_EXPIRY})
_MAX_DEPTH = 16
_TIMESTAMP_HEADER = "io.cncf.notary.timestampSignature"


def parse_cose_envelope(data: bytes) -> Envelope:
    """Parse a COSE_Sign1 envelope and verify its signature with its own leaf certificate.

    Raises:
        EnvelopeError: malformed, unknown critical header, unsupported scheme or algorithm.
        BadSignature: the signature does not verify.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"the envelope is over {MAX_ENVELOPE_BYTES} bytes")
    message = _decode(data, "the COSE envelope")
    if not isinstance(message, cbor2.CBORTag) or message.tag != COSE_SIGN1_TAG:
        raise EnvelopeError("the COSE envelope is not a COSE_Sign1_Tagged object (tag 18)")
    parts = message.value
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise EnvelopeError("COSE_Sign1 must be an array of four items")
    protected_bytes, unprotected, payload, signature = parts
    if not isinstance(protected_bytes, bytes) or not protected_bytes:
        raise EnvelopeError("the COSE protected header is not a non-empty byte string")
    if not isinstance(unprotected, Mapping):
        raise EnvelopeError("the COSE unprotected header is not a map")
    if not isinstance(payload, bytes):
        raise EnvelopeError("the COSE payload is detached or not a byte string")
    if not isinstance(signature, bytes):
        raise EnvelopeError("the COSE signature is not a byte string")
    protected = _decode(protected_bytes, "the COSE protected header")
    if not isinstance(protected, Mapping):
        raise EnvelopeError("the COSE protected header is not a map")
    both = sorted(str(label) for label in set(protected) & set(unprotected))
    if both:
        raise EnvelopeError(f"header {both[0]} is both protected and unprotected")

    alg_number = protected.get(LABEL_ALG)
    if type(alg_number) is not int or alg_number not in COSE_ALGORITHMS:
        raise EnvelopeError(f"alg {str(alg_number)[:20]} is not one of the Notary Project algorithms")
    algorithm = ALGORITHMS[COSE_ALGORITHMS[alg_number]]
    if protected.get(LABEL_CTY) != PAYLOAD_CONTENT_TYPE:
        raise EnvelopeError(
            f"content type is {str(protected.get(LABEL_CTY))[:60]!r}, not {PAYLOAD_CONTENT_TYPE!r}"
        )
    _check_critical(protected)
    check_signing_scheme(protected)
    signing_time = _time(protected.get(HEADER_SIGNING_TIME), HEADER_SIGNING_TIME)
    if signing_time is None:
        raise EnvelopeError(f"the protected header has no {HEADER_SIGNING_TIME}")
    expiry = _time(protected.get(HEADER_EXPIRY), HEADER_EXPIRY)

    raw_chain = protected.get(LABEL_X5CHAIN, unprotected.get(LABEL_X5CHAIN))
    if isinstance(raw_chain, bytes):
        raw_chain = [raw_chain]  # COSE allows a lone certificate as a bare byte string
    if not isinstance(raw_chain, list | tuple) or not all(isinstance(item, bytes) for item in raw_chain):
        raise EnvelopeError("the COSE envelope has no x5chain (label 33) of DER certificates")
    try:
        chain = load_chain(list(raw_chain))
    except CertificateProblem as exc:
        raise EnvelopeError(str(exc)) from None
    required = algorithm_for(chain[0].public_key())
    if required.name != algorithm.name:
        raise EnvelopeError(
            f"alg {algorithm.name} does not match the signing certificate's key, "
            f"which requires {required.name}"
        )
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
    if not verify_signature(chain[0].public_key(), algorithm, to_be_signed, signature):
        raise BadSignature("the signature does not verify with the signing certificate's key")

    target = parse_payload(payload)
    agent = unprotected.get(HEADER_SIGNING_AGENT)
    token = unprotected.get(_TIMESTAMP_HEADER)
    if token is not None and not isinstance(token, bytes):
        raise EnvelopeError(f"{_TIMESTAMP_HEADER} is not a byte string")
    return Envelope(
        algorithm=algorithm.name,
        signing_time=signing_time,
        expiry=expiry,
        target=target,
        chain=tuple(chain),
        signing_agent=agent if isinstance(agent, str) else None,
        has_timestamp=token is not None,
        signature_value=signature,
        timestamp_token=token,
    )


def _decode(data: bytes, what: str) -> Any:
    stream = io.BytesIO(data)
    try:
        decoded = cbor2.CBORDecoder(
            stream, allow_duplicate_keys=False, allow_indefinite=False, max_depth=_MAX_DEPTH
        ).decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise EnvelopeError(f"{what} is not valid CBOR ({str(exc)[:80]})") from None
    if stream.tell() != len(data):
        raise EnvelopeError(f"{what} has trailing bytes after the CBOR item")
    return decoded


def _check_critical(protected: Mapping[Any, Any]) -> None:
    crit = protected.get(LABEL_CRIT)
    if not isinstance(crit, list | tuple) or not crit:
        raise EnvelopeError("crit must be a non-empty array of header labels")
    if not all(isinstance(label, str) or type(label) is int for label in crit) or len(set(crit)) != len(crit):
        raise EnvelopeError("crit must list distinct integer or text labels")
    for label in crit:
        if type(label) is int and 0 <= label <= 8:
            raise EnvelopeError(f"crit lists the common header label {label}")
        if label not in protected:
            raise EnvelopeError(f"crit lists {str(label)[:60]!r}, which the protected header lacks")
        if label in (HEADER_PLUGIN, HEADER_PLUGIN_VERSION):
            raise EnvelopeError(
                f"the signature requires the verification plugin {str(protected.get(HEADER_PLUGIN))[:60]!r}, "
                "which trust does not run"
            )
        if label != HEADER_AUTHENTIC_TIME and label not in _KNOWN_CRITICAL:
            raise EnvelopeError(f"unknown critical header {str(label)[:60]!r}")
    for name in (HEADER_SCHEME, HEADER_EXPIRY, HEADER_AUTHENTIC_TIME, HEADER_PLUGIN, HEADER_PLUGIN_VERSION):
        if name in protected and name not in crit:
            raise EnvelopeError(f"header {name!r} must be listed in crit")


def _time(value: object, name: str) -> datetime | None:
    """An epoch date/time (CBOR tag 1, decoded by cbor2 into an aware datetime)."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise EnvelopeError(f"{name} is not a CBOR epoch date/time (tag 1)")
    return value.astimezone(UTC)
