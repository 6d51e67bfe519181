"""Signing against Sigstore's own services on 127.0.0.1: cosign signs and trust checks, and back.

The services are the real servers (`local_sigstore`: Fulcio with an ephemeral CA and the tests'
OIDC issuers, Rekor v2 `rekor-tiles`, the timestamp authority, a TesseraCT certificate
transparency log), described to cosign v3 by a signing config and a trusted root
(`--signing-config`, `--trusted-root`) and to trust by the same trusted root.

| made by                                               | checked by |
|-------------------------------------------------------|------------|
| cosign sign keyless (Fulcio, SCT, Rekor v2, RFC 3161) | trust verify (identity, issuer, --trusted-root) |
| cosign sign --key with the log (Rekor v2, RFC 3161)   | trust verify --key --trusted-root (log checked) |
| cosign attest keyless                                 | trust verify-attestation (identity, issuer) |
| trust sign --keyless (the same services)              | cosign verify (identity, issuer, --trusted-root) |
| trust sign --key, the trust config (Rekor v2, RFC 3161) | cosign verify --key --trusted-root (log checked) |
| trust sign-blob --key (Rekor v2)                      | cosign verify-blob --key --bundle --trusted-root |
| trust attest --key (Rekor v2: hashedrekord over the PAE) | cosign verify-attestation --key --trusted-root |

cosign checks each signature too (`cosign verify`), and every cell has negative twins that both
tools refuse: another identity, another issuer, a signature moved onto another image, a log
checkpoint whose signature is broken, a trusted root that does not list these services.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
from conftest import OCI11Registry, Peers
from interop_support import TRUST, run
from support.images import push_blob, push_image, push_manifest, simple_image
from support.sigstore_services import LocalSigstore
from support.vectors import VECTORS

COSIGN_REGISTRY_FLAGS = ["--allow-http-registry", "--allow-insecure-registry"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ALICE = "alice@example.test"
PRODUCTION_ROOT = VECTORS / "sigstore-bundles" / "production_trusted_root.json"


def image(registry: OCI11Registry, repository: str, content: bytes) -> str:
    pushed = push_image(registry.host, repository, simple_image(content), tag="v1")
    return f"{registry.host}/{repository}@{pushed.digest}"


def services(sigstore: LocalSigstore) -> list[str]:
    """cosign v3's flags naming the local services (signing) and their keys (checking)."""
    return ["--signing-config", str(sigstore.signing_config), "--trusted-root", str(sigstore.trusted_root)]


def cosign_keys(peers: Peers, env: dict[str, str], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    run([peers.cosign, "generate-key-pair", "--output-key-prefix", str(folder / "cosign")], env)
    return folder / "cosign.key", folder / "cosign.pub"


def trust_record(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(run([*command, "--output", "json"], env).stdout)
    return record


def both_refuse(peers: Peers, env: dict[str, str], cosign: list[str], trust: list[str]) -> str:
    """cosign's and trust's checks of the same case: cosign fails, trust denies (exit 3); returns
    what trust said."""
    by_cosign = run([peers.cosign, *cosign], env, ok=False)
    by_trust = run([TRUST, *trust], env, ok=False)
    assert by_cosign.returncode != 0, f"cosign accepted {cosign}:\n{by_cosign.stderr}"
    assert by_trust.returncode == 3, f"trust answered {by_trust.returncode}:\n{by_trust.stderr}"
    assert "Traceback" not in by_trust.stderr
    return by_trust.stdout + by_trust.stderr


# --- the signature referrer, read and re-pushed (the tampered twins) ------------------------------


def split(ref: str) -> tuple[str, str, str]:
    name, _, digest = ref.partition("@")
    host, _, repository = name.partition("/")
    return host, repository, digest


def bundle_referrer(ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest of `ref`'s one Sigstore bundle referrer, and the bundle."""
    host, repository, digest = split(ref)
    listing = httpx.get(f"http://{host}/v2/{repository}/referrers/{digest}").json()
    [entry] = [m for m in listing["manifests"] if m.get("artifactType") == BUNDLE_TYPE]
    manifest = httpx.get(
        f"http://{host}/v2/{repository}/manifests/{entry['digest']}", headers={"Accept": OCI_MANIFEST}
    ).json()
    blob = httpx.get(f"http://{host}/v2/{repository}/blobs/{manifest['layers'][0]['digest']}")
    return manifest, json.loads(blob.content)


def push_referrer(target: str, manifest: dict[str, Any], bundle: dict[str, Any]) -> None:
    """`bundle` in a copy of `manifest` whose subject is `target`."""
    host, repository, digest = split(target)
    subject = httpx.get(f"http://{host}/v2/{repository}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    data = json.dumps(bundle).encode()
    layer = {**manifest["layers"][0], "digest": push_blob(host, repository, data), "size": len(data)}
    config = httpx.get(f"http://{host}/v2/{repository}/blobs/{manifest['config']['digest']}")
    if config.status_code != 200:  # another repository: the config blob (`{}`) is not there yet
        push_blob(host, repository, b"{}")
    copy = {
        **manifest,
        "layers": [layer],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(subject.content)},
    }
    body = json.dumps(copy).encode()
    push_manifest(host, repository, "sha256:" + hashlib.sha256(body).hexdigest(), body, OCI_MANIFEST)


def broken_checkpoint(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle with one bit of its log checkpoint's signature flipped."""
    copy = json.loads(json.dumps(bundle))
    proof = copy["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    text, signature_line = proof["checkpoint"]["envelope"].rstrip("\n").rsplit("\n", 1)
    dash, origin, encoded = signature_line.split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    proof["checkpoint"]["envelope"] = f"{text}\n{dash} {origin} {base64.b64encode(bytes(raw)).decode()}\n"
    return copy


# --- the cells ---------------------------------------------------------------------------------------


def test_cosign_signs_keyless_trust_verifies(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    local_sigstore: LocalSigstore,
) -> None:
    ref = image(oci11_registry, "interop/keyless", b"signed keyless by cosign")
    token = local_sigstore.issuer.token(ALICE)
    sign = [peers.cosign, "sign", "--yes", *services(local_sigstore), *COSIGN_REGISTRY_FLAGS]
    run([*sign, "--identity-token", token, ref], tool_env)
    _, bundle = bundle_referrer(ref)
    [entry] = bundle["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"]["version"] == "0.0.2"  # a Rekor v2 entry
    assert bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]

    root = ["--trusted-root", str(local_sigstore.trusted_root)]
    identity = ["--certificate-identity", ALICE, "--certificate-oidc-issuer", local_sigstore.issuer.url]
    run([peers.cosign, "verify", *root, *identity, *COSIGN_REGISTRY_FLAGS, ref], tool_env)
    record = trust_record([TRUST, "verify", *root, *identity, ref], tool_env)
    [signature] = record["signatures"]
    assert record["verified"] and signature["outcome"] == "valid"
    assert ALICE in signature["reason"] and "logged in Rekor at index" in signature["reason"]
    assert "timestamped at" in signature["reason"]

    # The negative twins: another identity, another issuer expected, the other issuer's
    # certificate for the same e-mail, the signature on another image, a root without these services.
    cosign_verify = ["verify", *COSIGN_REGISTRY_FLAGS]
    bob = [
        "--certificate-identity",
        "bob@example.test",
        "--certificate-oidc-issuer",
        local_sigstore.issuer.url,
    ]
    both_refuse(peers, tool_env, [*cosign_verify, *root, *bob, ref], ["verify", *root, *bob, ref])
    elsewhere = [
        "--certificate-identity",
        ALICE,
        "--certificate-oidc-issuer",
        local_sigstore.other_issuer.url,
    ]
    both_refuse(peers, tool_env, [*cosign_verify, *root, *elsewhere, ref], ["verify", *root, *elsewhere, ref])

    by_other = image(oci11_registry, "interop/keyless", b"signed through the other issuer")
    run([*sign, "--identity-token", local_sigstore.other_issuer.token(ALICE), by_other], tool_env)
    run([peers.cosign, "verify", *root, *elsewhere, *COSIGN_REGISTRY_FLAGS, by_other], tool_env)
    both_refuse(
        peers, tool_env, [*cosign_verify, *root, *identity, by_other], ["verify", *root, *identity, by_other]
    )

    moved = image(oci11_registry, "interop/keyless", b"never signed")
    push_referrer(moved, *bundle_referrer(ref))
    both_refuse(
        peers, tool_env, [*cosign_verify, *root, *identity, moved], ["verify", *root, *identity, moved]
    )

    production = ["--trusted-root", str(PRODUCTION_ROOT)]
    both_refuse(
        peers,
        tool_env,
        [*cosign_verify, *production, *identity, ref],
        ["verify", *production, *identity, ref],
    )


def test_cosign_signs_with_the_log_trust_checks_the_log(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    tmp_path: Path,
    local_sigstore: LocalSigstore,
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    content = b"signed by cosign with the log on"
    ref = image(oci11_registry, "interop/logged", content)
    sign = [
        peers.cosign,
        "sign",
        "--yes",
        "--key",
        str(key),
        *services(local_sigstore),
        *COSIGN_REGISTRY_FLAGS,
    ]
    run([*sign, ref], tool_env)

    root = ["--trusted-root", str(local_sigstore.trusted_root)]
    # cosign checks its own log entry (no --insecure-ignore-tlog), and so does trust
    run([peers.cosign, "verify", "--key", str(pub), *root, *COSIGN_REGISTRY_FLAGS, ref], tool_env)
    record = trust_record([TRUST, "verify", "--key", str(pub), *root, ref], tool_env)
    [signature] = record["signatures"]
    assert record["verified"] and "logged in Rekor at index" in signature["reason"]
    assert "timestamped at" in signature["reason"]

    cosign_verify = ["verify", *COSIGN_REGISTRY_FLAGS]
    both_refuse(
        peers,
        tool_env,
        [*cosign_verify, "--key", str(other), *root, ref],
        ["verify", "--key", str(other), *root, ref],
    )
    production = ["--trusted-root", str(PRODUCTION_ROOT)]
    both_refuse(
        peers,
        tool_env,
        [*cosign_verify, "--key", str(pub), *production, ref],
        ["verify", "--key", str(pub), *production, ref],
    )
    # The same image in another repository, with the same signature but a log checkpoint whose
    # signature is broken: only the log check can refuse it.
    copy = image(oci11_registry, "interop/logged-tampered", content)
    assert copy.split("@")[1] == ref.split("@")[1]
    manifest, bundle = bundle_referrer(ref)
    push_referrer(copy, manifest, broken_checkpoint(bundle))
    said = both_refuse(
        peers,
        tool_env,
        [*cosign_verify, "--key", str(pub), *root, copy],
        ["verify", "--key", str(pub), *root, copy, "--output", "json"],
    )
    assert "checkpoint: invalid signature" in said
    # and the untouched copy passes both (the twin differs by the flipped bit alone)
    intact = image(oci11_registry, "interop/logged-intact", content)
    push_referrer(intact, manifest, bundle)
    run([peers.cosign, "verify", "--key", str(pub), *root, *COSIGN_REGISTRY_FLAGS, intact], tool_env)
    run([TRUST, "verify", "--key", str(pub), *root, intact], tool_env)


def test_cosign_attests_keyless_trust_verifies(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    tmp_path: Path,
    local_sigstore: LocalSigstore,
) -> None:
    ref = image(oci11_registry, "interop/keyless-attested", b"attested keyless by cosign")
    predicate = tmp_path / "predicate.json"
    predicate.write_text(
        json.dumps({"buildDefinition": {"buildType": "x"}, "runDetails": {"builder": {"id": "ci"}}})
    )
    run(
        [
            peers.cosign,
            "attest",
            "--yes",
            *services(local_sigstore),
            *COSIGN_REGISTRY_FLAGS,
            "--identity-token",
            local_sigstore.issuer.token(ALICE),
            "--type",
            "slsaprovenance1",
            "--predicate",
            str(predicate),
            ref,
        ],
        tool_env,
    )
    root = ["--trusted-root", str(local_sigstore.trusted_root)]
    identity = ["--certificate-identity", ALICE, "--certificate-oidc-issuer", local_sigstore.issuer.url]
    check = ["verify-attestation", "--type", "slsaprovenance1", *root]
    run([peers.cosign, *check, *identity, *COSIGN_REGISTRY_FLAGS, ref], tool_env)
    [record] = json.loads(run([TRUST, *check, *identity, ref, "--output", "json"], tool_env).stdout)
    [attestation] = record["attestations"]
    assert attestation["outcome"] == "valid" and attestation["source"] == "bundle"
    assert attestation["statement"]["predicate"]["runDetails"]["builder"]["id"] == "ci"
    bob = [
        "--certificate-identity",
        "bob@example.test",
        "--certificate-oidc-issuer",
        local_sigstore.issuer.url,
    ]
    both_refuse(peers, tool_env, [*check, *bob, *COSIGN_REGISTRY_FLAGS, ref], [*check, *bob, ref])
    elsewhere = [
        "--certificate-identity",
        ALICE,
        "--certificate-oidc-issuer",
        local_sigstore.other_issuer.url,
    ]
    both_refuse(peers, tool_env, [*check, *elsewhere, *COSIGN_REGISTRY_FLAGS, ref], [*check, *elsewhere, ref])


def test_trust_signs_keyless_cosign_verifies(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    local_sigstore: LocalSigstore,
) -> None:
    # trust signs through the same services, read from the ClientTrustConfig (its signing config
    # names Rekor v2, which sigstore-python logs to); cosign checks the certificate, SCT, log
    # entry and timestamp against the trusted root.
    ref = image(oci11_registry, "interop/trust-keyless", b"signed keyless by trust")
    token = local_sigstore.issuer.token(ALICE)
    trust_sign = [TRUST, "sign", "--keyless", "--trust-config", str(local_sigstore.trust_config)]
    run([*trust_sign, "--identity-token", token, "--insecure-registry", oci11_registry.host, ref], tool_env)
    root = ["--trusted-root", str(local_sigstore.trusted_root)]
    identity = ["--certificate-identity", ALICE, "--certificate-oidc-issuer", local_sigstore.issuer.url]
    verified = run([peers.cosign, "verify", *root, *identity, *COSIGN_REGISTRY_FLAGS, ref], tool_env)
    assert "transparency log was verified" in verified.stderr
    _, bundle = bundle_referrer(ref)
    [entry] = bundle["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"]["version"] == "0.0.2"  # logged to Rekor v2
    record = trust_record([TRUST, "verify", *root, *identity, ref], tool_env)
    assert record["verified"]

    cosign_verify = ["verify", *COSIGN_REGISTRY_FLAGS]
    bob = [
        "--certificate-identity",
        "bob@example.test",
        "--certificate-oidc-issuer",
        local_sigstore.issuer.url,
    ]
    both_refuse(peers, tool_env, [*cosign_verify, *root, *bob, ref], ["verify", *root, *bob, ref])
    elsewhere = [
        "--certificate-identity",
        ALICE,
        "--certificate-oidc-issuer",
        local_sigstore.other_issuer.url,
    ]
    both_refuse(peers, tool_env, [*cosign_verify, *root, *elsewhere, ref], ["verify", *root, *elsewhere, ref])
    moved = image(oci11_registry, "interop/trust-keyless", b"never signed by trust")
    push_referrer(moved, *bundle_referrer(ref))
    both_refuse(
        peers, tool_env, [*cosign_verify, *root, *identity, moved], ["verify", *root, *identity, moved]
    )


def test_trust_signs_with_a_key_to_rekor_v2_cosign_verifies(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    tmp_path: Path,
    local_sigstore: LocalSigstore,
) -> None:
    # trust sign --key with the trust config: its signing config names Rekor v2 and a timestamp
    # authority, so the bundle referrer's signature is logged there as hashedrekord 0.0.2 and
    # timestamped; stock cosign checks the entry against the trusted root (no
    # --insecure-ignore-tlog), and so does trust.
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    content = b"signed by trust with a key, logged to Rekor v2"
    ref = image(oci11_registry, "interop/trust-key-v2", content)
    config = ["--trust-config", str(local_sigstore.trust_config)]
    run(
        [TRUST, "sign", "--key", str(key), *config, "--insecure-registry", oci11_registry.host, ref], tool_env
    )
    _, bundle = bundle_referrer(ref)
    [entry] = bundle["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    # Rekor v2 gives no SET and no time (its integratedTime is 0): the RFC 3161 timestamp is the time
    assert entry.get("integratedTime", "0") == "0" and "inclusionPromise" not in entry
    assert bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]

    root = ["--trusted-root", str(local_sigstore.trusted_root)]
    verified = run([peers.cosign, "verify", "--key", str(pub), *root, *COSIGN_REGISTRY_FLAGS, ref], tool_env)
    assert "transparency log was verified" in verified.stderr
    record = trust_record([TRUST, "verify", "--key", str(pub), *root, ref], tool_env)
    assert record["verified"]
    reasons = " ".join(signature["reason"] for signature in record["signatures"])
    assert "logged in Rekor at index" in reasons and "timestamped at" in reasons

    cosign_verify = ["verify", *COSIGN_REGISTRY_FLAGS]
    both_refuse(
        peers,
        tool_env,
        [*cosign_verify, "--key", str(other), *root, ref],
        ["verify", "--key", str(other), *root, ref],
    )
    production = ["--trusted-root", str(PRODUCTION_ROOT)]
    both_refuse(
        peers,
        tool_env,
        [*cosign_verify, "--key", str(pub), *production, ref],
        ["verify", "--key", str(pub), *production, ref],
    )
    copy = image(oci11_registry, "interop/trust-key-v2-tampered", content)
    manifest, _ = bundle_referrer(ref)
    push_referrer(copy, manifest, broken_checkpoint(bundle))
    both_refuse(
        peers,
        tool_env,
        [*cosign_verify, "--key", str(pub), *root, "--new-bundle-format", copy],
        ["verify", "--key", str(pub), *root, "--ignore-reference", copy],
    )


def test_trust_signs_and_attests_blobs_with_a_key_to_rekor_v2(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    tmp_path: Path,
    local_sigstore: LocalSigstore,
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    config = ["--trust-config", str(local_sigstore.trust_config)]
    root = ["--trusted-root", str(local_sigstore.trusted_root)]
    artifact = tmp_path / "release.tar"
    artifact.write_bytes(b"a release, signed by trust into Rekor v2")
    bundle = tmp_path / "release.sigstore.json"
    run([TRUST, "sign-blob", str(artifact), "--key", str(key), *config, "--bundle", str(bundle)], tool_env)
    [entry] = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"]["version"] == "0.0.2"
    run([TRUST, "verify-blob", str(artifact), "--bundle", str(bundle), "--key", str(pub), *root], tool_env)
    verify_blob = [peers.cosign, "verify-blob", "--key", str(pub), "--bundle", str(bundle), *root]
    run([*verify_blob, str(artifact)], tool_env)
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(artifact.read_bytes() + b"!")
    assert run([*verify_blob, str(tampered)], tool_env, ok=False).returncode != 0
    refused = run(
        [TRUST, "verify-blob", str(tampered), "--bundle", str(bundle), "--key", str(pub), *root],
        tool_env,
        ok=False,
    )
    assert refused.returncode == 3, refused.stderr

    # attest --key: the bundle referrer's DSSE signature is logged as hashedrekord 0.0.2 over the PAE
    ref = image(oci11_registry, "interop/trust-attest-v2", b"attested by trust, logged to Rekor v2")
    predicate = tmp_path / "provenance.json"
    predicate.write_text(
        json.dumps({"buildDefinition": {"buildType": "x"}, "runDetails": {"builder": {"id": "ci"}}})
    )
    attest = [TRUST, "attest", ref, "--predicate", str(predicate), "--type", "slsaprovenance1"]
    run([*attest, "--key", str(key), *config, "--insecure-registry", oci11_registry.host], tool_env)
    _, attested = bundle_referrer(ref)
    [entry] = attested["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    verify_attestation = ["verify-attestation", "--key", str(pub), "--type", "slsaprovenance1", *root]
    checked = run([peers.cosign, *verify_attestation, *COSIGN_REGISTRY_FLAGS, ref], tool_env)
    assert "transparency log was verified" in checked.stderr
    run([TRUST, *verify_attestation, ref], tool_env)
    # twins: a root that does not list the log, and the same statement attested without the log
    production = [
        "verify-attestation",
        "--key",
        str(pub),
        "--type",
        "slsaprovenance1",
        "--trusted-root",
        str(PRODUCTION_ROOT),
    ]
    both_refuse(peers, tool_env, [*production, *COSIGN_REGISTRY_FLAGS, ref], [*production, ref])
    unlogged = image(oci11_registry, "interop/trust-attest-unlogged", b"attested by trust, not logged")
    run(
        [
            TRUST,
            "attest",
            unlogged,
            *attest[3:],
            "--key",
            str(key),
            "--tlog-upload=false",
            "--insecure-registry",
            oci11_registry.host,
        ],
        tool_env,
    )
    both_refuse(
        peers,
        tool_env,
        [*verify_attestation, *COSIGN_REGISTRY_FLAGS, unlogged],
        [*verify_attestation, unlogged],
    )
