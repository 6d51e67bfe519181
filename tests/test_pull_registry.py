"""`trust pull` against the real CNCF distribution registry, and the store read by skopeo and umoci."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.images import (
    DOCKER,
    Layer,
    build_image,
    build_index,
    multiplatform_images,
    push_image,
    push_index,
    realistic_image,
    simple_image,
    snapshot_tree,
)
from support.registry import Registry
from support.tty import run_in_terminal

from trust.cli.app import main


def trust(*args: str) -> int:
    return main(list(args))


def trust_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    capsys.readouterr()
    assert trust(*args, "--output", "json") == 0
    return json.loads(capsys.readouterr().out)


def test_pull_tag_then_again_from_the_store(
    registry: Registry, repo_name: str, tmp_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = build_image(
        [Layer.from_files({"a.txt": b"a"}), Layer.from_files({"b.txt": b"b"}, compression="none")], cmd=["/x"]
    )
    pushed = push_image(registry, repo_name, image, tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"

    record = trust_json(capsys, "pull", "--store", str(tmp_store), ref)
    assert isinstance(record, dict)
    assert record["digest"] == pushed.digest == record["manifestDigest"]
    assert record["indexDigest"] is None
    assert [layer["digest"] for layer in record["layers"]] == [layer.digest for layer in image.layers]
    assert not any(layer["alreadyExisted"] for layer in record["layers"])
    for digest in [pushed.digest, image.config_descriptor.digest, *(layer.digest for layer in image.layers)]:
        assert (tmp_store / "blobs" / "sha256" / digest.split(":")[1]).is_file()

    again = trust_json(capsys, "pull", "--store", str(tmp_store), ref)
    assert isinstance(again, dict)
    assert all(layer["alreadyExisted"] for layer in again["layers"])

    assert trust("pull", "--store", str(tmp_store), f"{registry.host}/{repo_name}@{pushed.digest}") == 0
    assert capsys.readouterr().out.strip() == f"{registry.host}/{repo_name}@{pushed.digest}"

    rows = trust_json(capsys, "images", "--store", str(tmp_store))
    assert isinstance(rows, list)
    assert [(r["repository"], r["tag"], r["digest"]) for r in rows] == [
        (f"{registry.host}/{repo_name}", "v1", pushed.digest)
    ]
    assert rows[0]["size"] == image.size + image.config_descriptor.size + sum(
        layer.size for layer in image.layers
    )
    assert rows[0]["pulledAt"]


def test_index_selects_platform_and_keeps_the_index(
    registry: Registry, repo_name: str, tmp_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = build_index(multiplatform_images(("linux/amd64", "linux/arm64")))
    pushed = push_index(registry, repo_name, index, tag="multi")
    ref = f"{registry.host}/{repo_name}:multi"

    amd = trust_json(capsys, "pull", "--store", str(tmp_store), "--platform", "linux/amd64", ref)
    arm = trust_json(capsys, "pull", "--store", str(tmp_store), "--platform", "linux/arm64", ref)
    assert isinstance(amd, dict) and isinstance(arm, dict)
    assert amd["digest"] == arm["digest"] == pushed.digest == amd["indexDigest"]
    assert amd["manifestDigest"] == index.image_for("linux/amd64").digest
    assert arm["manifestDigest"] == index.image_for("linux/arm64").digest
    assert arm["platform"] == "linux/arm64"
    layout = json.loads((tmp_store / "index.json").read_text())
    names = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in layout["manifests"]}
    assert names[f"{registry.host}/{repo_name}:multi"] == pushed.digest
    assert (
        names[f"{registry.host}/{repo_name}@{index.image_for('linux/arm64').digest}"] == arm["manifestDigest"]
    )
    assert trust("pull", "--store", str(tmp_store), "--platform", "linux/s390x", ref) == 4


@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_docker_schema2_and_layer_compressions(
    registry: Registry, repo_name: str, tmp_store: Path, compression: str
) -> None:
    image = simple_image(b"docker\n", compression=compression, manifest_type=DOCKER)  # type: ignore[arg-type]
    push_image(registry, repo_name, image, tag="d")
    assert trust("pull", "--store", str(tmp_store), f"{registry.host}/{repo_name}:d") == 0


def test_skopeo_and_umoci_read_the_store(
    registry: Registry, repo_name: str, tmp_store: Path, tmp_path: Path
) -> None:
    image = realistic_image()
    pushed = push_image(registry, repo_name, image, tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    assert trust("pull", "--store", str(tmp_store), ref) == 0

    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{tmp_store}:{ref}"], capture_output=True, text=True, check=True
    )
    info = json.loads(inspected.stdout)
    assert info["Digest"] == pushed.digest
    assert info["Layers"] == [layer.digest for layer in image.layers]

    by_digest = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{tmp_store}:{registry.host}/{repo_name}@{pushed.digest}"],
        capture_output=True,
        check=True,
    )
    assert by_digest.stdout == pushed.manifest_bytes

    ours = tmp_path / "umoci-from-trust"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_store}:{ref}", str(ours)], check=True, capture_output=True
    )
    from support.images import REALISTIC_EXPECTED  # the tree the three layers must produce

    assert snapshot_tree(ours / "rootfs").simple() == REALISTIC_EXPECTED


def test_tampered_blob_in_a_real_registry_is_refused(
    registry: Registry, repo_name: str, tmp_store: Path
) -> None:
    image = simple_image(b"tamper me\n")
    push_image(registry, repo_name, image, tag="v1")
    blob = registry.blob_path(image.layers[0].digest)
    blob.write_bytes(bytes(blob.stat().st_size))
    assert trust("pull", "--store", str(tmp_store), f"{registry.host}/{repo_name}:v1") == 4
    assert not (tmp_store / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]).exists()


def test_a_terminal_gets_a_bar_per_layer_and_already_exists(
    registry: Registry, repo_name: str, tmp_store: Path
) -> None:
    image = build_image([Layer.from_files({"a": b"a" * 100_000}), Layer.from_files({"b": b"b"})])
    push_image(registry, repo_name, image, tag="v1")
    reference = f"{registry.host}/{repo_name}:v1"
    shorts = [layer.digest.split(":")[1][:12].encode() for layer in image.layers]
    code, output = run_in_terminal("pull", "--store", str(tmp_store), reference)
    assert code == 0 and b"already exists" not in output  # rich redraws: count names, not lines
    assert all(short + b" verified" in output for short in shorts)
    code, output = run_in_terminal("pull", "--store", str(tmp_store), reference)
    assert code == 0 and all(short + b" already exists" in output for short in shorts)


def test_two_processes_pull_the_same_image(registry: Registry, repo_name: str, tmp_store: Path) -> None:
    layers = [Layer.from_files({f"f{i}": bytes([i]) * (3 << 20)}, compression="gzip") for i in range(3)]
    image = build_image(layers)
    push_image(registry, repo_name, image, tag="v1")
    command = [sys.executable, "-m", "trust", "pull", "--output", "json", "--store", str(tmp_store)]
    procs = [
        subprocess.Popen(
            [*command, f"{registry.host}/{repo_name}:v1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    records = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        records.append(json.loads(out))
    # Each layer was written by exactly one of the two processes; the other found it committed.
    for i in range(len(layers)):
        assert sorted(r["layers"][i]["alreadyExisted"] for r in records) in ([False, True], [True, True])
        assert sum(not r["layers"][i]["alreadyExisted"] for r in records) == 1
    assert list((tmp_store / "ingest").glob("*.partial")) == []


def test_login_then_pull_from_an_authenticated_registry(
    auth_registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    image = simple_image(b"private\n")
    push_image(auth_registry, "private/app", image, tag="v1")
    ref = f"{auth_registry.host}/private/app:v1"
    store = str(tmp_path / "store")
    assert trust("pull", "--store", store, ref) == 5
    assert f"run `trust login {auth_registry.host}`" in capsys.readouterr().err

    assert auth_registry.auth is not None
    username, password = auth_registry.auth
    monkeypatch.setattr("sys.stdin", _Stdin("wrong\n"))
    assert trust("login", auth_registry.host, "-u", username, "--password-stdin") == 5
    assert not (tmp_path / "docker" / "config.json").exists()
    monkeypatch.setattr("sys.stdin", _Stdin(password + "\n"))
    assert trust("login", auth_registry.host, "-u", username, "--password-stdin") == 0
    saved = tmp_path / "docker" / "config.json"
    assert (saved.stat().st_mode & 0o777) == 0o600
    assert trust("pull", "--store", store, ref) == 0
    assert trust("logout", auth_registry.host) == 0
    assert auth_registry.host not in json.loads(saved.read_text()).get("auths", {})


class _Stdin:
    """What `--password-stdin` reads: the bytes behind stdin (decoded strictly as UTF-8)."""

    def __init__(self, text: str) -> None:
        self.buffer = io.BytesIO(text.encode())


def test_an_image_written_by_umoci_without_a_manifest_media_type_pulls(
    registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    """umoci omits the manifest's top-level mediaType (optional in the OCI image spec); skopeo
    pushes the bytes unchanged. Such an image was refused as malformed (exit 4); it is an image."""
    layout = tmp_path / "umoci"
    (tmp_path / "hello.txt").write_text("written by umoci\n")
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:t"], check=True)
    subprocess.run(
        ["umoci", "insert", "--image", f"{layout}:t", str(tmp_path / "hello.txt"), "/hello.txt"], check=True
    )
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    assert "mediaType" not in manifest  # what this test is about
    target = f"{registry.host}/{repo_name}:t"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout}:t",
            f"docker://{target}",
        ],
        check=True,
    )
    store = tmp_path / "store"
    assert trust("pull", "--store", str(store), target) == 0
    assert trust("pull", "--store", str(store), f"{registry.host}/{repo_name}@{entry['digest']}") == 0


def test_a_tls_registry_on_loopback_is_spoken_to_in_tls(tmp_path: Path) -> None:
    """Loopback registries get HTTPS first (plain HTTP only when the server has no TLS at all); a
    certificate that does not verify is an error, never a reason to fall back."""
    from support.registry import start_registry
    from support.webpki import TestCA

    ca = TestCA.create(tmp_path / "ca")
    cert, key = ca.server(tmp_path / "tls", ["127.0.0.1"])
    registry = start_registry(tmp_path / "registry", tls=(cert, key, ca.cert_path))
    try:
        pushed = push_image(registry, "tls/app", simple_image(b"over TLS"), tag="v1")
        ref = f"{registry.host}/tls/app@{pushed.digest}"
        trusted = {**os.environ, "SSL_CERT_FILE": str(ca.cert_path)}
        command = [sys.executable, "-m", "trust", "pull", "--store", str(tmp_path / "store"), ref]
        ok = subprocess.run(command, env=trusted, capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stderr
        untrusted = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
        refused = subprocess.run(command, env=untrusted, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 5
        assert "certificate" in refused.stderr.lower() and "Traceback" not in refused.stderr
        log = registry.log_tail()  # no plain HTTP was sent, however Go's TLS server words it:
        assert "does not look like a TLS handshake" not in log and "HTTP request to an HTTPS" not in log
    finally:
        registry.stop()


def test_a_huge_reference_is_refused_in_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = "127.0.0.1:1/" + "a" * 100_000 + ":v1"
    assert trust("pull", "--store", str(tmp_path / "store"), huge) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trust: error: ") and len(line) < 1100 and "characters cut" in line


def test_a_file_named_as_a_layout_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a layout")
    assert trust("pull", "--store", str(tmp_path / "store"), f"oci:{tmp_path / 'file'}") == 2
    assert "is not a directory: not an OCI image layout" in capsys.readouterr().err
