"""A private RFC 3161 timestamp authority for tests: real signed timestamp responses, no network.

No installed library writes timestamp responses (rfc3161-client only builds requests and reads
responses), so `TimestampAuthority.respond` assembles the DER itself from a few helpers below:

    TimeStampResp  = SEQUENCE { PKIStatusInfo { granted }, ContentInfo }
    ContentInfo    = SEQUENCE { id-signedData, [0] SignedData }
    SignedData     = SEQUENCE { version 3, { sha256 }, { id-ct-TSTInfo, [0] OCTET STRING TSTInfo },
                                [0] certificates, { SignerInfo } }
    SignerInfo     = SEQUENCE { version 1, issuerAndSerialNumber, sha256, [0] signedAttrs,
                                ecdsa-with-SHA256, OCTET STRING signature }
    signedAttrs    = content-type (id-ct-TSTInfo), message-digest (SHA-256 of TSTInfo),
                     signing-certificate-v2 (SHA-256 of the TSA certificate)

The ECDSA signature covers the DER of the signed attributes re-tagged as a SET (RFC 5652 5.4).
The authority's certificates (a root CA and a leaf with the critical timeStamping EKU) go into a
trusted root's `timestampAuthorities` through `trusted_root_entry`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
SIGNED_DATA = "1.2.840.113549.1.7.2"
TST_INFO = "1.2.840.113549.1.9.16.1.4"
CONTENT_TYPE_ATTRIBUTE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST_ATTRIBUTE = "1.2.840.113549.1.9.4"
SIGNING_CERTIFICATE_V2_ATTRIBUTE = "1.2.840.113549.1.9.16.2.47"
TEST_POLICY = "1.3.6.1.4.1.57264.2"


# --- DER, just what the structures above need ------------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def sequence(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return _tlv(0x31, b"".join(sorted(items)))  # DER sorts the elements of a SET OF


def integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def octets(value: bytes) -> bytes:
    return _tlv(0x04, value)


def oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def generalized_time(moment: dt.datetime) -> bytes:
    return _tlv(0x18, moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ").encode())


def explicit(number: int, content: bytes) -> bytes:
    """[number] EXPLICIT (constructed, context-specific)."""
    return _tlv(0xA0 | number, content)


def algorithm(dotted: str) -> bytes:
    return sequence(oid(dotted))


# --- the authority ---------------------------------------------------------------------------------


@dataclass
class TimestampAuthority:
    """A TSA root CA and its timestamping leaf; `respond` timestamps bytes as a TSA would."""

    name: str = "trust-test-tsa"
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.key = ec.generate_private_key(ec.SECP256R1())
        start, end = self.now - dt.timedelta(days=30), self.now + dt.timedelta(days=365)
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name}-root")])
        self.root = (
            self._builder(root_name, root_name, self.root_key, start, end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(self.root_key, hashes.SHA384())
        )
        leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.certificate = (
            self._builder(leaf_name, root_name, self.key, start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(self.root_key, hashes.SHA384())
        )
        self.serial = 1

    def _builder(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        start: dt.datetime,
        end: dt.datetime,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                critical=False,
            )
        )

    def trusted_root_entry(self) -> dict[str, object]:
        """This TSA as a `timestampAuthorities` entry of a trusted root (leaf first, then root)."""
        der = serialization.Encoding.DER
        return {
            "subject": {"organization": "trust.test", "commonName": self.name},
            "uri": f"https://{self.name}.trust.test",
            "certChain": {
                "certificates": [
                    {"rawBytes": base64.b64encode(c.public_bytes(der)).decode()}
                    for c in (self.certificate, self.root)
                ]
            },
            "validFor": {"start": "2020-01-01T00:00:00Z"},
        }

    def respond(self, data: bytes, at: dt.datetime | None = None, nonce: int = 0x5EED) -> bytes:
        """A granted TimeStampResp (DER) whose token's message imprint is SHA-256(`data`)."""
        self.serial += 1
        tst_info = sequence(
            integer(1),
            oid(TEST_POLICY),
            sequence(algorithm(SHA256), octets(hashlib.sha256(data).digest())),
            integer(self.serial),
            generalized_time(at or self.now),
            integer(nonce),
        )
        certificate_der = self.certificate.public_bytes(serialization.Encoding.DER)
        signing_certificate_v2 = sequence(
            sequence(sequence(octets(hashlib.sha256(certificate_der).digest())))
        )
        attributes = [
            sequence(oid(CONTENT_TYPE_ATTRIBUTE), set_of(oid(TST_INFO))),
            sequence(oid(MESSAGE_DIGEST_ATTRIBUTE), set_of(octets(hashlib.sha256(tst_info).digest()))),
            sequence(oid(SIGNING_CERTIFICATE_V2_ATTRIBUTE), set_of(signing_certificate_v2)),
        ]
        signed_attributes = set_of(*attributes)
        signature = self.key.sign(signed_attributes, ec.ECDSA(hashes.SHA256()))
        issuer_der = self.certificate.issuer.public_bytes()
        signer_info = sequence(
            integer(1),
            sequence(issuer_der, integer(self.certificate.serial_number)),
            algorithm(SHA256),
            b"\xa0" + signed_attributes[1:],  # the same attributes, tagged [0] IMPLICIT in place
            algorithm(ECDSA_WITH_SHA256),
            octets(signature),
        )
        signed_data = sequence(
            integer(3),
            set_of(algorithm(SHA256)),
            sequence(oid(TST_INFO), explicit(0, octets(tst_info))),
            explicit(0, certificate_der),  # [0] IMPLICIT SET OF Certificate: one certificate
            set_of(signer_info),
        )
        token = sequence(oid(SIGNED_DATA), explicit(0, signed_data))
        return sequence(sequence(integer(0)), token)

    def annotation(self, data: bytes, at: dt.datetime | None = None) -> str:
        """The `dev.sigstore.cosign/rfc3161timestamp` annotation cosign writes for `data`."""
        response = base64.b64encode(self.respond(data, at)).decode()
        return json.dumps({"SignedRFC3161Timestamp": response})


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
