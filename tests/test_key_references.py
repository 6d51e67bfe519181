"""Key references in cosign's syntax that need no token or cloud: `env://VAR` and key files, for
`trust sign --key`, `trust verify --key`, `trust public-key` and a policy's `cosign-keys`.
(`pkcs11:` is in tests/test_pkcs11.py, `awskms://` in tests/test_kms.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.images import push_image, simple_image
from support.registry import Registry

from trust.cli.app import main


def test_env_keys_sign_verify_and_policy(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    monkeypatch.setenv("RELEASE_KEY", private_pem)
    monkeypatch.setenv("RELEASE_PUB", public_pem)
    assert main(["public-key", "--key", "env://RELEASE_KEY"]) == 0
    assert capsys.readouterr().out == public_pem

    pushed = push_image(registry, repo_name, simple_image(b"env key\n"), tag="v1")
    assert (
        main(["sign", "--tlog-upload=false", "--key", "env://RELEASE_KEY", f"{registry.host}/{repo_name}:v1"])
        == 0
    )
    pinned = f"{registry.host}/{repo_name}@{pushed.digest}"
    assert main(["verify", "--key", "env://RELEASE_PUB", pinned]) == 0
    assert main(["verify", "--key", "env://RELEASE_KEY", pinned]) == 0  # the public half of a private key
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        'version: 1\nauthorities:\n  release:\n    cosign-keys: ["env://RELEASE_PUB"]\n'
        "default:\n  signed-by: [release]\n"
    )
    assert main(["verify", "--policy", str(policy), "--store", str(tmp_path / "store"), pinned]) == 0
    capsys.readouterr()

    monkeypatch.delenv("RELEASE_PUB")
    assert main(["verify", "--policy", str(policy), "--store", str(tmp_path / "store"), pinned]) == 2
    assert "RELEASE_PUB" in capsys.readouterr().err
    assert main(["verify", "--key", "env://not a name", pinned]) == 2
    assert (
        main(["sign", "--tlog-upload=false", "--key", "env://RELEASE_KEY", "--public-key", "x.pub", pinned])
        == 2
    )
