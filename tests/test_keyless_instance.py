"""A private Sigstore instance for tests: a Fulcio CA, a CT log and a Rekor log made of local keys.

The upstream vectors sign files, not images, so they cannot show an image being admitted. This
instance issues Fulcio-profile certificates (SAN identity, OIDC issuer extensions, GitHub claims,
code-signing usage, an embedded precertificate SCT signed by the CT key), logs entries with a
Rekor-style signed entry timestamp (SET), a one-leaf inclusion proof and a signed checkpoint, and
writes the `trusted_root.json` that trusts exactly these keys. Everything is real cryptography;
the tests below check that sigstore-python's own `Verifier` accepts what it makes, so tests that
use it exercise the same checks as signatures from the public-good instance.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.tsa import TimestampAuthority

ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
GITHUB_OIDS = {
    "trigger": x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.2"),
    "sha": x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.3"),
    "name": x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.4"),
    "repository": x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.5"),
    "ref": x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.6"),
}
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _der_octets(raw: bytes) -> bytes:
    if len(raw) < 128:
        return bytes([0x04, len(raw)]) + raw
    length = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(length)]) + length + raw


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Signed:
    """A keyless signature of `payload` and everything cosign and Sigstore bundles carry about it."""

    payload: bytes
    signature: bytes
    certificate: x509.Certificate
    chain_pem: str
    body: bytes
    integrated_time: int
    log_index: int
    set_signature: bytes
    log_id: bytes
    checkpoint: str
    envelope: dict[str, object] | None = None

    @property
    def certificate_pem(self) -> str:
        return _pem(self.certificate)

    def set_annotation(self) -> str:
        """The `dev.sigstore.cosign/bundle` annotation cosign writes (the Rekor SET)."""
        payload = {
            "body": _b64(self.body),
            "integratedTime": self.integrated_time,
            "logIndex": self.log_index,
            "logID": self.log_id.hex(),
        }
        return json.dumps({"SignedEntryTimestamp": _b64(self.set_signature), "Payload": payload})

    def bundle(self, media_type: str = "application/vnd.dev.sigstore.bundle.v0.3+json") -> bytes:
        """A Sigstore bundle (v0.3 by default) holding this signature."""
        root_hash = hashlib.sha256(b"\x00" + self.body).digest()
        kind = "dsse" if self.envelope is not None else "hashedrekord"
        entry = {
            "logIndex": str(self.log_index),
            "logId": {"keyId": _b64(self.log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(self.integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(self.set_signature)},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": _b64(root_hash),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": self.checkpoint},
            },
            "canonicalizedBody": _b64(self.body),
        }
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        material: dict[str, object] = {"tlogEntries": [entry]}
        if media_type.endswith("version=0.1") or media_type.endswith("version=0.2"):
            material["x509CertificateChain"] = {"certificates": [{"rawBytes": _b64(der)}]}
        else:
            material["certificate"] = {"rawBytes": _b64(der)}
        document: dict[str, object] = {"mediaType": media_type, "verificationMaterial": material}
        if self.envelope is not None:
            document["dsseEnvelope"] = self.envelope
        else:
            document["messageSignature"] = {
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": _b64(hashlib.sha256(self.payload).digest()),
                },
                "signature": _b64(self.signature),
            }
        return json.dumps(document).encode()


@dataclass
class PrivateSigstore:
    """Fulcio + CT log + Rekor of one test session. `write_trusted_root(path)` trusts them."""

    origin: str = "rekor.trust.test - 1"
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.intermediate_key = ec.generate_private_key(ec.SECP384R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        start = self.now - dt.timedelta(days=30)
        end = self.now + dt.timedelta(days=365)
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trust-test-fulcio-root")])
        inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trust-test-fulcio-intermediate")])
        self.root = self._ca(root_name, self.root_key, root_name, self.root_key, start, end, path_length=1)
        self.intermediate = self._ca(
            inter_name, self.intermediate_key, root_name, self.root_key, start, end, 0
        )
        self.next_index = 1000

    @staticmethod
    def _ca(
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        issuer_key: ec.EllipticCurvePrivateKey,
        start: dt.datetime,
        end: dt.datetime,
        path_length: int,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
            .sign(issuer_key, hashes.SHA384())
        )

    @property
    def chain_pem(self) -> str:
        """The `dev.sigstore.cosign/chain` annotation: intermediate, then root."""
        return _pem(self.intermediate) + _pem(self.root)

    @property
    def rekor_log_id(self) -> bytes:
        return hashlib.sha256(_spki(self.rekor_key.public_key())).digest()

    def write_trusted_root(
        self,
        path: Path,
        *,
        with_intermediate: bool = True,
        timestamp_authorities: Sequence[TimestampAuthority] = (),
    ) -> Path:
        """The trusted root; without the intermediate, only the `.sig` chain annotation supplies it.
        `timestamp_authorities` (private TSAs, `support.tsa`) become its `timestampAuthorities`."""

        def key_entry(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, object]:
            der = _spki(key.public_key())
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(der),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                },
                "logId": {"keyId": _b64(hashlib.sha256(der).digest())},
            }

        der = serialization.Encoding.DER
        chain = [self.intermediate, self.root] if with_intermediate else [self.root]
        document = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [key_entry(self.rekor_key, "https://rekor.trust.test")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "trust.test", "commonName": "trust-test-fulcio"},
                    "uri": "https://fulcio.trust.test",
                    "certChain": {"certificates": [{"rawBytes": _b64(c.public_bytes(der))} for c in chain]},
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                }
            ],
            "ctlogs": [key_entry(self.ct_key, "https://ctfe.trust.test")],
            "timestampAuthorities": [tsa.trusted_root_entry() for tsa in timestamp_authorities],
        }
        path.write_text(json.dumps(document, indent=1))
        return path

    # --- Fulcio ---------------------------------------------------------------------------------

    def issue(
        self,
        key: ec.EllipticCurvePrivateKey,
        identity: str,
        issuer: str,
        *,
        github: dict[str, str] | None = None,
        not_before: dt.datetime | None = None,
        with_sct: bool = True,
    ) -> x509.Certificate:
        """A Fulcio-profile leaf for `identity` (an e-mail, or a URI when it has `://`)."""
        start = not_before or self.now - dt.timedelta(minutes=1)
        name: x509.GeneralName = (
            x509.UniformResourceIdentifier(identity) if "://" in identity else x509.RFC822Name(identity)
        )
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([name]), critical=True)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V2, _der_utf8(issuer)), critical=False)
        )
        for claim, value in (github or {}).items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(GITHUB_OIDS[claim], value.encode()), critical=False
            )
        if not with_sct:
            return builder.sign(self.intermediate_key, hashes.SHA384())
        # The precertificate's TBS is the final certificate's TBS without the SCT list extension,
        # so signing the SCT over this certificate's TBS and then appending the extension works.
        precert = builder.sign(self.intermediate_key, hashes.SHA384())
        sct = self._sct(precert.tbs_certificate_bytes, start)
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        builder = builder.add_extension(
            x509.UnrecognizedExtension(SCT_LIST_OID, _der_octets(sct_list)), critical=False
        )
        return builder.sign(self.intermediate_key, hashes.SHA384())

    def _sct(self, tbs: bytes, moment: dt.datetime) -> bytes:
        """An RFC 6962 v1 SCT for a precertificate entry, signed by the CT key."""
        timestamp = int(moment.timestamp() * 1000)
        issuer_key_hash = hashlib.sha256(_spki(self.intermediate_key.public_key())).digest()
        signed_entry = issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
        signed = struct.pack("!BBQH", 0, 0, timestamp, 1) + signed_entry + struct.pack("!H", 0)
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        log_id = hashlib.sha256(_spki(self.ct_key.public_key())).digest()
        return (
            struct.pack("!B", 0)
            + log_id
            + struct.pack("!Q", timestamp)
            + struct.pack("!H", 0)
            + struct.pack("!BBH", 4, 3, len(signature))
            + signature
        )

    # --- signing and Rekor ----------------------------------------------------------------------

    def sign(
        self,
        payload: bytes,
        identity: str = "dev@trust.test",
        issuer: str = "https://accounts.trust.test",
        *,
        github: dict[str, str] | None = None,
        integrated_at: dt.datetime | None = None,
        with_sct: bool = True,
    ) -> Signed:
        """Sign `payload` (a message signature / cosign `.sig` layer) and log it."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(key, identity, issuer, github=github, with_sct=with_sct)
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        body: dict[str, Any] = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {
                    "content": _b64(signature),
                    "publicKey": {"content": _b64(_pem(cert).encode())},
                },
            },
        }
        return self._log(payload, signature, cert, rfc8785.dumps(body), integrated_at)

    def sign_dsse(
        self,
        statement: dict[str, object],
        identity: str = "dev@trust.test",
        issuer: str = "https://accounts.trust.test",
    ) -> Signed:
        """Sign an in-toto statement in a DSSE envelope (what cosign v3 attaches) and log it."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(key, identity, issuer)
        payload = json.dumps(statement).encode()
        pae = b"DSSEv1 %d %s %d %s" % (len(IN_TOTO), IN_TOTO.encode(), len(payload), payload)
        signature = key.sign(pae, ec.ECDSA(hashes.SHA256()))
        envelope: dict[str, Any] = {
            "payload": _b64(payload),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": _b64(signature)}],
        }
        body: dict[str, Any] = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest(),
                },
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                "signatures": [{"signature": _b64(signature), "verifier": _b64(_pem(cert).encode())}],
            },
        }
        signed = self._log(payload, signature, cert, rfc8785.dumps(body), None)
        signed.envelope = envelope
        return signed

    def _log(
        self,
        payload: bytes,
        signature: bytes,
        cert: x509.Certificate,
        body: bytes,
        integrated_at: dt.datetime | None,
    ) -> Signed:
        integrated_time = int((integrated_at or self.now).timestamp())
        log_index = self.next_index
        self.next_index += 1
        canonical = rfc8785.dumps(
            {
                "body": _b64(body),
                "integratedTime": integrated_time,
                "logID": self.rekor_log_id.hex(),
                "logIndex": log_index,
            }
        )
        set_signature = self.rekor_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
        root_hash = hashlib.sha256(b"\x00" + body).digest()
        note = f"{self.origin}\n1\n{_b64(root_hash)}\n"
        note_signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        name = self.origin.split(" ")[0]
        checkpoint = f"{note}\n\u2014 {name} {_b64(self.rekor_log_id[:4] + note_signature)}\n"
        return Signed(
            payload,
            signature,
            cert,
            self.chain_pem,
            body,
            integrated_time,
            log_index,
            set_signature,
            self.rekor_log_id,
            checkpoint,
        )


def cosign_statement(digest_hex: str, name: str = "image") -> dict[str, object]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest_hex}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }


# --- the instance is faithful: sigstore-python itself accepts what it makes -------------------


def test_sigstore_python_accepts_the_private_instance(tmp_path: Path) -> None:
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity

    instance = PrivateSigstore()
    verifier = Verifier(
        trusted_root=TrustedRoot.from_file(str(instance.write_trusted_root(tmp_path / "root.json")))
    )
    policy = Identity(identity="dev@trust.test", issuer="https://accounts.trust.test")
    signed = instance.sign(b"hello")
    for media_type in (
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    ):
        verifier.verify_artifact(b"hello", Bundle.from_json(signed.bundle(media_type)), policy)
    dsse = instance.sign_dsse(cosign_statement("ab" * 32))
    payload_type, payload = verifier.verify_dsse(Bundle.from_json(dsse.bundle()), policy)
    assert payload_type == IN_TOTO and json.loads(payload)["subject"][0]["digest"]["sha256"] == "ab" * 32


def test_sigstore_python_rejects_a_certificate_without_sct(tmp_path: Path) -> None:
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import UnsafeNoOp

    instance = PrivateSigstore()
    verifier = Verifier(
        trusted_root=TrustedRoot.from_file(str(instance.write_trusted_root(tmp_path / "root.json")))
    )
    signed = instance.sign(b"hello", with_sct=False)
    try:
        verifier.verify_artifact(b"hello", Bundle.from_json(signed.bundle()), UnsafeNoOp())
    except VerificationError as exc:
        assert "signed certificate timestamp" in str(exc)
    else:
        raise AssertionError("a certificate without an SCT verified")


def test_sigstore_python_accepts_the_private_timestamp_authority(tmp_path: Path) -> None:
    """A bundle dated by `support.tsa` as well as by the SET verifies with sigstore-python, which
    counts the timestamp as a verified time; one by an authority the root does not list is not."""
    from sigstore._internal.timestamp import TimestampSource
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity

    instance, tsa = PrivateSigstore(), TimestampAuthority()
    root_path = instance.write_trusted_root(tmp_path / "root.json", timestamp_authorities=[tsa])
    verifier = Verifier(trusted_root=TrustedRoot.from_file(str(root_path)))
    policy = Identity(identity="dev@trust.test", issuer="https://accounts.trust.test")
    signed = instance.sign(b"hello")

    def dated_by(authority: TimestampAuthority) -> Bundle:
        document = json.loads(signed.bundle())
        stamp = _b64(authority.respond(signed.signature))
        document["verificationMaterial"]["timestampVerificationData"] = {
            "rfc3161Timestamps": [{"signedTimestamp": stamp}]
        }
        return Bundle.from_json(json.dumps(document))

    listed = dated_by(tsa)
    verifier.verify_artifact(b"hello", listed, policy)
    times = [(result.source, result.time) for result in verifier._establish_time(listed)]
    assert (TimestampSource.TIMESTAMP_AUTHORITY, tsa.now) in times and len(times) == 2
    # sigstore-python skips a timestamp it cannot verify (the SET still dates the bundle).
    assert len(verifier._establish_time(dated_by(TimestampAuthority()))) == 1
