"""notation (v1.3.2, built by scripts/peers.sh) and trust, both directions, on an OCI 1.1 registry.

| made by                                 | checked by |
|-----------------------------------------|------------|
| notation sign (JWS, COSE)               | trust verify --policy (a notation authority) |
| trust sign --format notation            | notation verify |
| trust copy to an OCI layout             | notation verify --oci-layout |
| notation sign --timestamp-url (RFC 3161) | trust verify --policy (tsa-store) |
| trust sign --format notation --timestamp-url | notation verify (tsa trust store) |

Keys and certificates are notation's own test PKI (`notation cert generate-test`), in a config
folder of the test's (XDG_CONFIG_HOME). Each cell has its negative twin: a trust store that does
not hold the signer's certificate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import OCI11Registry, Peers
from interop_support import TRUST, run
from support.images import push_image, simple_image
from support.openssl_pki import ContentServer, OpenSSLTimestampAuthority


@dataclass
class NotationPKI:
    key: Path
    cert: Path
    trust_store: Path
    env: dict[str, str]


def notation_pki(peers: Peers, env: dict[str, str], name: str = "trust-interop") -> NotationPKI:
    run([peers.notation, "cert", "generate-test", "--default", name], env)
    config = Path(env["XDG_CONFIG_HOME"]) / "notation"
    policy = {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "interop",
                "registryScopes": ["*"],
                "signatureVerification": {"level": "strict"},
                "trustStores": [f"ca:{name}"],
                "trustedIdentities": ["*"],
            }
        ],
    }
    (config / "trustpolicy.json").write_text(json.dumps(policy))
    return NotationPKI(
        config / "localkeys" / f"{name}.key",
        config / "localkeys" / f"{name}.crt",
        config / "truststore" / "x509" / "ca" / name,
        env,
    )


def trust_policy(folder: Path, trust_store: Path, registry: OCI11Registry) -> Path:
    path = folder / "policy.yaml"
    path.write_text(
        "version: 1\nauthorities:\n  notary:\n    notation:\n"
        f"      trust-store: {trust_store}\n      trusted-identities: ['*']\n"
        f"rules:\n  - scope: {registry.host}/interop/*\n    signed-by: [notary]\n"
        "default:\n  reject: true\n"
    )
    return path


def other_trust_store(peers: Peers, env: dict[str, str], folder: Path) -> Path:
    """A trust store holding another test CA (made in another config folder)."""
    other_env = {**env, "XDG_CONFIG_HOME": str(folder / "other-config")}
    return notation_pki(peers, other_env, "someone-else").trust_store


def image(registry: OCI11Registry, repository: str, content: bytes) -> str:
    pushed = push_image(registry.host, repository, simple_image(content), tag="v1")
    return f"{registry.host}/{repository}@{pushed.digest}"


@pytest.mark.parametrize("envelope", ["jws", "cose"])
def test_notation_signs_trust_verifies(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path, envelope: str
) -> None:
    pki = notation_pki(peers, tool_env)
    ref = image(oci11_registry, f"interop/notation-{envelope}", f"notation {envelope}".encode())
    run([peers.notation, "sign", "--insecure-registry", "--signature-format", envelope, ref], tool_env)
    allowed = run(
        [TRUST, "verify", "--policy", str(trust_policy(tmp_path, pki.trust_store, oci11_registry)), ref],
        tool_env,
    )
    assert allowed.returncode == 0

    stranger = other_trust_store(peers, tool_env, tmp_path)
    (tmp_path / "strict").mkdir()
    denied = run(
        [TRUST, "verify", "--policy", str(trust_policy(tmp_path / "strict", stranger, oci11_registry)), ref],
        tool_env,
        ok=False,
    )
    assert denied.returncode == 3
    other_env = {**tool_env, "XDG_CONFIG_HOME": str(tmp_path / "other-config")}
    assert run([peers.notation, "verify", "--insecure-registry", ref], other_env, ok=False).returncode != 0


def test_trust_signs_notation_verifies(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path
) -> None:
    pki = notation_pki(peers, tool_env)
    ref = image(oci11_registry, "interop/trust-notation", b"signed by trust, notation format")
    run(
        [TRUST, "sign", "--format", "notation", "--key", str(pki.key), "--cert", str(pki.cert), ref], tool_env
    )
    verified = run([peers.notation, "verify", "--insecure-registry", ref], tool_env)
    assert "Successfully verified signature" in verified.stdout

    other_trust_store(peers, tool_env, tmp_path)
    other_env = {**tool_env, "XDG_CONFIG_HOME": str(tmp_path / "other-config")}
    refused = run([peers.notation, "verify", "--insecure-registry", ref], other_env, ok=False)
    assert refused.returncode != 0
    unsigned = image(oci11_registry, "interop/trust-notation", b"never signed")
    assert (
        run([peers.notation, "verify", "--insecure-registry", unsigned], tool_env, ok=False).returncode != 0
    )
    assert (
        run(
            [
                TRUST,
                "verify",
                "--policy",
                str(trust_policy(tmp_path, pki.trust_store, oci11_registry)),
                unsigned,
            ],
            tool_env,
            ok=False,
        ).returncode
        == 3
    )


def test_trust_copy_layout_verifies_with_notation(
    peers: Peers, oci11_registry: OCI11Registry, tool_env: dict[str, str], tmp_path: Path
) -> None:
    notation_pki(peers, tool_env)
    ref = image(oci11_registry, "interop/copied-notation", b"copied with its notation signature")
    run([peers.notation, "sign", "--insecure-registry", ref], tool_env)
    layout = tmp_path / "usb"
    run([TRUST, "copy", ref, f"oci:{layout}:copied"], tool_env)
    digest = ref.rpartition("@")[2]
    tool_env = {**tool_env, "NOTATION_EXPERIMENTAL": "1"}  # notation 1.3 gates --oci-layout behind it
    verified = run(
        [peers.notation, "verify", "--oci-layout", "--scope", "local/copied", f"{layout}@{digest}"],
        tool_env,
        ok=False,
    )
    assert verified.returncode == 0, verified.stderr
    other_trust_store(peers, tool_env, tmp_path)
    other_env = {**tool_env, "XDG_CONFIG_HOME": str(tmp_path / "other-config")}
    assert (
        run(
            [peers.notation, "verify", "--oci-layout", "--scope", "local/copied", f"{layout}@{digest}"],
            other_env,
            ok=False,
        ).returncode
        != 0
    )


# -- RFC 3161 timestamps: a real TSA (`openssl ts -reply` behind HTTP on 127.0.0.1) ----------------


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """(URL, the TSA's root PEM, another TSA's root PEM)."""
    authority = OpenSSLTimestampAuthority(tmp_path / "tsa")
    rogue = OpenSSLTimestampAuthority(tmp_path / "rogue-tsa")
    server = ContentServer.start()
    server.posts["/tsa"] = authority.reply
    root, other = tmp_path / "tsa-root.pem", tmp_path / "rogue-root.pem"
    root.write_bytes(authority.root_pem)
    other.write_bytes(rogue.root_pem)
    yield server.url("/tsa"), root, other
    server.stop()


def settle_past_not_before() -> None:
    """`notation cert generate-test` makes a certificate valid from this very second, and the TSA
    stamps with an accuracy of a second: a timestamp whose interval starts before the certificate
    is refused by both tools (notation: "timestamp can be before certificate validity period").
    Signing two seconds later is what any real certificate's age gives for free."""
    time.sleep(2.1)


def timestamped_policy(folder: Path, trust_store: Path, tsa_root: Path, registry: OCI11Registry) -> Path:
    store = folder / "tsa-store"
    store.mkdir(parents=True, exist_ok=True)
    (store / "root.pem").write_bytes(tsa_root.read_bytes())
    path = folder / "policy.yaml"
    path.write_text(
        "version: 1\nauthorities:\n  notary:\n    notation:\n"
        f"      trust-store: {trust_store}\n      trusted-identities: ['*']\n"
        f"      tsa-store: {store}\n      verify-timestamp: always\n"
        f"rules:\n  - scope: {registry.host}/interop/*\n    signed-by: [notary]\n"
        "default:\n  reject: true\n"
    )
    return path


def test_notation_timestamps_trust_verifies(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    tmp_path: Path,
    tsa: tuple[str, Path, Path],
) -> None:
    url, root, rogue = tsa
    pki = notation_pki(peers, tool_env)
    settle_past_not_before()
    ref = image(oci11_registry, "interop/notation-timestamped", b"timestamped by notation")
    run(
        [peers.notation, "sign", "--insecure-registry", "--timestamp-url", url, "--timestamp-root-cert",
         str(root), ref],
        tool_env,
    )  # fmt: skip
    trusted = timestamped_policy(tmp_path / "a", pki.trust_store, root, oci11_registry)
    allowed = run([TRUST, "verify", "--policy", str(trusted), "--output", "json", ref], tool_env)
    [record] = json.loads(allowed.stdout)
    [authority] = record["evaluation"]["authorities"]
    [signature] = authority["targets"][0]["signatures"]
    assert signature["outcome"] == "valid" and "timestamped" in signature["reason"], signature
    untrusted = timestamped_policy(tmp_path / "b", pki.trust_store, rogue, oci11_registry)
    denied = run([TRUST, "verify", "--policy", str(untrusted), ref], tool_env, ok=False)
    assert denied.returncode == 3 and "bad-timestamp" in denied.stderr + denied.stdout


def test_trust_timestamps_notation_verifies(
    peers: Peers,
    oci11_registry: OCI11Registry,
    tool_env: dict[str, str],
    tmp_path: Path,
    tsa: tuple[str, Path, Path],
) -> None:
    url, root, rogue = tsa
    pki = notation_pki(peers, tool_env)
    settle_past_not_before()
    ref = image(oci11_registry, "interop/trust-timestamped", b"timestamped by trust")
    run(
        [TRUST, "sign", "--format", "notation", "--key", str(pki.key), "--cert", str(pki.cert),
         "--timestamp-url", url, "--timestamp-root-cert", str(root), ref],
        tool_env,
    )  # fmt: skip
    config = Path(tool_env["XDG_CONFIG_HOME"]) / "notation"

    def with_tsa(pem: Path) -> None:
        store = config / "truststore" / "x509" / "tsa" / "interop-tsa"
        store.mkdir(parents=True, exist_ok=True)
        (store / "root.crt").write_bytes(pem.read_bytes())
        policy = json.loads((config / "trustpolicy.json").read_text())
        policy["trustPolicies"][0]["trustStores"] = ["ca:trust-interop", "tsa:interop-tsa"]
        (config / "trustpolicy.json").write_text(json.dumps(policy))

    with_tsa(root)
    verified = run([peers.notation, "verify", "--insecure-registry", ref], tool_env, ok=False)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    with_tsa(rogue)
    refused = run([peers.notation, "verify", "--insecure-registry", ref], tool_env, ok=False)
    assert refused.returncode != 0
