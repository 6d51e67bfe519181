"""Attestations between cosign v3 and trust, both directions, both layouts, with negative twins.

| made by                                          | checked by |
|--------------------------------------------------|------------|
| cosign attest --key (v3: bundle referrer)        | trust verify-attestation, verify --policy |
| cosign attest --key --new-bundle-format=false    | trust verify-attestation (the .att tag) |
| trust attest --format cosign                     | cosign verify-attestation (both bundle modes) |
| trust attest --format bundle                     | cosign verify-attestation (v3 bundle mode) |

The transparency log is off on both sides, as in the signature cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import OCI11Registry, Peers
from interop_support import TRUST, run
from test_interop_cosign import COSIGN_REGISTRY_FLAGS, NO_TLOG, cosign_keys, image

SLSA1 = "https://slsa.dev/provenance/v1"
PREDICATE = {
    "buildDefinition": {"buildType": "x"},
    "runDetails": {"builder": {"id": "https://ci.example/runner"}},
}


def predicate_file(folder: Path) -> Path:
    path = folder / "predicate.json"
    path.write_text(json.dumps(PREDICATE))
    return path


@pytest.mark.parametrize("bundle", [True, False], ids=["v3-bundle-referrer", "legacy-att-tag"])
def test_cosign_attests_trust_verifies(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path, bundle: bool
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    repository = f"interop/attested-{str(bundle).lower()}"
    ref = image(oci11_registry, repository, f"attested by cosign {bundle}".encode())
    form = [] if bundle else ["--new-bundle-format=false"]
    run(
        [
            peers.cosign,
            "attest",
            "--key",
            str(key),
            "--type",
            "slsaprovenance1",
            "--predicate",
            str(predicate_file(tmp_path)),
            "--yes",
            *NO_TLOG,
            *form,
            *COSIGN_REGISTRY_FLAGS,
            ref,
        ],
        tool_env,
    )
    result = run(
        [
            TRUST,
            "verify-attestation",
            ref,
            "--type",
            "slsaprovenance1",
            "--key",
            str(pub),
            "--output",
            "json",
        ],
        tool_env,
    )
    [record] = json.loads(result.stdout)
    [attestation] = record["attestations"]
    assert attestation["source"] == ("bundle" if bundle else "att")
    assert attestation["outcome"] == "valid" and attestation["statement"]["predicate"] == PREDICATE
    # The negative twins: another key, another type, a false condition.
    assert (
        run(
            [TRUST, "verify-attestation", ref, "--type", "slsaprovenance1", "--key", str(other)],
            tool_env,
            ok=False,
        ).returncode
        == 3
    )
    assert (
        run(
            [TRUST, "verify-attestation", ref, "--type", "spdxjson", "--key", str(pub)], tool_env, ok=False
        ).returncode
        == 3
    )
    false = 'predicate.runDetails.builder.id == "https://evil.example"'
    assert (
        run(
            [
                TRUST,
                "verify-attestation",
                ref,
                "--type",
                "slsaprovenance1",
                "--key",
                str(pub),
                "--condition",
                false,
            ],
            tool_env,
            ok=False,
        ).returncode
        == 3
    )

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nauthorities:\n  release:\n    cosign-keys: [{pub}]\n"
        f"rules:\n  - scope: {oci11_registry.host}/interop/*\n    signed-by: [release]\n"
        "    attestations:\n      - name: provenance\n        predicate-type: slsaprovenance1\n"
        "        signed-by: [release]\n"
        "        condition: 'predicate.runDetails.builder.id == \"https://ci.example/runner\"'\n"
        "default:\n  reject: true\n"
    )
    run(
        [peers.cosign, "sign", "--key", str(key), "--yes", *NO_TLOG, *form, *COSIGN_REGISTRY_FLAGS, ref],
        tool_env,
    )
    decided = run([TRUST, "verify", "--policy", str(policy), "--output", "json", ref], tool_env, ok=False)
    assert decided.returncode == 0, decided.stdout + decided.stderr
    [gate] = json.loads(decided.stdout)
    assert [a["satisfied"] for a in gate["evaluation"]["attestations"]] == [True]


@pytest.mark.parametrize("layout", ["cosign", "bundle"])
def test_trust_attests_cosign_verifies(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path, layout: str
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    ref = image(oci11_registry, f"interop/trust-attested-{layout}", f"attested by trust, {layout}".encode())
    run(
        [
            TRUST,
            "attest",
            "--tlog-upload=false",
            ref,
            "--predicate",
            str(predicate_file(tmp_path)),
            "--type",
            "slsaprovenance1",
            "--key",
            str(key),
            "--format",
            layout,
        ],
        tool_env,
    )
    modes = ["true", "false"] if layout == "cosign" else ["true"]  # cosign v2 mode reads only .att
    for mode in modes:
        check = [
            "verify-attestation",
            "--type",
            "slsaprovenance1",
            "--insecure-ignore-tlog",
            f"--new-bundle-format={mode}",
            *COSIGN_REGISTRY_FLAGS,
        ]
        verified = run([peers.cosign, *check, "--key", str(pub), ref], tool_env, ok=False)
        assert verified.returncode == 0, verified.stderr
        refused = run([peers.cosign, *check, "--key", str(other), ref], tool_env, ok=False)
        assert refused.returncode != 0
