"""keygen → sign → verify through a real registry, in cosign's exact format."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hostile import HostileRegistry, Reply
from support.images import (
    build_index,
    multiplatform_images,
    push_image,
    push_index,
    push_manifest,
    simple_image,
)
from support.registry import Registry
from support.vectors import VECTORS as SHARED_VECTORS

from trust.cli.app import main

VECTORS = SHARED_VECTORS / "cosign-containers-image"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRUST_PASSWORD", "pw")
    try:
        for name in ("alice", "bob"):
            assert main(["keygen", "--output-prefix", str(folder / name)]) == 0
    finally:
        mp.undo()
    return {name: folder / name for name in ("alice", "bob")}


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUST_PASSWORD", "pw")


def sig_manifest(registry: Registry, repo: str, digest: str) -> dict[str, object]:
    response = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{digest.replace(':', '-')}.sig",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    response.raise_for_status()
    return dict(response.json())


def test_keygen_writes_cosign_format(keys: dict[str, Path]) -> None:
    key = keys["alice"].with_suffix(".key").read_text()
    assert key.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    body = json.loads(base64.b64decode("".join(key.strip().splitlines()[1:-1])))
    assert body["kdf"] == {
        "name": "scrypt",
        "params": {"N": 65536, "r": 8, "p": 1},
        "salt": body["kdf"]["salt"],
    }
    assert body["cipher"]["name"] == "nacl/secretbox"
    assert keys["alice"].with_suffix(".pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert main(["keygen", "--output-prefix", str(keys["alice"])]) == 2  # never overwrites


def test_sign_then_verify(
    registry: Registry, repo_name: str, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"signed\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    assert (
        main(
            [
                "sign",
                "--tlog-upload=false",
                "--key",
                str(keys["alice"].with_suffix(".key")),
                ref,
                "-a",
                "team=release",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"{registry.host}/{repo_name}@{pushed.digest}"

    assert main(["verify", "--key", str(keys["alice"].with_suffix(".pub")), ref, "--output", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["digest"] == pushed.digest and record["verified"] is True
    # the .sig layer and cosign v3's bundle referrer
    assert [s["outcome"] for s in record["signatures"]] == ["valid", "valid"]
    assert record["signatures"][0]["dockerReference"] == f"{registry.host}/{repo_name}"

    # Golden structure: exactly what cosign writes.
    manifest = sig_manifest(registry, repo_name, pushed.digest)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    layers = manifest["layers"]
    assert isinstance(layers, list) and len(layers) == 1
    assert layers[0]["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert set(layers[0]["annotations"]) == {"dev.cosignproject.cosign/signature"}
    payload = httpx.get(f"{registry.url}/v2/{repo_name}/blobs/{layers[0]['digest']}").json()
    vector = json.loads(
        base64.b64decode(
            json.loads((VECTORS / "dir-img-cosign-valid" / "signature-1").read_bytes()[15:])["payload"]
        )
    )
    assert payload.keys() == vector.keys() == {"critical", "optional"}
    assert payload["critical"].keys() == vector["critical"].keys()
    assert payload["critical"]["type"] == "cosign container image signature"
    assert payload["critical"]["image"] == {"docker-manifest-digest": pushed.digest}
    assert payload["critical"]["identity"] == {"docker-reference": f"{registry.host}/{repo_name}"}
    assert payload["optional"] == {"team": "release"}


def test_second_key_appends_and_same_key_adds_nothing(
    registry: Registry, repo_name: str, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"two signers\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    for name in ("alice", "bob", "alice"):
        assert main(["sign", "--tlog-upload=false", "--key", str(keys[name].with_suffix(".key")), ref]) == 0
    assert "already signed by this key" in capsys.readouterr().err
    layers = sig_manifest(registry, repo_name, pushed.digest)["layers"]
    assert isinstance(layers, list) and len(layers) == 2
    for name in ("alice", "bob"):
        assert main(["verify", "--key", str(keys[name].with_suffix(".pub")), ref]) == 0


def test_wrong_key_unsigned_and_retagged_are_denied(
    registry: Registry, repo_name: str, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    push_image(registry, repo_name, simple_image(b"before\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    alice_pub, bob_pub = (str(keys[n].with_suffix(".pub")) for n in ("alice", "bob"))
    assert main(["verify", "--key", alice_pub, ref]) == 3
    assert "no signatures found" in capsys.readouterr().err

    assert main(["sign", "--tlog-upload=false", "--key", str(keys["bob"].with_suffix(".key")), ref]) == 0
    capsys.readouterr()
    assert main(["verify", "--key", alice_pub, ref]) == 3
    assert "2 signatures found" in capsys.readouterr().err  # bob's .sig layer and bundle referrer

    assert main(["sign", "--tlog-upload=false", "--key", str(keys["alice"].with_suffix(".key")), ref]) == 0
    assert main(["verify", "--key", alice_pub, "--key", bob_pub, ref]) == 0
    # The tag moves to new bytes after signing: the new digest has no signature.
    push_image(registry, repo_name, simple_image(b"after\n"), tag="v1")
    capsys.readouterr()
    assert main(["verify", "--key", alice_pub, ref]) == 3
    assert "no signatures found" in capsys.readouterr().err


def test_signature_over_another_digest_is_an_integrity_failure(
    registry: Registry, repo_name: str, keys: dict[str, Path]
) -> None:
    first = push_image(registry, repo_name, simple_image(b"one\n"), tag="one")
    second = push_image(registry, repo_name, simple_image(b"two\n"), tag="two")
    key = str(keys["alice"].with_suffix(".key"))
    assert main(["sign", "--tlog-upload=false", "--key", key, f"{registry.host}/{repo_name}:one"]) == 0
    # Copy the first image's .sig manifest onto the second digest's .sig tag.
    raw = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{first.digest.replace(':', '-')}.sig",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).content
    push_manifest(
        registry,
        repo_name,
        f"{second.digest.replace(':', '-')}.sig",
        raw,
        "application/vnd.oci.image.manifest.v1+json",
    )
    assert (
        main(["verify", "--key", str(keys["alice"].with_suffix(".pub")), f"{registry.host}/{repo_name}:two"])
        == 4
    )


def test_docker_reference_must_name_the_repository(
    registry: Registry, repo_name: str, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"mirrored\n"), tag="v1")
    mirror = f"{repo_name}-mirror"
    push_image(registry, mirror, simple_image(b"mirrored\n"), tag="v1")
    assert (
        main(
            [
                "sign",
                "--tlog-upload=false",
                "--key",
                str(keys["alice"].with_suffix(".key")),
                f"{registry.host}/{repo_name}:v1",
            ]
        )
        == 0
    )
    raw = httpx.get(
        f"{registry.url}/v2/{repo_name}/manifests/{pushed.digest.replace(':', '-')}.sig",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).content
    from support.images import push_blob

    document = json.loads(raw)
    for blob in (document["config"]["digest"], document["layers"][0]["digest"]):
        push_blob(registry, mirror, httpx.get(f"{registry.url}/v2/{repo_name}/blobs/{blob}").content)
    push_manifest(
        registry,
        mirror,
        f"{pushed.digest.replace(':', '-')}.sig",
        raw,
        "application/vnd.oci.image.manifest.v1+json",
    )
    pub = str(keys["alice"].with_suffix(".pub"))
    capsys.readouterr()
    assert main(["verify", "--key", pub, f"{registry.host}/{mirror}:v1"]) == 3
    assert "wrong-repository" in capsys.readouterr().err
    assert main(["verify", "--key", pub, "--ignore-reference", f"{registry.host}/{mirror}:v1"]) == 0


def test_signature_repository(registry: Registry, repo_name: str, keys: dict[str, Path]) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"elsewhere\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    elsewhere = f"{registry.host}/{repo_name}-sigs"
    assert (
        main(
            [
                "sign",
                "--tlog-upload=false",
                "--key",
                str(keys["alice"].with_suffix(".key")),
                "--signature-repository",
                elsewhere,
                ref,
            ]
        )
        == 0
    )
    assert sig_manifest(registry, f"{repo_name}-sigs", pushed.digest)["layers"]
    pub = str(keys["alice"].with_suffix(".pub"))
    assert main(["verify", "--key", pub, ref]) == 3
    assert main(["verify", "--key", pub, "--signature-repository", elsewhere, ref]) == 0


def test_recursive_signs_index_and_children(
    registry: Registry, repo_name: str, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    index = build_index(multiplatform_images())
    pushed = push_index(registry, repo_name, index, tag="multi")
    alice = str(keys["alice"].with_suffix(".key"))
    assert main(["sign", "--tlog-upload=false", "--recursive", "--key", alice, "--output", "json",
                 f"{registry.host}/{repo_name}:multi"]) == 0  # fmt: skip
    signed = [r["digest"] for r in json.loads(capsys.readouterr().out)]
    assert signed == [pushed.digest, *(image.digest for image in index.images)]
    pub = str(keys["alice"].with_suffix(".pub"))
    for digest in signed:
        assert main(["verify", "--key", pub, f"{registry.host}/{repo_name}@{digest}"]) == 0


def test_many_references_exit_with_the_worst(
    registry: Registry, repo_name: str, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    push_image(registry, repo_name, simple_image(b"good\n"), tag="good")
    push_image(registry, repo_name, simple_image(b"bad\n"), tag="bad")
    good, bad = f"{registry.host}/{repo_name}:good", f"{registry.host}/{repo_name}:bad"
    assert main(["sign", "--tlog-upload=false", "--key", str(keys["alice"].with_suffix(".key")), good]) == 0
    capsys.readouterr()
    pub = str(keys["alice"].with_suffix(".pub"))
    missing = f"{registry.host}/{repo_name}:missing"
    assert main(["verify", "--key", pub, "--output", "json", good, bad, missing]) == 5
    records = json.loads(capsys.readouterr().out)
    assert [r["verified"] for r in records] == [True, False, False]
    assert [r.get("exitCode") for r in records] == [None, 3, 5]


def test_concurrent_signers_keep_both_signatures(
    registry: Registry, repo_name: str, keys: dict[str, Path]
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"race\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trust",
                "sign",
                "--tlog-upload=false",
                "--key",
                str(keys[name].with_suffix(".key")),
                ref,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name in ("alice", "bob")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    layers = sig_manifest(registry, repo_name, pushed.digest)["layers"]
    assert isinstance(layers, list) and len(layers) == 2
    for name in ("alice", "bob"):
        assert main(["verify", "--key", str(keys[name].with_suffix(".pub")), ref]) == 0


def test_registry_error_while_looking_is_not_unsigned(
    keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with HostileRegistry() as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        sig_tag = f"/v2/team/app/manifests/{image.digest.replace(':', '-')}.sig"
        hostile.fail_next("GET", sig_tag, Reply(500, b"boom"), times=99)
        assert (
            main(["verify", "--key", str(keys["alice"].with_suffix(".pub")), f"{hostile.host}/team/app:v1"])
            == 5
        )
        assert "no signatures" not in capsys.readouterr().err


def test_rekor_key_requires_a_set(registry: Registry, repo_name: str, keys: dict[str, Path]) -> None:
    push_image(registry, repo_name, simple_image(b"rekor\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    assert main(["sign", "--tlog-upload=false", "--key", str(keys["alice"].with_suffix(".key")), ref]) == 0
    pub = str(keys["alice"].with_suffix(".pub"))
    assert main(["verify", "--key", pub, "--rekor-key", str(VECTORS / "rekor.pub"), ref]) == 3


def test_bad_key_inputs_are_usage_errors(
    registry: Registry,
    repo_name: str,
    keys: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    push_image(registry, repo_name, simple_image(b"keys\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    monkeypatch.setenv("TRUST_PASSWORD", "not-the-password")
    capsys.readouterr()
    assert main(["sign", "--tlog-upload=false", "--key", str(keys["alice"].with_suffix(".key")), ref]) == 2
    err = capsys.readouterr().err
    assert "wrong password" in err and err.count("\n") == 1
    assert main(["sign", "--tlog-upload=false", "--key", str(tmp_path / "missing.key"), ref]) == 2
    assert main(["verify", "--key", str(tmp_path / "missing.pub"), ref]) == 2
    assert (
        main(
            [
                "sign",
                "--tlog-upload=false",
                "--key",
                str(keys["alice"].with_suffix(".key")),
                "-a",
                "novalue",
                ref,
            ]
        )
        == 2
    )
