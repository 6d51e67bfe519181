"""Notary Project (Notation) signatures: the upstream vectors, certificate rules, envelope rules,
levels, and sign → verify through a real registry."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.images import push_blob, push_image, push_manifest, simple_image, write_oci_layout
from support.registry import Registry
from support.vectors import VECTORS as SHARED_VECTORS

from policy.errors import PolicyError
from policy.loader import load_policy_text
from policy.model import NotationAuthority, NotationLevel
from pull.clients import RegistryClients
from pull.digest import Digest
from pull.layout import LayoutClient
from pull.manifest import Descriptor, ImageIndex, verify_document
from pull.mediatypes import NOTATION_SIGNATURE, OCI_MANIFEST
from pull.records import replace
from pull.reference import Reference
from pull.referrers import push_referrer
from trust.attached import AttachedSignatures, SignatureLocation, discover
from trust.cli.app import main
from trust.cosign.simple_signing import Reason, SignatureOutcome
from trust.notation.artifact import NotationSignature, read_signature
from trust.notation.identity import overlapping, parse_identity
from trust.notation.jws import build_envelope
from trust.notation.signatures import sign_notation, verify_notation_attached

VECTORS = SHARED_VECTORS / "notation"
E2E_SUBJECT = Digest.parse("sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9")
E2E_IDENTITY = "x509.subject: C=US, ST=WA, O=Notary"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SIGNED_AT = NOW - timedelta(days=1)


# --- helpers: OCI layouts ----------------------------------------------------------------------


def layout_blob(layout: Path, digest: Digest) -> bytes:
    data = (layout / "blobs" / digest.algorithm / digest.hex).read_bytes()
    assert Digest.of_bytes(data, digest.algorithm) == digest  # the layout is untrusted too
    return data


def layout_attached(layout: Path, subject: Digest) -> AttachedSignatures:
    """The Notation signatures of `subject` in an OCI layout, found through the referrers tag-schema
    index (`sha256-<hex>` in index.json), read with the same `read_signature` the registry path uses."""
    index = json.loads((layout / "index.json").read_text())
    target = verify_document(layout_blob(layout, subject), content_type=None, expected=subject).descriptor
    found: list[NotationSignature] = []
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") != subject.encoded:
            continue
        referrers_digest = Digest.parse(entry["digest"])
        referrers = verify_document(
            layout_blob(layout, referrers_digest), content_type=None, expected=referrers_digest
        ).document
        assert isinstance(referrers, ImageIndex)
        for referrer in referrers.manifests:
            if referrer.artifact_type != NOTATION_SIGNATURE:
                continue
            raw = layout_blob(layout, referrer.digest)
            signature = read_signature(
                raw, None, referrer.digest, target, lambda d: layout_blob(layout, d.digest)
            )
            if signature is not None:
                found.append(signature)
    return AttachedSignatures((), lambda layer: b"", (), found)


def authority(
    certificates: Sequence[x509.Certificate],
    identities: Sequence[str] = ("*",),
    level: NotationLevel = NotationLevel.STRICT,
) -> NotationAuthority:
    return NotationAuthority("corp", Path("/trust-store"), tuple(certificates), tuple(identities), level)


def e2e_ca() -> x509.Certificate:
    return x509.load_pem_x509_certificate((VECTORS / "localkeys" / "e2e.crt").read_bytes())


def only(outcomes: Sequence[SignatureOutcome]) -> SignatureOutcome:
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


# --- helpers: a test PKI -----------------------------------------------------------------------


@dataclass
class Issued:
    key: Any
    cert: x509.Certificate


def name(common_name: str, organization: str = "acme") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def usage(**bits: bool) -> x509.KeyUsage:
    fields = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    fields.update(bits)
    return x509.KeyUsage(**fields)


def issue(
    subject: str,
    issuer: Issued | None,
    *,
    key: Any = None,
    ca: bool | None = False,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CODE_SIGNING,),
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    crl: bool = False,
    organization: str = "acme",
) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject_name = name(subject, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer.cert.subject if issuer else subject_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_usage is None:
        key_usage = usage(key_cert_sign=True, crl_sign=True) if ca else usage(digital_signature=True)
    builder = builder.add_extension(key_usage, critical=True)
    if eku is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if crl:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier("http://crl.example/ca.crl")], None, None, None
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    signer = issuer.key if issuer else key
    return Issued(key, builder.sign(signer, hashes.SHA256()))


@dataclass
class Pki:
    root: Issued
    intermediate: Issued
    leaf: Issued

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.leaf.cert, self.intermediate.cert, self.root.cert]


def make_pki(**leaf_options: Any) -> Pki:
    root = issue("root", None, ca=True, path_length=1)
    intermediate = issue("intermediate", root, ca=True, path_length=0)
    return Pki(root, intermediate, issue("signer", intermediate, **leaf_options))


TARGET = Descriptor(OCI_MANIFEST, Digest.of_bytes(b"the signed manifest"), 1234)


def signature_of(
    envelope: bytes, target: Descriptor = TARGET, media_type: str = "application/jose+json"
) -> AttachedSignatures:
    signature = NotationSignature(
        Digest.of_bytes(b"manifest"), media_type, Digest.of_bytes(envelope), envelope, target
    )
    return AttachedSignatures((), lambda layer: b"", (), [signature])


def check(
    envelope: bytes,
    trust: Sequence[x509.Certificate],
    *,
    identities: Sequence[str] = ("*",),
    level: NotationLevel = NotationLevel.STRICT,
    target: Descriptor = TARGET,
    now: datetime = NOW,
) -> SignatureOutcome:
    return only(
        verify_notation_attached(
            signature_of(envelope, target), TARGET.digest, authority(trust, identities, level), now=now
        )
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_jws(
    protected: dict[str, Any],
    key: Any,
    chain: Sequence[x509.Certificate],
    *,
    payload: dict[str, Any] | None = None,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A JWS signed over arbitrary headers, to build envelopes our own builder would never write."""
    payload = payload or {
        "targetArtifact": {"mediaType": TARGET.media_type, "digest": str(TARGET.digest), "size": TARGET.size}
    }
    protected_b64 = b64url(json.dumps(protected).encode())
    payload_b64 = b64url(json.dumps(payload).encode())
    message = f"{protected_b64}.{payload_b64}".encode()
    digest = hash_algorithm or hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(message, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    else:
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    document = {
        "payload": payload_b64,
        "protected": protected_b64,
        "header": {
            "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
        },
        "signature": b64url(signature),
    }
    return json.dumps(document).encode()


def headers(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "alg": "ES256",
        "crit": ["io.cncf.notary.signingScheme"],
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": SIGNED_AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def envelope_by(pki: Pki, **options: Any) -> bytes:
    return build_envelope(
        TARGET, pki.leaf.key, pki.chain, signing_time=options.pop("signing_time", SIGNED_AT), **options
    )


# --- the upstream vectors ----------------------------------------------------------------------


def test_vector_valid_signature_verifies_with_its_ca_and_identity() -> None:
    attached = layout_attached(VECTORS / "oci_layout" / "e2e-valid-signature", E2E_SUBJECT)
    outcome = only(verify_notation_attached(attached, E2E_SUBJECT, authority([e2e_ca()], [E2E_IDENTITY])))
    assert outcome.reason is Reason.VALID, outcome.detail
    assert outcome.key == "CN=e2e,O=Notary,L=Seattle,ST=WA,C=US"
    assert "2023-06-27T05:30:33" in outcome.detail  # the signing time, +08:00 normalised to UTC
    assert outcome.layer_digest == Digest.parse(
        "sha256:c9af07e038b2b1a463e648986ad7273157511ffeba0b689f33e5472bae471f50"
    )


def test_vector_valid_signature_with_another_identity_or_trust_store() -> None:
    attached = layout_attached(VECTORS / "oci_layout" / "e2e-valid-signature", E2E_SUBJECT)
    wrong_identity = authority([e2e_ca()], ["x509.subject: C=US, ST=WA, O=Someone Else"])
    assert (
        only(verify_notation_attached(attached, E2E_SUBJECT, wrong_identity)).reason is Reason.WRONG_IDENTITY
    )
    other = x509.load_pem_x509_certificate((VECTORS / "localkeys" / "new_e2e.crt").read_bytes())
    outcome = only(verify_notation_attached(attached, E2E_SUBJECT, authority([other])))
    assert outcome.reason is Reason.UNTRUSTED_CERTIFICATE and "trust store" in outcome.detail
    # audit only logs authenticity: integrity holds, so the signature counts, with the warning kept
    audit = authority([other], level=NotationLevel.AUDIT)
    outcome = only(verify_notation_attached(attached, E2E_SUBJECT, audit))
    assert outcome.reason is Reason.VALID and "logged at level audit: authenticity" in outcome.detail


def test_vector_invalid_signature_is_malformed() -> None:
    attached = layout_attached(VECTORS / "oci_layout" / "e2e-invalid-signature", E2E_SUBJECT)
    for level in NotationLevel:
        outcome = only(verify_notation_attached(attached, E2E_SUBJECT, authority([e2e_ca()], level=level)))
        assert outcome.reason is Reason.MALFORMED
        assert "application/vnd.oci.image.layer.v1.tar" in outcome.detail


def test_vector_expired_signature_fails_strict_and_is_logged_when_permissive() -> None:
    attached = layout_attached(VECTORS / "oci_layout" / "e2e-expired-signature", E2E_SUBJECT)
    strict = only(verify_notation_attached(attached, E2E_SUBJECT, authority([e2e_ca()], [E2E_IDENTITY])))
    assert strict.reason is Reason.EXPIRED
    assert "expired at 2023-06-27T05:21:21" in strict.detail
    permissive = authority([e2e_ca()], [E2E_IDENTITY], NotationLevel.PERMISSIVE)
    logged = only(verify_notation_attached(attached, E2E_SUBJECT, permissive))
    assert logged.reason is Reason.VALID and "expiry: the signature expired" in logged.detail


def test_vector_signature_of_another_subject_is_not_read() -> None:
    layout = VECTORS / "oci_layout" / "e2e-valid-signature"
    raw = layout_blob(
        layout, Digest.parse("sha256:90ceaff260d657d797c408ac73564a9c7bb9d86055877c2a811f0e63b8c6524f")
    )
    manifest_digest = Digest.of_bytes(raw)
    other = Descriptor(OCI_MANIFEST, Digest.of_bytes(b"other"), 517)
    assert read_signature(raw, None, manifest_digest, other, lambda d: b"") is None
    with pytest.raises(Exception, match="hashes to"):
        read_signature(raw, None, Digest.of_bytes(b"x"), other, lambda d: b"")


# --- our own envelopes and the certificate rules ------------------------------------------------


def test_own_envelope_verifies_with_ec_and_rsa_chains() -> None:
    pki = make_pki()
    outcome = check(
        envelope_by(pki), [pki.root.cert], identities=["x509.subject: C=US, ST=WA, O=acme, CN=signer"]
    )
    assert outcome.reason is Reason.VALID, outcome.detail
    assert "anchored at CN=root" in outcome.detail
    rsa_pki = make_pki(key=rsa.generate_private_key(65537, 3072))
    envelope = envelope_by(rsa_pki)
    assert json.loads(base64.urlsafe_b64decode(json.loads(envelope)["protected"] + "=="))["alg"] == "PS384"
    assert check(envelope, [rsa_pki.root.cert]).reason is Reason.VALID
    # the trust store may pin the intermediate instead of the root
    assert check(envelope_by(pki), [pki.intermediate.cert]).reason is Reason.VALID


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make_pki(ca=True, key_usage=usage(digital_signature=True)), "is a CA certificate"),
        (lambda: make_pki(eku=[ExtendedKeyUsageOID.SERVER_AUTH]), "extended key usage serverAuth"),
        (
            lambda: make_pki(eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING]),
            "emailProtection",
        ),
        (lambda: make_pki(eku=[x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")]), "without codeSigning"),
        (lambda: make_pki(key_usage=usage(digital_signature=True, key_encipherment=True)), "keyEncipherment"),
        (lambda: make_pki(key_usage=usage(content_commitment=True)), "lacks the digitalSignature"),
        (lambda: make_pki(not_after=SIGNED_AT - timedelta(hours=1)), "not valid at the signing time"),
        (lambda: make_pki(not_before=SIGNED_AT + timedelta(hours=1)), "not valid at the signing time"),
    ],
)
def test_leaf_certificate_rules(build: Any, message: str) -> None:
    pki = build()
    outcome = check(envelope_by(pki), [pki.root.cert])
    assert outcome.reason is Reason.UNTRUSTED_CERTIFICATE
    assert message in outcome.detail


def test_ca_certificate_rules() -> None:
    root = issue("root", None, ca=True)
    no_cert_sign = issue("intermediate", root, ca=True, key_usage=usage(crl_sign=True))
    leaf = issue("signer", no_cert_sign)
    envelope = build_envelope(
        TARGET, leaf.key, [leaf.cert, no_cert_sign.cert, root.cert], signing_time=SIGNED_AT
    )
    outcome = check(envelope, [root.cert])
    assert outcome.reason is Reason.UNTRUSTED_CERTIFICATE and "keyCertSign" in outcome.detail

    strict_root = issue("root", None, ca=True, path_length=0)
    intermediate = issue("intermediate", strict_root, ca=True)
    leaf = issue("signer", intermediate)
    envelope = build_envelope(
        TARGET, leaf.key, [leaf.cert, intermediate.cert, strict_root.cert], signing_time=SIGNED_AT
    )
    outcome = check(envelope, [strict_root.cert])
    assert outcome.reason is Reason.UNTRUSTED_CERTIFICATE and "allows 0 intermediate" in outcome.detail

    not_ca = issue(
        "intermediate", root, ca=False, key_usage=usage(key_cert_sign=True, digital_signature=True)
    )
    leaf = issue("signer", not_ca)
    envelope = build_envelope(TARGET, leaf.key, [leaf.cert, not_ca.cert, root.cert], signing_time=SIGNED_AT)
    assert "not a CA" in check(envelope, [root.cert]).detail

    weak_root = issue("root", None, ca=True, key=rsa.generate_private_key(65537, 1024))
    leaf = issue("signer", weak_root)
    envelope = build_envelope(TARGET, leaf.key, [leaf.cert, weak_root.cert], signing_time=SIGNED_AT)
    outcome = check(envelope, [weak_root.cert])
    assert outcome.reason is Reason.UNTRUSTED_CERTIFICATE and "1024 bits" in outcome.detail


def test_chain_must_be_ordered_and_end_in_a_root() -> None:
    pki = make_pki()
    unordered = build_envelope(
        TARGET, pki.leaf.key, [pki.leaf.cert, pki.root.cert, pki.intermediate.cert], signing_time=SIGNED_AT
    )
    assert "is not issued by the next one" in check(unordered, [pki.root.cert]).detail
    no_root = build_envelope(
        TARGET, pki.leaf.key, [pki.leaf.cert, pki.intermediate.cert], signing_time=SIGNED_AT
    )
    assert "not a self-signed root" in check(no_root, [pki.intermediate.cert]).detail


P256_CURVE_OID = bytes.fromhex("06082a8648ce3d030107")
ECDSA_SHA256_OID = bytes.fromhex("06082a8648ce3d040302")
KEY_USAGE_OID, EXTENDED_KEY_USAGE_OID = bytes.fromhex("0603551d0f"), bytes.fromhex("0603551d25")


@pytest.mark.parametrize(
    ("position", "old", "new"),
    [
        (0, P256_CURVE_OID, P256_CURVE_OID[:-1] + b"\x08"),  # the leaf's key on an unknown curve
        (1, P256_CURVE_OID, P256_CURVE_OID[:-1] + b"\x08"),  # the intermediate's, after the signature
        (2, ECDSA_SHA256_OID, ECDSA_SHA256_OID[:-1] + b"\x09"),  # an unknown signature algorithm
        (0, EXTENDED_KEY_USAGE_OID, KEY_USAGE_OID),  # keyUsage twice
    ],
    ids=["leaf-curve", "intermediate-curve", "root-signature-algorithm", "leaf-duplicate-extension"],
)
@pytest.mark.parametrize("media_type", ["application/jose+json", "application/cose"])
def test_certificate_cryptography_cannot_read_is_malformed_not_a_crash(
    position: int, old: bytes, new: bytes, media_type: str
) -> None:
    """x5c is unprotected and anyone who can push a referrer chooses it: a certificate that parses
    as DER but whose key or algorithm cryptography refuses must end as one malformed outcome."""
    pki = make_pki()
    ders = [c.public_bytes(serialization.Encoding.DER) for c in pki.chain]
    assert old in ders[position]
    ders[position] = ders[position].replace(old, new)
    if media_type == "application/cose":
        message = cbor2.loads(cose_envelope(pki.leaf, pki.chain))
        parts = list(message.value)
        parts[1] = {**parts[1], 33: ders}
        envelope = cbor2.dumps(cbor2.CBORTag(18, parts))
    else:
        document = json.loads(envelope_by(pki))
        document["header"]["x5c"] = [base64.b64encode(der).decode() for der in ders]
        envelope = json.dumps(document).encode()
    attached = signature_of(envelope, media_type=media_type)
    [outcome] = verify_notation_attached(attached, TARGET.digest, authority([pki.root.cert]), now=NOW)
    assert outcome.reason is Reason.MALFORMED
    assert f"certificate {position} of the chain is not a usable" in outcome.detail


def test_rsa_1024_signing_key_is_refused() -> None:
    leaf = issue("signer", None, ca=None, key=rsa.generate_private_key(65537, 1024))
    envelope = raw_jws(headers(alg="PS256"), leaf.key, [leaf.cert])
    outcome = check(envelope, [leaf.cert])
    assert outcome.reason is Reason.MALFORMED and "1024 bits" in outcome.detail


def test_self_signed_leaf_as_its_own_trust_anchor() -> None:
    leaf = issue("signer", None, ca=None)
    envelope = build_envelope(TARGET, leaf.key, [leaf.cert], signing_time=SIGNED_AT)
    assert check(envelope, [leaf.cert]).reason is Reason.VALID


@pytest.mark.parametrize(
    ("protected", "message"),
    [
        (headers(alg="RS256"), "alg 'RS256' is not one of"),
        (headers(alg="none"), "alg 'none'"),
        (headers(alg="ES384"), "requires ES256"),
        (
            headers(
                crit=["io.cncf.notary.signingScheme", "io.example.unknown"], **{"io.example.unknown": "x"}
            ),
            "unknown critical header",
        ),
        (
            headers(crit=["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"]),
            "which the protected header lacks",
        ),
        (headers(crit=[]), "crit must be a non-empty list"),
        (headers(crit=None), "crit must be a non-empty list"),
        (headers(crit=["io.cncf.notary.signingScheme", "alg"]), "registered header"),
        (headers(**{"io.cncf.notary.expiry": "2030-01-01T00:00:00Z"}), "must be listed in crit"),
        (headers(cty="application/json"), "cty is"),
        (headers(**{"io.cncf.notary.signingScheme": "notary.x509.signingAuthority"}), "is not supported"),
        (headers(**{"io.cncf.notary.signingScheme": "other"}), "is not 'notary.x509'"),
        (headers(**{"io.cncf.notary.signingTime": None}), "has no io.cncf.notary.signingTime"),
        (headers(**{"io.cncf.notary.signingTime": "yesterday"}), "not an RFC 3339 time"),
        (
            headers(
                crit=["io.cncf.notary.signingScheme", "io.cncf.notary.verificationPlugin"],
                **{"io.cncf.notary.verificationPlugin": "com.example.plugin"},
            ),
            "verification plugin",
        ),
    ],
)
def test_protected_header_rules(protected: dict[str, Any], message: str) -> None:
    leaf = issue("signer", None, ca=None)
    outcome = check(raw_jws(protected, leaf.key, [leaf.cert]), [leaf.cert])
    assert outcome.reason is Reason.MALFORMED
    assert message in outcome.detail


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
)
@pytest.mark.parametrize("header", ["io.cncf.notary.signingTime", "io.cncf.notary.expiry"])
def test_out_of_range_times_are_a_malformed_signature_not_a_crash(header: str, moment: str) -> None:
    """A referrer anyone can push must not crash verification (before the signature is even checked):
    a time that overflows when converted to UTC is a malformed envelope."""
    leaf = issue("signer", None, ca=None)
    crit = ["io.cncf.notary.signingScheme"] + ([header] if header.endswith("expiry") else [])
    outcome = check(raw_jws(headers(crit=crit, **{header: moment}), leaf.key, [leaf.cert]), [leaf.cert])
    assert outcome.reason is Reason.MALFORMED
    assert "not an RFC 3339 time" in outcome.detail


def test_hand_built_envelope_with_expiry_in_crit_verifies() -> None:
    leaf = issue("signer", None, ca=None)
    protected = headers(
        crit=["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"],
        **{"io.cncf.notary.expiry": (NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+02:00")},
    )
    assert check(raw_jws(protected, leaf.key, [leaf.cert]), [leaf.cert]).reason is Reason.VALID


def test_deeply_nested_json_is_a_malformed_envelope_not_a_crash() -> None:
    """json recurses once per '[': 2 kB of them in the envelope or the protected header would
    otherwise escape as RecursionError (exit 1) from any referrer someone pushed."""
    leaf = issue("signer", None, ca=None)
    valid = json.loads(raw_jws(headers(), leaf.key, [leaf.cert]))
    deep = b"[" * 3000 + b"]" * 3000
    whole = b'{"payload": ' + deep + b"}"
    in_header = json.dumps({**valid, "protected": b64url(b'{"alg": ' + deep + b"}")}).encode()
    for envelope in (whole, in_header):
        outcome = check(envelope, [leaf.cert])
        assert outcome.reason is Reason.MALFORMED and "nested too deeply" in outcome.detail


def test_payload_and_envelope_structure() -> None:
    leaf = issue("signer", None, ca=None)
    other_size = {"targetArtifact": {"mediaType": TARGET.media_type, "digest": str(TARGET.digest), "size": 1}}
    outcome = check(raw_jws(headers(), leaf.key, [leaf.cert], payload=other_size), [leaf.cert])
    assert outcome.reason is Reason.DIGEST_MISMATCH and "1 bytes" in outcome.detail
    other_type = {
        "targetArtifact": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": str(TARGET.digest),
            "size": TARGET.size,
        }
    }
    assert (
        check(raw_jws(headers(), leaf.key, [leaf.cert], payload=other_type), [leaf.cert]).reason
        is Reason.DIGEST_MISMATCH
    )
    other_digest = {
        "targetArtifact": {
            "mediaType": TARGET.media_type,
            "digest": str(Digest.of_bytes(b"x")),
            "size": TARGET.size,
        }
    }
    assert (
        check(raw_jws(headers(), leaf.key, [leaf.cert], payload=other_digest), [leaf.cert]).reason
        is Reason.DIGEST_MISMATCH
    )
    extra = {"targetArtifact": json.loads(json.dumps(other_size["targetArtifact"])), "more": 1}
    assert (
        "unknown field 'more'"
        in check(raw_jws(headers(), leaf.key, [leaf.cert], payload=extra), [leaf.cert]).detail
    )

    good = json.loads(raw_jws(headers(), leaf.key, [leaf.cert]))
    tampered = dict(good, payload=b64url(json.dumps(other_digest).encode()))
    assert check(json.dumps(tampered).encode(), [leaf.cert]).reason is Reason.BAD_SIGNATURE
    flipped = dict(good, signature=b64url(bytes(64)))
    assert check(json.dumps(flipped).encode(), [leaf.cert]).reason is Reason.BAD_SIGNATURE
    assert "unknown field 'extra'" in check(json.dumps(dict(good, extra=1)).encode(), [leaf.cert]).detail
    duplicate = json.dumps(good)[:-1] + ', "payload": "e30"}'
    assert "duplicate key" in check(duplicate.encode(), [leaf.cert]).detail
    padded = dict(good, protected=good["protected"] + "=")
    assert "base64url" in check(json.dumps(padded).encode(), [leaf.cert]).detail
    assert check(b"\xff" * 10, [leaf.cert]).reason is Reason.MALFORMED
    assert check(json.dumps(dict(good, header={"x5c": []})).encode(), [leaf.cert]).reason is Reason.MALFORMED


def cose_envelope(
    pki_leaf: Issued,
    chain: Sequence[x509.Certificate],
    *,
    protected: dict[Any, Any] | None = None,
    payload: bytes | None = None,
    tag: int = 18,
) -> bytes:
    """A COSE_Sign1_Tagged Notary envelope, as notation-go writes it."""
    header = protected or {
        1: -7,
        2: ["io.cncf.notary.signingScheme"],
        3: "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(SIGNED_AT.timestamp())),
    }
    body = (
        payload
        or json.dumps(
            {
                "targetArtifact": {
                    "mediaType": TARGET.media_type,
                    "digest": str(TARGET.digest),
                    "size": TARGET.size,
                }
            }
        ).encode()
    )
    protected_bytes = cbor2.dumps(header)
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", body])
    key = pki_leaf.key
    if isinstance(key, rsa.RSAPrivateKey):
        digest: hashes.HashAlgorithm = hashes.SHA384() if key.key_size == 3072 else hashes.SHA256()
        signature = key.sign(to_be_signed, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    else:
        r, s = decode_dss_signature(key.sign(to_be_signed, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    unprotected = {
        33: [c.public_bytes(serialization.Encoding.DER) for c in chain],
        "io.cncf.notary.signingAgent": "test",
    }
    return cbor2.dumps(cbor2.CBORTag(tag, [protected_bytes, unprotected, body, signature]))


def check_cose(envelope: bytes, trust: Sequence[x509.Certificate], **options: Any) -> SignatureOutcome:
    attached = signature_of(envelope, media_type="application/cose")
    level = options.get("level", NotationLevel.STRICT)
    return only(verify_notation_attached(attached, TARGET.digest, authority(trust, level=level), now=NOW))


def test_cose_envelopes_verify() -> None:
    pki = make_pki()
    outcome = check_cose(cose_envelope(pki.leaf, pki.chain), [pki.root.cert])
    assert outcome.reason is Reason.VALID, outcome.detail
    rsa_leaf = issue("signer", pki.intermediate, key=rsa.generate_private_key(65537, 3072))
    header = {
        1: -38,
        2: ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"],
        3: "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(SIGNED_AT.timestamp())),
        "io.cncf.notary.expiry": cbor2.CBORTag(1, int((NOW - timedelta(hours=1)).timestamp())),
    }
    envelope = cose_envelope(
        rsa_leaf, [rsa_leaf.cert, pki.intermediate.cert, pki.root.cert], protected=header
    )
    assert check_cose(envelope, [pki.root.cert]).reason is Reason.EXPIRED
    assert check_cose(envelope, [pki.root.cert], level=NotationLevel.PERMISSIVE).reason is Reason.VALID
    assert (
        check_cose(cose_envelope(pki.leaf, pki.chain), [make_pki().root.cert]).reason
        is Reason.UNTRUSTED_CERTIFICATE
    )


def test_cose_envelope_rules() -> None:
    pki = make_pki()
    good = cose_envelope(pki.leaf, pki.chain)
    base = {
        1: -7,
        2: ["io.cncf.notary.signingScheme"],
        3: "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(SIGNED_AT.timestamp())),
    }
    cases: list[tuple[bytes, str]] = [
        (good + b"\x00", "trailing bytes"),
        (cose_envelope(pki.leaf, pki.chain, tag=98), "tag 18"),
        (cose_envelope(pki.leaf, pki.chain, protected={**base, 1: -8}), "alg -8"),
        (cose_envelope(pki.leaf, pki.chain, protected={**base, 1: -35}), "requires ES256"),
        (
            cose_envelope(
                pki.leaf, pki.chain, protected={**base, 2: ["io.cncf.notary.signingScheme", "x"], "x": 1}
            ),
            "unknown critical",
        ),
        (
            cose_envelope(pki.leaf, pki.chain, protected={**base, 2: ["io.cncf.notary.signingScheme", 3]}),
            "common header label 3",
        ),
        (cose_envelope(pki.leaf, pki.chain, protected={**base, 3: "text/plain"}), "content type"),
        (
            cose_envelope(
                pki.leaf, pki.chain, protected={**base, "io.cncf.notary.signingTime": "2025-01-01T00:00:00Z"}
            ),
            "tag 1",
        ),
        (
            cose_envelope(
                pki.leaf,
                pki.chain,
                protected={**base, "io.cncf.notary.signingScheme": "notary.x509.signingAuthority"},
            ),
            "not supported",
        ),
    ]
    for envelope, message in cases:
        outcome = check_cose(envelope, [pki.root.cert])
        assert outcome.reason is Reason.MALFORMED and message in outcome.detail, (message, outcome.detail)
    # duplicate keys in the protected header (written by hand: encoders refuse to)
    message = cbor2.loads(good)
    protected = message.value[0]
    duplicated = bytes([protected[0] + 1]) + protected[1:] + cbor2.dumps(1) + cbor2.dumps(-7)
    forged = cbor2.dumps(cbor2.CBORTag(18, [duplicated, *message.value[1:]]))
    assert "Duplicate" in check_cose(forged, [pki.root.cert]).detail
    tampered = cose_envelope(pki.leaf, pki.chain)
    parts = list(cbor2.loads(tampered).value)
    parts[2] = parts[2].replace(b"1234", b"1235")
    outcome = check_cose(cbor2.dumps(cbor2.CBORTag(18, parts)), [pki.root.cert])
    assert outcome.reason is Reason.BAD_SIGNATURE


# --- levels ------------------------------------------------------------------------------------


def test_certificate_expired_now_fails_strict_and_is_logged_when_permissive() -> None:
    pki = make_pki(not_after=NOW - timedelta(hours=1))
    envelope = envelope_by(pki)
    strict = check(envelope, [pki.root.cert])
    assert strict.reason is Reason.EXPIRED and "not valid now" in strict.detail
    logged = check(envelope, [pki.root.cert], level=NotationLevel.PERMISSIVE)
    assert logged.reason is Reason.VALID and "timestamp:" in logged.detail


def test_signature_expiry_per_level() -> None:
    pki = make_pki()
    expired = envelope_by(pki, expiry=NOW - timedelta(minutes=1))
    assert check(expired, [pki.root.cert]).reason is Reason.EXPIRED
    assert check(expired, [pki.root.cert], level=NotationLevel.PERMISSIVE).reason is Reason.VALID
    fresh = envelope_by(pki, expiry=NOW + timedelta(days=1))
    assert check(fresh, [pki.root.cert]).reason is Reason.VALID


def test_revocation_status_unknown_per_level(tmp_path: Path) -> None:
    """Offline with an empty cache, a chain naming a CRL has an unknown status (no network used;
    tests/test_revocation.py checks against a real CA, CRL server and OCSP responder)."""
    from trust.notation import revocation

    pki = make_pki(crl=True)
    revocation.configure(cache_dir=tmp_path, offline=True)
    try:
        strict = check(envelope_by(pki), [pki.root.cert])
        logged = check(envelope_by(pki), [pki.root.cert], level=NotationLevel.PERMISSIVE)
    finally:
        revocation.configure(cache_dir=None)
    assert strict.reason is Reason.REVOCATION_UNKNOWN and "could not check revocation" in strict.detail
    assert logged.reason is Reason.VALID and "revocation:" in logged.detail


def test_permissive_still_enforces_authenticity_and_audit_still_integrity() -> None:
    pki, stranger = make_pki(), make_pki()
    permissive = check(envelope_by(pki), [stranger.root.cert], level=NotationLevel.PERMISSIVE)
    assert permissive.reason is Reason.UNTRUSTED_CERTIFICATE
    good = json.loads(envelope_by(pki))
    bad = json.dumps(dict(good, signature=b64url(b"\x01" * 64))).encode()
    assert check(bad, [pki.root.cert], level=NotationLevel.AUDIT).reason is Reason.BAD_SIGNATURE


# --- trusted identities ------------------------------------------------------------------------


def test_identity_parsing_and_matching() -> None:
    assert parse_identity(r"x509.subject: C=US, ST=WA, O=acme\, inc., OU=a\\b") == {
        "C": "US",
        "ST": "WA",
        "O": "acme, inc.",
        "OU": "a\\b",
    }
    for bad in (
        "x509.subject: C=US, O=acme",
        "x509.subject: C=US, ST=WA, O=a+CN=b",
        "x509.subject: C=US, C=CA, ST=WA, O=x",
        "C=US, ST=WA, O=x",
    ):
        with pytest.raises(ValueError):
            parse_identity(bad)
    assert overlapping(
        parse_identity("x509.subject: C=US, ST=WA, O=acme"),
        parse_identity("x509.subject: C=US, ST=WA, O=acme, OU=x"),
    )
    assert not overlapping(
        parse_identity("x509.subject: C=US, ST=WA, O=acme, OU=y"),
        parse_identity("x509.subject: C=US, ST=WA, O=acme, OU=x"),
    )

    pki = make_pki()
    matching = "x509.subject: C=US, ST=WA, O=acme, L=Seattle"
    assert check(envelope_by(pki), [pki.root.cert], identities=[matching]).reason is Reason.VALID
    other = ["x509.subject: C=US, ST=WA, O=acme, CN=someone"]
    assert check(envelope_by(pki), [pki.root.cert], identities=other).reason is Reason.WRONG_IDENTITY


def test_policy_loader_applies_the_identity_rules(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "ca.crt").write_bytes((VECTORS / "localkeys" / "e2e.crt").read_bytes())

    def policy(identities: str) -> str:
        return (
            "version: 1\nauthorities:\n  corp:\n    notation:\n      trust-store: store\n"
            f"      trusted-identities: {identities}\ndefault:\n  signed-by: [corp]\n"
        )

    loaded = load_policy_text(policy('["x509.subject: C=US, ST=WA, O=Notary"]'), tmp_path)
    assert loaded.authorities["corp"].kind == "notation"
    with pytest.raises(PolicyError, match="overlap"):
        load_policy_text(
            policy('["x509.subject: C=US, ST=WA, O=a", "x509.subject: C=US, ST=WA, O=a, OU=b"]'), tmp_path
        )
    with pytest.raises(PolicyError, match="C, ST and O are required"):
        load_policy_text(policy('["x509.subject: C=US, O=a"]'), tmp_path)


# --- sign → verify through a real registry -----------------------------------------------------


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("notation-pki")
    now = datetime.now(UTC)
    root = issue(
        "root", None, ca=True, not_before=now - timedelta(days=1), not_after=now + timedelta(days=30)
    )
    leaf = issue(
        "release",
        root,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=30),
        key=rsa.generate_private_key(65537, 2048),
    )
    stranger = issue(
        "root", None, ca=True, not_before=now - timedelta(days=1), not_after=now + timedelta(days=30)
    )
    pem = serialization.Encoding.PEM
    (folder / "leaf.key").write_bytes(
        leaf.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "chain.pem").write_bytes(leaf.cert.public_bytes(pem) + root.cert.public_bytes(pem))
    for store, cert in (("ca", root.cert), ("stranger", stranger.cert)):
        (folder / store).mkdir()
        (folder / store / "root.crt").write_bytes(cert.public_bytes(pem))
    return {
        "key": folder / "leaf.key",
        "chain": folder / "chain.pem",
        "ca": folder / "ca",
        "stranger": folder / "stranger",
    }


def notation_policy(
    folder: Path, trust_store: Path, identity: str = "x509.subject: C=US, ST=WA, O=acme"
) -> Path:
    path = folder / "policy.yaml"
    path.write_text(
        "version: 1\nauthorities:\n  release:\n    notation:\n"
        f'      trust-store: {trust_store}\n      trusted-identities: ["{identity}"]\n'
        "default:\n  signed-by: [release]\n"
    )
    return path


def test_sign_and_verify_notation_in_a_layout(
    tmp_path: Path, pki_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`trust sign --format notation` on `oci:DIR:tag`: the referrer lands in the layout, the policy
    admits it, and the printed signature names the layout (not `oci:/DIR/@…`)."""
    layout = write_oci_layout(tmp_path / "layout", simple_image(b"notation in a layout\n"), tag="v1")
    ref = f"oci:{layout}:v1"
    args = ["sign", "--format", "notation", "--key", str(pki_files["key"]), "--cert", str(pki_files["chain"])]
    assert main([*args, "--output", "json", ref]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["signature"].startswith(f"oci:{layout}@sha256:")
    policy = notation_policy(tmp_path, pki_files["ca"])
    pinned = f"oci:{layout}@{record['digest']}"
    assert main(["verify", "--policy", str(policy), "--store", str(tmp_path / "store"), pinned]) == 0
    stranger = notation_policy(tmp_path, pki_files["stranger"])
    assert main(["verify", "--policy", str(stranger), "--store", str(tmp_path / "store"), pinned]) == 3


def test_sign_then_verify_with_a_notation_policy(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    pki_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"notation\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    assert (
        main(
            [
                "sign",
                "--format",
                "notation",
                "--key",
                str(pki_files["key"]),
                "--cert",
                str(pki_files["chain"]),
                ref,
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"{registry.host}/{repo_name}@{pushed.digest}"

    # The Debian registry has no referrers API: the fallback index names our signature manifest.
    fallback = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{pushed.digest.replace(':', '-')}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    ).json()
    [entry] = fallback["manifests"]
    assert entry["artifactType"] == NOTATION_SIGNATURE
    assert "io.cncf.notary.x509chain.thumbprint#S256" in entry["annotations"]
    manifest = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{entry['digest']}", headers={"Accept": OCI_MANIFEST}
    ).json()
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/jose+json"]
    assert manifest["subject"]["digest"] == pushed.digest

    store = str(tmp_path / "store")
    by_digest = f"{registry.host}/{repo_name}@{pushed.digest}"
    good = notation_policy(tmp_path, pki_files["ca"])
    assert main(["verify", "--policy", str(good), "--store", store, by_digest]) == 0
    assert (
        main(
            [
                "verify",
                "--policy",
                str(notation_policy(tmp_path, pki_files["stranger"])),
                "--store",
                store,
                by_digest,
            ]
        )
        == 3
    )
    wrong_identity = notation_policy(tmp_path, pki_files["ca"], "x509.subject: C=US, ST=WA, O=other")
    assert main(["verify", "--policy", str(wrong_identity), "--store", store, by_digest]) == 3
    assert "wrong-identity" in capsys.readouterr().err


def test_tampered_envelope_in_the_registry_is_denied(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    pki_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"tampered\n"))
    ref = Reference.parse(f"{registry.host}/{repo_name}@{pushed.digest}")
    from trust.keys.keyfiles import load_private_key_file
    from trust.notation.artifact import build_signature_manifest
    from trust.notation.signatures import load_certificate_chain

    key = load_private_key_file(pki_files["key"])
    chain = load_certificate_chain("chain", pki_files["chain"].read_bytes())
    subject = Descriptor(OCI_MANIFEST, Digest.parse(pushed.digest), len(pushed.manifest_bytes))
    envelope = json.loads(build_envelope(subject, key, chain, signing_time=datetime.now(UTC)))  # type: ignore[arg-type]
    other = {"targetArtifact": {"mediaType": OCI_MANIFEST, "digest": pushed.digest, "size": subject.size + 1}}
    envelope["payload"] = b64url(json.dumps(other).encode())
    tampered = json.dumps(envelope).encode()
    artifact = build_signature_manifest(subject, tampered, chain)
    push_blob(registry, repo_name, artifact.config)
    push_blob(registry, repo_name, tampered)
    with RegistryClients() as clients:
        push_referrer(clients(registry.host), repo_name, artifact.manifest, artifact.media_type, subject)
        attached = discover(
            clients(registry.host),
            repo_name,
            subject.digest,
            SignatureLocation.for_image(ref, subject.digest),
        )
    assert len(attached.notation) == 1 and attached.notation[0].target == subject
    store = str(tmp_path / "store")
    policy = notation_policy(tmp_path, pki_files["ca"])
    assert main(["verify", "--policy", str(policy), "--store", store, str(ref)]) == 3
    assert "bad-signature" in capsys.readouterr().err


def test_vector_layout_copied_into_a_registry_verifies_the_same(
    registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    """The legacy form (config media type, no artifactType) found through discover()."""
    for name, expected in (("e2e-valid-signature", Reason.VALID), ("e2e-expired-signature", Reason.EXPIRED)):
        layout = VECTORS / "oci_layout" / name
        repository = f"{repo_name}-{name}"
        for blob in sorted((layout / "blobs" / "sha256").iterdir()):
            push_blob(registry, repository, blob.read_bytes())
        image = layout_blob(layout, E2E_SUBJECT)
        push_manifest(registry, repository, str(E2E_SUBJECT), image, OCI_MANIFEST)
        subject = Descriptor(OCI_MANIFEST, E2E_SUBJECT, len(image))
        layout_index = json.loads((layout / "index.json").read_text())
        [signature_entry] = [
            m for m in layout_index["manifests"] if m["size"] in (700, 728) and "annotations" not in m
        ]
        raw = layout_blob(layout, Digest.parse(signature_entry["digest"]))
        with RegistryClients() as clients:
            push_referrer(clients(registry.host), repository, raw, OCI_MANIFEST, subject)
            ref = Reference.parse(f"{registry.host}/{repository}@{E2E_SUBJECT}")
            attached = discover(
                clients(registry.host), repository, E2E_SUBJECT, SignatureLocation.for_image(ref, E2E_SUBJECT)
            )
        outcome = only(verify_notation_attached(attached, E2E_SUBJECT, authority([e2e_ca()], [E2E_IDENTITY])))
        assert outcome.reason is expected, outcome.detail


def test_sign_usage_errors(tmp_path: Path, pki_files: dict[str, Path]) -> None:
    ref = "127.0.0.1:1/x/y@sha256:" + "1" * 64
    assert main(["sign", "--format", "notation", "--key", str(pki_files["key"]), ref]) == 2  # no --cert
    assert main(["sign", "--key", str(pki_files["key"]), "--cert", str(pki_files["chain"]), ref]) == 2
    other_key = tmp_path / "other.key"
    other_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    args = ["sign", "--format", "notation", "--key", str(other_key), "--cert", str(pki_files["chain"]), ref]
    assert main(args) == 2  # the key is not the chain's leaf: refused before any network call
    good = ["sign", "--format", "notation", "--key", str(pki_files["key"]), "--cert", str(pki_files["chain"])]
    for bad in ("0h", "24", "1w", "-5m"):
        assert main([*good, "--expiry", bad, ref]) == 2
    assert main(["sign", "--key", str(pki_files["key"]), "--expiry", "24h", ref]) == 2  # cosign has none


def test_an_expiry_is_signed_and_enforced(
    tmp_path: Path, pki_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    layout = write_oci_layout(tmp_path / "layout", simple_image(b"expiring\n"), tag="v1")
    args = ["sign", "--format", "notation", "--key", str(pki_files["key"]), "--cert", str(pki_files["chain"])]
    assert main([*args, "--expiry", "30d", "--output", "json", f"oci:{layout}:v1"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    pinned = f"oci:{layout}@{record['digest']}"
    policy = notation_policy(tmp_path, pki_files["ca"])
    assert main(["verify", "--policy", str(policy), "--store", str(tmp_path / "store"), pinned]) == 0
    digest = Digest.parse(record["digest"])
    with LayoutClient(layout) as client:
        location = SignatureLocation.for_image(Reference.parse(pinned), digest)
        [signature] = discover(client, "", digest, location).notation
    assert signature.envelope and b"io.cncf.notary.expiry" in base64.urlsafe_b64decode(
        json.loads(signature.envelope)["protected"] + "=="
    )


def test_sign_refuses_a_chain_that_breaks_the_rules() -> None:
    pki = make_pki(eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(Exception, match="serverAuth"), RegistryClients() as clients:
        sign_notation(clients, Reference.parse("127.0.0.1:1/x/y:v1"), pki.leaf.key, pki.chain, now=NOW)


def test_one_signer_never_counts_for_two_notation_authorities(tmp_path: Path) -> None:
    """Two authorities trusting the same CA, with identities one certificate matches both of: one
    signature must not meet `threshold: 2` (the loader's rule for shared cosign keys, for X.509)."""
    from policy.evaluate import evaluate_signatures

    pki = make_pki()
    second = issue("second", pki.intermediate)  # another signer under the same CA
    store = tmp_path / "ca"
    store.mkdir()
    (store / "root.crt").write_bytes(pki.root.cert.public_bytes(serialization.Encoding.PEM))
    policy = load_policy_text(
        "version: 1\nauthorities:\n"
        f'  anyone:\n    notation:\n      trust-store: {store}\n      trusted-identities: ["*"]\n'
        f"  signer:\n    notation:\n      trust-store: {store}\n"
        '      trusted-identities: ["x509.subject: C=US, ST=WA, O=acme, CN=signer"]\n'
        "default:\n  signed-by: [anyone, signer]\n  threshold: 2\n",
        tmp_path,
    )
    reference = Reference.parse(f"example.com/app@{TARGET.digest}")

    def evaluate(*signers: Issued) -> Any:
        found = [
            NotationSignature(
                Digest.of_bytes(envelope),
                "application/jose+json",
                Digest.of_bytes(envelope),
                envelope,
                TARGET,
            )
            for envelope in (
                build_envelope(
                    TARGET,
                    leaf.key,
                    [leaf.cert, pki.intermediate.cert, pki.root.cert],
                    signing_time=SIGNED_AT,
                )
                for leaf in signers
            )
        ]
        attached = AttachedSignatures((), lambda layer: b"", (), found)
        return evaluate_signatures(
            str(reference),
            policy.rule_for(reference),
            "example.com/app",
            TARGET.digest,
            TARGET.digest,
            None,
            lambda digest: attached,
        )

    alone = evaluate(pki.leaf)
    assert [authority.satisfied for authority in alone.authorities] == [True, True]
    assert not alone.passed and "1 distinct signer" in alone.reasons[0]
    twice = evaluate(pki.leaf, pki.leaf)  # signing again changes nothing: still one signer
    assert not twice.passed
    both = evaluate(pki.leaf, second)
    assert both.passed, both.reasons


def test_outcomes_are_numbered_after_other_signatures() -> None:
    pki = make_pki()
    base = signature_of(envelope_by(pki))
    attached = replace(base, bundles=[(Digest.of_bytes(b"b"), b"{}")])
    [outcome] = verify_notation_attached(attached, TARGET.digest, authority([pki.root.cert]), now=NOW)
    assert outcome.index == 1 and outcome.reason is Reason.VALID
    assert not attached.empty and AttachedSignatures((), lambda layer: b"").empty


def test_referrers_api_registry_round_trip_and_listing_failure(
    tmp_path: Path, pki_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """With the referrers API no fallback tag is written; a failing listing is "could not check"."""
    import re

    from hostile import HostileRegistry, Reply

    with HostileRegistry() as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        ref = f"{hostile.host}/team/app@{image.digest}"
        args = [
            "sign",
            "--format",
            "notation",
            "--key",
            str(pki_files["key"]),
            "--cert",
            str(pki_files["chain"]),
        ]
        assert main([*args, ref]) == 0
        assert hostile.tags("team/app") == ["v1"]  # no sha256-<hex> fallback tag on an API registry
        policy = notation_policy(tmp_path, pki_files["ca"])
        store = str(tmp_path / "store")
        assert main(["verify", "--policy", str(policy), "--store", store, ref]) == 0
        hostile.add_route("GET", re.compile(r"/v2/team/app/referrers/.*"), lambda request: Reply(500))
        capsys.readouterr()
        assert main(["verify", "--policy", str(policy), "--store", store, ref]) == 5
        assert "referrers" in capsys.readouterr().err


def test_vector_layouts_through_discover_with_the_layout_client() -> None:
    """The production discovery path (`trust.attached.discover`) reading the layouts as a registry."""
    from pull.layout import LayoutClient

    expected = {
        "e2e-valid-signature": Reason.VALID,
        "e2e-invalid-signature": Reason.MALFORMED,
        "e2e-expired-signature": Reason.EXPIRED,
    }
    for name, reason in expected.items():
        with LayoutClient(VECTORS / "oci_layout" / name) as layout:
            ref = Reference.parse(f"example.com/e2e@{E2E_SUBJECT}")
            attached = discover(layout, "e2e", E2E_SUBJECT, SignatureLocation.for_image(ref, E2E_SUBJECT))
        assert not attached.layers and not attached.bundles
        outcome = only(verify_notation_attached(attached, E2E_SUBJECT, authority([e2e_ca()], [E2E_IDENTITY])))
        assert outcome.reason is reason, (name, outcome.detail)
        assert attached.notation[0].target == Descriptor(OCI_MANIFEST, E2E_SUBJECT, 517)


# -- the vectors through the CLI: in their layouts, and copied into a real registry --------------


@pytest.mark.parametrize(
    ("layout", "code", "reason"),
    [
        ("e2e-valid-signature", 0, None),
        ("e2e-invalid-signature", 3, "malformed"),
        ("e2e-expired-signature", 3, "expired"),
    ],
)
def test_vector_layouts_verify_the_same_in_the_layout_and_in_a_registry(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    layout: str,
    code: int,
    reason: str | None,
) -> None:
    store = tmp_path / "ca"
    store.mkdir()
    (store / "e2e.crt").write_bytes((VECTORS / "localkeys" / "e2e.crt").read_bytes())
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "authorities:\n  e2e:\n    notation:\n      trust-store: ca\n"
        '      trusted-identities: ["*"]\n'
        f"rules:\n  - scope: oci:/\n    signed-by: [e2e]\n  - scope: {registry.host}/{repo_name}\n"
        "    signed-by: [e2e]\n"
        "default:\n  reject: true\n"
    )
    source = f"oci:{VECTORS / 'oci_layout' / layout}"
    copied = f"{registry.host}/{repo_name}:v1"
    assert main(["copy", f"{source}:v1", copied]) == 0
    for reference in (f"{source}@{E2E_SUBJECT}", f"{registry.host}/{repo_name}@{E2E_SUBJECT}"):
        capsys.readouterr()
        verify = [
            "verify",
            "--store",
            str(tmp_path / "store"),
            "--policy",
            str(policy),
            "-o",
            "json",
            reference,
        ]
        assert main(verify) == code, reference
        (result,) = json.loads(capsys.readouterr().out)
        outcomes = result["evaluation"]["authorities"][0]["targets"][0]["signatures"]
        assert [o["outcome"] for o in outcomes] == ["valid" if reason is None else reason]
    # An artifact that is not a container image is verified, but never admitted to run (exit 2).
    assert (
        main(["run", "--store", str(tmp_path / "store"), "--policy", str(policy), f"{source}@{E2E_SUBJECT}"])
        == 2
    )
