"""X.509 rules of the Notary Project: certificate requirements, the `x5c` chain, trusted identities.

Everything here is pure: certificates in, a `CertificateProblem` (with a one-line reason) or a
value out. The rules follow the Notary Project signature specification, "Certificate
Requirements", and the trust policy specification, "Trusted Identities Constraints":

- the chain is ordered leaf first and ends with a self-signed root; a one-certificate chain is a
  self-signed leaf judged by the leaf rules only;
- CA certificates: basicConstraints present, critical, cA true, pathLenConstraint respected;
  keyUsage present, critical, keyCertSign;
- the leaf: basicConstraints absent or cA false; keyUsage present, critical, digitalSignature and
  none of the encipherment/agreement/CA bits; extendedKeyUsage, if present, holds codeSigning and
  none of anyExtendedKeyUsage, serverAuth, clientAuth, emailProtection, timeStamping;
- RSA keys of at least 2048 bits, EC keys on P-256/384/521; no SHA-1 signatures;
- only basicConstraints, keyUsage and extendedKeyUsage are honoured (other extensions "fail open").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from trust.notation.identity import is_subset

MAX_CHAIN_CERTIFICATES = 10
"""A longer `x5c` is refused as hostile; real chains have two to four certificates."""
MAX_CERTIFICATE_BYTES = 64 * 1024

_FORBIDDEN_LEAF_EKUS = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
}
CERTIFICATE_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
"""What cryptography raises for a certificate it cannot read, some only when a field is first used."""
_ALLOWED_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
_DER = serialization.Encoding.DER


class CertificateProblem(ValueError):
    """A certificate or chain breaks a Notary Project rule; the message says which, in one line."""


def describe(certificate: x509.Certificate) -> str:
    """A short name for messages: the subject in RFC 4514 form (cut at 200 characters: hostile
    certificates may carry huge names)."""
    text = certificate.subject.rfc4514_string() or "(empty subject)"
    return text if len(text) <= 200 else text[:200] + "…"


def thumbprint(certificate: x509.Certificate) -> str:
    """The SHA-256 of the DER certificate, lower-case hex (the `x509chain.thumbprint#S256` entries)."""
    return hashlib.sha256(certificate.public_bytes(_DER)).hexdigest()


def load_chain(der_certificates: Sequence[bytes]) -> list[x509.Certificate]:
    """Parse the `x5c` certificates (DER). Raises `CertificateProblem`."""
    if not der_certificates:
        raise CertificateProblem("the certificate chain (x5c) is empty")
    if len(der_certificates) > MAX_CHAIN_CERTIFICATES:
        raise CertificateProblem(
            f"the certificate chain holds more than {MAX_CHAIN_CERTIFICATES} certificates"
        )
    chain = []
    for position, der in enumerate(der_certificates):
        if len(der) > MAX_CERTIFICATE_BYTES:
            raise CertificateProblem(
                f"certificate {position} of the chain is over {MAX_CERTIFICATE_BYTES} bytes"
            )
        try:
            certificate = x509.load_der_x509_certificate(der)
            # cryptography parses these on first use; parse them now, so that a certificate it
            # cannot read (unknown curve or algorithm, bad version, broken name or extension)
            # is a malformed envelope here, not an exception in the middle of verification.
            certificate.public_key()
            _ = certificate.signature_hash_algorithm
            _ = certificate.extensions
            certificate.subject.rfc4514_string()
        except CERTIFICATE_PARSE_ERRORS as exc:
            raise CertificateProblem(
                f"certificate {position} of the chain is not a usable DER X.509 certificate ({str(exc)[:80]})"
            ) from None
        chain.append(certificate)
    return chain


def check_chain(chain: Sequence[x509.Certificate], signing_time: datetime) -> None:
    """Apply the certificate requirements to the ordered chain, and validity at `signing_time`.

    Raises `CertificateProblem`.
    """
    leaf = chain[0]
    for position, certificate in enumerate(chain):
        _check_key(certificate, position)
        _check_signature_hash(certificate, position)
        if not certificate.not_valid_before_utc <= signing_time <= certificate.not_valid_after_utc:
            raise CertificateProblem(
                f"certificate {describe(certificate)} was not valid at the signing time "
                f"{signing_time.isoformat()} (valid {certificate.not_valid_before_utc.isoformat()} to "
                f"{certificate.not_valid_after_utc.isoformat()})"
            )
    for position in range(len(chain) - 1):
        _check_issued_by(chain[position], chain[position + 1], position)
    _check_issued_by(chain[-1], chain[-1], len(chain) - 1, root=True)
    _check_leaf(leaf)
    for position, certificate in enumerate(chain[1:], start=1):
        # `position - 1` CA certificates sit between this one and the leaf.
        _check_ca(certificate, intermediates_below=position - 1)


def anchored_in(
    chain: Sequence[x509.Certificate], trust_store: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The trust-store certificate that equals a certificate of the (already checked) chain, if any.

    As in Notation: the chain was verified link by link up to its self-signed root, so it is
    trusted when any of its certificates is one the trust store holds.
    """
    stored = {certificate.public_bytes(_DER) for certificate in trust_store}
    for certificate in chain:
        if certificate.public_bytes(_DER) in stored:
            return certificate
    return None


def invalid_now(chain: Sequence[x509.Certificate], now: datetime) -> x509.Certificate | None:
    """The first certificate of the chain that is not valid at `now` (no authentic timestamp)."""
    for certificate in chain:
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return certificate
    return None


# --- trusted identities ------------------------------------------------------------------------


def subject_attributes(certificate: x509.Certificate) -> dict[str, str]:
    """The leaf subject as {attribute type: value}; a type present twice keeps the values joined by
    '+', which no parsed identity value can equal unless it was written that way on purpose."""
    attributes: dict[str, list[str]] = {}
    for attribute in certificate.subject:
        name = attribute.rfc4514_attribute_name.upper()
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        attributes.setdefault(name, []).append(value)
    return {name: "+".join(values) for name, values in attributes.items()}


def identity_matches(identity: dict[str, str], certificate: x509.Certificate) -> bool:
    """Every attribute the identity names is in the certificate's subject with the same value."""
    return is_subset(identity, subject_attributes(certificate))


# --- single-certificate rules ------------------------------------------------------------------


def _check_key(certificate: x509.Certificate, position: int) -> None:
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if not 2048 <= key.key_size <= 8192:  # the upper bound keeps hostile chains cheap to check
            raise CertificateProblem(
                f"certificate {describe(certificate)} has an RSA key of {key.key_size} bits (2048 to 8192)"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _ALLOWED_CURVES:
            raise CertificateProblem(
                f"certificate {describe(certificate)} has an EC key on {key.curve.name} (P-256/384/521 only)"
            )
    else:
        raise CertificateProblem(
            f"certificate {position} ({describe(certificate)}) has a {type(key).__name__} key "
            "(RSA or EC only)"
        )


def _check_signature_hash(certificate: x509.Certificate, position: int) -> None:
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        name = algorithm.name if algorithm is not None else "no hash"
        raise CertificateProblem(
            f"certificate {position} ({describe(certificate)}) is signed with {name} "
            "(SHA-1 and weaker refused)"
        )


def _check_issued_by(
    child: x509.Certificate, parent: x509.Certificate, position: int, *, root: bool = False
) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature) as exc:  # bad signature, name mismatch, odd key
        if root:
            raise CertificateProblem(
                f"the last certificate of the chain ({describe(child)}) is not a self-signed root"
            ) from None
        raise CertificateProblem(
            f"certificate {position} ({describe(child)}) is not issued by the next one in the chain "
            f"({describe(parent)}): {type(exc).__name__}"
        ) from None


def _extension(
    certificate: x509.Certificate, oid: x509.ObjectIdentifier
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def _check_leaf(certificate: x509.Certificate) -> None:
    name = describe(certificate)
    constraints = _extension(certificate, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is not None:
        assert isinstance(constraints.value, x509.BasicConstraints)
        if constraints.value.ca:
            raise CertificateProblem(
                f"the signing certificate {name} is a CA certificate (basicConstraints cA=true)"
            )
    usage = _extension(certificate, ExtensionOID.KEY_USAGE)
    if usage is None or not usage.critical:
        raise CertificateProblem(f"the signing certificate {name} lacks a critical keyUsage extension")
    assert isinstance(usage.value, x509.KeyUsage)
    value = usage.value
    if not value.digital_signature:
        raise CertificateProblem(f"the signing certificate {name} lacks the digitalSignature key usage")
    forbidden = [
        label
        for label, present in (
            ("keyEncipherment", value.key_encipherment),
            ("dataEncipherment", value.data_encipherment),
            ("keyAgreement", value.key_agreement),
            ("keyCertSign", value.key_cert_sign),
            ("cRLSign", value.crl_sign),
            ("encipherOnly", value.key_agreement and value.encipher_only),
            ("decipherOnly", value.key_agreement and value.decipher_only),
        )
        if present
    ]
    if forbidden:
        raise CertificateProblem(f"the signing certificate {name} has the key usage {', '.join(forbidden)}")
    extended = _extension(certificate, ExtensionOID.EXTENDED_KEY_USAGE)
    if extended is not None:
        assert isinstance(extended.value, x509.ExtendedKeyUsage)
        usages = list(extended.value)
        bad = [label for oid, label in _FORBIDDEN_LEAF_EKUS.items() if oid in usages]
        if bad:
            raise CertificateProblem(
                f"the signing certificate {name} has the extended key usage {', '.join(bad)}"
            )
        if ExtendedKeyUsageOID.CODE_SIGNING not in usages:
            raise CertificateProblem(
                f"the signing certificate {name} has an extendedKeyUsage extension without codeSigning"
            )


def _check_ca(certificate: x509.Certificate, intermediates_below: int) -> None:
    name = describe(certificate)
    constraints = _extension(certificate, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is None or not constraints.critical:
        raise CertificateProblem(f"CA certificate {name} lacks a critical basicConstraints extension")
    assert isinstance(constraints.value, x509.BasicConstraints)
    if not constraints.value.ca:
        raise CertificateProblem(
            f"certificate {name} issues others but is not a CA (basicConstraints cA=false)"
        )
    path_length = constraints.value.path_length
    if path_length is not None and intermediates_below > path_length:
        raise CertificateProblem(
            f"CA certificate {name} allows {path_length} intermediate(s) below it, "
            f"the chain has {intermediates_below}"
        )
    usage = _extension(certificate, ExtensionOID.KEY_USAGE)
    if usage is None or not usage.critical:
        raise CertificateProblem(f"CA certificate {name} lacks a critical keyUsage extension")
    assert isinstance(usage.value, x509.KeyUsage)
    if not usage.value.key_cert_sign:
        raise CertificateProblem(f"CA certificate {name} lacks the keyCertSign key usage")
