"""The test infrastructure itself, proven against the real registry, skopeo and umoci.

If these fail, integration tests elsewhere cannot be trusted: fix these first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import support.registry
from support.images import (
    DIR,
    DOCKER,
    DOCKER_CONFIG,
    DOCKER_INDEX,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    REALISTIC_EXPECTED,
    Compression,
    Device,
    Entry,
    File,
    Hardlink,
    Layer,
    ManifestType,
    Pusher,
    PushError,
    Symlink,
    build_big_image,
    build_image,
    build_index,
    busybox_image,
    multiplatform_images,
    opaque,
    push_image,
    push_index,
    push_manifest,
    realistic_image,
    simple_image,
    snapshot_tree,
    whiteout,
    write_oci_layout,
)
from support.registry import Registry, RegistryFactory, RegistryStartError, start_registry

SPEC: dict[str, Entry] = {
    "etc/": DIR,
    "etc/hostname": b"x\n",
    "bin/": DIR,
    "bin/tool": File(b"#!/bin/sh\n", mode=0o755, uid=1000, gid=1001),
    "lnk": Symlink("etc/hostname"),
    "hard": Hardlink("etc/hostname"),
    whiteout("gone/file"): b"",
    opaque("var/cache"): b"",
    "dev/null": Device("char", 1, 3, mode=0o666),
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str) -> bytes:
    result = subprocess.run(["skopeo", *args], capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


# -- layers and documents (no registry) -----------------------------------------------------------


def test_layer_tar_has_exactly_the_spec_in_order() -> None:
    layer = Layer.from_files(SPEC, compression="none")
    with tarfile.open(fileobj=io.BytesIO(layer.tar())) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == [
        "etc",
        "etc/hostname",
        "bin",
        "bin/tool",
        "lnk",
        "hard",
        "gone/.wh.file",
        "var/cache/.wh..wh..opq",
        "dev/null",
    ]
    by_name = {m.name: m for m in members}
    tool = by_name["bin/tool"]
    assert (tool.isreg(), tool.mode, tool.uid, tool.gid, tool.uname) == (True, 0o755, 1000, 1001, "")
    assert by_name["etc"].isdir() and by_name["etc"].mode == 0o755
    assert by_name["lnk"].issym() and by_name["lnk"].linkname == "etc/hostname"
    assert by_name["hard"].islnk() and by_name["hard"].linkname == "etc/hostname"
    assert by_name["dev/null"].ischr() and (by_name["dev/null"].devmajor, by_name["dev/null"].devminor) == (
        1,
        3,
    )
    assert {m.mtime for m in members} == {1_577_836_800}


@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_layer_digests_are_deterministic_and_correct(compression: Compression) -> None:
    first = Layer.from_files(SPEC, compression=compression)
    again = Layer.from_files(dict(SPEC), compression=compression)
    assert first == again
    assert first.digest == sha256(first.blob()) and first.size == len(first.blob())
    assert first.diff_id == sha256(first.tar())
    assert (first.digest == first.diff_id) == (compression == "none")


def test_xattrs_are_written_as_pax_records() -> None:
    layer = Layer.from_files({"d/": dataclasses.replace(DIR, xattrs={"trusted.overlay.opaque": "y"})})
    with tarfile.open(fileobj=io.BytesIO(layer.tar())) as archive:
        (member,) = archive.getmembers()
    assert member.pax_headers["SCHILY.xattr.trusted.overlay.opaque"] == "y"


def test_image_config_and_manifest() -> None:
    layers = [Layer.from_files({"a": b"1"}), Layer.from_files({"b": b"2"}, compression="zstd")]
    image = build_image(
        layers,
        cmd=["/bin/sh"],
        entrypoint=["/entry"],
        env=["A=1"],
        working_dir="/w",
        user="1000:1000",
        platform=("linux", "arm64", "v8"),
    )
    config = image.config
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    assert config["config"] == {
        "Env": ["A=1"],
        "Entrypoint": ["/entry"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/w",
        "User": "1000:1000",
    }
    manifest = image.manifest
    assert manifest["mediaType"] == OCI_MANIFEST == image.media_type
    assert manifest["config"] == {
        "mediaType": OCI_CONFIG,
        "digest": sha256(image.config_bytes),
        "size": len(image.config_bytes),
    }
    assert [d["mediaType"] for d in manifest["layers"]] == [OCI_LAYER_GZIP, OCI_LAYER_ZSTD]
    assert image.digest == sha256(image.manifest_bytes)

    docker = build_image(layers[:1], manifest_type=DOCKER)
    assert docker.manifest["mediaType"] == DOCKER_MANIFEST
    assert docker.manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert docker.manifest["layers"][0]["mediaType"] == DOCKER_LAYER_GZIP

    lying = build_image(layers, diff_ids=["sha256:" + "0" * 64] * 2)
    assert lying.config["rootfs"]["diff_ids"] == ["sha256:" + "0" * 64] * 2


def test_index_lists_each_platform() -> None:
    index = build_index(multiplatform_images())
    doc = index.manifest
    assert doc["mediaType"] == OCI_INDEX
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in doc["manifests"]] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    assert [m["digest"] for m in doc["manifests"]] == [image.digest for image in index.images]
    assert len({image.digest for image in index.images}) == 2
    assert index.image_for("linux/arm64").config["architecture"] == "arm64"
    assert build_index(multiplatform_images(manifest_type=DOCKER)).media_type == DOCKER_INDEX


# -- the registry fixtures ------------------------------------------------------------------------


@pytest.mark.parametrize("manifest_type", [OCI, DOCKER])
@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_pushed_image_reads_back_byte_for_byte(
    registry: Registry, repo_name: str, compression: Compression, manifest_type: ManifestType
) -> None:
    image = build_image(
        [
            Layer.from_files(SPEC, compression=compression),
            Layer.from_files({"b": b"2"}, compression=compression),
        ],
        cmd=["/bin/sh"],
        manifest_type=manifest_type,
    )
    pushed = push_image(registry.host, repo_name, image, tag="v1")
    assert pushed.by_tag == registry.reference(repo_name, "v1")
    assert pushed.by_digest == registry.reference(repo_name, image.digest)
    with registry.client() as http:
        for reference in ("v1", image.digest):
            response = http.get(
                f"/v2/{repo_name}/manifests/{reference}", headers={"Accept": image.media_type}
            )
            assert response.status_code == 200
            assert response.content == pushed.manifest_bytes
            assert sha256(response.content) == pushed.digest == response.headers["Docker-Content-Digest"]
            assert response.headers["Content-Type"] == image.media_type
        for descriptor, data in [
            (pushed.config, image.config_bytes),
            *zip(pushed.layers, [layer.blob() for layer in image.layers], strict=True),
        ]:
            blob = http.get(f"/v2/{repo_name}/blobs/{descriptor.digest}")
            assert blob.status_code == 200
            assert blob.content == data and sha256(blob.content) == descriptor.digest
            assert len(blob.content) == descriptor.size
    on_disk = registry.blob_path(image.layers[0].digest)
    assert on_disk.read_bytes() == image.layers[0].blob()


@pytest.mark.parametrize(
    ("compression", "manifest_type", "layer_type"),
    [("gzip", OCI, OCI_LAYER_GZIP), ("none", OCI, OCI_LAYER_TAR), ("gzip", DOCKER, DOCKER_LAYER_GZIP)],
)
def test_skopeo_inspects_a_pushed_image(
    tmp_path: Path,
    registry: Registry,
    repo_name: str,
    compression: Compression,
    manifest_type: ManifestType,
    layer_type: str,
) -> None:
    image = build_image(
        [Layer.from_files(SPEC, compression=compression)],
        cmd=["/bin/sh"],
        platform="linux/arm64",
        manifest_type=manifest_type,
    )
    push_image(registry, repo_name, image, tag="v1")
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry.reference(repo_name, 'v1')}")
    )
    assert info["Digest"] == image.digest
    assert (info["Os"], info["Architecture"]) == ("linux", "arm64")
    assert info["Layers"] == [layer.digest for layer in image.layers]
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{registry.reference(repo_name, 'v1')}")
    assert raw == image.manifest_bytes and image.manifest["layers"][0]["mediaType"] == layer_type
    # A copy fetches every blob and checks its digest (and diff_ids when it decompresses).
    source = f"docker://{registry.reference(repo_name, image.digest)}"
    skopeo("--insecure-policy", "copy", "--src-tls-verify=false", source, f"dir:{tmp_path / 'copy'}")
    copied = {p.name for p in (tmp_path / "copy").iterdir()}
    assert {d.digest.removeprefix("sha256:") for d in image.layer_descriptors} <= copied


def test_skopeo_returns_the_pushed_index_exactly(registry: Registry, repo_name: str) -> None:
    index = build_index(multiplatform_images())
    pushed = push_index(registry, repo_name, index, tag="multi")
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{pushed.by_tag}")
    assert raw == index.manifest_bytes
    arm = json.loads(
        skopeo("--override-arch", "arm64", "inspect", "--tls-verify=false", f"docker://{pushed.by_tag}")
    )
    assert arm["Digest"] == index.digest  # skopeo reports the digest of what the reference names
    assert arm["Architecture"] == "arm64"
    assert arm["Layers"] == [layer.digest for layer in index.image_for("linux/arm64").layers]
    child = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{pushed.images[0].by_digest}")
    assert child == index.images[0].manifest_bytes


def test_htpasswd_registry_refuses_anonymous_and_accepts_credentials(
    auth_registry: Registry, repo_name: str
) -> None:
    assert auth_registry.username and auth_registry.password
    with auth_registry.client(authenticated=False) as anonymous:
        refused = anonymous.get("/v2/")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
    with auth_registry.client() as http:
        assert http.get("/v2/").status_code == 200
    with pytest.raises(PushError, match="HTTP 401"):
        push_image(auth_registry.host, repo_name, simple_image())  # a bare host: no credentials
    pushed = push_image(auth_registry, repo_name, simple_image(), tag="v1")  # the Registry's credentials
    creds = f"{auth_registry.username}:{auth_registry.password}"
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds, f"docker://{pushed.by_tag}"))
    assert info["Digest"] == pushed.digest


def test_fresh_registry_is_private_and_deletes(
    registry: Registry, fresh_registry: RegistryFactory, repo_name: str
) -> None:
    private = fresh_registry()
    assert private.host != registry.host and private.running
    pushed = push_image(private, repo_name, simple_image(b"private\n"), tag="v1")
    with registry.client() as shared:
        assert shared.get(f"/v2/{repo_name}/manifests/v1").status_code == 404
    with private.client() as http:
        assert http.delete(f"/v2/{repo_name}/manifests/{pushed.digest}").status_code == 202
        assert http.get(f"/v2/{repo_name}/manifests/{pushed.digest}").status_code == 404
    secured = fresh_registry(credentials=("bob", "pw"))
    assert secured.auth == ("bob", "pw")


def test_stop_kills_the_process_and_start_failures_show_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_registry(tmp_path / "ok") as running:
        pid = running.pid
        assert running.running
    assert not running.running
    assert not Path(f"/proc/{pid}").exists()  # terminated and reaped

    def broken_config(storage: Path, htpasswd: Path | None) -> dict[str, Any]:
        return {"version": 0.1, "storage": {"no-such-driver": {}}, "http": {"addr": "127.0.0.1:0"}}

    monkeypatch.setattr(support.registry, "_config", broken_config)
    with pytest.raises(RegistryStartError, match=r"(?s)exited .*no-such-driver"):
        start_registry(tmp_path / "broken", timeout=10)


def test_repo_name_is_unique_and_valid(repo_name: str, request: pytest.FixtureRequest) -> None:
    assert re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", repo_name)
    assert repo_name.startswith("t/test-repo-name-is-unique-and-valid-")


def test_tmp_store_is_a_fresh_path(tmp_store: Path) -> None:
    assert not tmp_store.exists() and tmp_store.parent.is_dir()


def test_raw_manifest_push(registry: Registry, repo_name: str) -> None:
    image = simple_image(b"raw\n")
    with Pusher(registry) as pusher:
        pusher.image(repo_name, image)  # blobs, then the manifest by digest
    digest = push_manifest(registry, repo_name, "again", image.manifest_bytes, image.media_type)
    assert digest == image.digest


# -- realistic, busybox and big images ------------------------------------------------------------


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    result = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return bundle / "rootfs"


@pytest.mark.parametrize("compression", ["gzip", "none"])  # umoci 0.4.7: no zstd, OCI manifests only
def test_realistic_image_unpacks_with_umoci_as_documented(tmp_path: Path, compression: Compression) -> None:
    image = realistic_image(compression=compression)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    assert json.loads(skopeo("inspect", f"oci:{layout}:v1"))["Digest"] == image.digest
    rootfs = umoci_unpack(layout, "v1", tmp_path / "bundle")
    tree = snapshot_tree(rootfs)
    assert tree.simple() == REALISTIC_EXPECTED
    assert tree["usr/bin/alias"].nlink == 1  # its partner bin/tool was replaced in layer 3
    assert tree["usr/local/bin/new-link"].nlink == 1  # its partner new was deleted in layer 3


def test_busybox_image_is_a_usable_rootfs(tmp_path: Path) -> None:
    image = busybox_image()
    rootfs = umoci_unpack(write_oci_layout(tmp_path / "layout", image, "bb"), "bb", tmp_path / "bundle")
    assert (rootfs / "bin/sh").readlink() == Path("busybox")
    result = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", "echo hello; id -u; set -- /bin/*; echo $#"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.decode().split() == ["hello", "0", "11"]


def test_big_image_is_deterministic_streamed_and_pushed_in_chunks(
    tmp_path: Path, fresh_registry: RegistryFactory, repo_name: str
) -> None:
    kwargs: dict[str, Any] = {"total_size": 3 * 2**20 + 5, "layers": 3, "seed": 7, "file_size": 2**20}
    image = build_big_image(tmp_path / "a", **kwargs)
    assert image.digest == build_big_image(tmp_path / "b", **kwargs).digest
    assert image.digest != build_big_image(tmp_path / "c", **{**kwargs, "seed": 8}).digest
    for layer in image.layers:
        assert layer.data is None and layer.path is not None
        assert layer.size == layer.path.stat().st_size and layer.digest == sha256(layer.path.read_bytes())
        with tarfile.open(fileobj=io.BytesIO(layer.tar())) as archive:
            sizes = [m.size for m in archive.getmembers() if m.isfile()]
        assert layer.diff_id == sha256(layer.tar())
    assert sum(stat.S_ISREG(p.stat().st_mode) for p in (tmp_path / "a").iterdir()) == 3
    assert sizes == [2**20, 1]  # the last layer holds 1 MiB + 1 byte, files are at most 1 MiB

    private = fresh_registry()
    with Pusher(private) as pusher:
        pusher.blob(repo_name, image.config_bytes)
        for layer in image.layers:
            pusher.blob_chunks(repo_name, layer, chunk_size=300_000)  # several PATCHes per layer
        pusher.manifest(repo_name, "big", image.manifest_bytes, image.media_type)
    with private.client() as http:
        for layer in image.layers:
            assert sha256(http.get(f"/v2/{repo_name}/blobs/{layer.digest}").content) == layer.digest
    assert push_image(private, repo_name, image, tag="again").digest == image.digest  # HEAD skips blobs


@pytest.mark.parametrize("allowed", [False, True])
def test_a_run_without_root_says_it_proved_little_and_fails_unless_allowed(allowed: bool) -> None:
    """Without root hundreds of tests skip; a green run would hide that every breakout test was skipped."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TRUST_TESTS_"))}
    if allowed:
        env["TRUST_TESTS_WITHOUT_ROOT"] = "1"
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         str(repo / ".venv" / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rootdir", str(repo), "-c", str(repo / "pyproject.toml"), str(repo / "tests" / "test_unpack.py")],
        cwd="/tmp", env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "NOT ROOT:" in result.stdout and "tests skipped" in result.stdout, result.stdout[-2000:]
    assert result.returncode == (0 if allowed else 1), result.stdout[-2000:]
