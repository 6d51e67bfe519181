"""Keyless Sigstore verification: upstream bundles, legacy cosign `.sig` layers, policy and CLI.

Two sources of real data:

- sigstore-python's test bundles (`../shared/vectors/sigstore-bundles/`), signed by the staging
  instance over small files, verified against its `staging_trusted_root.json`;
- a private Sigstore instance (`test_keyless_instance.PrivateSigstore`: local Fulcio CA, CT log
  and Rekor keys, checked there against sigstore-python's own verifier) that can sign what the
  vectors cannot: cosign simple-signing payloads for images pushed to the test registry.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from support.images import push_image, simple_image
from support.registry import Registry
from support.tsa import TimestampAuthority
from support.vectors import VECTORS as SHARED_VECTORS
from test_keyless_instance import PrivateSigstore, Signed, cosign_statement

from policy.loader import load_policy_text
from policy.model import KeylessAuthority
from pull.clients import RegistryClients
from pull.digest import Digest
from pull.manifest import Descriptor, ImageManifest, verify_document
from pull.reference import Reference
from trust.attached import AttachedSignatures, SignatureLocation, attach_signature, discover
from trust.cli.app import main
from trust.cosign.simple_signing import (
    RFC3161_TIMESTAMP_ANNOTATION,
    Reason,
    SignatureLayer,
    build_payload,
    docker_reference,
)
from trust.errors import SignatureInvalid
from trust.keys.keyfiles import KeySigner, check_public_key, generate_keypair, load_private_key
from trust.sigstore.bundles import BUNDLE_ARTIFACT_TYPE
from trust.sigstore.identity import IdentityPolicy, read_identity
from trust.sigstore.keyless import (
    BAD_TIMESTAMP,
    verify_keyless_attached,
    verify_keyless_bundle,
    verify_legacy_signature,
)
from trust.sigstore.sign import attach_bundle, build_bundle_referrer
from trust.sigstore.sign import cosign_statement as trust_statement
from trust.sigstore.trusted_root import TrustedRootError, load_trusted_root, refreshed_root_path

VECTORS = SHARED_VECTORS / "sigstore-bundles"
STAGING = VECTORS / "staging_trusted_root.json"
GITHUB_OAUTH = "https://github.com/login/oauth"
TEST_ISSUER = "https://accounts.trust.test"
VALID_VECTORS = [
    ("bundle.txt", "a@tny.town"),  # v0.1, certificate chain, inclusion proof and promise
    ("bundle_v3.txt", "william@yossarian.net"),  # v0.3
    ("bundle_v3_alt.txt", "william@yossarian.net"),  # v0.3 under the older media type
]


def authority(
    subject: str | None = None,
    issuer: str | None = GITHUB_OAUTH,
    *,
    subject_regexp: str | None = None,
    issuer_regexp: str | None = None,
    trusted_root: Path | None = STAGING,
    **github: str,
) -> KeylessAuthority:
    return KeylessAuthority(
        name="test",
        issuer=issuer,
        issuer_regexp=re.compile(issuer_regexp) if issuer_regexp else None,
        subject=subject,
        subject_regexp=re.compile(subject_regexp) if subject_regexp else None,
        trusted_root=trusted_root,
        github_workflow_repository=github.get("repository"),
        github_workflow_ref=github.get("ref"),
        github_workflow_name=github.get("name"),
        github_workflow_trigger=github.get("trigger"),
        github_workflow_sha=github.get("sha"),
    )


def check_vector(name: str, who: KeylessAuthority, over: str | None = None) -> tuple[Reason, str, str | None]:
    data = (VECTORS / f"{name}.sigstore").read_bytes()
    artifact = Digest.of_bytes((VECTORS / (over or name)).read_bytes())
    root = load_trusted_root(who.trusted_root)
    outcome = verify_keyless_bundle(0, Digest.of_bytes(data), data, artifact, root, IdentityPolicy(who))
    return outcome.reason, outcome.detail, outcome.key


# --- Sigstore bundles: the upstream vectors -------------------------------------------------------


@pytest.mark.parametrize(("name", "identity"), VALID_VECTORS)
def test_valid_vectors_verify_with_the_identity_in_their_certificate(name: str, identity: str) -> None:
    reason, detail, key = check_vector(name, authority(identity))
    assert reason is Reason.VALID, detail
    assert key == f"{identity} (issuer {GITHUB_OAUTH})"
    assert "logged in Rekor at index" in detail


@pytest.mark.parametrize(
    ("name", "identity", "reason", "words"),
    [
        # the log entry belongs to another signature (CVE-2022-36056)
        ("bundle_cve_2022_36056.txt", "william@yossarian.net", Reason.BAD_SET, "inconsistent"),
        ("bundle_invalid_version.txt", "william@yossarian.net", Reason.MALFORMED, "mediaType"),
        ("bundle_no_log_entry.txt", "alex.cameron@trailofbits.com", Reason.MALFORMED, "log entry"),
    ],
)
def test_negative_vectors_fail_with_their_reason(
    name: str, identity: str, reason: Reason, words: str
) -> None:
    got, detail, _ = check_vector(name, authority(identity, issuer_regexp=".*", issuer=None))
    assert got is reason and words in detail


def test_wrong_identity_and_wrong_issuer_name_both_values() -> None:
    reason, detail, key = check_vector("bundle_v3.txt", authority("mallory@example.com"))
    assert reason is Reason.WRONG_IDENTITY
    assert "'william@yossarian.net'" in detail and "'mallory@example.com'" in detail
    assert key is not None and key.startswith("william@yossarian.net")
    reason, detail, _ = check_vector(
        "bundle_v3.txt", authority("william@yossarian.net", "https://accounts.google.com")
    )
    assert reason is Reason.WRONG_IDENTITY
    assert f"'{GITHUB_OAUTH}'" in detail and "'https://accounts.google.com'" in detail


def test_regexp_identities_must_match_the_whole_value() -> None:
    ok = authority(
        None, None, subject_regexp=r"[a-z]+@yossarian\.net", issuer_regexp=r"https://github\.com/.*"
    )
    assert check_vector("bundle_v3.txt", ok)[0] is Reason.VALID
    partial = authority(None, subject_regexp=r"yossarian")  # a search would match; fullmatch does not
    reason, detail, _ = check_vector("bundle_v3.txt", partial)
    assert reason is Reason.WRONG_IDENTITY and "matching 'yossarian'" in detail
    issuer = authority("william@yossarian.net", None, issuer_regexp=r"https://accounts\.google\.com")
    assert check_vector("bundle_v3.txt", issuer)[0] is Reason.WRONG_IDENTITY


def test_verification_makes_no_network_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object) -> None:
        raise AssertionError("network access during verification")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert check_vector("bundle_v3_alt.txt", authority("william@yossarian.net"))[0] is Reason.VALID
    assert (
        check_vector("bundle_v3.txt", authority("william@yossarian.net", trusted_root=None))[0]
        is not Reason.VALID
    )


def test_a_bundle_over_another_file_is_a_digest_mismatch() -> None:
    reason, detail, _ = check_vector("bundle_v3.txt", authority("william@yossarian.net"), over="a.txt")
    assert reason is Reason.DIGEST_MISMATCH and "is not sha256:" in detail


@pytest.fixture
def private_tuf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """sigstore-python's TUF cache and data directories in a temporary folder, for one test."""
    from trust.sigstore import trusted_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    trusted_root._public_good.cache_clear()
    yield tmp_path
    trusted_root._public_good.cache_clear()


def test_the_default_root_is_public_good_and_does_not_trust_staging(private_tuf_cache: Path) -> None:
    root = load_trusted_root()
    assert root.source == "the Sigstore public-good instance"
    staging = load_trusted_root(STAGING)
    assert {log.log_id for log in root.rekor_logs}.isdisjoint({log.log_id for log in staging.rekor_logs})
    reason, detail, _ = check_vector("bundle_v3.txt", authority("william@yossarian.net", trusted_root=None))
    assert reason is Reason.UNTRUSTED_CERTIFICATE and "public-good" in detail


def test_a_refreshed_root_in_the_tuf_cache_is_the_default(
    private_tuf_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stand-in for a refresh: the staging root where sigstore-python's TUF client keeps the
    # public-good one. Verification then trusts it with no --trusted-root, and says where it came from.
    cached = refreshed_root_path()
    assert str(cached).startswith(str(private_tuf_cache))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(STAGING.read_bytes())
    assert "TUF cache" in load_trusted_root().source
    args = [
        "verify-blob",
        str(VECTORS / "bundle_v3.txt"),
        "--bundle",
        str(VECTORS / "bundle_v3.txt.sigstore"),
    ]
    identity = [
        "--certificate-identity",
        "william@yossarian.net",
        "--certificate-oidc-issuer",
        "https://github.com/login/oauth",
    ]
    assert main([*args, *identity]) == 0
    assert main(["trusted-root", "show"]) == 0
    assert str(cached) in capsys.readouterr().out


def test_refresh_is_could_not_check_when_the_tuf_repository_is_unreachable(
    private_tuf_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trust.sigstore import trusted_root

    # A refused loopback port instead of the real repository: no test reaches the internet.
    monkeypatch.setattr(trusted_root, "_PUBLIC_GOOD_TUF_URL", "http://127.0.0.1:1")
    assert main(["trusted-root", "refresh"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot refresh the Sigstore trusted root from http://127.0.0.1:1" in err[0]


def test_unusable_trusted_roots_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text('{"mediaType": "nope"}')
    (tmp_path / "huge.json").write_bytes(b" " * (1024 * 1024 + 1))
    for name in ("junk.json", "huge.json", "missing.json"):
        with pytest.raises(TrustedRootError):
            load_trusted_root(tmp_path / name)


# --- legacy cosign keyless `.sig` layers built from a vector ---------------------------------------


def legacy_parts(name: str) -> tuple[bytes, SignatureLayer]:
    """The `.sig` layer cosign would have written for the vector's signature: its certificate,
    and its Rekor entry as the SET annotation (payload = the signed file)."""
    bundle = json.loads((VECTORS / f"{name}.sigstore").read_text())
    material = bundle["verificationMaterial"]
    raw = (material.get("certificate") or material["x509CertificateChain"]["certificates"][0])["rawBytes"]
    pem = x509.load_der_x509_certificate(base64.b64decode(raw)).public_bytes(Encoding.PEM).decode()
    entry = material["tlogEntries"][0]
    signed_entry_timestamp = {
        "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
        "Payload": {
            "body": entry["canonicalizedBody"],
            "integratedTime": int(entry["integratedTime"]),
            "logIndex": int(entry["logIndex"]),
            "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
        },
    }
    payload = (VECTORS / name).read_bytes()
    signature = base64.b64decode(bundle["messageSignature"]["signature"])
    layer = SignatureLayer.create(
        payload, signature, bundle=json.dumps(signed_entry_timestamp), certificate=pem, chain=""
    )
    return payload, layer


def legacy_reason(payload: bytes, layer: SignatureLayer, who: KeylessAuthority) -> tuple[Reason, str]:
    try:
        verify_legacy_signature(payload, layer, load_trusted_root(who.trusted_root), IdentityPolicy(who))
    except SignatureInvalid as exc:
        return Reason(exc.reason), str(exc)
    return Reason.VALID, ""


def with_annotation(layer: SignatureLayer, name: str, value: str) -> SignatureLayer:
    return SignatureLayer(layer.digest, layer.size, {**layer.annotations, name: value}, layer.media_type)


def test_legacy_annotations_from_a_vector_verify() -> None:
    payload, layer = legacy_parts("bundle_v3.txt")
    identity, proven = verify_legacy_signature(
        payload, layer, load_trusted_root(STAGING), IdentityPolicy(authority("william@yossarian.net"))
    )
    assert identity.subject == "william@yossarian.net" and identity.issuer == GITHUB_OAUTH
    entry = proven.rekor
    assert entry is not None and entry.log_index == 25915956 and entry.kind == "hashedrekord"
    assert proven.timestamped_at is None
    assert legacy_reason(payload, layer, authority("a@tny.town"))[0] is Reason.WRONG_IDENTITY


def test_legacy_annotations_fail_when_payload_certificate_or_set_is_altered() -> None:
    payload, layer = legacy_parts("bundle_v3.txt")
    who = authority("william@yossarian.net")
    assert legacy_reason(payload + b"!", layer, who)[0] is Reason.BAD_SIGNATURE
    _, other = legacy_parts("bundle_v3_alt.txt")  # same signer, another certificate and key
    swapped = with_annotation(layer, "dev.sigstore.cosign/certificate", other.certificate or "")
    assert legacy_reason(payload, swapped, who)[0] is Reason.BAD_SIGNATURE
    garbled = with_annotation(layer, "dev.sigstore.cosign/certificate", (layer.certificate or "")[:200])
    assert legacy_reason(payload, garbled, who)[0] is Reason.MALFORMED
    entry = json.loads(layer.bundle or "")
    for field, value in (("integratedTime", entry["Payload"]["integratedTime"] + 1), ("logIndex", 1)):
        forged = {**entry, "Payload": {**entry["Payload"], field: value}}
        reason, detail = legacy_reason(
            payload, with_annotation(layer, "dev.sigstore.cosign/bundle", json.dumps(forged)), who
        )
        assert reason is Reason.BAD_SET and "does not verify" in detail
    # A genuine SET, but for another signature (the CVE-2022-36056 shape).
    _, unrelated = legacy_parts("bundle_v3_alt.txt")
    reason, detail = legacy_reason(
        payload, with_annotation(layer, "dev.sigstore.cosign/bundle", unrelated.bundle or ""), who
    )
    assert reason is Reason.BAD_SET and "another payload" in detail
    no_set = SignatureLayer(
        layer.digest,
        layer.size,
        {k: v for k, v in layer.annotations.items() if k != "dev.sigstore.cosign/bundle"},
    )
    assert legacy_reason(payload, no_set, who)[0] is Reason.BAD_SET
    # The public-good root does not know the staging Rekor key.
    assert (
        legacy_reason(payload, layer, authority("william@yossarian.net", trusted_root=None))[0]
        is Reason.BAD_SET
    )


CERTIFICATE_BREAKAGES = {
    # the DER still parses, but cryptography refuses the field when it is first used
    "bad-version": [("a003020102", "a003020105")],
    "unknown-curve": [("06082a8648ce3d030107", "06082a8648ce3d030108"), ("06052b81040022", "06052b81040009")],
    "duplicate-extension": [("0603551d25", "0603551d0f")],  # EKU -> keyUsage
}
"""(DER found, DER put instead): the first one the certificate holds is replaced."""


def broken(der: bytes, breakage: str) -> bytes:
    for old, new in CERTIFICATE_BREAKAGES[breakage]:
        if bytes.fromhex(old) in der:
            return der.replace(bytes.fromhex(old), bytes.fromhex(new), 1)
    raise AssertionError(f"{breakage}: nothing to replace")


def pem_of(der: bytes) -> str:
    return "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der).decode() + "-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("vector", ["bundle.txt", "bundle_v3.txt"])
@pytest.mark.parametrize("breakage", sorted(CERTIFICATE_BREAKAGES))
def test_a_certificate_cryptography_cannot_read_is_an_outcome_not_a_crash(breakage: str, vector: str) -> None:
    """Certificates in bundles and annotations come from whoever pushed them: one that cryptography
    (or sigstore through it) refuses is a failed signature, never an exception out of verify."""
    document = json.loads((VECTORS / f"{vector}.sigstore").read_text())
    material = document["verificationMaterial"]
    holder = material.get("certificate") or material["x509CertificateChain"]["certificates"][0]
    der = base64.b64decode(holder["rawBytes"])
    holder["rawBytes"] = base64.b64encode(broken(der, breakage)).decode()
    data = json.dumps(document).encode()
    artifact = Digest.of_bytes((VECTORS / vector).read_bytes())
    who = authority(dict(VALID_VECTORS)[vector])
    root = load_trusted_root(who.trusted_root)
    outcome = verify_keyless_bundle(0, Digest.of_bytes(data), data, artifact, root, IdentityPolicy(who))
    assert outcome.reason in (Reason.MALFORMED, Reason.UNTRUSTED_CERTIFICATE), outcome.detail

    payload, layer = legacy_parts(vector)
    # As the signing certificate: malformed. As an extra "intermediate" (untrusted hints only):
    # malformed when it cannot be loaded at all, else ignored, and the signature stays valid.
    for annotation, allowed in (
        ("dev.sigstore.cosign/certificate", {Reason.MALFORMED}),
        ("dev.sigstore.cosign/chain", {Reason.MALFORMED, Reason.VALID}),
    ):
        altered = with_annotation(layer, annotation, pem_of(broken(der, breakage)))
        reason, detail = legacy_reason(payload, altered, who)
        assert reason in allowed, (annotation, detail)
        attached = AttachedSignatures([altered], lambda _: payload)
        [listed] = verify_keyless_attached(attached, Digest.of_bytes(b"image"), "example.com/app", who)
        assert listed.reason in allowed | {Reason.MALFORMED}  # a file, not an image payload


def test_a_legacy_signature_over_a_file_is_not_an_image_signature() -> None:
    payload, layer = legacy_parts("bundle.txt")
    attached = AttachedSignatures([layer], lambda _: payload)
    [outcome] = verify_keyless_attached(
        attached, Digest.of_bytes(b"image"), "example.com/app", authority("a@tny.town")
    )
    assert outcome.reason is Reason.MALFORMED and "simple-signing payload" in outcome.detail
    assert outcome.key == f"a@tny.town (issuer {GITHUB_OAUTH})"  # the signature itself was fine


# --- the private instance: images in the test registry ---------------------------------------------


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateSigstore, Path]]:
    sigstore = PrivateSigstore()
    yield sigstore, sigstore.write_trusted_root(tmp_path_factory.mktemp("private-sigstore") / "root.json")


def mine(root: Path, subject: str = "dev@trust.test") -> KeylessAuthority:
    return authority(subject, TEST_ISSUER, trusted_root=root)


def legacy_layer(signed: Signed) -> SignatureLayer:
    return SignatureLayer.create(
        signed.payload,
        signed.signature,
        bundle=signed.set_annotation(),
        certificate=signed.certificate_pem,
        chain=signed.chain_pem,
    )


def outcomes_for(
    signed: Signed, digest: Digest, repository: str, who: KeylessAuthority, **kw: bool
) -> list[tuple[Reason, str]]:
    attached = AttachedSignatures([legacy_layer(signed)], lambda _: signed.payload)
    return [(o.reason, o.detail) for o in verify_keyless_attached(attached, digest, repository, who, **kw)]


def test_legacy_image_signature_checks(instance: tuple[PrivateSigstore, Path]) -> None:
    sigstore, root = instance
    digest = Digest.of_bytes(b"manifest")
    payload = build_payload("registry.test/app", digest)
    [(reason, detail)] = outcomes_for(sigstore.sign(payload), digest, "registry.test/app", mine(root))
    assert reason is Reason.VALID and "dev@trust.test" in detail
    other = Digest.of_bytes(b"other manifest")
    assert (
        outcomes_for(sigstore.sign(payload), other, "registry.test/app", mine(root))[0][0]
        is Reason.DIGEST_MISMATCH
    )
    assert (
        outcomes_for(sigstore.sign(payload), digest, "registry.test/mirror", mine(root))[0][0]
        is Reason.WRONG_REPOSITORY
    )
    assert (
        outcomes_for(
            sigstore.sign(payload), digest, "registry.test/mirror", mine(root), ignore_reference=True
        )[0][0]
        is Reason.VALID
    )
    # Logged after the 10-minute certificate expired: not valid at signing time.
    late = sigstore.sign(payload, integrated_at=sigstore.now + dt.timedelta(hours=1))
    [(reason, detail)] = outcomes_for(late, digest, "registry.test/app", mine(root))
    assert reason is Reason.UNTRUSTED_CERTIFICATE and "does not chain" in detail
    [(reason, detail)] = outcomes_for(
        sigstore.sign(payload, with_sct=False), digest, "registry.test/app", mine(root)
    )
    assert reason is Reason.UNTRUSTED_CERTIFICATE and "certificate transparency" in detail
    # Another instance's certificate, logged in another Rekor: neither is trusted here.
    stranger = PrivateSigstore().sign(payload)
    assert outcomes_for(stranger, digest, "registry.test/app", mine(root))[0][0] is Reason.BAD_SET
    # A key-based signature is not keyless.
    plain = SignatureLayer.create(payload, b"sig")
    [outcome] = verify_keyless_attached(
        AttachedSignatures([plain], lambda _: payload), digest, "registry.test/app", mine(root)
    )
    assert outcome.reason is Reason.UNKNOWN_KEY


def test_one_identity_never_counts_for_two_keyless_authorities(
    instance: tuple[PrivateSigstore, Path], tmp_path: Path
) -> None:
    """`subject` and `subject-regexp` authorities that one identity satisfies both: its signatures
    (however many) meet `threshold: 2` only with a second identity."""
    from policy.evaluate import evaluate_signatures

    sigstore, root = instance
    policy = load_policy_text(
        "version: 1\nauthorities:\n"
        f"  dev:\n    keyless:\n      issuer: {TEST_ISSUER}\n      subject: dev@trust.test\n"
        f"      trusted-root: {root}\n"
        f"  team:\n    keyless:\n      issuer: {TEST_ISSUER}\n      subject-regexp: .*@trust[.]test\n"
        f"      trusted-root: {root}\n"
        "default:\n  signed-by: [dev, team]\n  threshold: 2\n",
        tmp_path,
    )
    digest = Digest.of_bytes(b"manifest")
    reference = Reference.parse(f"registry.test/app@{digest}")
    payload = build_payload("registry.test/app", digest)

    def evaluate(*identities: str) -> Any:
        signed = [sigstore.sign(payload, identity) for identity in identities]
        attached = AttachedSignatures([legacy_layer(s) for s in signed], lambda _: payload)
        return evaluate_signatures(
            str(reference),
            policy.rule_for(reference),
            "registry.test/app",
            digest,
            digest,
            None,
            lambda _: attached,
        )

    alone = evaluate("dev@trust.test", "dev@trust.test")
    assert [authority.satisfied for authority in alone.authorities] == [True, True]
    assert not alone.passed and "1 distinct signer" in alone.reasons[0]
    assert evaluate("dev@trust.test", "ops@trust.test").passed


def test_the_chain_annotation_supplies_intermediates_but_never_trust(
    instance: tuple[PrivateSigstore, Path], tmp_path: Path
) -> None:
    sigstore, _ = instance
    roots_only = sigstore.write_trusted_root(tmp_path / "roots-only.json", with_intermediate=False)
    digest = Digest.of_bytes(b"manifest")
    signed = sigstore.sign(build_payload("registry.test/app", digest))
    assert outcomes_for(signed, digest, "registry.test/app", mine(roots_only))[0][0] is Reason.VALID
    signed.chain_pem = ""
    reason, detail = outcomes_for(signed, digest, "registry.test/app", mine(roots_only))[0]
    assert reason is Reason.UNTRUSTED_CERTIFICATE and "does not chain" in detail
    # A chain annotation that ends in a root of its own does not make it trusted.
    stranger = PrivateSigstore()
    signed.chain_pem = stranger.chain_pem
    assert (
        outcomes_for(signed, digest, "registry.test/app", mine(roots_only))[0][0]
        is Reason.UNTRUSTED_CERTIFICATE
    )


def test_github_workflow_claims(instance: tuple[PrivateSigstore, Path]) -> None:
    sigstore, root = instance
    digest = Digest.of_bytes(b"manifest")
    workflow = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
    claims = {"repository": "acme/app", "ref": "refs/heads/main", "trigger": "push", "name": "release"}
    signed = sigstore.sign(
        build_payload("registry.test/app", digest),
        workflow,
        "https://token.actions.githubusercontent.com",
        github=claims,
    )
    identity = read_identity(signed.certificate)
    assert identity.subject == workflow and identity.claims["github-workflow-repository"] == "acme/app"

    def judge(**required: str) -> tuple[Reason, str]:
        who = authority(
            None,
            "https://token.actions.githubusercontent.com",
            subject_regexp=r"https://github\.com/acme/.*",
            trusted_root=root,
            **required,
        )
        return outcomes_for(signed, digest, "registry.test/app", who)[0]

    assert (
        judge(repository="acme/app", ref="refs/heads/main", trigger="push", name="release")[0] is Reason.VALID
    )
    reason, detail = judge(repository="acme/other")
    assert reason is Reason.WRONG_IDENTITY and "'acme/app'" in detail and "'acme/other'" in detail
    reason, detail = judge(sha="0" * 40)
    assert reason is Reason.WRONG_IDENTITY and "github-workflow-sha is absent" in detail


# --- RFC 3161 timestamps on legacy layers (cosign --timestamp-server-url) ---------------------------


Stamped = tuple[PrivateSigstore, TimestampAuthority, Path]


@pytest.fixture(scope="module")
def stamped(instance: tuple[PrivateSigstore, Path], tmp_path_factory: pytest.TempPathFactory) -> Stamped:
    """The private instance with a timestamp authority, and a trusted root that lists both."""
    sigstore, _ = instance
    tsa = TimestampAuthority()
    folder = tmp_path_factory.mktemp("private-tsa")
    return sigstore, tsa, sigstore.write_trusted_root(folder / "root.json", timestamp_authorities=[tsa])


def judge_stamped(
    signed: Signed, stamp: str | None, root: Path, *, with_set: bool = False, digest: Digest | None = None
) -> tuple[Reason, str]:
    """The outcome of `signed` as a `.sig` layer with the timestamp annotation `stamp`, and the
    SET annotation only `with_set`."""
    layer = SignatureLayer.create(
        signed.payload,
        signed.signature,
        bundle=signed.set_annotation() if with_set else None,
        certificate=signed.certificate_pem,
        chain=signed.chain_pem,
    )
    if stamp is not None:
        layer = with_annotation(layer, RFC3161_TIMESTAMP_ANNOTATION, stamp)
    attached = AttachedSignatures([layer], lambda _: signed.payload)
    [outcome] = verify_keyless_attached(
        attached, digest or Digest.of_bytes(b"manifest"), "registry.test/app", mine(root)
    )
    return outcome.reason, outcome.detail


def test_a_valid_timestamp_dates_a_legacy_signature_without_a_set(
    stamped: Stamped,
) -> None:
    sigstore, tsa, root = stamped
    signed = sigstore.sign(build_payload("registry.test/app", Digest.of_bytes(b"manifest")))
    # cosign timestamps the raw signature bytes (not their base64 annotation).
    reason, detail = judge_stamped(signed, tsa.annotation(signed.signature), root)
    assert reason is Reason.VALID, detail
    assert f"timestamped at {tsa.now:%Y-%m-%dT%H:%M:%SZ}" in detail and "Rekor" not in detail
    reason, detail = judge_stamped(signed, tsa.annotation(signed.signature), root, with_set=True)
    assert reason is Reason.VALID and "logged in Rekor at index" in detail and "timestamped at" in detail
    # The time is proven, but the signed payload still has to be about this image.
    reason, _ = judge_stamped(
        signed, tsa.annotation(signed.signature), root, digest=Digest.of_bytes(b"another")
    )
    assert reason is Reason.DIGEST_MISMATCH
    # Neither a SET nor a timestamp: nothing proves when the short-lived certificate was used.
    reason, detail = judge_stamped(signed, None, root)
    assert reason is Reason.BAD_SET and "no RFC 3161 timestamp" in detail


def test_a_timestamp_over_other_bytes_fails(
    stamped: Stamped,
) -> None:
    sigstore, tsa, root = stamped
    signed = sigstore.sign(build_payload("registry.test/app", Digest.of_bytes(b"manifest")))
    for other in (signed.payload, base64.b64encode(signed.signature), sigstore.sign(b"x").signature):
        reason, detail = judge_stamped(signed, tsa.annotation(other), root, with_set=True)
        assert reason is BAD_TIMESTAMP and "imprint is not the hash of this signature" in detail


def test_a_timestamp_by_an_authority_the_root_does_not_list_fails(
    instance: tuple[PrivateSigstore, Path], stamped: Stamped
) -> None:
    sigstore, tsa, root = stamped
    signed = sigstore.sign(build_payload("registry.test/app", Digest.of_bytes(b"manifest")))
    stranger = TimestampAuthority(name="stranger-tsa")
    reason, detail = judge_stamped(signed, stranger.annotation(signed.signature), root)
    assert reason is BAD_TIMESTAMP and "not signed by a timestamp authority of" in detail
    # The root without any timestamp authority: even the instance's own TSA is not trusted.
    _, no_tsa_root = instance
    reason, detail = judge_stamped(signed, tsa.annotation(signed.signature), no_tsa_root, with_set=True)
    assert reason is BAD_TIMESTAMP and "lists no timestamp authorities" in detail


def test_a_certificate_expired_at_the_timestamp_fails(
    stamped: Stamped,
) -> None:
    """The Fulcio certificate lives 10 minutes; a timestamp an hour later does not date its use,
    alone or next to a SET that does (the chain must hold at every proven time)."""
    sigstore, tsa, root = stamped
    signed = sigstore.sign(build_payload("registry.test/app", Digest.of_bytes(b"manifest")))
    late = tsa.annotation(signed.signature, at=sigstore.now + dt.timedelta(hours=1))
    for with_set in (False, True):
        reason, detail = judge_stamped(signed, late, root, with_set=with_set)
        assert reason is Reason.UNTRUSTED_CERTIFICATE and "does not chain" in detail, detail


def test_a_valid_timestamp_does_not_excuse_a_bad_set(
    stamped: Stamped,
) -> None:
    sigstore, tsa, root = stamped
    signed = sigstore.sign(build_payload("registry.test/app", Digest.of_bytes(b"manifest")))
    stamp = tsa.annotation(signed.signature)
    forged = sigstore.sign(signed.payload)  # a genuine SET, for another signature
    signed.set_signature, signed.body = forged.set_signature, forged.body
    reason, detail = judge_stamped(signed, stamp, root, with_set=True)
    assert reason is Reason.BAD_SET and "RFC 3161" not in detail
    signed.integrated_time += 1  # the SET no longer verifies
    reason, detail = judge_stamped(signed, stamp, root, with_set=True)
    assert reason is Reason.BAD_SET and "does not verify" in detail


def test_malformed_or_altered_timestamps_fail(
    stamped: Stamped,
) -> None:
    sigstore, tsa, root = stamped
    signed = sigstore.sign(build_payload("registry.test/app", Digest.of_bytes(b"manifest")))
    response = tsa.respond(signed.signature)

    def annotation(der: bytes) -> str:
        return json.dumps({"SignedRFC3161Timestamp": base64.b64encode(der).decode()})

    for text in (
        "not json",
        json.dumps({"SignedRFC3161Timestamp": "%%%"}),
        json.dumps({"signedRFC3161Timestamp": base64.b64encode(response).decode()}),
        annotation(b"\x30\x03\x02\x01\x00"),
        annotation(response[:-20]),
        " " * (64 * 1024 + 1),
    ):
        reason, detail = judge_stamped(signed, text, root, with_set=True)
        assert reason is Reason.MALFORMED and "RFC 3161 timestamp annotation" in detail, detail
    # A genuine response whose signed TSTInfo was altered (the serial number) fails the CMS check.
    # The 3 bytes of the serial's DER can also occur by chance in the signature or the key
    # identifiers: take a response where they occur once, so the edit hits the serial only.
    for _ in range(20):
        serial = bytes([0x02, 0x01, tsa.serial + 1])
        altered = tsa.respond(signed.signature)
        if altered.count(serial) == 1:
            break
    else:
        pytest.fail("no response with a unique serial encoding in 20 tries")
    reason, detail = judge_stamped(signed, annotation(altered.replace(serial, b"\x02\x01\x7f")), root)
    assert reason is BAD_TIMESTAMP and "not signed by a timestamp authority" in detail


def push_signed_image(registry: Registry, repo_name: str, sigstore: PrivateSigstore, identity: str) -> str:
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = Reference.parse(f"{registry.host}/{repo_name}@{pushed.digest}")
    digest = Digest.parse(pushed.digest)
    signed = sigstore.sign(build_payload(docker_reference(ref), digest), identity, TEST_ISSUER)
    with RegistryClients() as clients:
        location = SignatureLocation.for_image(ref, digest)
        attach_signature(
            clients(ref.api_host),
            location,
            signed.payload,
            legacy_layer(signed),
            check_public_key(signed.certificate.public_key()),
        )
    return str(ref)


def keyless_policy(folder: Path, root: Path, scope: str, subject: str) -> Path:
    path = folder / "policy.yaml"
    path.write_text(
        "version: 1\nauthorities:\n  ci:\n    keyless:\n"
        f"      issuer: {TEST_ISSUER}\n      subject: {subject}\n      trusted-root: {root}\n"
        f"rules:\n  - scope: {scope}\n    signed-by: [ci]\ndefault:\n  reject: true\n"
    )
    return path


def test_policy_with_a_keyless_authority_admits_and_denies_a_legacy_signed_image(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    instance: tuple[PrivateSigstore, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sigstore, root = instance
    ref = push_signed_image(registry, repo_name, sigstore, "dev@trust.test")
    scope = f"{registry.host}/{repo_name}"
    allowed = keyless_policy(tmp_path, root, scope, "dev@trust.test")
    assert main(["verify", "--policy", str(allowed), "--store", str(tmp_path / "s1"), "-o", "json", ref]) == 0
    [record] = json.loads(capsys.readouterr().out)
    [signature] = record["evaluation"]["authorities"][0]["targets"][0]["signatures"]
    assert signature["outcome"] == "valid" and signature["key"] == f"dev@trust.test (issuer {TEST_ISSUER})"
    assert signature["rekor"]["logIndex"] >= 1000
    denied = keyless_policy(tmp_path, root, scope, "release@trust.test")
    assert main(["verify", "--policy", str(denied), "--store", str(tmp_path / "s2"), ref]) == 3
    err = capsys.readouterr().err
    assert "wrong-identity" in err and "'dev@trust.test'" in err and "'release@trust.test'" in err


def test_verify_cli_keyless_flags(
    registry: Registry,
    repo_name: str,
    instance: tuple[PrivateSigstore, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sigstore, root = instance
    ref = push_signed_image(registry, repo_name, sigstore, "dev@trust.test")
    base = ["verify", "--certificate-oidc-issuer", TEST_ISSUER, "--trusted-root", str(root)]
    assert main([*base, "--certificate-identity", "dev@trust.test", ref]) == 0
    assert f"signed by dev@trust.test (issuer {TEST_ISSUER})" in capsys.readouterr().err
    assert main([*base, "--certificate-identity-regexp", r"[a-z]+@trust\.test", "-o", "json", ref]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert main([*base, "--certificate-identity", "ops@trust.test", ref]) == 3
    err = capsys.readouterr().err
    assert "'dev@trust.test'" in err and "'ops@trust.test'" in err
    # The shipped public-good root does not trust the private instance.
    assert (
        main(
            [
                "verify",
                "--certificate-oidc-issuer",
                TEST_ISSUER,
                "--certificate-identity",
                "dev@trust.test",
                ref,
            ]
        )
        == 3
    )
    assert "bad-set" in capsys.readouterr().err


def test_dsse_bundle_referrer_pushed_by_attach_bundle_verifies(
    registry: Registry,
    repo_name: str,
    instance: tuple[PrivateSigstore, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sigstore, root = instance
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = Reference.parse(f"{registry.host}/{repo_name}@{pushed.digest}")
    digest = Digest.parse(pushed.digest)
    statement = trust_statement(ref, digest)
    assert statement == cosign_statement(digest.hex, ref.name)
    bundle = sigstore.sign_dsse(statement).bundle()
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", digest, pushed.image.size)
    with RegistryClients() as clients:
        client = clients(ref.api_host)
        attach_bundle(client, ref.repository, subject, bundle)
        attached = discover(client, ref.repository, digest, SignatureLocation.for_image(ref, digest))
    assert [data for _, data in attached.bundles] == [bundle]
    [outcome] = verify_keyless_attached(attached, digest, ref, mine(root))
    assert outcome.ok and "(DSSE)" in outcome.detail
    base = ["verify", "--certificate-oidc-issuer", TEST_ISSUER, "--trusted-root", str(root), str(ref)]
    assert main([*base, "--certificate-identity", "dev@trust.test"]) == 0
    assert main([*base, "--certificate-identity", "nobody@trust.test"]) == 3
    # The same statement about another image does not count for this one.
    elsewhere = Digest.of_bytes(b"elsewhere")
    [outcome] = verify_keyless_attached(attached, elsewhere, ref, mine(root))
    assert outcome.reason is Reason.DIGEST_MISMATCH


def test_bundle_referrer_manifest_is_what_cosign_v3_writes() -> None:
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of_bytes(b"m"), 1)
    manifest = build_bundle_referrer(b'{"bundle": 1}', subject)
    document = verify_document(
        manifest, content_type="application/vnd.oci.image.manifest.v1+json", expected=None
    ).document
    assert isinstance(document, ImageManifest)
    assert document.artifact_type == BUNDLE_ARTIFACT_TYPE and document.subject is not None
    assert document.subject.digest == subject.digest
    [layer] = document.layers
    assert layer.media_type == BUNDLE_ARTIFACT_TYPE and layer.digest == Digest.of_bytes(b'{"bundle": 1}')
    assert document.config.media_type == "application/vnd.oci.empty.v1+json"


# --- verify-blob ---------------------------------------------------------------------------------


def test_verify_blob_keyless_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def run(name: str, identity: str, *extra: str, bundle: str | None = None) -> int:
        return main(
            [
                "verify-blob", str(VECTORS / name), "--bundle", str(VECTORS / f"{bundle or name}.sigstore"),
                "--certificate-identity", identity, "--certificate-oidc-issuer", GITHUB_OAUTH,
                "--trusted-root", str(STAGING), *extra,
            ]
        )  # fmt: skip

    assert run("bundle_v3.txt", "william@yossarian.net") == 0
    assert "verified" in capsys.readouterr().err
    assert run("bundle.txt", "a@tny.town", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["signature"]["outcome"] == "valid"
    assert run("bundle_v3.txt", "a@tny.town") == 3
    err = capsys.readouterr().err
    assert "'william@yossarian.net'" in err and "'a@tny.town'" in err
    assert run("bundle_cve_2022_36056.txt", "william@yossarian.net") == 3
    assert run("bundle_invalid_version.txt", "william@yossarian.net") == 3
    assert run("a.txt", "william@yossarian.net", bundle="bundle_v3.txt") == 3
    assert run("no-such-file.txt", "william@yossarian.net", bundle="bundle_v3.txt") == 2


def test_verify_blob_with_a_key(tmp_path: Path) -> None:
    private_pem, public_pem = generate_keypair(b"")
    signer = KeySigner(load_private_key(private_pem, b""))
    artifact = tmp_path / "release.tar"
    artifact.write_bytes(b"release bytes")
    (tmp_path / "key.pub").write_bytes(public_pem)
    digest = Digest.of_bytes(artifact.read_bytes())
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "k"}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": base64.b64encode(bytes.fromhex(digest.hex)).decode(),
            },
            "signature": base64.b64encode(signer.sign(artifact.read_bytes())).decode(),
        },
    }
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    args = [
        "verify-blob",
        str(artifact),
        "--bundle",
        str(tmp_path / "b.json"),
        "--key",
        str(tmp_path / "key.pub"),
    ]
    assert main(args) == 0
    artifact.write_bytes(b"other bytes")
    assert main(args) == 3
    # A key-based bundle is not keyless, whoever is named.
    keyless = ["--certificate-identity", "x@y", "--certificate-oidc-issuer", GITHUB_OAUTH]
    assert main([*args[:4], *keyless]) == 3


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--certificate-identity", "a@b"], "--certificate-oidc-issuer"),
        (["--certificate-oidc-issuer", GITHUB_OAUTH], "--certificate-identity"),
        (
            [
                "--certificate-identity",
                "a",
                "--certificate-identity-regexp",
                "a",
                "--certificate-oidc-issuer",
                "i",
            ],
            "not both",
        ),
        (
            ["--certificate-identity-regexp", "(", "--certificate-oidc-issuer", "i"],
            "not a valid regular expression",
        ),
        (
            [
                "--certificate-identity",
                "a",
                "--certificate-oidc-issuer",
                "i",
                "--trusted-root",
                "/nonexistent",
            ],
            "not a regular file",
        ),
        (["--certificate-identity", "a", "--certificate-oidc-issuer", "i", "--key", "k.pub"], "give one of"),
        (
            ["--certificate-identity", "a", "--certificate-oidc-issuer", "i", "--policy", "p.yaml"],
            "give one of",
        ),
        (
            ["--certificate-identity", "a", "--certificate-oidc-issuer", "i", "--rekor-key", "r.pub"],
            "--rekor-key",
        ),
        (["--certificate-identity", "a", "--certificate-oidc-issuer", "i", "-o", "sarif"], "sarif"),
        (
            ["--certificate-identity", "a", "--certificate-oidc-issuer", " "],
            "--certificate-oidc-issuer is empty",
        ),
        (
            ["--certificate-identity", "a", "--certificate-oidc-issuer-regexp", ""],
            "--certificate-oidc-issuer-regexp is empty",
        ),
    ],
)
def test_keyless_flag_errors_are_usage_errors(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", *args, "127.0.0.1:1/app@sha256:" + "0" * 64]) == 2
    assert words in capsys.readouterr().err


def test_a_trusted_root_that_is_not_one_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "root.json"
    bad.write_text("[]")
    args = ["--certificate-identity", "a", "--certificate-oidc-issuer", "i", "--trusted-root", str(bad)]
    assert main(["verify", *args, "127.0.0.1:1/app@sha256:" + "0" * 64]) == 2
    assert "not a usable Sigstore trusted root" in capsys.readouterr().err
    assert main(["verify-blob", str(STAGING), "--bundle", str(STAGING), *args]) == 2


# --- sign --keyless (offline: everything but the token, Fulcio and Rekor) -------------------------

CI_CREDENTIAL_VARIABLES = (
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE",
    "CIRCLECI",
    "GOOGLE_SERVICE_ACCOUNT_NAME",
    "SIGSTORE_ID_TOKEN",
)


def test_sign_keyless_without_a_token_is_could_not_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in CI_CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # 127.0.0.1:1 refuses connections: reaching the registry would be a different error.
    assert main(["sign", "--keyless", "127.0.0.1:1/app@sha256:" + "0" * 64]) == 5
    err = capsys.readouterr().err
    assert "no identity token" in err and "ambient CI credentials" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--keyless", "--key", "cosign.key"], "--keyless attaches a Sigstore bundle"),
        (["--keyless", "--annotation", "a=b"], "--keyless attaches a Sigstore bundle"),
        (["--keyless", "--format", "notation"], "cosign (Sigstore bundle) format"),
        (["--identity-token", "x"], "--identity-token belongs to --keyless"),
        ([], "give --key"),
        (["--keyless", "--identity-token", "not-a-jwt"], "identity token is not usable"),
    ],
)
def test_sign_keyless_argument_errors(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sign", *args, "127.0.0.1:1/app@sha256:" + "0" * 64]) == 2
    assert words in capsys.readouterr().err


# --- policy file and start-up -----------------------------------------------------------------------


def test_policy_file_github_claims_load_and_describe(tmp_path: Path) -> None:
    policy = load_policy_text(
        "version: 1\nauthorities:\n  gh:\n    keyless:\n"
        "      issuer: https://token.actions.githubusercontent.com\n"
        "      subject-regexp: https://github\\.com/acme/app/.*\n"
        "      github-workflow-repository: acme/app\n      github-workflow-trigger: push\n"
        "default:\n  signed-by: [gh]\n",
        tmp_path,
    )
    gh = policy.authorities["gh"]
    assert isinstance(gh, KeylessAuthority)
    assert gh.github_claims == {"github-workflow-repository": "acme/app", "github-workflow-trigger": "push"}


def test_help_does_not_import_sigstore() -> None:
    code = (
        "import sys\nfrom trust.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('sigstore' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
