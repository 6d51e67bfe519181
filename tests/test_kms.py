"""AWS KMS keys (`awskms://`) against moto's KMS server on 127.0.0.1 (PyPI `moto[server]`, started in
this process on a kernel-chosen port; boto3 talks HTTP to it through `AWS_ENDPOINT_URL_KMS`).

What runs for real: boto3's request signing and credential chain (static test credentials from
the environment), KMS `CreateKey`/`CreateAlias`/`GetPublicKey`/`Sign` as moto implements them, and
trust's signing and verification end to end. What is not tested: AWS itself (IAM policies, key
rotation, multi-region keys), the `awskms://ENDPOINT/` form over HTTPS, SSO and instance roles.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.images import push_image, simple_image, write_oci_layout
from support.openssl_pki import OpenSSLCA
from support.registry import Registry

from trust.cli.app import main
from trust.keys.kms import KmsError, parse_uri


@pytest.fixture(scope="module")
def kms_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def kms(kms_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    return boto3.client("kms")


def test_uri_forms() -> None:
    assert parse_uri("awskms:///alias/release").key_id == "alias/release"
    with_endpoint = parse_uri("awskms://kms.internal:4566/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert with_endpoint.endpoint == "kms.internal:4566"
    arn = parse_uri("awskms:///arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert arn.region == "eu-west-1"
    for bad in ("awskms://alias/x", "awskms:///not a key", "awskms://bad host/alias/x", "gcpkms://x"):
        with pytest.raises(KmsError):
            parse_uri(bad)


def test_sign_and_verify_through_kms(
    kms: Any, registry: Registry, repo_name: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/{repo_name.replace('/', '-')[:60]}", TargetKeyId=key)
    uri = f"awskms:///alias/{repo_name.replace('/', '-')[:60]}"

    assert main(["public-key", "--key", uri]) == 0
    pem = capsys.readouterr().out
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    public = tmp_path / "kms.pub"
    public.write_text(pem)

    pushed = push_image(registry, repo_name, simple_image(b"kms\n"), tag="v1")
    assert main(["sign", "--tlog-upload=false", "--key", uri, f"{registry.host}/{repo_name}:v1"]) == 0
    pinned = f"{registry.host}/{repo_name}@{pushed.digest}"
    assert main(["verify", "--key", str(public), pinned]) == 0
    assert main(["verify", "--key", f"awskms:///{key}", pinned]) == 0
    other = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    assert main(["verify", "--key", f"awskms:///{other}", pinned]) == 3

    # A policy's cosign-keys take the same reference; the key is fetched from KMS when it loads.
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f'version: 1\nauthorities:\n  release:\n    cosign-keys: ["{uri}"]\n'
        "default:\n  signed-by: [release]\n"
    )
    assert main(["verify", "--policy", str(policy), "--store", str(tmp_path / "store"), pinned]) == 0


def test_notation_signature_with_a_kms_key(
    kms: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Notary Project signature made through KMS (ECDSA P-384: ES384), with a certificate an
    `openssl` CA issued for the KMS key, verifies with a notation policy."""
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P384")["KeyMetadata"]["KeyId"]
    uri = f"awskms:///{key}"
    assert main(["public-key", "--key", uri]) == 0
    public_pem = capsys.readouterr().out.encode()
    ca = OpenSSLCA(tmp_path / "ca", "KMS Test Root")
    chain = ca.certify("kms", public_pem, "/C=US/ST=WA/O=acme/CN=release via kms")
    store = tmp_path / "truststore"
    store.mkdir()
    (store / "root.crt").write_bytes(ca.certificate_path.read_bytes())
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nauthorities:\n  kms:\n    notation:\n"
        f'      trust-store: {store}\n      trusted-identities: ["x509.subject: C=US, ST=WA, O=acme"]\n'
        "default:\n  signed-by: [kms]\n"
    )
    layout = write_oci_layout(tmp_path / "layout", simple_image(b"notation kms\n"), tag="v1")
    args = ["sign", "--format", "notation", "--key", uri, "--cert", str(chain), "-o", "json"]
    assert main([*args, f"oci:{layout}:v1"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    verify = ["verify", "--policy", str(policy), "--store", str(tmp_path / "store")]
    assert main([*verify, f"oci:{layout}@{record['digest']}"]) == 0


def test_unknown_key_and_reserved_schemes_are_usage_errors(
    kms: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["public-key", "--key", "awskms:///alias/does-not-exist"]) == 2
    assert "NotFoundException" in capsys.readouterr().err
    for scheme in ("gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", "hashivault://release"):
        assert main(["public-key", "--key", scheme]) == 2
        assert "not supported yet" in capsys.readouterr().err
