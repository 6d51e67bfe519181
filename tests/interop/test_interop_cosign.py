"""cosign (v3, built by scripts/peers.sh) and trust, both directions, every cell with its negative twin.

| made by                                  | checked by |
|------------------------------------------|------------|
| cosign sign --key (v3 bundle, referrers) | trust verify --key, and trust verify --policy |
| cosign sign --key (legacy .sig tag)      | trust verify --key |
| trust sign --key                         | cosign verify --key |
| cosign save (an OCI layout)              | trust verify oci:DIR |
| trust copy to an OCI layout              | cosign verify --local-image |

The transparency log is off on both sides here, except in the last cell (trust logs to the npm
stand-in's Rekor v1, cosign checks it); cosign signing keyless or with the log, against Sigstore's
own services, is in test_interop_sigstore.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import OCI11Registry, Peers
from interop_support import TRUST, run
from support.images import push_image, simple_image
from support.sigstore_mock import SigstoreMock
from support.vectors import VECTORS

COSIGN_REGISTRY_FLAGS = ["--allow-http-registry", "--allow-insecure-registry"]
NO_TLOG = ["--use-signing-config=false", "--tlog-upload=false"]


def cosign_keys(peers: Peers, env: dict[str, str], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    run([peers.cosign, "generate-key-pair", "--output-key-prefix", str(folder / "cosign")], env)
    return folder / "cosign.key", folder / "cosign.pub"


def image(registry: OCI11Registry, repository: str, content: bytes) -> str:
    pushed = push_image(registry.host, repository, simple_image(content), tag="v1")
    return f"{registry.host}/{repository}@{pushed.digest}"


@pytest.mark.parametrize("bundle", [True, False], ids=["v3-bundle-referrer", "legacy-sig-tag"])
def test_cosign_signs_trust_verifies(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path, bundle: bool
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    ref = image(
        oci11_registry, f"interop/cosign-{str(bundle).lower()}", f"signed by cosign {bundle}".encode()
    )
    unsigned = image(oci11_registry, f"interop/cosign-{str(bundle).lower()}", b"not signed")
    form = [] if bundle else ["--new-bundle-format=false"]
    run(
        [peers.cosign, "sign", "--key", str(key), "--yes", *NO_TLOG, *form, *COSIGN_REGISTRY_FLAGS, ref],
        tool_env,
    )
    if bundle:  # cosign v3 put a Sigstore bundle in a referrer, listed by the real referrers API
        name, _, digest = ref.partition("@")
        repository = name.split("/", 1)[1]
        listing = httpx.get(f"http://{oci11_registry.host}/v2/{repository}/referrers/{digest}").json()
        kinds = [entry.get("artifactType") for entry in listing["manifests"]]
        assert kinds == ["application/vnd.dev.sigstore.bundle.v0.3+json"]
    assert run([TRUST, "verify", "--key", str(pub), ref], tool_env).returncode == 0

    # the negative twins, decided the same way by both tools
    cosign_other = run(
        [peers.cosign, "verify", "--key", str(other), "--insecure-ignore-tlog", *COSIGN_REGISTRY_FLAGS, ref],
        tool_env,
        ok=False,
    )
    trust_other = run([TRUST, "verify", "--key", str(other), ref], tool_env, ok=False)
    assert cosign_other.returncode != 0 and trust_other.returncode == 3
    cosign_unsigned = run(
        [
            peers.cosign,
            "verify",
            "--key",
            str(pub),
            "--insecure-ignore-tlog",
            *COSIGN_REGISTRY_FLAGS,
            unsigned,
        ],
        tool_env,
        ok=False,
    )
    trust_unsigned = run([TRUST, "verify", "--key", str(pub), unsigned], tool_env, ok=False)
    assert cosign_unsigned.returncode != 0 and trust_unsigned.returncode == 3
    assert "no signatures found" in cosign_unsigned.stderr and "no signature" in trust_unsigned.stderr


def test_a_cosign_v3_bundle_passes_a_trust_policy(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    ref = image(oci11_registry, "interop/policy", b"policy-checked")
    run([peers.cosign, "sign", "--key", str(key), "--yes", *NO_TLOG, *COSIGN_REGISTRY_FLAGS, ref], tool_env)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nauthorities:\n  release:\n    cosign-keys: [{pub}]\n"
        f"rules:\n  - scope: {oci11_registry.host}/interop/*\n    signed-by: [release]\n"
        "default:\n  reject: true\n"
    )
    result = run([TRUST, "verify", "--policy", str(policy), "--output", "json", ref], tool_env)
    [record] = json.loads(result.stdout)
    assert record["outcome"] == "allowed" and record["evaluation"]["decision"] == "allow"


def test_trust_signs_cosign_verifies(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    ref = image(oci11_registry, "interop/trust-signed", b"signed by trust")
    other_image = image(oci11_registry, "interop/trust-signed", b"another image, same repository")
    run(
        [TRUST, "sign", "--tlog-upload=false", "--key", str(key), ref], tool_env
    )  # the cosign key file, read by trust

    verified = run(
        [peers.cosign, "verify", "--key", str(pub), "--insecure-ignore-tlog", *COSIGN_REGISTRY_FLAGS, ref],
        tool_env,
    )
    [claim] = json.loads(verified.stdout)
    assert claim["critical"]["image"]["docker-manifest-digest"] == ref.rpartition("@")[2]
    # From the `.sig` payload cosign reports the repository; from the v3 bundle trust attaches too
    # (which cosign v3 prefers), the reference it was asked about.
    assert claim["critical"]["identity"]["docker-reference"] in (ref.rpartition("@")[0], ref)

    for command_key, target in [(other, ref), (pub, other_image)]:
        check = ["verify", "--key", str(command_key), "--insecure-ignore-tlog", *COSIGN_REGISTRY_FLAGS]
        by_cosign = run(
            [peers.cosign, *check, target],
            tool_env,
            ok=False,
        )
        by_trust = run([TRUST, "verify", "--key", str(command_key), target], tool_env, ok=False)
        assert by_cosign.returncode != 0 and by_trust.returncode == 3


def test_cosign_save_layout_verifies_with_trust(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    ref = image(oci11_registry, "interop/saved", b"saved by cosign")
    form = ["--new-bundle-format=false"]  # cosign save carries the .sig tag form
    run(
        [peers.cosign, "sign", "--key", str(key), "--yes", *NO_TLOG, *form, *COSIGN_REGISTRY_FLAGS, ref],
        tool_env,
    )
    layout = tmp_path / "saved"
    run([peers.cosign, "save", "--dir", str(layout), *COSIGN_REGISTRY_FLAGS[1:], ref], tool_env)
    digest = ref.rpartition("@")[2]
    result = run(
        [TRUST, "verify", "--key", str(pub), "--ignore-reference", f"oci:{layout}@{digest}"],
        tool_env,
        ok=False,
    )
    assert result.returncode == 0, result.stderr
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    wrong = run(
        [TRUST, "verify", "--key", str(other), "--ignore-reference", f"oci:{layout}@{digest}"],
        tool_env,
        ok=False,
    )
    assert wrong.returncode == 3


def test_trust_copy_layout_verifies_with_cosign(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path
) -> None:
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    ref = image(oci11_registry, "interop/copied", b"copied by trust")
    run([TRUST, "sign", "--tlog-upload=false", "--key", str(key), ref], tool_env)
    layout = tmp_path / "usb"
    run([TRUST, "copy", ref, f"oci:{layout}:copied"], tool_env)
    verified = run(
        [peers.cosign, "verify", "--key", str(pub), "--insecure-ignore-tlog", "--local-image", str(layout)],
        tool_env,
        ok=False,
    )
    assert verified.returncode == 0, verified.stderr
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    refused = run(
        [peers.cosign, "verify", "--key", str(other), "--insecure-ignore-tlog", "--local-image", str(layout)],
        tool_env,
        ok=False,
    )
    assert refused.returncode != 0


def test_crane_layout_verifies_with_trust(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path
) -> None:
    # crane names layout entries by whole references (`--annotate-ref`): registry/repo:TAG.
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    ref = image(oci11_registry, "interop/craned", b"saved by crane")
    form = ["--new-bundle-format=false"]
    run(
        [peers.cosign, "sign", "--key", str(key), "--yes", *NO_TLOG, *form, *COSIGN_REGISTRY_FLAGS, ref],
        tool_env,
    )
    name, _, digest = ref.partition("@")
    signatures = f"{name}:{digest.replace(':', '-')}.sig"
    layout = tmp_path / "craned"
    run(
        [peers.crane, "pull", "--insecure", "--format=oci", "--annotate-ref", ref, signatures, str(layout)],
        tool_env,
    )
    verified = run(
        [TRUST, "verify", "--key", str(pub), "--ignore-reference", f"oci:{layout}@{digest}"],
        tool_env,
        ok=False,
    )
    assert verified.returncode == 0, verified.stderr
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    wrong = run(
        [TRUST, "verify", "--key", str(other), "--ignore-reference", f"oci:{layout}@{digest}"],
        tool_env,
        ok=False,
    )
    assert wrong.returncode == 3


def test_trust_signs_with_the_log_cosign_verifies_the_log(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    tmp_path: Path,
    sigstore_mock: SigstoreMock,
) -> None:
    # trust logs the signature to Rekor (the local Sigstore stand-in); cosign checks the entry
    # against the stand-in's trusted root, without --insecure-ignore-tlog.
    key, pub = cosign_keys(peers, tool_env, tmp_path / "keys")
    ref = image(oci11_registry, "interop/trust-logged", b"signed by trust, logged")
    run([TRUST, "sign", "--key", str(key), "--trust-config", str(sigstore_mock.trust_config), ref], tool_env)
    check = ["verify", "--trusted-root", str(sigstore_mock.trusted_root), *COSIGN_REGISTRY_FLAGS]
    verified = run([peers.cosign, *check, "--key", str(pub), ref], tool_env, ok=False)
    assert verified.returncode == 0, verified.stderr
    assert "transparency log was verified" in verified.stderr
    _, other = cosign_keys(peers, tool_env, tmp_path / "other")
    assert run([peers.cosign, *check, "--key", str(other), ref], tool_env, ok=False).returncode != 0
    production = VECTORS / "sigstore-bundles" / "production_trusted_root.json"
    wrong_root = ["verify", "--trusted-root", str(production), *COSIGN_REGISTRY_FLAGS, "--key", str(pub), ref]
    assert run([peers.cosign, *wrong_root], tool_env, ok=False).returncode != 0
    # and trust checks the same log entries against the same root
    assert (
        run(
            [TRUST, "verify", "--key", str(pub), "--trusted-root", str(sigstore_mock.trusted_root), ref],
            tool_env,
        ).returncode
        == 0
    )
