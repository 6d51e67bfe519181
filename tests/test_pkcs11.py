"""Keys on an HSM: SoftHSM2 (Debian `softhsm2`) as a real PKCS#11 token in a temporary directory.

`trust keygen --pkcs11` creates a P-256 key pair on the token; `trust sign --key pkcs11:…` signs an
image in a real registry (cosign format) and an OCI layout (Notation format, with a certificate
issued for the token's key); the signatures verify with the exported public key, with the key
read back from the token, and independently (`pkcs11-tool` from Debian `opensc` reads the public
key; cryptography checks the signature over the payload). A wrong PIN is exit 2, one line, and
nothing reaches the registry.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.images import push_image, simple_image, write_oci_layout
from support.registry import Registry

from trust.cli.app import main
from trust.keys.pkcs11 import Pkcs11Error, parse_uri

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4321"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SoftHSM2 token, `trust-test`, for the session: a PKCS#11 module reads its configuration
    once per process (C_Initialize), so every test shares the token and names its own key."""
    directory = tmp_path_factory.mktemp("softhsm")
    tokens = directory / "tokens"
    tokens.mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(config)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "trust-test",
            "--so-pin",
            "8765",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )
    return str(config)


@pytest.fixture
def token(softhsm: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URI of a key named after the test (not created yet) on the session's token."""
    monkeypatch.setenv("SOFTHSM2_CONF", softhsm)
    monkeypatch.delenv("TRUST_PKCS11_PIN", raising=False)
    label = request.node.name.removeprefix("test_")[:40]
    return f"pkcs11:token=trust-test;object={label}?module-path={MODULE}"


def keygen(token: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    assert main(["keygen", "--pkcs11", f"{token}&pin-value={PIN}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN PUBLIC KEY-----")
    public = tmp_path / "release.pub"
    public.write_text(out)
    return public


def test_uri_parsing() -> None:
    uri = parse_uri("pkcs11:token=my%20token;object=k;id=%01%ff?module-path=/x.so&pin-value=1")
    assert (uri.token, uri.object, uri.key_id) == ("my token", "k", b"\x01\xff")
    assert "pin-value=***" in uri.redacted() and "=1" not in uri.redacted()
    for bad in ("pkcs11:token=a", "pkcs11:bogus=1;object=k", "pkcs11:object=k;object=j", "file:/x"):
        with pytest.raises(Pkcs11Error):
            parse_uri(bad)


def test_keygen_sign_verify_in_a_registry(
    token: str,
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    public = keygen(token, capsys, tmp_path)
    assert main(["keygen", "--pkcs11", f"{token}&pin-value={PIN}"]) == 2  # never shadow a key
    assert "already holds a key" in capsys.readouterr().err

    # Independent: pkcs11-tool (OpenSC) reads the same public key off the token.
    exported = tmp_path / "exported.der"
    subprocess.run(
        ["pkcs11-tool", "--module", MODULE, "--token-label", "trust-test", "--read-object",
         "--type", "pubkey", "--label", parse_uri(token).object or "", "-o", str(exported)],
        check=True, capture_output=True,
    )  # fmt: skip
    from_tool = serialization.load_der_public_key(exported.read_bytes())
    from_trust = serialization.load_pem_public_key(public.read_bytes())
    assert from_tool.public_bytes(*_SPKI) == from_trust.public_bytes(*_SPKI)

    pushed = push_image(registry, repo_name, simple_image(b"hsm\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    monkeypatch.setenv("TRUST_PKCS11_PIN", PIN)
    assert main(["sign", "--tlog-upload=false", "--key", token, ref]) == 0
    capsys.readouterr()
    pinned = f"{registry.host}/{repo_name}@{pushed.digest}"
    assert main(["verify", "--key", str(public), pinned]) == 0
    assert main(["verify", "--key", token, pinned]) == 0  # the public key read from the token
    capsys.readouterr()
    assert main(["public-key", "--key", token]) == 0
    assert capsys.readouterr().out == public.read_text()

    # Independent: the .sig layer's signature verifies with cryptography over its payload.
    tag = pushed.digest.replace(":", "-") + ".sig"
    manifest = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    [layer] = manifest["layers"]
    payload = httpx.get(f"{registry.url}/v2/{repo_name}/blobs/{layer['digest']}").content
    import base64

    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    assert isinstance(from_tool, ec.EllipticCurvePublicKey)
    from_tool.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == pushed.digest


def test_a_wrong_pin_is_exit_2_and_writes_nothing(
    token: str,
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keygen(token, capsys, tmp_path)
    push_image(registry, repo_name, simple_image(b"wrong pin\n"), tag="v1")
    monkeypatch.setenv("TRUST_PKCS11_PIN", "0000")
    assert main(["sign", "--tlog-upload=false", "--key", token, f"{registry.host}/{repo_name}:v1"]) == 2
    err = capsys.readouterr().err
    assert "wrong PIN for PKCS#11 token 'trust-test'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    tags = httpx.get(f"{registry.url}/v2/{repo_name}/tags/list").json()["tags"]
    assert tags == ["v1"]
    monkeypatch.delenv("TRUST_PKCS11_PIN")
    assert (
        main(["sign", "--tlog-upload=false", "--key", token, f"{registry.host}/{repo_name}:v1"]) == 2
    )  # no PIN, no terminal
    assert "TRUST_PKCS11_PIN" in capsys.readouterr().err


def test_notation_signature_with_a_key_on_the_token(
    token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    public_path = keygen(token, capsys, tmp_path)
    public = serialization.load_pem_public_key(public_path.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    root_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HSM test root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                    x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "release on hsm"),
                ]
            )
        )
        .issuer_name(root_name)
        .public_key(public)
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root)))
    store = tmp_path / "truststore"
    store.mkdir()
    (store / "root.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nauthorities:\n  hsm:\n    notation:\n"
        f"      trust-store: {store}\n"
        '      trusted-identities: ["x509.subject: C=US, ST=WA, O=acme, CN=release on hsm"]\n'
        "default:\n  signed-by: [hsm]\n"
    )
    layout = write_oci_layout(tmp_path / "layout", simple_image(b"notation hsm\n"), tag="v1")
    monkeypatch.setenv("TRUST_PKCS11_PIN", PIN)
    args = ["sign", "--format", "notation", "--key", token, "--cert", str(chain), "-o", "json"]
    assert main([*args, f"oci:{layout}:v1"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    verify = ["verify", "--policy", str(policy), "--store", str(tmp_path / "store")]
    assert main([*verify, f"oci:{layout}@{record['digest']}"]) == 0


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def test_attest_with_a_key_on_the_token(
    token: str,
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    public = keygen(token, capsys, tmp_path)
    pushed = push_image(registry, repo_name, simple_image(b"hsm attested\n"), tag="v1")
    pinned = f"{registry.host}/{repo_name}@{pushed.digest}"
    predicate = tmp_path / "sbom.json"
    predicate.write_text('{"spdxVersion": "SPDX-2.3", "packages": []}')
    monkeypatch.setenv("TRUST_PKCS11_PIN", PIN)
    assert (
        main(
            [
                "attest",
                "--tlog-upload=false",
                pinned,
                "--predicate",
                str(predicate),
                "--type",
                "spdxjson",
                "--key",
                token,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["verify-attestation", pinned, "--type", "spdxjson", "--key", str(public)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["predicate"]["spdxVersion"] == "SPDX-2.3"
