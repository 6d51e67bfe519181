"""DSSE envelopes (https://github.com/secure-systems-lab/dsse): the signed wrapper of a statement.

`{"payloadType", "payload": base64, "signatures": [{"keyid", "sig": base64}]}`. A signature covers
the pre-authentication encoding (PAE) of the payload type and the payload, never the JSON, so the
envelope's own bytes may be re-serialised without breaking it and a payload cannot be passed off
under another payload type.
"""

from __future__ import annotations

import base64
import binascii
import json

from pull.records import dataclass
from pull.strictjson import loads as strict_json
from trust.keys.keyfiles import Signer, TrustedKey, verify_bytes
from trust.sigstore.bundles import pae

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
MAX_SIGNATURES = 32


class EnvelopeError(ValueError):
    """Not a DSSE envelope (the message says why)."""


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def signer_among(self, keys: tuple[TrustedKey, ...] | list[TrustedKey]) -> TrustedKey | None:
        """The first trusted key one of the signatures verifies with, over the PAE."""
        signed = self.signed_bytes()
        return next((k for k in keys for s in self.signatures if verify_bytes(k.public_key, signed, s)), None)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "payloadType": self.payload_type,
                "payload": base64.b64encode(self.payload).decode(),
                "signatures": [{"keyid": "", "sig": base64.b64encode(s).decode()} for s in self.signatures],
            },
            separators=(",", ":"),
        ).encode()


def sign_envelope(payload_type: str, payload: bytes, signer: Signer) -> Envelope:
    return Envelope(payload_type, payload, (signer.sign(pae(payload_type, payload)),))


def parse_envelope(data: bytes) -> Envelope:
    """Structure only, no trust. Raises `EnvelopeError`."""
    try:
        document = strict_json(data, "the DSSE envelope")
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError("the DSSE envelope is not valid JSON") from None
    if not isinstance(document, dict):
        raise EnvelopeError("the DSSE envelope is not a JSON object")
    return envelope_from_json(document)


def envelope_from_json(document: dict[str, object]) -> Envelope:
    payload_type = document.get("payloadType")
    if not isinstance(payload_type, str):
        raise EnvelopeError("the DSSE envelope has no payloadType")
    raw_signatures = document.get("signatures")
    if not isinstance(raw_signatures, list) or not raw_signatures:
        raise EnvelopeError("the DSSE envelope has no signatures")
    if len(raw_signatures) > MAX_SIGNATURES:
        raise EnvelopeError(f"the DSSE envelope has more than {MAX_SIGNATURES} signatures")
    signatures = tuple(
        _b64(s.get("sig") if isinstance(s, dict) else None, "signature") for s in raw_signatures
    )
    return Envelope(payload_type, _b64(document.get("payload"), "payload"), signatures)


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError(f"the DSSE envelope's {what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # DSSE allows URL-safe base64 too
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise EnvelopeError(f"the DSSE envelope's {what} is not base64") from None
