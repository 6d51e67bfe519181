"""Sigstore signing end to end, offline, against a local Fulcio, Rekor and TSA (`sigstore_mock`):
keyless and key flows, images and files, every form `verify-blob` reads, and the upstream vectors
that sigstore-python 4.5 alone cannot verify (Rekor v2, DSSE with another predicate).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support.images import push_image, simple_image
from support.registry import Registry
from support.sigstore_mock import ISSUER, SigstoreMock
from support.vectors import VECTORS

from pull.clients import RegistryClients
from pull.digest import Digest
from pull.errors import UsageError
from pull.reference import Reference
from trust.attached import SignatureLocation, discover, fetch_bundles
from trust.attest import attestation_location, discover_attestations
from trust.cli.app import main
from trust.cosign.simple_signing import BUNDLE_ANNOTATION, RFC3161_TIMESTAMP_ANNOTATION, Reason
from trust.errors import SignatureInvalid
from trust.keys.keyfiles import TrustedKey
from trust.sigstore import verify_dsse_bundle
from trust.sigstore.authority import KeylessAuthority
from trust.sigstore.services import Instance, RekorLog
from trust.sigstore.trusted_root import load_trusted_root
from trust.sigstore.verifier import verify_rfc3161, verify_sigstore_bundle

BUNDLES = VECTORS / "sigstore-bundles"
ME = "dev@example.test"
IDENTITY = ["--certificate-identity", ME, "--certificate-oidc-issuer", ISSUER]


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    monkeypatch.setenv("TRUST_PASSWORD", "")
    assert main(["keygen", "--output-prefix", str(tmp_path / "k")]) == 0
    return tmp_path / "k.key", tmp_path / "k.pub"


def artifact(tmp_path: Path, text: str = "release bytes\n") -> Path:
    path = tmp_path / "release.txt"
    path.write_text(text)
    return path


def keyless_blob(mock: SigstoreMock, tmp_path: Path, subject: str = ME) -> tuple[Path, Path]:
    file = artifact(tmp_path)
    bundle = tmp_path / "release.sigstore.json"
    args = ["sign-blob", str(file), "--keyless", "--identity-token", mock.token(subject)]
    assert main([*args, "--trust-config", str(mock.trust_config), "--bundle", str(bundle)]) == 0
    return file, bundle


# --- files -------------------------------------------------------------------------------------------


def test_sign_blob_keyless_with_a_trust_config_verifies_and_refuses_what_it_must(
    sigstore_mock: SigstoreMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file, bundle = keyless_blob(sigstore_mock, tmp_path)
    document = json.loads(bundle.read_text())
    assert document["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"]["tlogEntries"][0]["kindVersion"]["kind"] == "hashedrekord"
    root = ["--trusted-root", str(sigstore_mock.trusted_root)]
    capsys.readouterr()
    assert main(["verify-blob", str(file), "--bundle", str(bundle), *root, *IDENTITY]) == 0
    assert f"signed by {ME}" in capsys.readouterr().err
    wrong = ["--certificate-identity", "mallory@example.test", "--certificate-oidc-issuer", ISSUER]
    assert main(["verify-blob", str(file), "--bundle", str(bundle), *root, *wrong]) == 3
    assert "wrong-identity" in capsys.readouterr().err
    # the public-good root (the default) does not trust the mock's Fulcio
    assert main(["verify-blob", str(file), "--bundle", str(bundle), *IDENTITY]) == 3
    assert "untrusted-certificate" in capsys.readouterr().err
    file.write_text("tampered\n")
    assert main(["verify-blob", str(file), "--bundle", str(bundle), *root, *IDENTITY]) == 3
    assert "digest-mismatch" in capsys.readouterr().err


def test_sign_blob_keyless_with_service_urls_instead_of_a_trust_config(
    sigstore_mock: SigstoreMock, tmp_path: Path
) -> None:
    file = artifact(tmp_path)
    bundle = tmp_path / "b.json"
    urls = ["--fulcio-url", sigstore_mock.url, "--rekor-url", sigstore_mock.url]
    args = ["sign-blob", str(file), "--keyless", "--identity-token", sigstore_mock.token(ME), *urls]
    assert main([*args, "--trusted-root", str(sigstore_mock.trusted_root), "--bundle", str(bundle)]) == 0
    material = json.loads(bundle.read_text())["verificationMaterial"]
    assert not material.get("timestampVerificationData", {}).get("rfc3161Timestamps")
    root = ["--trusted-root", str(sigstore_mock.trusted_root)]
    assert main(["verify-blob", str(file), "--bundle", str(bundle), *root, *IDENTITY]) == 0


def test_sign_blob_with_a_key_is_logged_and_the_log_checked_against_the_root(
    sigstore_mock: SigstoreMock, tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = keys
    file = artifact(tmp_path)
    logged, unlogged = tmp_path / "logged.json", tmp_path / "unlogged.json"
    tsa = ["--timestamp-server-url", sigstore_mock.tsa_url]
    args = ["sign-blob", str(file), "--key", str(private)]
    assert main([*args, "--rekor-url", sigstore_mock.url, *tsa, "--bundle", str(logged)]) == 0
    assert main([*args, "--tlog-upload=false", "--bundle", str(unlogged)]) == 0
    material = json.loads(logged.read_text())["verificationMaterial"]
    assert "publicKey" in material and material["timestampVerificationData"]["rfc3161Timestamps"]
    assert json.loads(unlogged.read_text())["verificationMaterial"]["tlogEntries"] == []
    root = ["--trusted-root", str(sigstore_mock.trusted_root)]
    verify = ["verify-blob", str(file), "--key", str(public)]
    capsys.readouterr()
    assert main([*verify, "--bundle", str(logged), *root]) == 0
    said = capsys.readouterr().err
    assert "logged in Rekor at index" in said and "timestamped at" in said
    # without a root the log is not looked at (cosign's --insecure-ignore-tlog); with one it is required
    assert main([*verify, "--bundle", str(unlogged)]) == 0
    assert main([*verify, "--bundle", str(unlogged), *root]) == 3
    assert "no transparency log entry" in capsys.readouterr().err
    # a root that does not list the mock's log refuses the entry
    staging = ["--trusted-root", str(BUNDLES / "staging_trusted_root.json")]
    assert main([*verify, "--bundle", str(logged), *staging]) == 3
    assert "not in" in capsys.readouterr().err
    # an entry that records another signature (CVE-2022-36056 shape) is refused
    document = json.loads(logged.read_text())
    other = json.loads(unlogged.read_text())
    document["messageSignature"] = other["messageSignature"]  # another valid signature, same key
    (tmp_path / "swapped.json").write_text(json.dumps(document))
    assert main([*verify, "--bundle", str(tmp_path / "swapped.json"), *root]) == 3
    assert "inconsistent" in capsys.readouterr().err


def test_key_signed_bundle_library_errors_name_the_log_entry(
    sigstore_mock: SigstoreMock, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    file = artifact(tmp_path)
    bundle = tmp_path / "b.json"
    assert (
        main(
            [
                "sign-blob",
                str(file),
                "--key",
                str(private),
                "--rekor-url",
                sigstore_mock.url,
                "--bundle",
                str(bundle),
            ]
        )
        == 0
    )
    root = load_trusted_root(sigstore_mock.trusted_root)
    trusted = [TrustedKey.from_file(public)]
    breakages: list[tuple[str, Any]] = [
        ("checkpoint", {"envelope": "not a signed note"}),
        ("hashes", ["AAAA"]),
        ("logIndex", "7"),
        ("treeSize", "zero"),
    ]
    for field, value in breakages:
        document = json.loads(bundle.read_text())
        document["verificationMaterial"]["tlogEntries"][0]["inclusionProof"][field] = value
        with pytest.raises(SignatureInvalid) as caught:
            verify_sigstore_bundle(json.dumps(document).encode(), root=root, keys=trusted)
        # named as the entry (verification) or its place in the bundle (the models' own checks)
        assert "log entry 0 (index" in str(caught.value) or "tlogEntries.0" in str(caught.value), field
        assert caught.value.reason in (Reason.BAD_SET, Reason.MALFORMED)


def test_cosign_pre_bundle_json_and_detached_signatures(
    sigstore_mock: SigstoreMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cosign v1/v2 `sign-blob --bundle` JSON and `--output-signature/--output-certificate` files,
    made here from a keyless bundle of the mock (same signature, certificate, SET, timestamp)."""
    file, bundle = keyless_blob(sigstore_mock, tmp_path)
    document = json.loads(bundle.read_text())
    material = document["verificationMaterial"]
    entry = material["tlogEntries"][0]
    der = base64.b64decode(material["certificate"]["rawBytes"])
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    rekor = {
        "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
        "Payload": {
            "body": entry["canonicalizedBody"],
            "integratedTime": int(entry["integratedTime"]),
            "logIndex": int(entry["logIndex"]),
            "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
        },
    }
    legacy = {
        "base64Signature": document["messageSignature"]["signature"],
        "cert": base64.b64encode(pem).decode(),
        "rekorBundle": rekor,
    }
    (tmp_path / "cosign.bundle").write_text(json.dumps(legacy))
    root = ["--trusted-root", str(sigstore_mock.trusted_root)]
    verify = ["verify-blob", str(file), *root, *IDENTITY]
    capsys.readouterr()
    assert main([*verify, "--bundle", str(tmp_path / "cosign.bundle")]) == 0
    assert "logged in Rekor" in capsys.readouterr().err
    legacy["base64Signature"] = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    (tmp_path / "bad.bundle").write_text(json.dumps(legacy))
    assert main([*verify, "--bundle", str(tmp_path / "bad.bundle")]) == 3

    (tmp_path / "release.sig").write_text(document["messageSignature"]["signature"])
    (tmp_path / "release.pem").write_bytes(pem)
    detached = [
        *verify,
        "--signature",
        str(tmp_path / "release.sig"),
        "--certificate",
        str(tmp_path / "release.pem"),
    ]
    assert main(detached) == 3  # nothing proves when it was signed
    assert "unproven" in capsys.readouterr().err
    stamp = material["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"]
    (tmp_path / "release.tsr.json").write_text(json.dumps({"SignedRFC3161Timestamp": stamp}))
    assert main([*detached, "--rfc3161-timestamp", str(tmp_path / "release.tsr.json")]) == 0
    assert "timestamped at" in capsys.readouterr().err


def test_a_dsse_bundle_verifies_when_the_file_is_a_subject_of_its_statement(
    sigstore_mock: SigstoreMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sigstore.dsse import Statement

    from trust.sigstore.sign import keyless_sign, obtain_identity_token

    file = artifact(tmp_path)
    digest = Digest.of_bytes(file.read_bytes())
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "release.txt", "digest": {"sha256": digest.hex}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {}},
    }
    instance = Instance(trust_config=sigstore_mock.trust_config)
    token = obtain_identity_token(sigstore_mock.token(ME), interactive=False)
    data = keyless_sign(instance, token, statement=Statement(json.dumps(statement).encode()))
    (tmp_path / "att.json").write_bytes(data)
    entry = json.loads(data)["verificationMaterial"]["tlogEntries"][0]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    verify = [
        "verify-blob",
        "--bundle",
        str(tmp_path / "att.json"),
        "--trusted-root",
        str(sigstore_mock.trusted_root),
    ]
    capsys.readouterr()
    assert main([*verify, str(file), *IDENTITY]) == 0
    assert "(DSSE)" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text("not the subject")
    assert main([*verify, str(other), *IDENTITY]) == 3
    assert "another digest" in capsys.readouterr().err
    # the attestation commands' entry point: the payload back, its meaning left to the caller
    who = KeylessAuthority(ME, ISSUER, None, ME, None, trusted_root=sigstore_mock.trusted_root)
    verified = verify_dsse_bundle(data, identity=who)
    assert verified.payload_type == "application/vnd.in-toto+json"
    assert json.loads(verified.payload or b"")["predicateType"] == "https://slsa.dev/provenance/v1"
    message_bundle = (
        keyless_blob(sigstore_mock, tmp_path / "m")[1] if (tmp_path / "m").mkdir() is None else None
    )
    assert message_bundle is not None
    with pytest.raises(SignatureInvalid, match="not a DSSE envelope"):
        verify_dsse_bundle(message_bundle.read_bytes(), identity=who)


# --- images ------------------------------------------------------------------------------------------


def test_sign_keyless_image_with_a_trust_config(
    sigstore_mock: SigstoreMock, registry: Registry, repo_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    sign = [
        "sign",
        "--keyless",
        "--identity-token",
        sigstore_mock.token(ME),
        "--insecure-registry",
        registry.host,
    ]
    assert main([*sign, "--trust-config", str(sigstore_mock.trust_config), ref]) == 0
    root = ["--trusted-root", str(sigstore_mock.trusted_root), "--insecure-registry", registry.host]
    capsys.readouterr()
    assert main(["verify", *root, *IDENTITY, ref]) == 0
    assert f"signed by {ME}" in capsys.readouterr().err
    wrong = ["--certificate-identity", "mallory@example.test", "--certificate-oidc-issuer", ISSUER]
    assert main(["verify", *root, *wrong, ref]) == 3
    assert main(["verify", "--insecure-registry", registry.host, *IDENTITY, ref]) == 3  # public-good root


def test_sign_with_a_key_logs_to_rekor_and_writes_the_bundle_referrer(
    sigstore_mock: SigstoreMock,
    registry: Registry,
    repo_name: str,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    private, public = keys
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    insecure = ["--insecure-registry", registry.host]
    tsa = ["--timestamp-server-url", sigstore_mock.tsa_url]
    assert main(["sign", "--key", str(private), "--rekor-url", sigstore_mock.url, *tsa, *insecure, ref]) == 0
    reference = Reference.parse(ref)
    digest = Digest.parse(pushed.digest)
    with RegistryClients.insecure([registry.host]) as clients:
        attached = discover(
            clients(reference.api_host),
            reference.repository,
            digest,
            SignatureLocation.for_image(reference, digest),
        )
        bundles = fetch_bundles(clients(reference.api_host), reference.repository, digest)
    (layer,) = attached.layers
    assert BUNDLE_ANNOTATION in layer.annotations and RFC3161_TIMESTAMP_ANNOTATION in layer.annotations
    (bundle,) = [data for _, data in bundles]
    kinds = [e["kindVersion"]["kind"] for e in json.loads(bundle)["verificationMaterial"]["tlogEntries"]]
    assert kinds == ["dsse"]
    root = ["--trusted-root", str(sigstore_mock.trusted_root)]
    capsys.readouterr()
    assert main(["verify", "--key", str(public), *root, *insecure, "-o", "json", ref]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [s["outcome"] for s in record["signatures"]] == ["valid", "valid"]
    assert all(s["rekor"] is not None for s in record["signatures"][:1])
    staging = ["--trusted-root", str(BUNDLES / "staging_trusted_root.json")]
    assert main(["verify", "--key", str(public), *staging, *insecure, ref]) == 3


def test_sign_with_tlog_upload_false_and_an_unreachable_rekor(
    registry: Registry, repo_name: str, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = keys
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    insecure = ["--insecure-registry", registry.host]
    # a log that is not there: exit 5, and nothing is pushed
    assert main(["sign", "--key", str(private), "--rekor-url", "http://127.0.0.1:9", *insecure, ref]) == 5
    assert main(["verify", "--key", str(public), *insecure, ref]) == 3
    assert main(["sign", "--key", str(private), "--tlog-upload=false", *insecure, ref]) == 0
    assert main(["verify", "--key", str(public), *insecure, ref]) == 0
    assert main(["sign", "--key", str(private), "--tlog-upload=maybe", *insecure, ref]) == 2


# --- vectors and verification details --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "artifact_name", "root", "identity", "issuer"),
    [
        (
            "staging-rekor-v2.txt.sigstore.json",
            "staging-rekor-v2.txt",
            "staging_trusted_root_rekor_v2.json",
            "jku@goto.fi",
            "https://github.com/login/oauth",
        ),
        (
            "bundle_v3_github.whl.sigstore",
            "bundle_v3_github.whl",
            None,
            "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
            "https://token.actions.githubusercontent.com",
        ),
    ],
)
def test_new_vectors_verify(
    name: str, artifact_name: str, root: str | None, identity: str, issuer: str
) -> None:
    args = ["verify-blob", str(BUNDLES / artifact_name), "--bundle", str(BUNDLES / name)]
    args += ["--certificate-identity", identity, "--certificate-oidc-issuer", issuer]
    if root is not None:
        args += ["--trusted-root", str(BUNDLES / root)]
    assert main(args) == 0


def test_rekor_v2_dsse_vector_verifies_and_returns_its_slsa_statement() -> None:
    data = (BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    who = KeylessAuthority(
        "beacon",
        "https://token.actions.githubusercontent.com",
        None,
        None,
        __import__("re").compile(r"https://github\.com/sigstore-conformance/.*"),
        trusted_root=BUNDLES / "staging_trusted_root_rekor_v2.json",
    )
    verified = verify_dsse_bundle(data, identity=who)
    statement = json.loads(verified.payload or b"")
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert verified.log_entries[0].kind == "hashedrekord"
    # a tampered payload no longer verifies
    document = json.loads(data)
    document["dsseEnvelope"]["payload"] = base64.b64encode(b'{"_type":"x"}').decode()
    with pytest.raises(SignatureInvalid):
        verify_dsse_bundle(json.dumps(document).encode(), identity=who)


@pytest.mark.parametrize("omitted", ["logIndex", "hashes"])
def test_log_entry_fields_at_their_proto3_default_may_be_omitted(omitted: str) -> None:
    # proto3's JSON mapping leaves out a field at its default: cosign writes the first entry of a
    # Rekor v2 log without `logIndex` (0) and a one-entry tree's proof without `hashes` (found
    # against a real rekor-tiles, tests/interop/test_interop_sigstore.py). An absent field is
    # read as its default, so here the proof is checked (and fails, at index 0 / with no hashes)
    # instead of the bundle being refused as malformed for a missing field.
    document = json.loads((BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes())
    [entry] = document["verificationMaterial"]["tlogEntries"]
    if omitted == "logIndex":
        del entry["logIndex"], entry["inclusionProof"]["logIndex"]
    else:
        del entry["inclusionProof"]["hashes"]
    who = KeylessAuthority(
        "beacon",
        "https://token.actions.githubusercontent.com",
        None,
        None,
        __import__("re").compile(r"https://github\.com/sigstore-conformance/.*"),
        trusted_root=BUNDLES / "staging_trusted_root_rekor_v2.json",
    )
    with pytest.raises(SignatureInvalid) as refused:
        verify_dsse_bundle(json.dumps(document).encode(), identity=who)
    assert refused.value.reason == Reason.BAD_SET and "inclusion proof" in str(refused.value)


def test_a_timestamp_at_the_end_of_the_authority_validity_is_accepted(
    sigstore_mock: SigstoreMock, tmp_path: Path
) -> None:
    from rfc3161_client import decode_timestamp_response

    _, bundle = keyless_blob(sigstore_mock, tmp_path)
    document = json.loads(bundle.read_text())
    der = base64.b64decode(
        document["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0][
            "signedTimestamp"
        ]
    )
    signature = base64.b64decode(document["messageSignature"]["signature"])
    gen_time = decode_timestamp_response(der).tst_info.gen_time

    def root_ending(end: Any) -> Path:
        root = json.loads(sigstore_mock.trusted_root.read_text())
        root["timestampAuthorities"][0]["validFor"]["end"] = end.isoformat().replace("+00:00", "Z")
        path = tmp_path / f"root-{end.timestamp()}.json"
        path.write_text(json.dumps(root))
        return path

    at_end = load_trusted_root(root_ending(gen_time))
    assert verify_rfc3161(der, signature, at_end) == gen_time
    before = load_trusted_root(root_ending(gen_time - timedelta(microseconds=1000)))
    assert verify_rfc3161(der, signature, before) is None
    # sigstore-python's own check excludes the end (the upstream bug trust works around)
    assert at_end.verifier._verify_signed_timestamp(decode_timestamp_response(der), signature) is None


def test_signing_services_errors_are_usage_errors(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, _ = keys
    file = artifact(tmp_path)
    out = ["--bundle", str(tmp_path / "b.json")]
    assert (
        main(["sign-blob", str(file), "--key", str(private), "--trust-config", str(tmp_path / "none"), *out])
        == 2
    )
    (tmp_path / "bad.json").write_text(json.dumps({"mediaType": "something else"}))
    assert (
        main(
            [
                "sign-blob",
                str(file),
                "--key",
                str(private),
                "--trust-config",
                str(tmp_path / "bad.json"),
                *out,
            ]
        )
        == 2
    )
    assert main(["sign-blob", str(file), "--key", str(private), "--rekor-url", "ftp://x", *out]) == 2
    assert main(["sign-blob", str(file), *out]) == 2
    assert main(["sign-blob", str(file), "--key", str(private), "--keyless", *out]) == 2
    assert not (tmp_path / "b.json").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".trust-")]


# --- which log a key's signature goes to, and what is refused before anything is signed ------------


def _trust_config(path: Path, logs: list[dict[str, Any]], tsa: bool = True) -> Path:
    """A ClientTrustConfig whose signing config lists `logs` (and a TSA unless not `tsa`)."""
    signing: dict[str, Any] = {
        "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
        "rekorTlogUrls": logs,
        "tsaUrls": [{"url": "http://127.0.0.1:9/api/v1/timestamp", "majorApiVersion": 1}] if tsa else [],
    }
    root = json.loads((BUNDLES / "staging_trusted_root.json").read_text())
    document = {
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": root,
        "signingConfig": signing,
    }
    path.write_text(json.dumps(document))
    return path


def _log(
    url: str, version: int, start: str = "2024-01-01T00:00:00Z", end: str | None = None
) -> dict[str, Any]:
    valid: dict[str, str] = {"start": start} | ({"end": end} if end else {})
    return {"url": url, "majorApiVersion": version, "validFor": valid}


def test_the_log_is_the_highest_api_version_valid_now(tmp_path: Path) -> None:
    v1, v2, old_v2, new_v2 = "http://v1.test", "http://v2.test", "http://old-v2.test", "http://new-v2.test"
    both = _trust_config(tmp_path / "both.json", [_log(v1, 1), _log(v2, 2)])
    assert Instance(trust_config=both).rekor() == RekorLog(v2, 2)  # as cosign v3 and sigstore-go pick
    ended = _trust_config(tmp_path / "ended.json", [_log(v1, 1), _log(v2, 2, end="2025-01-01T00:00:00Z")])
    assert Instance(trust_config=ended).rekor() == RekorLog(v1, 1)
    future = _trust_config(tmp_path / "future.json", [_log(v1, 1), _log(v2, 2, start="2999-01-01T00:00:00Z")])
    assert Instance(trust_config=future).rekor() == RekorLog(v1, 1)
    newest = _trust_config(
        tmp_path / "newest.json", [_log(old_v2, 2), _log(new_v2, 2, start="2025-06-01T00:00:00Z")]
    )
    assert Instance(trust_config=newest).rekor() == RekorLog(new_v2, 2)
    assert Instance(trust_config=both, rekor_url="http://mine.test/").rekor() == RekorLog(
        "http://mine.test", 1
    )
    assert Instance().rekor().major_version == 1  # the public-good log
    none = _trust_config(tmp_path / "none.json", [_log(v2, 2, end="2025-01-01T00:00:00Z")])
    with pytest.raises(UsageError, match="lists no Rekor log valid now"):
        Instance(trust_config=none).rekor()


def test_rekor_v2_refusals_come_before_anything_is_signed(
    tmp_path: Path,
    registry: Registry,
    repo_name: str,
    keys: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    private, public = keys
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    insecure = ["--insecure-registry", registry.host]
    # Nothing listens on the log: each refusal must come before any request (else exit 5).
    untimed = _trust_config(tmp_path / "untimed.json", [_log("http://127.0.0.1:9", 2)], tsa=False)
    v2 = _trust_config(tmp_path / "v2.json", [_log("http://127.0.0.1:9", 2)])
    file = artifact(tmp_path)
    capsys.readouterr()
    assert main(["sign", "--key", str(private), "--trust-config", str(untimed), *insecure, ref]) == 2
    assert "Rekor v2 (http://127.0.0.1:9) records no signing time" in capsys.readouterr().err
    bundle = ["--bundle", str(tmp_path / "b.json")]
    assert main(["sign-blob", str(file), "--key", str(private), "--trust-config", str(untimed), *bundle]) == 2
    elsewhere = ["--signature-repository", f"{registry.host}/{repo_name}-sigs"]
    assert main(["sign", "--key", str(private), "--trust-config", str(v2), *elsewhere, *insecure, ref]) == 2
    assert "travels in the Sigstore bundle referrer" in capsys.readouterr().err
    predicate = tmp_path / "p.json"
    predicate.write_text("{}")
    attest = ["attest", ref, "--predicate", str(predicate), "--key", str(private), *insecure]
    assert main([*attest, "--format", "cosign"]) == 2  # the log (public good by default) needs a bundle
    assert "use --format bundle" in capsys.readouterr().err
    assert main([*attest, "--trust-config", str(untimed)]) == 2
    # an Ed25519 key signs the message itself, not a digest: Rekor v2 cannot take it
    monkeypatch.setenv("TRUST_PASSWORD", "")
    ed = tmp_path / "ed.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert main(["sign-blob", str(file), "--key", str(ed), "--trust-config", str(v2), *bundle]) == 2
    assert "Rekor v2 logs ECDSA" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
    assert main(["verify", "--key", str(public), *insecure, ref]) == 3  # nothing was attached


def test_attest_with_a_key_logs_the_bundle_and_the_log_is_checked(
    sigstore_mock: SigstoreMock,
    registry: Registry,
    repo_name: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Rekor v1 (the npm stand-in): the bundle referrer's envelope is logged as a `dsse` entry;
    # `verify-attestation --key --trusted-root` requires and checks it.
    private, public = keys
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    insecure = ["--insecure-registry", registry.host]
    predicate = tmp_path / "provenance.json"
    predicate.write_text(json.dumps({"buildDefinition": {"buildType": "x"}}))
    attest = [
        "attest",
        ref,
        "--predicate",
        str(predicate),
        "--type",
        "slsaprovenance1",
        "--key",
        str(private),
    ]
    logged = [*attest, "--trust-config", str(sigstore_mock.trust_config), *insecure]
    assert main(logged) == 0
    reference, digest = Reference.parse(ref), Digest.parse(pushed.digest)
    with RegistryClients.insecure([registry.host]) as clients:
        location = attestation_location(SignatureLocation.for_image(reference, digest))
        found = discover_attestations(clients(reference.api_host), reference.repository, digest, location)
    [bundle] = [attestation.bundle for attestation in found if attestation.bundle is not None]
    [entry] = json.loads(bundle)["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    check = ["verify-attestation", ref, "--type", "slsaprovenance1", "--key", str(public), *insecure]
    assert main([*check, "--trusted-root", str(sigstore_mock.trusted_root)]) == 0
    assert main(check) == 0  # without a root, the log is not looked at (cosign --insecure-ignore-tlog)
    capsys.readouterr()
    staging = ["--trusted-root", str(BUNDLES / "staging_trusted_root.json")]
    assert main([*check, *staging]) == 3  # a root that does not list the stand-in's log

    # unlogged: accepted by key alone, refused when the log is required
    second = push_image(registry, repo_name, simple_image(b"other"), tag="v2")
    other = f"{registry.host}/{repo_name}@{second.digest}"
    assert main([*attest[:1], other, *attest[2:], "--tlog-upload=false", *insecure]) == 0
    unlogged = ["verify-attestation", other, "--type", "slsaprovenance1", "--key", str(public), *insecure]
    assert main(unlogged) == 0
    assert main([*unlogged, "--trusted-root", str(sigstore_mock.trusted_root)]) == 3
