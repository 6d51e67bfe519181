"""Revocation of Notary Project certificates against a real CA (`openssl ca`), a CRL served over
HTTP on 127.0.0.1 and `openssl ocsp` as the responder (tests/support/openssl_pki.py).

Covered: good / revoked / unknown (responder down, CRL missing) through OCSP and CRLs, the OCSP ->
CRL fallback, responses and CRLs not signed by the issuer, delta CRLs refused, the disk cache
(`nextUpdate`, offline, stale), revocation after an authentic signing time, the outcome at each
level, `revocation: skip`, and `trust verify --policy [--offline]` end to end (exit 0/3/5).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.images import simple_image, write_oci_layout
from support.openssl_pki import ContentServer, IssuedCertificate, OcspResponder, OpenSSLCA

from pull.digest import Digest
from pull.manifest import Descriptor
from trust.attached import AttachedSignatures
from trust.cli.app import main
from trust.cosign.simple_signing import Reason, SignatureOutcome
from trust.notation import NotationAuthority, NotationLevel, Revocation
from trust.notation import revocation as revocation_module
from trust.notation.artifact import NotationSignature
from trust.notation.jws import build_envelope
from trust.notation.revocation import RevocationChecker, Status
from trust.notation.signatures import verify_notation_attached

TARGET = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of_bytes(b"image"), 5)


@dataclass
class Pki:
    ca: OpenSSLCA
    server: ContentServer
    responder: OcspResponder
    directory: Path

    def leaf(self, name: str, *, ocsp: bool = True, crl: bool = True) -> IssuedCertificate:
        return self.ca.issue(
            name,
            crl_url=self.server.url("/ca.crl") if crl else None,
            ocsp_url=self.responder.url if ocsp else None,
        )

    def publish_crl(self, *, seconds: int | None = None) -> None:
        if seconds is None:
            self.server.files["/ca.crl"] = self.ca.crl()
        else:
            self.server.files["/ca.crl"] = self.ca.crl_seconds(seconds)

    def restart_responder(self) -> None:
        """`openssl ocsp` reads index.txt once: restart it after a revocation."""
        self.responder.stop()
        self.responder.start()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    directory = tmp_path_factory.mktemp("revocation")
    ca = OpenSSLCA(directory / "ca", "Revocation Test Root")
    server = ContentServer.start()
    responder = OcspResponder.reserve(ca).start()
    state = Pki(ca, server, responder, directory)
    state.publish_crl()
    yield state
    responder.stop()
    server.stop()


@pytest.fixture(autouse=True)
def no_configured_cache() -> Iterator[None]:
    revocation_module.configure(cache_dir=None)
    yield
    revocation_module.configure(cache_dir=None)


def chain_of(leaf: IssuedCertificate) -> list[x509.Certificate]:
    return [leaf.certificate, leaf.ca.certificate]


# --- the checker ---------------------------------------------------------------------------------


def test_ocsp_good_then_revoked(pki: Pki) -> None:
    leaf = pki.leaf("ocsp-good")
    pki.restart_responder()
    good = RevocationChecker().check(chain_of(leaf))
    assert good.status is Status.GOOD and "OCSP" in good.detail
    pki.ca.revoke(leaf)
    pki.restart_responder()
    revoked = RevocationChecker().check(chain_of(leaf))
    assert revoked.status is Status.REVOKED and "revoked at" in revoked.detail and "OCSP" in revoked.detail


def test_responder_down_falls_back_to_the_crl(pki: Pki) -> None:
    leaf = pki.leaf("fallback")
    pki.ca.revoke(leaf)
    pki.publish_crl()
    pki.responder.stop()
    try:
        status = RevocationChecker(fetcher=revocation_module.HttpFetcher(timeout=2)).check(chain_of(leaf))
    finally:
        pki.responder.start()
    assert status.status is Status.REVOKED and "CRL" in status.detail


def test_responder_down_and_no_crl_is_unknown(pki: Pki) -> None:
    leaf = pki.leaf("nothing-answers", crl=False)
    pki.responder.stop()
    try:
        status = RevocationChecker(fetcher=revocation_module.HttpFetcher(timeout=2)).check(chain_of(leaf))
    finally:
        pki.responder.start()
    assert status.status is Status.UNKNOWN
    assert status.detail.startswith("O=trust tests,CN=nothing-answers: could not check revocation")


def test_missing_crl_is_unknown(pki: Pki) -> None:
    leaf = pki.ca.issue("crl-404", crl_url=pki.server.url("/missing.crl"))
    status = RevocationChecker().check(chain_of(leaf))
    assert status.status is Status.UNKNOWN and "HTTP 404" in status.detail


def test_a_crl_from_another_ca_or_a_delta_crl_gives_no_answer(pki: Pki, tmp_path: Path) -> None:
    other = OpenSSLCA(tmp_path / "other", "Other Root")
    leaf = pki.ca.issue("foreign-crl", crl_url=pki.server.url("/foreign.crl"))
    pki.server.files["/foreign.crl"] = other.crl()
    foreign = RevocationChecker().check(chain_of(leaf))
    assert foreign.status is Status.UNKNOWN and "not by the certificate's issuer" in foreign.detail

    ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.now(UTC)
    delta = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ca.certificate.subject)
        .last_update(now - timedelta(minutes=1))
        .next_update(now + timedelta(hours=1))
        .add_extension(x509.CRLNumber(7), critical=False)
        .add_extension(x509.DeltaCRLIndicator(6), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = pki.ca.issue("delta-crl", crl_url=pki.server.url("/delta.crl"))
    pki.server.files["/delta.crl"] = delta.public_bytes(serialization.Encoding.DER)
    refused = RevocationChecker().check(chain_of(leaf))
    assert refused.status is Status.UNKNOWN and "delta CRL" in refused.detail


def test_the_cache_serves_until_next_update_and_offline_uses_only_it(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.leaf("cached", ocsp=False)
    pki.publish_crl()
    cache = tmp_path / "crl"
    assert RevocationChecker(cache_dir=cache).check(chain_of(leaf)).status is Status.GOOD
    fetched = pki.server.requests.count("GET /ca.crl")
    assert len(list(cache.iterdir())) == 1

    again = RevocationChecker(cache_dir=cache).check(chain_of(leaf))
    assert again.status is Status.GOOD and pki.server.requests.count("GET /ca.crl") == fetched
    offline = RevocationChecker(cache_dir=cache, offline=True).check(chain_of(leaf))
    assert offline.status is Status.GOOD

    later = datetime.now(UTC) + timedelta(days=2)  # past the CRL's nextUpdate (24 h)
    stale = RevocationChecker(cache_dir=cache, offline=True, now=later).check(chain_of(leaf))
    assert stale.status is Status.UNKNOWN and "is stale" in stale.detail
    empty = RevocationChecker(cache_dir=tmp_path / "empty", offline=True).check(chain_of(leaf))
    assert empty.status is Status.UNKNOWN and "offline and no cached CRL" in empty.detail
    assert pki.server.requests.count("GET /ca.crl") == fetched  # offline never fetched


def test_a_tampered_cache_entry_is_not_trusted(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.leaf("tampered", ocsp=False)
    cache = tmp_path / "crl"
    RevocationChecker(cache_dir=cache).check(chain_of(leaf))
    [entry] = cache.iterdir()
    entry.write_bytes(entry.read_bytes()[:-3] + b"\x00\x00\x00")
    status = RevocationChecker(cache_dir=cache, offline=True).check(chain_of(leaf))
    assert status.status is Status.UNKNOWN and "cached CRL" in status.detail


def test_a_revocation_after_the_authentic_signing_time_does_not_count(pki: Pki) -> None:
    leaf = pki.leaf("revoked-later", crl=False)
    pki.ca.revoke(leaf)
    pki.restart_responder()
    before = datetime.now(UTC) - timedelta(minutes=30)
    assert RevocationChecker().check(chain_of(leaf), authentic_signing_time=before).status is Status.GOOD
    assert RevocationChecker().check(chain_of(leaf)).status is Status.REVOKED


def test_a_chain_without_revocation_urls_passes() -> None:
    status = RevocationChecker(offline=True).check([])
    assert status.status is Status.GOOD


# --- per level, through the Notation verifier ------------------------------------------------------


def verify(
    leaf: IssuedCertificate, level: NotationLevel, revocation: Revocation = Revocation.CHECK
) -> SignatureOutcome:
    key = serialization.load_pem_private_key(leaf.key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    envelope = build_envelope(TARGET, key, chain_of(leaf), signing_time=datetime.now(UTC))
    signature = NotationSignature(
        Digest.of_bytes(b"sig"), "application/jose+json", Digest.of_bytes(envelope), envelope, TARGET
    )
    authority = NotationAuthority(
        "corp", Path("/store"), (leaf.ca.certificate,), ("*",), level, revocation=revocation
    )
    attached = AttachedSignatures((), lambda layer: b"", (), [signature])
    [outcome] = verify_notation_attached(attached, TARGET.digest, authority)
    return outcome


def test_revoked_fails_strict_and_is_logged_by_permissive_and_audit(pki: Pki) -> None:
    leaf = pki.leaf("level-revoked")
    pki.ca.revoke(leaf)
    pki.restart_responder()
    strict = verify(leaf, NotationLevel.STRICT)
    assert strict.reason is Reason.REVOKED and "revoked at" in strict.detail, strict.detail
    for level in (NotationLevel.PERMISSIVE, NotationLevel.AUDIT):
        logged = verify(leaf, level)
        assert (
            logged.reason is Reason.VALID
            and "revocation: O=trust tests,CN=level-revoked: revoked" in logged.detail
        )


def test_unknown_fails_strict_and_is_logged_by_permissive(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.leaf("level-unknown")
    revocation_module.configure(cache_dir=tmp_path / "crl", offline=True)
    strict = verify(leaf, NotationLevel.STRICT)
    assert strict.reason is Reason.REVOCATION_UNKNOWN and "could not check revocation" in strict.detail
    permissive = verify(leaf, NotationLevel.PERMISSIVE)
    assert permissive.reason is Reason.VALID and "could not check revocation" in permissive.detail


def test_good_is_valid_and_skip_checks_nothing(pki: Pki) -> None:
    leaf = pki.leaf("level-good")
    pki.restart_responder()
    assert verify(leaf, NotationLevel.STRICT).reason is Reason.VALID
    pki.ca.revoke(leaf)
    pki.restart_responder()
    before = list(pki.server.requests)
    skipped = verify(leaf, NotationLevel.STRICT, Revocation.SKIP)
    assert skipped.reason is Reason.VALID and pki.server.requests == before


# --- trust verify --policy [--offline] ------------------------------------------------------------


def test_cli_verify_online_revoked_and_offline_stale(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed with an `openssl ca` certificate that names only a CRL, valid a few seconds: online
    allowed and cached; offline allowed from the cache; once the CRL is stale, offline says
    "could not check revocation" (exit 5); online again with the certificate revoked, denied (3)."""
    leaf = pki.ca.issue("cli-signer", crl_url=pki.server.url("/short.crl"))
    pki.server.files["/short.crl"] = pki.ca.crl_seconds(3)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(leaf.chain_pem())
    store_dir = tmp_path / "trust-store"
    store_dir.mkdir()
    (store_dir / "ca.crt").write_bytes(pki.ca.certificate_path.read_bytes())
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nauthorities:\n  corp:\n    notation:\n"
        f'      trust-store: {store_dir}\n      trusted-identities: ["*"]\n'
        "default:\n  signed-by: [corp]\n"
    )
    layout = write_oci_layout(tmp_path / "layout", simple_image(b"revocation cli\n"), tag="v1")
    sign = ["sign", "--format", "notation", "--key", str(leaf.key_path), "--cert", str(chain), "-o", "json"]
    assert main([*sign, f"oci:{layout}:v1"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    pinned = f"oci:{layout}@{record['digest']}"
    store = tmp_path / "store"
    verify = ["verify", "--policy", str(policy), "--store", str(store)]

    assert main([*verify, pinned]) == 0
    assert len(list((store / "cache" / "crl").iterdir())) == 1
    assert main([*verify, "--offline", pinned]) == 0
    capsys.readouterr()
    time.sleep(4)
    assert main([*verify, "--offline", "-o", "json", pinned]) == 5
    [result] = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "could-not-check"
    assert "could not check revocation" in result["message"] and "stale" in result["message"]

    pki.ca.revoke(leaf)
    pki.server.files["/short.crl"] = pki.ca.crl()
    assert main([*verify, pinned]) == 3
    assert "revoked" in capsys.readouterr().err


def test_hostile_locations_and_oversized_answers_give_no_answer(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRL larger than the cap is cut off while streaming; a non-HTTP location is never opened."""
    monkeypatch.setattr(revocation_module, "MAX_CRL_BYTES", 1000)
    pki.server.files["/huge.crl"] = b"\x30" * 5000
    huge = pki.ca.issue("huge-crl", crl_url=pki.server.url("/huge.crl"))
    status = RevocationChecker().check(chain_of(huge))
    assert status.status is Status.UNKNOWN and "more than 1000 bytes" in status.detail
    local = pki.ca.issue("file-crl", crl_url="file:///etc/passwd")
    status = RevocationChecker().check(chain_of(local))
    assert status.status is Status.UNKNOWN and "is not an http(s) URL" in status.detail


def test_a_delegated_ocsp_responder_counts_only_with_the_ocsp_signing_usage(pki: Pki) -> None:
    """`openssl ocsp` signing with a responder certificate the CA issued for OCSP signing is
    trusted; one issued for code signing is not (and then the CRL decides)."""
    delegated = pki.ca.issue("ocsp-responder", eku="OCSPSigning")
    impostor = pki.ca.issue("not-a-responder", eku="codeSigning")
    for signer, expected in ((delegated, Status.GOOD), (impostor, Status.UNKNOWN)):
        responder = OcspResponder.reserve(pki.ca, signer)
        leaf = pki.ca.issue(f"delegated-{signer.name}", ocsp_url=responder.url)
        responder.start()  # it reads index.txt once: after the leaf is issued
        try:
            status = RevocationChecker().check(chain_of(leaf))
        finally:
            responder.stop()
        assert status.status is expected, status.detail
        if expected is Status.UNKNOWN:
            assert "neither the issuing CA nor a responder it authorised" in status.detail
