"""RFC 3161 timestamps on Notary Project signatures, with a real TSA: `openssl ts -reply` behind an
HTTP handler on 127.0.0.1 (tests/support/openssl_pki.py), and a signing certificate from `openssl ca`
valid for two hours, verified with a clock moved past its expiry.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.images import simple_image, write_oci_layout
from support.openssl_pki import ContentServer, IssuedCertificate, OpenSSLCA, OpenSSLTimestampAuthority

from pull.digest import Digest
from pull.manifest import Descriptor
from trust.attached import AttachedSignatures
from trust.cli.app import main
from trust.cosign.simple_signing import Reason, SignatureOutcome
from trust.notation import NotationAuthority, NotationLevel, Revocation, VerifyTimestamp, revocation
from trust.notation.artifact import NotationSignature
from trust.notation.jws import Timestamper, build_envelope, parse_envelope
from trust.notation.signatures import verify_notation_attached
from trust.notation.timestamp import TimestampProblem, request_token, verify_token

TARGET = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of_bytes(b"image"), 5)
LATER = datetime.now(UTC) + timedelta(days=3)
"""The verification clock: the signing certificate (valid two hours) has expired by then."""


@dataclass
class Setup:
    ca: OpenSSLCA
    leaf: IssuedCertificate
    tsa: OpenSSLTimestampAuthority
    rogue: OpenSSLTimestampAuthority
    server: ContentServer

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.leaf.certificate, self.ca.certificate]

    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.leaf.key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def stamper(self, path: str = "/tsa", root: x509.Certificate | None = None) -> Timestamper:
        def stamp(signature: bytes, hash_name: str) -> bytes:
            return request_token(
                self.server.url(path), signature, root or self.tsa.ca.certificate, hash_name=hash_name
            )

        return stamp


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("timestamp")
    ca = OpenSSLCA(directory / "ca", "Signing Root")
    now = datetime.now(UTC)
    leaf = ca.issue("short-lived", not_before=now - timedelta(minutes=5), not_after=now + timedelta(hours=2))
    tsa = OpenSSLTimestampAuthority(directory / "tsa")
    rogue = OpenSSLTimestampAuthority(directory / "rogue")
    server = ContentServer.start()
    server.posts["/tsa"] = tsa.reply
    server.posts["/rogue"] = rogue.reply
    yield Setup(ca, leaf, tsa, rogue, server)
    server.stop()


def verify(
    setup: Setup,
    envelope: bytes,
    *,
    now: datetime = LATER,
    level: NotationLevel = NotationLevel.STRICT,
    when: VerifyTimestamp = VerifyTimestamp.ALWAYS,
    tsa_roots: tuple[x509.Certificate, ...] | None = None,
) -> SignatureOutcome:
    signature = NotationSignature(
        Digest.of_bytes(b"sig"), "application/jose+json", Digest.of_bytes(envelope), envelope, TARGET
    )
    authority = NotationAuthority(
        "corp",
        Path("/store"),
        (setup.ca.certificate,),
        ("*",),
        level,
        tsa_certificates=(setup.tsa.ca.certificate,) if tsa_roots is None else tsa_roots,
        verify_timestamp=when,
        revocation=Revocation.SKIP,
    )
    attached = AttachedSignatures((), lambda layer: b"", (), [signature])
    [outcome] = verify_notation_attached(attached, TARGET.digest, authority, now=now)
    return outcome


def signed(setup: Setup, stamper: Timestamper | None) -> bytes:
    return build_envelope(
        TARGET, setup.key(), setup.chain, signing_time=datetime.now(UTC), timestamper=stamper
    )


def test_a_timestamped_signature_verifies_after_the_certificate_expires(setup: Setup) -> None:
    envelope = signed(setup, setup.stamper())
    header = json.loads(envelope)["header"]
    token = base64.b64decode(header["io.cncf.notary.timestampSignature"])
    assert parse_envelope(envelope).timestamp_token == token
    outcome = verify(setup, envelope)
    assert outcome.reason is Reason.VALID, outcome.detail
    assert "timestamped" in outcome.detail and "CN=tsa" in outcome.detail
    assert verify(setup, envelope, now=datetime.now(UTC)).reason is Reason.VALID


def test_without_a_timestamp_the_expired_certificate_fails(setup: Setup) -> None:
    envelope = signed(setup, None)
    assert verify(setup, envelope, now=datetime.now(UTC)).reason is Reason.VALID
    expired = verify(setup, envelope)
    assert expired.reason is Reason.EXPIRED and "has no timestamp" in expired.detail
    logged = verify(setup, envelope, level=NotationLevel.PERMISSIVE)
    assert logged.reason is Reason.VALID and "timestamp:" in logged.detail


def test_a_timestamp_by_an_untrusted_authority_fails(setup: Setup) -> None:
    envelope = signed(setup, setup.stamper("/rogue", setup.rogue.ca.certificate))
    outcome = verify(setup, envelope)
    assert outcome.reason is Reason.BAD_TIMESTAMP and "tsa trust store" in outcome.detail
    no_store = verify(setup, envelope, tsa_roots=())
    assert no_store.reason is Reason.BAD_TIMESTAMP and "names no tsa trust store" in no_store.detail


def test_a_timestamp_over_another_signature_fails(setup: Setup) -> None:
    """A genuine token from the trusted TSA, moved onto another signature (a forged countersignature)."""
    donor = json.loads(signed(setup, setup.stamper()))
    envelope = json.loads(signed(setup, None))
    envelope["header"]["io.cncf.notary.timestampSignature"] = donor["header"][
        "io.cncf.notary.timestampSignature"
    ]
    outcome = verify(setup, json.dumps(envelope).encode())
    assert outcome.reason is Reason.BAD_TIMESTAMP and "over other bytes" in outcome.detail


def test_garbage_in_the_timestamp_header_fails(setup: Setup) -> None:
    envelope = json.loads(signed(setup, None))
    envelope["header"]["io.cncf.notary.timestampSignature"] = base64.b64encode(
        b"\x30\x03\x02\x01\x00"
    ).decode()
    outcome = verify(setup, json.dumps(envelope).encode())
    assert outcome.reason is Reason.BAD_TIMESTAMP and "not a readable RFC 3161 token" in outcome.detail
    envelope["header"]["io.cncf.notary.timestampSignature"] = 42
    assert verify(setup, json.dumps(envelope).encode()).reason is Reason.MALFORMED


def test_after_cert_expiry_checks_the_timestamp_only_once_a_certificate_expired(setup: Setup) -> None:
    rogue = signed(setup, setup.stamper("/rogue", setup.rogue.ca.certificate))
    now = datetime.now(UTC)
    assert verify(setup, rogue, now=now).reason is Reason.BAD_TIMESTAMP  # always: checked now too
    relaxed = verify(setup, rogue, now=now, when=VerifyTimestamp.AFTER_CERT_EXPIRY)
    assert relaxed.reason is Reason.VALID and "timestamped" not in relaxed.detail
    assert verify(setup, rogue, when=VerifyTimestamp.AFTER_CERT_EXPIRY).reason is Reason.BAD_TIMESTAMP


def test_a_timestamp_outside_the_certificate_validity_fails(setup: Setup, tmp_path: Path) -> None:
    """Signed with a certificate that had already expired when the TSA stamped the signature."""
    now = datetime.now(UTC)
    old = setup.ca.issue(
        "expired-at-signing", not_before=now - timedelta(days=3), not_after=now - timedelta(days=1)
    )
    key = serialization.load_pem_private_key(old.key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    envelope = build_envelope(
        TARGET,
        key,
        [old.certificate, setup.ca.certificate],
        signing_time=now - timedelta(days=2),  # a claimed signing time inside the validity
        timestamper=setup.stamper(),
    )
    outcome = verify(setup, envelope)
    assert outcome.reason is Reason.BAD_TIMESTAMP and "outside the validity" in outcome.detail


def test_the_signer_checks_the_answer_against_the_root_it_was_given(setup: Setup) -> None:
    with pytest.raises(TimestampProblem, match="tsa trust store"):
        request_token(setup.server.url("/rogue"), b"signature", setup.tsa.ca.certificate)
    token = request_token(
        setup.server.url("/tsa"), b"signature", setup.tsa.ca.certificate, hash_name="sha512"
    )
    assert verify_token(token, b"signature", [setup.tsa.ca.certificate]).authority.endswith("CN=tsa")


def test_a_revoked_timestamp_authority_fails_at_strict(setup: Setup, tmp_path: Path) -> None:
    """The TSA's own certificate names a CRL; once the TSA CA revokes it, a signature that relies
    on its timestamp (the signing certificate has expired) fails revocation at strict."""
    revocation.configure(cache_dir=None)  # no cache: the second check must fetch the new CRL
    tsa = OpenSSLTimestampAuthority(tmp_path / "tsa", crl_url=setup.server.url("/tsa.crl"))
    setup.server.posts["/revocable"] = tsa.reply
    setup.server.files["/tsa.crl"] = tsa.ca.crl()
    envelope = signed(setup, setup.stamper("/revocable", tsa.ca.certificate))
    now = datetime.now(UTC) + timedelta(hours=3)  # the signing certificate has expired, the CRL is fresh

    def check(level: NotationLevel) -> SignatureOutcome:
        signature = NotationSignature(
            Digest.of_bytes(b"sig"), "application/jose+json", Digest.of_bytes(envelope), envelope, TARGET
        )
        authority = NotationAuthority(
            "corp",
            Path("/store"),
            (setup.ca.certificate,),
            ("*",),
            level,
            tsa_certificates=(tsa.ca.certificate,),
        )
        attached = AttachedSignatures((), lambda layer: b"", (), [signature])
        [outcome] = verify_notation_attached(attached, TARGET.digest, authority, now=now)
        return outcome

    assert check(NotationLevel.STRICT).reason is Reason.VALID
    tsa.ca.revoke(tsa.leaf)
    setup.server.files["/tsa.crl"] = tsa.ca.crl()
    revoked = check(NotationLevel.STRICT)
    assert revoked.reason is Reason.REVOKED and "CN=tsa" in revoked.detail
    assert check(NotationLevel.PERMISSIVE).reason is Reason.VALID


def test_cli_sign_with_a_timestamp_and_verify_with_a_tsa_store(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(setup.leaf.chain_pem())
    tsa_root = tmp_path / "tsa-root.pem"
    tsa_root.write_bytes(setup.tsa.root_pem)
    layout = write_oci_layout(tmp_path / "layout", simple_image(b"timestamped\n"), tag="v1")
    base = ["sign", "--format", "notation", "--key", str(setup.leaf.key_path), "--cert", str(chain)]
    assert main([*base, "--timestamp-url", setup.server.url("/tsa"), f"oci:{layout}:v1"]) == 2
    assert "go together" in capsys.readouterr().err
    stamped = [*base, "--timestamp-url", setup.server.url("/tsa"), "--timestamp-root-cert", str(tsa_root)]
    assert main([*stamped, "-o", "json", f"oci:{layout}:v1"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    envelopes = [
        path.read_bytes()
        for path in (layout / "blobs" / "sha256").iterdir()
        if path.read_bytes().startswith(b'{"payload"')
    ]
    assert len(envelopes) == 1 and parse_envelope(envelopes[0]).timestamp_token is not None
    rogue = [*base, "--timestamp-url", setup.server.url("/rogue"), "--timestamp-root-cert", str(tsa_root)]
    assert main([*rogue, f"oci:{layout}:v1"]) == 2
    assert "does not verify" in capsys.readouterr().err

    stores = {}
    for name, pem in (("ca", setup.ca.certificate_path.read_bytes()), ("tsa", setup.tsa.root_pem)):
        stores[name] = tmp_path / "truststore" / name
        stores[name].mkdir(parents=True)
        (stores[name] / "root.crt").write_bytes(pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nauthorities:\n  corp:\n    notation:\n"
        f"      trust-store: {stores['ca']}\n      tsa-store: {stores['tsa']}\n"
        '      trusted-identities: ["*"]\n      verify-timestamp: always\n      revocation: skip\n'
        "default:\n  signed-by: [corp]\n"
    )
    pinned = f"oci:{layout}@{record['digest']}"
    verify = ["verify", "--policy", str(policy), "--store", str(tmp_path / "store"), "-o", "json", pinned]
    assert main(verify) == 0
    assert "timestamped" in capsys.readouterr().out


def test_a_tsa_behind_an_intermediate_ca_verifies_with_only_the_root_trusted(tmp_path: Path) -> None:
    """Real TSAs sign with a certificate from an intermediate CA and embed the chain in the token
    (here `openssl ts` embeds intermediate and root, unsorted): only the root is in the store."""

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "ext.cnf").write_text(
        "[ca]\nbasicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "[tsa]\nbasicConstraints=CA:false\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=critical,timeStamping\n"
    )
    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec_key, "-keyout", "root.key", "-subj", "/CN=TSA Root", "-days", "10",
            "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign",
            "-out", "root.pem")  # fmt: skip
    for name, issuer, section in (("int", "root", "ca"), ("tsa", "int", "tsa")):
        openssl(
            "req", "-new", *ec_key, "-keyout", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr"
        )
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
                "-CAcreateserial", "-days", "5", "-extfile", "ext.cnf", "-extensions", section,
                "-out", f"{name}.pem")  # fmt: skip
    (tmp_path / "chain.pem").write_bytes(
        (tmp_path / "int.pem").read_bytes() + (tmp_path / "root.pem").read_bytes()
    )
    (tmp_path / "serial").write_text("01\n")
    (tmp_path / "tsa.cnf").write_text(
        f"[tsa]\ndefault_tsa = l\n[l]\ndir = {tmp_path}\nserial = $dir/serial\nsigner_cert = $dir/tsa.pem\n"
        "certs = $dir/chain.pem\nsigner_key = $dir/tsa.key\nsigner_digest = sha256\n"
        "default_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\ness_cert_id_chain = no\n"
    )
    (tmp_path / "data").write_bytes(b"signature bytes")
    openssl("ts", "-query", "-data", "data", "-sha256", "-cert", "-out", "q.tsq")
    openssl("ts", "-reply", "-config", "tsa.cnf", "-queryfile", "q.tsq", "-token_out", "-out", "token.der")
    token = (tmp_path / "token.der").read_bytes()
    root = x509.load_pem_x509_certificate((tmp_path / "root.pem").read_bytes())
    assert verify_token(token, b"signature bytes", [root]).authority == "CN=tsa"
    intermediate = x509.load_pem_x509_certificate((tmp_path / "int.pem").read_bytes())
    with pytest.raises(TimestampProblem, match="tsa trust store"):
        verify_token(token, b"signature bytes", [intermediate])  # not a root: no partial chains
