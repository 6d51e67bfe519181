"""Attestations end to end through a real registry: `attest` writes cosign's `.att` layer and a
Sigstore bundle referrer, `verify-attestation` / the policy read both, and every way a statement
can fail (wrong signer, PAE, subject, predicate type, payload type, condition) is refused for
its own reason with its own exit code."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.images import push_image, simple_image
from support.registry import Registry
from support.sigstore_mock import ISSUER, SigstoreMock
from support.vectors import VECTORS

from pull.digest import Digest
from trust.attest.envelope import Envelope, sign_envelope
from trust.attest.statement import build_statement
from trust.cli.app import main
from trust.keys.keyfiles import KeySigner, load_private_key_file

SLSA1 = "https://slsa.dev/provenance/v1"
PROVENANCE = {
    "buildDefinition": {
        "buildType": "https://actions.github.io/buildtypes/workflow/v1",
        "externalParameters": {"workflow": {"ref": "refs/heads/main", "repository": "https://x/app"}},
    },
    "runDetails": {"builder": {"id": "https://github.com/actions/runner"}},
}
ON_MAIN = (
    'predicate.runDetails.builder.id == "https://github.com/actions/runner" && '
    'predicate.buildDefinition.externalParameters.workflow.ref == "refs/heads/main"'
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRUST_PASSWORD", "pw")
    try:
        for name in ("release", "other"):
            assert main(["keygen", "--output-prefix", str(folder / name)]) == 0
    finally:
        mp.undo()
    return {name: folder / name for name in ("release", "other")}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRUST_PASSWORD", "pw")
    monkeypatch.setenv("TRUST_STORE", str(tmp_path / "store"))


@pytest.fixture
def predicate(tmp_path: Path) -> Path:
    path = tmp_path / "provenance.json"
    path.write_text(json.dumps(PROVENANCE))
    return path


def pushed(registry: Registry, repo: str, content: bytes = b"attested\n") -> str:
    image = push_image(registry, repo, simple_image(content), tag="v1")
    return f"{registry.host}/{repo}@{image.digest}"


def verify_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["verify-attestation", *args, "--output", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def attest(ref: str, predicate: Path, predicate_type: str, key: str, *more: str) -> int:
    """`trust attest` with a key, without the transparency log (these tests are offline)."""
    args = ["attest", "--tlog-upload=false", ref, "--predicate", str(predicate), "--type", predicate_type]
    return main([*args, "--key", key, *more])


def test_attest_writes_both_layouts_and_verify_reads_each(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = pushed(registry, repo_name)
    digest = ref.split("@")[1]
    key, pub = str(keys["release"].with_suffix(".key")), str(keys["release"].with_suffix(".pub"))
    assert attest(ref, predicate, "slsaprovenance1", key) == 0

    # cosign's layout: the .att tag, one DSSE layer annotated with the predicate type.
    att = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{digest.replace(':', '-')}.att",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    (layer,) = att["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"]["predicateType"] == SLSA1
    envelope = httpx.get(f"{registry.url}/v2/{repo_name}/blobs/{layer['digest']}").json()
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"][0]["digest"] == {"sha256": digest.split(":")[1]}
    assert statement["predicate"] == PROVENANCE

    # The bundle referrer (tag-schema fallback on this registry), annotated with the type.
    index = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{digest.replace(':', '-')}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    ).json()
    (entry,) = index["manifests"]
    assert entry["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert entry["annotations"]["dev.sigstore.bundle.predicateType"] == SLSA1

    code, records = verify_json(capsys, ref, "--type", "slsaprovenance1", "--key", pub)
    assert code == 0
    sources = {a["source"]: a for a in records[0]["attestations"]}
    assert set(sources) == {"att", "bundle"}
    assert all(a["outcome"] == "valid" for a in sources.values())
    assert sources["bundle"]["statement"]["predicate"] == PROVENANCE

    # Text output: the decoded statements on stdout, one JSON document per line (for jq).
    capsys.readouterr()
    assert main(["verify-attestation", ref, "--type", "slsaprovenance1", "--key", pub]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["predicateType"] == SLSA1 for line in lines)

    # Each layout alone is enough.
    for only in ("cosign", "bundle"):
        other = pushed(registry, f"{repo_name}-{only}", only.encode())
        assert attest(other, predicate, SLSA1, key, "--format", only) == 0
        code, records = verify_json(capsys, other, "--type", SLSA1, "--key", pub)
        assert code == 0
        assert [a["source"] for a in records[0]["attestations"]] == ["att" if only == "cosign" else "bundle"]


def test_a_second_attestation_is_appended_not_overwritten(
    registry: Registry, repo_name: str, keys: dict[str, Path], predicate: Path, tmp_path: Path
) -> None:
    ref = pushed(registry, repo_name)
    key = str(keys["release"].with_suffix(".key"))
    sbom = tmp_path / "sbom.json"
    sbom.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "packages": []}))
    assert attest(ref, predicate, "slsaprovenance1", key) == 0
    assert attest(ref, sbom, "spdxjson", key) == 0
    digest = ref.split("@")[1]
    att = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{digest.replace(':', '-')}.att",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    assert [layer["annotations"]["predicateType"] for layer in att["layers"]] == [
        SLSA1,
        "https://spdx.dev/Document",
    ]
    pub = str(keys["release"].with_suffix(".pub"))
    assert main(["verify-attestation", ref, "--type", "spdx", "--key", pub]) == 0
    assert main(["verify-attestation", ref, "--type", "slsaprovenance1", "--key", pub]) == 0


def test_refusals_name_their_cause(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = pushed(registry, repo_name)
    key = str(keys["release"].with_suffix(".key"))
    pub, other = str(keys["release"].with_suffix(".pub")), str(keys["other"].with_suffix(".pub"))
    assert attest(ref, predicate, "slsaprovenance1", key) == 0

    cases = [
        (["--type", "slsaprovenance1", "--key", other], "unknown-key"),
        (["--type", "cyclonedx", "--key", pub], "no attestations of type https://cyclonedx.org/bom"),
        (
            [
                "--type",
                "slsaprovenance1",
                "--key",
                pub,
                "--condition",
                'predicate.runDetails.builder.id == "x"',
            ],
            "condition is false",
        ),
        (
            ["--type", "slsaprovenance1", "--key", pub, "--condition", "predicate.nope.id == 1"],
            "could not be evaluated",
        ),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["verify-attestation", ref, *args]) == 3, args
        assert message in capsys.readouterr().err, args
    capsys.readouterr()
    assert (
        main(
            [
                "verify-attestation",
                ref,
                "--type",
                "slsaprovenance1",
                "--key",
                pub,
                "--condition",
                "predicate.x ==",
            ]
        )
        == 2
    )
    assert "does not compile" in capsys.readouterr().err
    assert main(["verify-attestation", ref, "--type", "not a type", "--key", pub]) == 2
    unpinned = ref.split("@")[0].rsplit("/", 1)[0] + f"/{repo_name}-missing@sha256:" + "0" * 64
    assert main(["verify-attestation", unpinned, "--type", "custom", "--key", pub]) in (4, 5)


def _push_att(
    registry: Registry, repo: str, digest: str, envelopes: list[Envelope], types: list[str]
) -> None:
    """Hand-made `.att` layers, pushed the way cosign lays them out."""
    from support.images import Pusher

    layers = []
    with Pusher(registry) as pusher:
        for envelope, kind in zip(envelopes, types, strict=True):
            data = envelope.to_json()
            pusher.blob(repo, data)
            layers.append(
                {
                    "mediaType": "application/vnd.dsse.envelope.v1+json",
                    "size": len(data),
                    "digest": str(Digest.of_bytes(data)),
                    "annotations": {"predicateType": kind, "dev.cosignproject.cosign/signature": ""},
                }
            )
        config = b"{}"
        pusher.blob(repo, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": 2,
                "digest": str(Digest.of_bytes(config)),
            },
            "layers": layers,
        }
        pusher.manifest(
            repo,
            digest.replace(":", "-") + ".att",
            json.dumps(manifest).encode(),
            "application/vnd.oci.image.manifest.v1+json",
        )


@pytest.mark.parametrize(
    ("tamper", "code", "message"),
    [
        ("raw-payload-signed", 3, "unknown-key"),
        ("other-digest", 3, "digest-mismatch"),
        ("not-in-toto", 4, "is not an in-toto statement"),
        ("not-json", 4, "not valid JSON"),
    ],
)
def test_hand_made_envelopes_are_refused(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    tamper: str,
    code: int,
    message: str,
) -> None:
    ref = pushed(registry, repo_name, tamper.encode())
    digest = Digest.parse(ref.split("@")[1])
    signer = KeySigner(load_private_key_file(keys["release"].with_suffix(".key"), lambda: b"pw"))
    about = Digest.of_bytes(b"another image") if tamper == "other-digest" else digest
    statement = build_statement(ref.split("@")[0], about, SLSA1, PROVENANCE)
    if tamper == "raw-payload-signed":  # a signature over the payload, not over the PAE
        envelope = Envelope("application/vnd.in-toto+json", statement, (signer.sign(statement),))
    elif tamper == "not-in-toto":
        envelope = sign_envelope("application/json", statement, signer)
    elif tamper == "not-json":
        envelope = sign_envelope("application/vnd.in-toto+json", b"{not json", signer)
    else:
        envelope = sign_envelope("application/vnd.in-toto+json", statement, signer)
    _push_att(registry, repo_name, str(digest), [envelope], [SLSA1])
    capsys.readouterr()
    pub = str(keys["release"].with_suffix(".pub"))
    assert main(["verify-attestation", ref, "--type", SLSA1, "--key", pub]) == code
    assert message in capsys.readouterr().err


def test_an_unannotated_statement_of_another_type_is_wrong_predicate_type(
    registry: Registry, repo_name: str, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ref = pushed(registry, repo_name)
    digest = Digest.parse(ref.split("@")[1])
    signer = KeySigner(load_private_key_file(keys["release"].with_suffix(".key"), lambda: b"pw"))
    statement = build_statement("x", digest, "https://cyclonedx.org/bom", {})
    # The annotation lies (says SLSA): only the signed statement counts.
    _push_att(
        registry,
        repo_name,
        str(digest),
        [sign_envelope("application/vnd.in-toto+json", statement, signer)],
        [SLSA1],
    )
    capsys.readouterr()
    assert (
        main(["verify-attestation", ref, "--type", SLSA1, "--key", str(keys["release"].with_suffix(".pub"))])
        == 3
    )
    assert "wrong-predicate-type" in capsys.readouterr().err


def write_policy(
    path: Path, pub: Path, scope: str, condition: str | None, kind: str = "slsaprovenance1"
) -> Path:
    condition_line = f"\n          condition: '{condition}'" if condition else ""
    path.write_text(
        f"""version: 1
authorities:
  release:
    cosign-keys: [{pub}]
rules:
  - scope: "{scope}"
    signed-by: [release]
    attestations:
        - name: built-by-ci
          predicate-type: {kind}
          signed-by: [release]{condition_line}
default:
  reject: true
"""
    )
    return path


def test_policy_requires_attestations(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = pushed(registry, repo_name)
    key, pub = str(keys["release"].with_suffix(".key")), keys["release"].with_suffix(".pub")
    scope = f"{registry.host}/{repo_name}"
    assert main(["sign", "--tlog-upload=false", "--key", key, ref]) == 0
    met = write_policy(tmp_path / "met.yaml", pub, scope, ON_MAIN)
    # Signed but not attested: denied, and the attestation is named.
    capsys.readouterr()
    assert main(["verify", "--policy", str(met), ref]) == 3
    assert "built-by-ci" in capsys.readouterr().err + capsys.readouterr().out

    assert attest(ref, predicate, "slsaprovenance1", key) == 0
    capsys.readouterr()
    assert main(["verify", "--policy", str(met), ref, "--output", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    (attested,) = record["evaluation"]["attestations"]
    assert attested["attestation"] == "built-by-ci" and attested["satisfied"] is True

    other_branch = write_policy(
        tmp_path / "branch.yaml", pub, scope, ON_MAIN.replace("refs/heads/main", "refs/heads/release")
    )
    capsys.readouterr()
    assert main(["verify", "--policy", str(other_branch), ref, "--output", "json"]) == 3
    (record,) = json.loads(capsys.readouterr().out)
    (attested,) = record["evaluation"]["attestations"]
    assert attested["satisfied"] is False and "condition is false" in attested["reason"]

    # verify-attestation --policy is the same gate.
    assert main(["verify-attestation", "--policy", str(met), ref]) == 0
    assert main(["verify-attestation", "--policy", str(other_branch), ref]) == 3


def test_policy_conditions_are_checked_at_load(
    tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pub = keys["release"].with_suffix(".pub")
    bad = write_policy(tmp_path / "bad.yaml", pub, "r.example/app", "predicate.x ==")
    capsys.readouterr()
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "does not compile" in err and "bad.yaml:12:" in err and "Traceback" not in err
    unknown = write_policy(tmp_path / "unknown.yaml", pub, "r.example/app", "nope == 1")
    assert main(["policy", "check", str(unknown)]) == 2
    assert "undeclared reference to 'nope'" in capsys.readouterr().err
    typo = write_policy(tmp_path / "typo.yaml", pub, "r.example/app", None, kind="slsa-provenance")
    assert main(["policy", "check", str(typo)]) == 2
    assert "unknown predicate type" in capsys.readouterr().err
    good = write_policy(tmp_path / "good.yaml", pub, "r.example/app", ON_MAIN)
    assert main(["policy", "check", str(good)]) == 0
    assert (
        "attestation built-by-ci: https://slsa.dev/provenance/v1 by release where" in capsys.readouterr().out
    )


def test_attest_blob_then_verify_blob_attestation(
    tmp_path: Path, keys: dict[str, Path], predicate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = tmp_path / "app.whl"
    artifact.write_bytes(b"wheel bytes")
    bundle = tmp_path / "app.whl.sigstore.json"
    key, pub = str(keys["release"].with_suffix(".key")), str(keys["release"].with_suffix(".pub"))
    assert (
        main(
            [
                "attest-blob",
                str(artifact),
                "--predicate",
                str(predicate),
                "--type",
                "slsaprovenance1",
                "--key",
                key,
                "--bundle",
                str(bundle),
            ]
        )
        == 0
    )
    capsys.readouterr()
    check = ["verify-blob-attestation", str(artifact), "--bundle", str(bundle), "--type", "slsaprovenance1"]
    assert main([*check, "--key", pub, "--condition", ON_MAIN]) == 0
    assert json.loads(capsys.readouterr().out)["predicate"] == PROVENANCE
    assert main([*check, "--key", str(keys["other"].with_suffix(".pub"))]) == 3
    artifact.write_bytes(b"tampered")
    capsys.readouterr()
    assert main([*check, "--key", pub]) == 3
    assert "digest-mismatch" in capsys.readouterr().err


REKOR_V2_DSSE = VECTORS / "sigstore-bundles" / "a.dsse.staging-rekor-v2.txt.sigstore.json"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)


@pytest.mark.parametrize(
    ("builder", "code"),
    [
        ("https://github.com/sigstore-conformance/rekor2-dsse-hashedrekord-regen", 0),
        ("https://evil.example", 3),
    ],
)
def test_the_rekor_v2_slsa_vector_with_a_condition(
    builder: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # The vector's subject digest is not that of any file beside it (sigstore-python's tests check
    # only the envelope), so the subject check is turned off as cosign's --check-claims=false does.
    folder = VECTORS / "sigstore-bundles"
    args = [
        "verify-blob-attestation",
        str(folder / "a.txt"),
        "--bundle",
        str(REKOR_V2_DSSE),
        "--type",
        "slsaprovenance1",
        "--check-claims=false",
        "--certificate-identity",
        BEACON,
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
        "--trusted-root",
        str(folder / "staging_trusted_root_rekor_v2.json"),
        "--condition",
        f'predicate.runDetails.builder.id == "{builder}"',
    ]
    assert main(args) == code
    capsys.readouterr()
    wrong_identity = [
        a if a != BEACON else BEACON.replace("refs/heads/main", "refs/heads/evil") for a in args
    ]
    assert main(wrong_identity) == 3
    assert "wrong-identity" in capsys.readouterr().err
    # With the subject checked, a.txt is not what the statement names: refused.
    checked = [a for a in args if a != "--check-claims=false"]
    assert main(checked) == 3
    # Another root: the chain does not verify.
    other_root = [*args[:-4], "--trusted-root", str(folder / "production_trusted_root.json")]
    capsys.readouterr()
    assert main(other_root) == 3


def test_tree_lists_signatures_attestations_and_referrers(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = pushed(registry, repo_name)
    key = str(keys["release"].with_suffix(".key"))
    assert main(["sign", "--tlog-upload=false", "--key", key, ref]) == 0
    assert attest(ref, predicate, "slsaprovenance1", key) == 0
    capsys.readouterr()
    assert main(["tree", ref, "--output", "json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert len(tree["signatures"]["layers"]) == 1
    assert [a["detail"] for a in tree["attestations"]["layers"]] == [SLSA1]
    # `sign` attaches a cosign v3 bundle too: two bundle referrers, told apart by predicate type.
    assert sorted((r["type"], r["detail"]) for r in tree["referrers"]) == [
        ("application/vnd.dev.sigstore.bundle.v0.3+json", "https://sigstore.dev/cosign/sign/v1"),
        ("application/vnd.dev.sigstore.bundle.v0.3+json", SLSA1),
    ]
    assert main(["tree", ref]) == 0
    text = capsys.readouterr().out
    assert ".att" in text and ".sig" in text and SLSA1 in text


def test_copy_carries_attestations(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = pushed(registry, repo_name)
    key, pub = str(keys["release"].with_suffix(".key")), str(keys["release"].with_suffix(".pub"))
    assert attest(ref, predicate, "slsaprovenance1", key) == 0
    target = f"{registry.host}/{repo_name}-copy:v1"
    assert main(["copy", ref, target]) == 0
    copied = f"{registry.host}/{repo_name}-copy@{ref.split('@')[1]}"
    assert main(["verify-attestation", copied, "--type", "slsaprovenance1", "--key", pub]) == 0
    layout = tmp_path / "usb"  # air-gapped: both layouts travel in an OCI layout too
    assert main(["copy", ref, f"oci:{layout}:v1"]) == 0
    capsys.readouterr()
    in_layout = f"oci:{layout}@{ref.split('@')[1]}"
    assert (
        main(["verify-attestation", in_layout, "--type", "slsaprovenance1", "--key", pub, "--output", "json"])
        == 0
    )
    (record,) = json.loads(capsys.readouterr().out)
    assert sorted(a["source"] for a in record["attestations"]) == ["att", "bundle"]


def test_explain_and_sarif_name_the_unmet_attestation(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = pushed(registry, repo_name)
    key, pub = str(keys["release"].with_suffix(".key")), keys["release"].with_suffix(".pub")
    assert main(["sign", "--tlog-upload=false", "--key", key, ref]) == 0
    policy = write_policy(tmp_path / "policy.yaml", pub, f"{registry.host}/{repo_name}", ON_MAIN)
    capsys.readouterr()
    assert main(["policy", "explain", "--policy", str(policy), ref]) == 3
    out = capsys.readouterr().out
    assert (
        "[PASS] release" in out and "[FAIL] attestation built-by-ci" in out and "no attestations found" in out
    )
    assert main(["verify", "--policy", str(policy), ref, "--output", "sarif"]) == 3
    (result,) = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    line = policy.read_text().splitlines().index("        - name: built-by-ci") + 1
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == line
    assert "attestation built-by-ci" in result["message"]["text"]


def test_run_admits_through_the_same_attestation_rules(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from support.images import build_image, busybox_layer
    from support.images import push_image as push

    image = push(registry, repo_name, build_image([busybox_layer()], cmd=["sh", "-c", "echo attested run"]))
    ref = f"{registry.host}/{repo_name}@{image.digest}"
    key, pub = str(keys["release"].with_suffix(".key")), keys["release"].with_suffix(".pub")
    assert main(["sign", "--tlog-upload=false", "--key", key, ref]) == 0
    scope = f"{registry.host}/{repo_name}"
    store = str(tmp_path / "run-store")
    wanted = write_policy(tmp_path / "wanted.yaml", pub, scope, ON_MAIN)
    capfd.readouterr()
    assert main(["run", "--rm", "--store", store, "--policy", str(wanted), ref]) == 3
    assert "attestation built-by-ci" in capfd.readouterr().err
    assert attest(ref, predicate, "slsaprovenance1", key) == 0
    capfd.readouterr()
    assert main(["run", "--rm", "--store", store, "--policy", str(wanted), ref]) == 0
    assert capfd.readouterr().out == "attested run\n"
    release_branch = write_policy(
        tmp_path / "release.yaml", pub, scope, ON_MAIN.replace("refs/heads/main", "refs/heads/release")
    )
    assert main(["run", "--rm", "--store", store, "--policy", str(release_branch), ref]) == 3
    assert "condition is false" in capfd.readouterr().err


# -- keyless, through the local Sigstore (Fulcio, Rekor, TSA) ------------------------------------


def test_keyless_attestations_end_to_end(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    tmp_path: Path,
    sigstore_mock: SigstoreMock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = pushed(registry, repo_name)
    key, pub = str(keys["release"].with_suffix(".key")), keys["release"].with_suffix(".pub")
    assert main(["sign", "--tlog-upload=false", "--key", key, ref]) == 0
    token = sigstore_mock.token("ci@example.test")
    assert (
        main(
            [
                "attest",
                ref,
                "--predicate",
                str(predicate),
                "--type",
                "slsaprovenance1",
                "--keyless",
                "--identity-token",
                token,
                "--trust-config",
                str(sigstore_mock.trust_config),
            ]
        )
        == 0
    )
    identity = [
        "--certificate-identity",
        "ci@example.test",
        "--certificate-oidc-issuer",
        ISSUER,
        "--trusted-root",
        str(sigstore_mock.trusted_root),
    ]
    capsys.readouterr()
    assert (
        main(["verify-attestation", ref, "--type", "slsaprovenance1", *identity, "--condition", ON_MAIN]) == 0
    )
    assert json.loads(capsys.readouterr().out)["predicate"] == PROVENANCE
    other = [a if a != "ci@example.test" else "someone@example.test" for a in identity]
    assert main(["verify-attestation", ref, "--type", "slsaprovenance1", *other]) == 3
    assert "wrong-identity" in capsys.readouterr().err
    production = [*identity[:-1], str(VECTORS / "sigstore-bundles" / "production_trusted_root.json")]
    assert main(["verify-attestation", ref, "--type", "slsaprovenance1", *production]) == 3

    def policy(subject: str) -> Path:
        path = tmp_path / f"{subject}.yaml"
        path.write_text(
            f"""version: 1
authorities:
  release:
    cosign-keys: [{pub}]
  ci:
    keyless:
      issuer: {ISSUER}
      subject: {subject}
      trusted-root: {sigstore_mock.trusted_root}
rules:
  - scope: "{registry.host}/{repo_name}"
    signed-by: [release]
    attestations:
      - name: built-by-ci
        predicate-type: slsaprovenance1
        signed-by: [ci]
        condition: '{ON_MAIN}'
default:
  reject: true
"""
        )
        return path

    assert main(["verify", "--policy", str(policy("ci@example.test")), ref]) == 0
    capsys.readouterr()
    assert main(["verify", "--policy", str(policy("someone@example.test")), ref, "--output", "json"]) == 3
    (record,) = json.loads(capsys.readouterr().out)
    (attested,) = record["evaluation"]["attestations"]
    assert attested["satisfied"] is False and "wrong-identity" in attested["reason"]


def test_keyless_attest_blob(
    tmp_path: Path, predicate: Path, sigstore_mock: SigstoreMock, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = tmp_path / "release.tar"
    artifact.write_bytes(b"release bytes")
    bundle = tmp_path / "release.tar.sigstore.json"
    token = sigstore_mock.token("ci@example.test")
    assert (
        main(
            [
                "attest-blob",
                str(artifact),
                "--predicate",
                str(predicate),
                "--type",
                "slsaprovenance1",
                "--keyless",
                "--identity-token",
                token,
                "--trust-config",
                str(sigstore_mock.trust_config),
                "--bundle",
                str(bundle),
            ]
        )
        == 0
    )
    check = [
        "verify-blob-attestation",
        str(artifact),
        "--bundle",
        str(bundle),
        "--type",
        "slsaprovenance1",
        "--certificate-oidc-issuer",
        ISSUER,
        "--trusted-root",
        str(sigstore_mock.trusted_root),
    ]
    assert main([*check, "--certificate-identity", "ci@example.test"]) == 0
    assert main([*check, "--certificate-identity", "someone@example.test"]) == 3
    artifact.write_bytes(b"tampered")
    assert main([*check, "--certificate-identity", "ci@example.test"]) == 3


def test_audit_rechecks_attestations_online_and_offline(
    fresh_registry: Any,
    repo_name: str,
    keys: dict[str, Path],
    predicate: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = fresh_registry()
    ref = pushed(registry, repo_name)
    key, pub = str(keys["release"].with_suffix(".key")), keys["release"].with_suffix(".pub")
    assert main(["sign", "--tlog-upload=false", "--key", key, ref]) == 0
    assert attest(ref, predicate, "slsaprovenance1", key) == 0
    scope = f"{registry.host}/{repo_name}"
    store = str(tmp_path / "audited")
    met = write_policy(tmp_path / "met.yaml", pub, scope, ON_MAIN)
    assert (
        main(["verify", "--policy", str(met), "--pull", "--store", store, ref]) == 0
    )  # pulls into the store
    release_branch = write_policy(
        tmp_path / "release.yaml", pub, scope, ON_MAIN.replace("refs/heads/main", "refs/heads/release")
    )
    capsys.readouterr()
    assert main(["audit", "--store", store, "--policy", str(met)]) == 0
    assert main(["audit", "--store", store, "--policy", str(release_branch), "--output", "json"]) == 3
    assert "attestation built-by-ci" in capsys.readouterr().out
    registry.stop()  # offline: the attestations read when the image was admitted are in the store
    assert main(["audit", "--store", store, "--policy", str(met), "--offline"]) == 0
    assert main(["audit", "--store", store, "--policy", str(release_branch), "--offline"]) == 3


def test_an_oversized_attestation_is_refused_unfetched(
    keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from hostile import HostileRegistry

    from trust.attest.attached import MAX_ENVELOPE_BYTES

    with HostileRegistry() as hostile:
        image = hostile.add_image("team/app", "v1", layers=[b"layer"])
        config = hostile.add_blob_content(b"{}")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config},
            "layers": [
                {  # a blob that does not exist: fetching it would be exit 5, not 4
                    "mediaType": "application/vnd.dsse.envelope.v1+json",
                    "size": MAX_ENVELOPE_BYTES + 1,
                    "digest": "sha256:" + "ab" * 32,
                    "annotations": {"predicateType": SLSA1},
                }
            ],
        }
        tag = image.digest.replace(":", "-") + ".att"
        hostile.add_manifest(
            "team/app", tag, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
        )
        capsys.readouterr()
        ref = f"{hostile.host}/team/app@{image.digest}"
        pub = str(keys["release"].with_suffix(".pub"))
        assert main(["verify-attestation", ref, "--type", SLSA1, "--key", pub]) == 4
        assert "envelope too large" in capsys.readouterr().err
        assert not [r for r in hostile.requests if "abababab" in r.path]
