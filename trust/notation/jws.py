"""The Notary Project JWS envelope (`application/jose+json`): strict parsing and building.

An envelope is flattened JWS JSON: `{"payload", "protected", "header": {"x5c", ...}, "signature"}`.
The protected header carries `alg` (PS256/384/512, ES256/384/512, matching the signing
certificate's key), `cty` (the Notary payload type), `crit`, the signing scheme, the signing time
and an optional expiry. The payload is `{"targetArtifact": descriptor}`.

Parsing here proves the envelope's *integrity* only: well-formed, every critical header known, and
the signature verifies with the first `x5c` certificate's key under the algorithm that key
requires. Whether that certificate is trusted is `trust.notation.signatures`'s question.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeGuard

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from pull.digest import Digest
from pull.errors import InvalidReference
from pull.manifest import Descriptor
from pull.records import dataclass
from pull.strictjson import loads as strict_json
from trust.notation.certificates import CertificateProblem, load_chain

JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
PAYLOAD_CONTENT_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SIGNING_SCHEME = "notary.x509"
SIGNING_AUTHORITY_SCHEME = "notary.x509.signingAuthority"

HEADER_SCHEME = "io.cncf.notary.signingScheme"
HEADER_SIGNING_TIME = "io.cncf.notary.signingTime"
HEADER_EXPIRY = "io.cncf.notary.expiry"
HEADER_AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
HEADER_PLUGIN = "io.cncf.notary.verificationPlugin"
HEADER_PLUGIN_VERSION = "io.cncf.notary.verificationPluginMinVersion"
HEADER_SIGNING_AGENT = "io.cncf.notary.signingAgent"
HEADER_TIMESTAMP = "io.cncf.notary.timestampSignature"
SIGNING_AGENT = "trust"

MAX_ENVELOPE_BYTES = 256 * 1024
"""An envelope is a few kilobytes (a payload, headers, a certificate chain, maybe a timestamp
token); with up to `trust.attached.MAX_REFERRERS` of them per digest, the cap bounds memory."""

_KNOWN_CRITICAL = frozenset({HEADER_SCHEME, HEADER_EXPIRY})
_REGISTERED_HEADERS = frozenset(
    {"alg", "cty", "crit", "typ", "kid", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256"}
)
_DESCRIPTOR_FIELDS = frozenset(
    {"mediaType", "digest", "size", "annotations", "artifactType", "urls", "platform", "data"}
)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Algorithm:
    """A JWS `alg` value and what it means."""

    name: str
    hash: type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]
    curve: str | None
    """The EC curve (ES*), or None for RSASSA-PSS."""
    rsa_bits: int | None = None
    """The RSA key size the Notary Project pairs with this algorithm."""


ALGORITHMS = {
    "PS256": Algorithm("PS256", hashes.SHA256, None, 2048),
    "PS384": Algorithm("PS384", hashes.SHA384, None, 3072),
    "PS512": Algorithm("PS512", hashes.SHA512, None, 4096),
    "ES256": Algorithm("ES256", hashes.SHA256, "secp256r1"),
    "ES384": Algorithm("ES384", hashes.SHA384, "secp384r1"),
    "ES512": Algorithm("ES512", hashes.SHA512, "secp521r1"),
}
_EC_SIZES = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66}
_DER = Encoding.DER


class EnvelopeError(ValueError):
    """The envelope is malformed or breaks a Notary Project rule (integrity fails)."""


class BadSignature(EnvelopeError):
    """The envelope is well-formed but its signature does not verify with the signing certificate."""


@dataclass(frozen=True)
class Envelope:
    """A parsed and signature-checked JWS envelope. `chain` is `x5c`, leaf first, not yet trusted."""

    algorithm: str
    signing_time: datetime
    expiry: datetime | None
    target: Descriptor
    chain: tuple[x509.Certificate, ...]
    signing_agent: str | None
    has_timestamp: bool
    signature_value: bytes = b""
    """The raw signature bytes: what an RFC 3161 countersignature's message imprint is over."""
    timestamp_token: bytes | None = None
    """The `io.cncf.notary.timestampSignature` TimeStampToken (DER), not yet verified."""

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def algorithm_for(key: object) -> Algorithm:
    """The one algorithm the Notary Project allows for this key. Raises `EnvelopeError`."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        for algorithm in ALGORITHMS.values():
            if algorithm.rsa_bits == key.key_size:
                return algorithm
        raise EnvelopeError(
            f"an RSA key of {key.key_size} bits has no Notary Project algorithm (2048/3072/4096)"
        )
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        for algorithm in ALGORITHMS.values():
            if algorithm.curve == key.curve.name:
                return algorithm
        raise EnvelopeError(f"an EC key on {key.curve.name} has no Notary Project algorithm (P-256/384/521)")
    raise EnvelopeError(f"a {type(key).__name__} key has no Notary Project algorithm (RSA or EC only)")


def parse_envelope(data: bytes) -> Envelope:
    """Parse a JWS envelope and verify its signature with its own leaf certificate.

    Raises:
        EnvelopeError: malformed, unknown critical header, unsupported scheme or algorithm.
        BadSignature: the signature does not verify.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"the envelope is over {MAX_ENVELOPE_BYTES} bytes")
    document = _strict_json(data, "the JWS envelope")
    _exact_keys(document, {"payload", "protected", "header", "signature"}, set(), "the JWS envelope")
    payload_b64, protected_b64, signature_b64 = (
        _string(document, name, "the JWS envelope") for name in ("payload", "protected", "signature")
    )
    header = document["header"]
    if not isinstance(header, dict):
        raise EnvelopeError("the JWS unprotected header is not an object")
    protected = _strict_json(_b64url(protected_b64, "protected"), "the protected header")
    if not isinstance(protected, dict):
        raise EnvelopeError("the protected header is not an object")
    duplicated = sorted(set(protected) & set(header))
    if duplicated:
        raise EnvelopeError(f"header {duplicated[0]!r} is both protected and unprotected")
    algorithm, signing_time, expiry = _check_protected(protected)

    raw_chain = header.get("x5c")
    if not isinstance(raw_chain, list) or not all(isinstance(item, str) for item in raw_chain):
        raise EnvelopeError("the unprotected header has no x5c list of base64 certificates")
    try:
        chain = load_chain([_b64std(item, "x5c") for item in raw_chain])
    except CertificateProblem as exc:
        raise EnvelopeError(str(exc)) from None
    leaf_key = chain[0].public_key()
    required = algorithm_for(leaf_key)
    if required.name != algorithm.name:
        raise EnvelopeError(
            f"alg {algorithm.name} does not match the signing certificate's key, "
            f"which requires {required.name}"
        )
    signing_input = f"{protected_b64}.{payload_b64}".encode("ascii")
    signature_value = _b64url(signature_b64, "signature")
    if not verify_signature(leaf_key, algorithm, signing_input, signature_value):
        raise BadSignature("the signature does not verify with the signing certificate's key")
    token_text = header.get(HEADER_TIMESTAMP)
    if token_text is not None and not isinstance(token_text, str):
        raise EnvelopeError(f"{HEADER_TIMESTAMP} is not a base64 string")

    # The payload is read only once the signature over it verified.
    target = parse_payload(_b64url(payload_b64, "payload"))
    agent = header.get(HEADER_SIGNING_AGENT)
    return Envelope(
        algorithm=algorithm.name,
        signing_time=signing_time,
        expiry=expiry,
        target=target,
        chain=tuple(chain),
        signing_agent=agent if isinstance(agent, str) else None,
        has_timestamp=token_text is not None,
        signature_value=signature_value,
        timestamp_token=_b64std(token_text, HEADER_TIMESTAMP) if token_text is not None else None,
    )


class ExternalKey(Protocol):
    """A key held elsewhere (a PKCS#11 token, a KMS) that can sign as the Notary Project needs."""

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey: ...

    def sign_ecdsa(self, payload: bytes, hash_algorithm: hashes.HashAlgorithm) -> bytes:
        """ECDSA over `payload`, DER-encoded."""
        ...

    def sign_rsa(self, payload: bytes, hash_algorithm: hashes.HashAlgorithm, *, pss: bool) -> bytes: ...


NotarySigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ExternalKey
Timestamper = Callable[[bytes, str], bytes]
"""Given the signature value and a hash name (sha256/384/512), the RFC 3161 TimeStampToken over it."""


def build_envelope(
    target: Descriptor,
    private_key: NotarySigningKey,
    chain: Sequence[x509.Certificate],
    *,
    signing_time: datetime,
    expiry: datetime | None = None,
    timestamper: Timestamper | None = None,
) -> bytes:
    """A JWS envelope over `target` signed by `private_key`, whose certificate is `chain[0]`;
    with a `timestamper`, countersigned by an RFC 3161 timestamp over the signature value."""
    algorithm = algorithm_for(private_key if _is_local(private_key) else private_key.public_key)
    protected: dict[str, Any] = {
        "alg": algorithm.name,
        "crit": [HEADER_SCHEME] + ([HEADER_EXPIRY] if expiry else []),
        "cty": PAYLOAD_CONTENT_TYPE,
        HEADER_SCHEME: SIGNING_SCHEME,
        HEADER_SIGNING_TIME: _rfc3339(signing_time),
    }
    if expiry is not None:
        protected[HEADER_EXPIRY] = _rfc3339(expiry)
    payload = {
        "targetArtifact": {"mediaType": target.media_type, "digest": str(target.digest), "size": target.size}
    }
    protected_b64 = _b64url_encode(json.dumps(protected, separators=(",", ":")).encode())
    payload_b64 = _b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{protected_b64}.{payload_b64}".encode("ascii")
    signature = _sign(private_key, algorithm, signing_input)
    header: dict[str, Any] = {
        "x5c": [base64.b64encode(certificate.public_bytes(_DER)).decode() for certificate in chain],
        HEADER_SIGNING_AGENT: SIGNING_AGENT,
    }
    if timestamper is not None:
        header[HEADER_TIMESTAMP] = base64.b64encode(timestamper(signature, algorithm.hash.name)).decode()
    envelope = {
        "payload": payload_b64,
        "protected": protected_b64,
        "header": header,
        "signature": _b64url_encode(signature),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def _is_local(key: object) -> TypeGuard[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    return isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)


# --- checks ------------------------------------------------------------------------------------


def _check_protected(protected: Mapping[str, Any]) -> tuple[Algorithm, datetime, datetime | None]:
    alg = protected.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise EnvelopeError(f"alg {str(alg)[:20]!r} is not one of {', '.join(ALGORITHMS)}")
    if protected.get("cty") != PAYLOAD_CONTENT_TYPE:
        raise EnvelopeError(f"cty is {str(protected.get('cty'))[:60]!r}, not {PAYLOAD_CONTENT_TYPE!r}")
    crit = protected.get("crit")
    if not isinstance(crit, list) or not crit or not all(isinstance(name, str) for name in crit):
        raise EnvelopeError("crit must be a non-empty list of header names")
    if len(set(crit)) != len(crit):
        raise EnvelopeError("crit lists a header twice")
    for name in crit:
        if name in _REGISTERED_HEADERS:
            raise EnvelopeError(f"crit lists the registered header {name!r}")
        if name not in protected:
            raise EnvelopeError(f"crit lists {name[:60]!r}, which the protected header lacks")
        if name in (HEADER_PLUGIN, HEADER_PLUGIN_VERSION):
            raise EnvelopeError(
                "the signature requires the verification plugin "
                f"{str(protected.get(HEADER_PLUGIN))[:60]!r}, which trust does not run"
            )
        if name == HEADER_AUTHENTIC_TIME:
            continue  # refused below with the signing scheme
        if name not in _KNOWN_CRITICAL:
            raise EnvelopeError(f"unknown critical header {name[:60]!r}")
    for name in (HEADER_SCHEME, HEADER_EXPIRY, HEADER_AUTHENTIC_TIME, HEADER_PLUGIN, HEADER_PLUGIN_VERSION):
        if name in protected and name not in crit:
            raise EnvelopeError(f"header {name!r} must be listed in crit")
    check_signing_scheme(protected)
    signing_time = _time(protected.get(HEADER_SIGNING_TIME), HEADER_SIGNING_TIME)
    if signing_time is None:
        raise EnvelopeError(f"the protected header has no {HEADER_SIGNING_TIME}")
    expiry = _time(protected.get(HEADER_EXPIRY), HEADER_EXPIRY)
    return ALGORITHMS[alg], signing_time, expiry


def check_signing_scheme(protected: Mapping[Any, Any]) -> None:
    """The scheme must be `notary.x509`: the `signingAuthority` scheme (and its authentic-time
    header) needs a timestamping trust model this verifier does not implement. Used by JWS and COSE."""
    scheme = protected.get(HEADER_SCHEME)
    if scheme == SIGNING_AUTHORITY_SCHEME:
        raise EnvelopeError(
            f"signing scheme {SIGNING_AUTHORITY_SCHEME} is not supported (only {SIGNING_SCHEME})"
        )
    if scheme != SIGNING_SCHEME:
        raise EnvelopeError(f"signing scheme {str(scheme)[:60]!r} is not {SIGNING_SCHEME!r}")
    if HEADER_AUTHENTIC_TIME in protected:
        raise EnvelopeError(f"{HEADER_AUTHENTIC_TIME} is only valid with {SIGNING_AUTHORITY_SCHEME}")


def parse_payload(data: bytes) -> Descriptor:
    """The `targetArtifact` of a Notary payload (JSON, strict). Raises `EnvelopeError`."""
    payload = _strict_json(data, "the payload")
    _exact_keys(payload, {"targetArtifact"}, set(), "the payload")
    target = payload["targetArtifact"]
    _exact_keys(target, {"mediaType", "digest", "size"}, _DESCRIPTOR_FIELDS, "targetArtifact")
    media_type, digest_text, size = target["mediaType"], target["digest"], target["size"]
    if (
        not isinstance(media_type, str)
        or not isinstance(digest_text, str)
        or type(size) is not int
        or size < 0
    ):
        raise EnvelopeError(
            "targetArtifact needs a string mediaType and digest and a non-negative integer size"
        )
    try:
        digest = Digest.parse(digest_text)
    except InvalidReference as exc:
        raise EnvelopeError(f"targetArtifact.digest: {exc}") from None
    return Descriptor(media_type, digest, size)


def _time(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise EnvelopeError(f"{name} is not an RFC 3339 time")
    try:
        # astimezone overflows for times within a day of year 1 or 9999 with an offset: an
        # attacker-chosen header must end as a malformed signature, not as a crash.
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise EnvelopeError(f"{name} is not an RFC 3339 time") from None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_signature(key: object, algorithm: Algorithm, message: bytes, signature: bytes) -> bool:
    """RSASSA-PSS (salt length = hash length) or ECDSA with a raw `r || s` signature, as JWS and
    COSE both encode it."""
    hash_algorithm = algorithm.hash()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signature,
                message,
                padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size),
                hash_algorithm,
            )
            return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = _EC_SIZES[key.curve.name]
            if len(signature) != 2 * size:
                return False
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hash_algorithm))
            return True
    except InvalidSignature:
        return False
    return False


def _sign(key: NotarySigningKey, algorithm: Algorithm, message: bytes) -> bytes:
    hash_algorithm = algorithm.hash()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(
            message,
            padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size),
            hash_algorithm,
        )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _raw_ecdsa(key.sign(message, ec.ECDSA(hash_algorithm)), key.curve.name)
    public = key.public_key
    if isinstance(public, rsa.RSAPublicKey):
        signature = key.sign_rsa(message, hash_algorithm, pss=True)
    else:
        signature = _raw_ecdsa(key.sign_ecdsa(message, hash_algorithm), public.curve.name)
    # A token or a KMS may answer for another key or with garbage: check before publishing it.
    if not verify_signature(public, algorithm, message, signature):
        raise EnvelopeError("the external key's signature does not verify with its public key")
    return signature


def _raw_ecdsa(der: bytes, curve: str) -> bytes:
    """JWS and COSE write ECDSA signatures as fixed-size `r || s`."""
    r, s = decode_dss_signature(der)
    size = _EC_SIZES[curve]
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


# --- encoding helpers --------------------------------------------------------------------------


def _strict_json(data: bytes, what: str) -> Any:
    """`pull.strictjson.loads` (no duplicate keys, no NaN, UTF-8 only) with our error type."""
    try:
        return strict_json(data, what)
    except ValueError as exc:  # UnicodeDecodeError included
        raise EnvelopeError(f"{what} is not valid JSON ({str(exc)[:80]})") from None
    except RecursionError:  # a few kB of '[' is deeper than json's recursion limit
        raise EnvelopeError(f"{what} is not valid JSON (nested too deeply)") from None


def _exact_keys(value: object, required: set[str], allowed: set[str] | frozenset[str], what: str) -> None:
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} is not a JSON object")
    missing = sorted(required - set(value))
    if missing:
        raise EnvelopeError(f"{what} has no {missing[0]!r}")
    unknown = sorted(set(value) - required - set(allowed))
    if unknown:
        raise EnvelopeError(f"{what} has an unknown field {unknown[0][:60]!r}")


def _string(document: Mapping[str, Any], name: str, what: str) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise EnvelopeError(f"{what}: {name!r} is not a string")
    return value


def _b64url(text: str, what: str) -> bytes:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise EnvelopeError(f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not unpadded base64url") from None


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64std(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} holds an entry that is not base64") from None
