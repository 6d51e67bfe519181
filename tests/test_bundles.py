"""cosign v3 signatures: Sigstore bundles attached as OCI referrers, verified with keys."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hostile import HostileRegistry, Reply
from support.images import push_blob, push_image, push_manifest, simple_image
from support.registry import Registry

from pull.digest import Digest
from trust.cli.app import main
from trust.cosign.simple_signing import Reason
from trust.keys.keyfiles import KeySigner, TrustedKey, generate_keypair, load_private_key
from trust.sigstore.bundles import (
    BUNDLE_ARTIFACT_TYPE,
    COSIGN_SIGN_PREDICATE,
    IN_TOTO_PAYLOAD_TYPE,
    pae,
    verify_bundle,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = b"{}"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeySigner, Path]:
    private_pem, public_pem = generate_keypair(b"")
    path = tmp_path_factory.mktemp("bundle-key") / "key.pub"
    path.write_bytes(public_pem)
    return KeySigner(load_private_key(private_pem, b"")), path


def dsse_bundle(signer: KeySigner, digest: str, predicate: str = COSIGN_SIGN_PREDICATE) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "image", "digest": {"sha256": digest.split(":")[1]}}],
        "predicateType": predicate,
        "predicate": {},
    }
    payload = json.dumps(statement).encode()
    signature = signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "test"}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
            },
        }
    ).encode()


def referrer_manifest(bundle: bytes, subject_digest: str, subject_size: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(EMPTY), "size": 2},
            "layers": [{"mediaType": BUNDLE_ARTIFACT_TYPE, "digest": sha(bundle), "size": len(bundle)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
        }
    ).encode()


def fallback_index(*manifests: bytes) -> bytes:
    """The referrers tag-schema index (`sha256-<hex>` tag) listing `manifests` as bundle referrers."""
    entries = [
        {"mediaType": OCI_MANIFEST, "digest": sha(m), "size": len(m), "artifactType": BUNDLE_ARTIFACT_TYPE}
        for m in manifests
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_dsse_bundle_outcomes(key: tuple[KeySigner, Path]) -> None:
    signer, pub = key
    digest = sha(b"image")
    trusted = [TrustedKey.from_file(pub)]
    bundle = dsse_bundle(signer, digest)
    assert (
        verify_bundle(0, Digest.parse(sha(bundle)), bundle, Digest.parse(digest), trusted).reason
        is Reason.VALID
    )
    other = [TrustedKey.from_pem(generate_keypair(b"")[1], "other")]
    assert (
        verify_bundle(0, Digest.parse(sha(bundle)), bundle, Digest.parse(digest), other).reason
        is Reason.UNKNOWN_KEY
    )
    wrong = verify_bundle(0, Digest.parse(sha(bundle)), bundle, Digest.parse(sha(b"other")), trusted)
    assert wrong.reason is Reason.DIGEST_MISMATCH
    sbom = dsse_bundle(signer, digest, predicate="https://spdx.dev/Document")
    attestation = verify_bundle(0, Digest.parse(sha(sbom)), sbom, Digest.parse(digest), trusted)
    assert attestation.reason is Reason.MALFORMED and "attestation" in attestation.detail
    tampered = bundle.replace(b'"payloadType"', b'"payloadType" ', 1)
    assert verify_bundle(0, Digest.parse(sha(tampered)), tampered, Digest.parse(digest), trusted).ok
    envelope = json.loads(bundle)
    envelope["dsseEnvelope"]["payload"] = base64.b64encode(b'{"_type": "x"}').decode()
    forged = json.dumps(envelope).encode()
    assert (
        verify_bundle(0, Digest.parse(sha(forged)), forged, Digest.parse(digest), trusted).reason
        is Reason.UNKNOWN_KEY
    )
    for junk in (b"not json", b"[]", b'{"mediaType": "application/x"}', b'{"a": 1, "a": 2}'):
        assert (
            verify_bundle(0, Digest.parse(sha(junk)), junk, Digest.parse(digest), trusted).reason
            is Reason.MALFORMED
        )


def test_bundle_via_referrers_fallback_tag_in_a_real_registry(
    registry: Registry, repo_name: str, key: tuple[KeySigner, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    signer, pub = key
    pushed = push_image(registry, repo_name, simple_image(b"cosign v3\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    assert main(["verify", "--key", str(pub), ref]) == 3  # nothing attached yet

    bundle = dsse_bundle(signer, pushed.digest)
    push_blob(registry, repo_name, bundle)
    push_blob(registry, repo_name, EMPTY)
    manifest = referrer_manifest(bundle, pushed.digest, len(pushed.manifest_bytes))
    push_manifest(registry, repo_name, sha(manifest), manifest, OCI_MANIFEST)
    index = fallback_index(manifest)
    push_manifest(registry, repo_name, pushed.digest.replace(":", "-"), index, OCI_INDEX)
    capsys.readouterr()
    assert main(["verify", "--key", str(pub), ref, "--output", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    [outcome] = record["signatures"]
    assert outcome["outcome"] == "valid" and "DSSE" in outcome["reason"]
    assert outcome["layerDigest"] == sha(bundle)


def test_bundle_via_referrers_api_and_errors_while_listing(key: tuple[KeySigner, Path]) -> None:
    signer, pub = key
    with HostileRegistry(referrers_api=True) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        bundle = dsse_bundle(signer, image.digest)
        hostile.add_blob_content(bundle)
        hostile.add_blob_content(EMPTY)
        hostile.add_manifest("team/app", "ref", referrer_manifest(bundle, image.digest, len(image.manifest)))
        ref = f"{hostile.host}/team/app:v1"
        assert main(["verify", "--key", str(pub), ref]) == 0
        assert any(r.path == f"/v2/team/app/referrers/{image.digest}" for r in hostile.requests)
        # A referrers listing that fails is "could not look" (5), never "unsigned" (3).
        hostile.fail_next("GET", f"/v2/team/app/referrers/{image.digest}", Reply(500, b"down"), times=99)
        assert main(["verify", "--key", str(pub), ref]) == 5


def test_referrer_whose_subject_is_another_image_is_ignored(key: tuple[KeySigner, Path]) -> None:
    signer, pub = key
    with HostileRegistry(referrers_api=False) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        other = hostile.add_image("team/app", "v2", [b"other layer"])
        bundle = dsse_bundle(signer, image.digest)
        hostile.add_blob_content(bundle)
        # Listed under image's fallback tag, but its subject is `other`.
        manifest = referrer_manifest(bundle, other.digest, len(other.manifest))
        hostile.add_manifest("team/app", "x", manifest)
        index = fallback_index(manifest)
        hostile.add_manifest("team/app", image.digest.replace(":", "-"), index, OCI_INDEX)
        assert main(["verify", "--key", str(pub), f"{hostile.host}/team/app:v1"]) == 3


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b'{"mediaType": {}, "messageSignature": {}}', "unknown mediaType"),
        (b'{"mediaType": ["x"], "messageSignature": {}}', "unknown mediaType"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"mediaType": NaN}', "not JSON"),
    ],
)
def test_hostile_bundle_json_is_malformed_not_a_crash(
    key: tuple[KeySigner, Path], data: bytes, detail: str
) -> None:
    trusted = TrustedKey.from_file(key[1])
    outcome = verify_bundle(0, Digest.of_bytes(data), data, Digest.of_bytes(b"image"), [trusted])
    assert outcome.reason is Reason.MALFORMED and detail in outcome.detail
