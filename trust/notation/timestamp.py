"""RFC 3161 timestamp countersignatures of Notary Project signatures.

A Notary Project signature may carry, in its unprotected header `io.cncf.notary.timestampSignature`,
an RFC 3161 TimeStampToken whose message imprint is the hash of the signature value itself (the
raw JWS signature bytes, or the COSE signature). A timestamp authority (TSA) thereby vouches that
the signature existed at the token's `genTime`, so the signing certificate need only have been
valid then, not now.

Verification (the Notary Project trust policy specification, "authentic timestamp"):

- the token is a CMS SignedData signed by a TSA certificate with the critical `timeStamping`
  extended key usage, whose chain leads to a certificate of the policy's `tsa` trust store and
  was valid at `genTime` (rfc3161-client does the CMS and chain work);
- its message imprint equals the hash of the signature value under the imprint's algorithm
  (SHA-256/384/512);
- `genTime` widened by the token's accuracy lies inside every signing certificate's validity.

The result is an `AuthenticTime`: the interval the signature was certainly made in. Whether a
timestamp is needed at all (`verifyTimestamp: always | afterCertExpiry`) is the caller's question.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509

from pull.records import dataclass

MAX_TOKEN_BYTES = 64 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0
_HASHES = {
    "2.16.840.1.101.3.4.2.1": hashlib.sha256,
    "2.16.840.1.101.3.4.2.2": hashlib.sha384,
    "2.16.840.1.101.3.4.2.3": hashlib.sha512,
}


class TimestampProblem(ValueError):
    """A timestamp token is malformed, over other bytes, or not by a trusted authority (one line)."""


class TimestampUnavailable(Exception):
    """The timestamp authority could not be reached or refused to stamp (signing side)."""


@dataclass(frozen=True)
class AuthenticTime:
    """When a trusted TSA says the signature existed: `time` ± `accuracy`."""

    time: datetime
    accuracy: timedelta
    authority: str
    """The TSA certificate's subject, for messages."""

    @property
    def earliest(self) -> datetime:
        return self.time - self.accuracy

    @property
    def latest(self) -> datetime:
        return self.time + self.accuracy


def verify_token(
    token: bytes, signature_value: bytes, trust_store: Sequence[x509.Certificate]
) -> AuthenticTime:
    """Check a TimeStampToken over `signature_value` against the `tsa` trust store certificates.

    Raises `TimestampProblem`.
    """
    if not trust_store:
        raise TimestampProblem("the trust policy names no tsa trust store to check the timestamp against")
    response = _parse_token(token)
    from rfc3161_client import VerificationError, VerifierBuilder

    info = response.tst_info
    algorithm = info.message_imprint.hash_algorithm.dotted_string
    digest = _HASHES.get(algorithm)
    if digest is None:
        raise TimestampProblem(f"the timestamp uses an unsupported hash algorithm {algorithm}")
    if info.message_imprint.message != digest(signature_value).digest():
        raise TimestampProblem("the timestamp is over other bytes than this signature")
    signer = _signer_certificate(response)
    # Only the trust store goes into the verifier. The token's own certificates serve as untrusted
    # path material inside the CMS check; rfc3161-client treats "intermediates" given to its
    # builder as trusted, so a token's embedded (possibly rogue) root must never be passed there.
    builder = VerifierBuilder()
    for certificate in trust_store:
        builder = builder.add_root_certificate(certificate)
    try:
        builder.build().verify(response, info.message_imprint.message)
    except VerificationError as exc:
        raise TimestampProblem(
            f"the timestamp does not verify against the tsa trust store: {str(exc)[:160]}"
        ) from None
    except ValueError as exc:  # raised by the native CMS code for malformed structures
        raise TimestampProblem(f"the timestamp does not verify: {str(exc)[:120]}") from None
    accuracy = info.accuracy
    seconds = accuracy.seconds if accuracy is not None else 0
    millis = (accuracy.millis or 0) if accuracy is not None else 0
    micros = (accuracy.micros or 0) if accuracy is not None else 0
    return AuthenticTime(
        time=info.gen_time.astimezone(UTC) if info.gen_time.tzinfo else info.gen_time.replace(tzinfo=UTC),
        accuracy=timedelta(seconds=seconds, milliseconds=millis, microseconds=micros),
        authority=signer.subject.rfc4514_string()[:200],
    )


def check_within_validity(moment: AuthenticTime, chain: Sequence[x509.Certificate]) -> None:
    """The timestamp's whole interval must lie inside every signing chain certificate's validity."""
    for certificate in chain:
        if (
            not certificate.not_valid_before_utc
            <= moment.earliest
            <= moment.latest
            <= (certificate.not_valid_after_utc)
        ):
            raise TimestampProblem(
                f"the timestamp {moment.time.isoformat()} is outside the validity of certificate "
                f"{certificate.subject.rfc4514_string()[:200]} "
                f"({certificate.not_valid_before_utc.isoformat()} to "
                f"{certificate.not_valid_after_utc.isoformat()})"
            )


def tsa_chain(token: bytes) -> list[x509.Certificate]:
    """The TSA's certificates the token embeds, signer first (for revocation checks of the TSA)."""
    response = _parse_token(token)
    signer = _signer_certificate(response)
    others = [x509.load_der_x509_certificate(der) for der in response.signed_data.certificates]
    ordered = [signer]
    while True:
        issuer = next(
            (c for c in others if c.subject == ordered[-1].issuer and c not in ordered),
            None,
        )
        if issuer is None or ordered[-1].issuer == ordered[-1].subject:
            return ordered
        ordered.append(issuer)


# --- signing side ------------------------------------------------------------------------------


def request_token(
    url: str,
    signature_value: bytes,
    root: x509.Certificate,
    *,
    hash_name: str = "sha256",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> bytes:
    """Ask the TSA at `url` to stamp `signature_value`; check the answer against `root` (the
    `--timestamp-root-cert`) and return the TimeStampToken to embed.

    Raises `TimestampUnavailable` (unreachable, refused) or `TimestampProblem` (an answer that
    does not verify against `root`).
    """
    import httpx
    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder, decode_timestamp_response

    # rfc3161-client builds SHA-256 and SHA-512 requests; SHA-384 signatures are stamped with SHA-512.
    algorithm = {
        "sha256": HashAlgorithm.SHA256,
        "sha384": HashAlgorithm.SHA512,
        "sha512": HashAlgorithm.SHA512,
    }
    request = (
        TimestampRequestBuilder()
        .data(signature_value)
        .hash_algorithm(algorithm[hash_name])
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    try:
        response = httpx.post(
            url,
            content=request.as_bytes(),
            headers={"Content-Type": "application/timestamp-query", "Connection": "close"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise TimestampUnavailable(f"timestamp authority {url[:100]}: {type(exc).__name__} {exc}") from None
    if response.status_code != 200:
        raise TimestampUnavailable(f"timestamp authority {url[:100]} answered HTTP {response.status_code}")
    if len(response.content) > MAX_TOKEN_BYTES:
        raise TimestampProblem(f"timestamp authority {url[:100]} sent more than {MAX_TOKEN_BYTES} bytes")
    try:
        decoded = decode_timestamp_response(_sort_response_certificates(response.content))
    except ValueError as exc:
        raise TimestampProblem(
            f"timestamp authority {url[:100]} sent no timestamp ({str(exc)[:80]})"
        ) from None
    if decoded.status not in (0, 1):
        raise TimestampUnavailable(f"timestamp authority {url[:100]} refused: status {decoded.status}")
    if decoded.tst_info.nonce != request.nonce:
        raise TimestampProblem(f"timestamp authority {url[:100]} answered another request (nonce)")
    token = decoded.time_stamp_token()
    verify_token(token, signature_value, [root])
    return token


# --- DER ---------------------------------------------------------------------------------------


def _parse_token(token: bytes):  # type: ignore[no-untyped-def]  # rfc3161-client's TimeStampResponse
    """rfc3161-client reads whole TimeStampResp messages: wrap the token in one with status granted."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TimestampProblem(f"the timestamp is over {MAX_TOKEN_BYTES} bytes")
    from rfc3161_client import decode_timestamp_response

    granted = b"\x30\x03\x02\x01\x00"  # PKIStatusInfo { status granted(0) }
    try:
        response = decode_timestamp_response(_der_sequence(granted + sort_certificate_set(token)))
        _ = response.tst_info.gen_time
        _ = response.signed_data.signer_infos
    except ValueError as exc:
        raise TimestampProblem(f"the timestamp is not a readable RFC 3161 token ({str(exc)[:80]})") from None
    return response


def _signer_certificate(response) -> x509.Certificate:  # type: ignore[no-untyped-def]
    infos = response.signed_data.signer_infos
    if len(infos) != 1:
        raise TimestampProblem(f"the timestamp has {len(infos)} signers, not one")
    info = next(iter(infos))
    for der in response.signed_data.certificates:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        if certificate.issuer == info.issuer and certificate.serial_number == info.serial_number:
            return certificate
    raise TimestampProblem("the timestamp does not carry its signer's certificate")


def _der_sequence(content: bytes) -> bytes:
    return _der(0x30, content)


def _der(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _read(data: bytes, position: int = 0) -> tuple[int, bytes, int]:
    """One DER element at `position`: (tag, content, end). Raises ValueError when malformed."""
    if position + 2 > len(data):
        raise ValueError("truncated")
    tag, first = data[position], data[position + 1]
    start = position + 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    end = start + length
    if end > len(data):
        raise ValueError("truncated")
    return tag, data[start:end], end


def _elements(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The elements of a constructed value: (tag, content, whole encoding) each."""
    elements, position = [], 0
    while position < len(content):
        tag, inner, end = _read(content, position)
        elements.append((tag, inner, content[position:end]))
        position = end
    return elements


def sort_certificate_set(token: bytes) -> bytes:
    """The token with its SignedData `certificates` SET OF in DER order.

    OpenSSL (`openssl ts -reply`, and TSAs built on it) writes the certificates in the order it was
    given, which DER forbids and rfc3161-client refuses. The set lies outside what the TSA signed
    (the signed attributes), so putting it in order changes no signature. Anything that is not
    shaped like a ContentInfo with SignedData is returned unchanged, for the parser to refuse.
    """
    try:
        tag, content, end = _read(token)
        if tag != 0x30 or end != len(token):
            return token
        [(_, _, oid), (wrapper_tag, wrapper, _)] = _elements(content)
        if wrapper_tag != 0xA0:
            return token
        [(signed_tag, signed, _)] = _elements(wrapper)
        if signed_tag != 0x30:
            return token
        fields = []
        for field_tag, field_content, encoded in _elements(signed):
            if field_tag == 0xA0:  # certificates [0] IMPLICIT SET OF
                ordered = sorted(whole for _, _, whole in _elements(field_content))
                encoded = _der(0xA0, b"".join(ordered))
            fields.append(encoded)
        return _der(0x30, oid + _der(0xA0, _der(0x30, b"".join(fields))))
    except ValueError:
        return token


def _sort_response_certificates(response: bytes) -> bytes:
    """`sort_certificate_set` on the token inside a TimeStampResp (status, then the token)."""
    try:
        tag, content, end = _read(response)
        elements = _elements(content)
    except ValueError:
        return response
    if tag != 0x30 or end != len(response) or len(elements) != 2:
        return response
    (_, _, status), (_, _, token) = elements
    return _der(0x30, status + sort_certificate_set(token))
