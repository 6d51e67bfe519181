"""`trust audit` end to end: real registry, real signatures, real snapshots, tampering by hand.

Each test gets a store in which two images were admitted through `trust verify --policy` (so
their signatures were cached): `first` signed by key a, `second` signed by key b. The policy
accepts either key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from support.images import Layer, build_image, push_image
from support.registry import Registry, RegistryFactory
from support.tty import run_in_terminal

from policy.admission import admit
from policy.loader import load_policy
from pull.clients import RegistryClients
from pull.digest import Digest
from pull.reference import Reference
from pull.store import ContentStore
from run.rootfs import open_snapshots, prepare_layers
from trust.cli.app import main
from trust.cosign.signing import sign_image
from trust.keys.keyfiles import KeySigner, generate_keypair, load_private_key


@dataclass(frozen=True)
class Keys:
    folder: Path
    signers: dict[str, KeySigner]

    def policy(self, scope: str, names: tuple[str, ...], path: Path) -> Path:
        authorities = "".join(f"  {n}:\n    cosign-keys: [{self.folder / (n + '.pub')}]\n" for n in names)
        path.write_text(
            f"version: 1\nauthorities:\n{authorities}rules:\n"
            f"  - scope: {scope}\n    signed-by: [{', '.join(names)}]\n    threshold: 1\n"
            "default:\n  reject: true\n"
        )
        return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("audit-keys")
    signers = {}
    for name in ("a", "b"):
        private_pem, public_pem = generate_keypair(b"")
        (folder / f"{name}.pub").write_bytes(public_pem)
        signers[name] = KeySigner(load_private_key(private_pem, b""))
    return Keys(folder, signers)


@dataclass(frozen=True)
class Host:
    store: Path
    policy: Path
    scope: str
    first: str
    """`host/repo@digest` of the image signed by a."""
    second: str
    """`host/repo@digest` of the image signed by b."""
    first_layer: str
    second_layer: str

    def audit(self, *args: str) -> int:
        return main(["audit", "--store", str(self.store), "--policy", str(self.policy), *args])


def two_signed_images(registry: Registry, repo: str, keys: Keys, folder: Path) -> Host:
    first_layer = Layer.from_files({"etc/app.conf": b"first\n", "bin/tool": b"#!/bin/sh\necho first\n"})
    second_layer = Layer.from_files({"etc/app.conf": b"second\n", "data/blob": os.urandom(4096)})
    first = push_image(registry, f"{repo}/first", build_image([first_layer]), tag="v1")
    second = push_image(registry, f"{repo}/second", build_image([second_layer]), tag="v1")
    with RegistryClients() as clients:
        sign_image(clients, Reference.parse(first.by_digest), keys.signers["a"])
        sign_image(clients, Reference.parse(second.by_digest), keys.signers["b"])
    scope = f"{registry.host}/{repo}"
    host = Host(
        folder / "store",
        keys.policy(scope, ("a", "b"), folder / "policy.yaml"),
        scope,
        first.by_digest,
        second.by_digest,
        first_layer.digest,
        second_layer.digest,
    )
    for ref in (host.first, host.second):
        assert main(["verify", "--policy", str(host.policy), "--pull", "--store", str(host.store), ref]) == 0
    return host


@pytest.fixture
def host(registry: Registry, repo_name: str, keys: Keys, tmp_path: Path) -> Host:
    return two_signed_images(registry, repo_name, keys, tmp_path)


def report(capfd: pytest.CaptureFixture[str], code: int, expected: int) -> dict[str, Any]:
    out, err = capfd.readouterr()
    assert code == expected, err
    parsed: dict[str, Any] = json.loads(out)
    assert parsed["exitCode"] == expected
    return parsed


def images_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{i['repository']}@{i['digest']}": i for i in doc["images"]}


def flip_byte(path: Path, offset: int = 0) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_clean_store_audits_clean_with_history(host: Host, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    doc = report(capfd, host.audit("--output", "json"), 0)
    images = images_of(doc)
    assert set(images) == {host.first, host.second}  # signature artifacts are not listed as images
    for image in images.values():
        assert image["tamperedBlobs"] == [] and image["tamperedFiles"] == []
        assert image["verdict"]["outcome"] == "pass"
        assert image["lastDecision"]["decision"] == "allow" and image["lastDecision"]["reused"] is None
        assert image["pulledAt"] and image["references"]
        # manifest, config, layer, plus the cached .sig manifest and its payload
        assert image["blobsChecked"] == 5
    hashing = doc["hashing"]
    assert isinstance(hashing, dict) and hashing["bytes"] > 0


def test_a_terminal_gets_a_progress_bar_and_the_table(host: Host) -> None:
    code, output = run_in_terminal("audit", "--store", str(host.store), "--policy", str(host.policy))
    assert code == 0
    assert b"re-hashing" in output  # the bar (only on a terminal)
    assert b"INTEGRITY" in output and host.first.split("@")[0].encode() in output


def test_a_flipped_byte_in_a_blob_names_that_image_and_blob(
    host: Host, capfd: pytest.CaptureFixture[str]
) -> None:
    store = ContentStore.open(host.store)
    flip_byte(store.blob_path(Digest.parse(host.first_layer)), 10)
    capfd.readouterr()
    images = images_of(report(capfd, host.audit("--output", "json"), 4))
    tampered = images[host.first]["tamperedBlobs"]
    assert isinstance(tampered, list) and [t["digest"] for t in tampered] == [host.first_layer]
    assert "modified on disk" in tampered[0]["problem"]
    assert images[host.second]["tamperedBlobs"] == [] and images[host.second]["exitCode"] == 0
    # The text report names it too, and --image limits the audit to one image.
    assert host.audit() == 4
    assert f"blob {host.first_layer}" in capfd.readouterr().out
    assert host.audit("--image", host.second) == 0


def test_a_flipped_byte_in_a_snapshot_file_names_that_image_and_file(
    host: Host, capfd: pytest.CaptureFixture[str]
) -> None:
    store = ContentStore.open(host.store)
    snapshots = open_snapshots(store)
    with RegistryClients() as clients:
        image = admit(Reference.parse(host.second), load_policy(host.policy), store, clients)
    [lower] = prepare_layers(image, store, snapshots)
    flip_byte(lower / "etc" / "app.conf")
    capfd.readouterr()
    images = images_of(report(capfd, host.audit("--output", "json"), 4))
    [tampered] = images[host.second]["tamperedFiles"]
    assert tampered["path"] == "etc/app.conf" and "hashes to" in tampered["problem"]
    assert images[host.second]["tamperedBlobs"] == []  # the blob itself is intact
    assert images[host.first]["tamperedFiles"] == [] and images[host.first]["exitCode"] == 0
    # A file added to the snapshot is named as well.
    (lower / "etc" / "planted").write_bytes(b"x")
    assert host.audit("--output", "json") == 4
    images = images_of(json.loads(capfd.readouterr().out))
    paths = {f["path"]: f["problem"] for f in images[host.second]["tamperedFiles"]}
    assert paths["etc/planted"] == "added after unpacking"
    # So are a changed owner, a removed file, and the snapshot's root made writable for all.
    os.chown(lower / "data" / "blob", 1000, 1000)
    (lower / "etc" / "app.conf").unlink()
    os.chmod(lower, 0o777)
    assert host.audit("--output", "json") == 4
    images = images_of(json.loads(capfd.readouterr().out))
    paths = {f["path"]: f["problem"] for f in images[host.second]["tamperedFiles"]}
    assert paths["data/blob"] == "owner 1000:1000, was 0:0"
    assert paths["etc/app.conf"] == "removed after unpacking"
    assert paths["."] == "mode 777, was 755"


def test_a_missing_manifest_is_reported_as_tampering(host: Host, capfd: pytest.CaptureFixture[str]) -> None:
    store = ContentStore.open(host.store)
    manifest = Digest.parse(host.first.split("@", 1)[1])
    store.blob_path(manifest).unlink()
    capfd.readouterr()
    images = images_of(report(capfd, host.audit("--output", "json"), 4))
    assert [t["digest"] for t in images[host.first]["tamperedBlobs"]] == [str(manifest)]
    assert "missing" in images[host.first]["tamperedBlobs"][0]["problem"]
    assert images[host.second]["exitCode"] == 0


def test_removing_a_key_from_the_policy_fails_the_images_it_signed(
    host: Host, keys: Keys, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    without_b = keys.policy(host.scope, ("a",), tmp_path / "without-b.yaml")
    capfd.readouterr()
    code = main(["audit", "--store", str(host.store), "--policy", str(without_b), "--output", "json"])
    images = images_of(report(capfd, code, 3))
    assert images[host.second]["verdict"]["outcome"] == "fail"
    assert images[host.second]["lastDecision"]["decision"] == "allow"
    assert images[host.first]["verdict"]["outcome"] == "pass"
    # Tampering wins over a policy failure.
    flip_byte(ContentStore.open(host.store).blob_path(Digest.parse(host.first_layer)))
    assert main(["audit", "--store", str(host.store), "--policy", str(without_b)]) == 4


def test_sarif_names_the_tampered_image(host: Host, capfd: pytest.CaptureFixture[str]) -> None:
    flip_byte(ContentStore.open(host.store).blob_path(Digest.parse(host.first_layer)))
    capfd.readouterr()
    assert host.audit("--output", "sarif") == 4
    sarif = json.loads(capfd.readouterr().out)
    [result] = sarif["runs"][0]["results"]
    assert result["ruleId"] == "trust/integrity"
    assert host.first in result["message"]["text"] and host.first_layer in result["message"]["text"]


def test_offline_audit_uses_the_cached_signatures_and_no_network(
    fresh_registry: RegistryFactory,
    repo_name: str,
    keys: Keys,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    registry = fresh_registry()
    host = two_signed_images(registry, repo_name, keys, tmp_path)
    registry.stop()  # from here on, any registry call fails (exit 5)
    capfd.readouterr()
    images = images_of(report(capfd, host.audit("--offline", "--output", "json"), 0))
    for image in images.values():
        verdict = image["verdict"]
        assert isinstance(verdict, dict) and verdict["outcome"] == "pass"
        assert verdict["evaluation"]["authorities"]  # signatures really were verified
    without_b = keys.policy(host.scope, ("a",), tmp_path / "without-b.yaml")
    code = main(["audit", "--offline", "--store", str(host.store), "--policy", str(without_b), "-o", "json"])
    images = images_of(report(capfd, code, 3))
    assert images[host.second]["verdict"]["outcome"] == "fail"
    # The same audit online cannot reach the stopped registry: exit 5.
    assert host.audit() == 5


def test_a_tampered_cached_signature_is_an_integrity_failure_offline(
    host: Host, capfd: pytest.CaptureFixture[str]
) -> None:
    store = ContentStore.open(host.store)
    digest = Digest.parse(host.first.split("@", 1)[1])
    sig = store.resolve(f"{host.first.split('@', 1)[0]}:{digest.encoded}.sig")
    assert sig is not None  # admission cached the .sig manifest under cosign's tag
    flip_byte(store.blob_path(sig.digest), 5)
    capfd.readouterr()
    images = images_of(report(capfd, host.audit("--offline", "--output", "json"), 4))
    assert [t["digest"] for t in images[host.first]["tamperedBlobs"]] == [str(sig.digest)]


def test_images_shows_size_on_disk_and_admission(host: Host, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert main(["images", "--store", str(host.store), "--output", "json"]) == 0
    rows = {f"{r['repository']}@{r['digest']}": r for r in json.loads(capfd.readouterr().out)}
    assert set(rows) == {host.first, host.second}
    assert all(r["admitted"] == "allow" and r["sizeOnDisk"] >= r["size"] > 0 for r in rows.values())
    assert main(["images", "--store", str(host.store)]) == 0
    assert "ADMITTED" in capfd.readouterr().out


def test_an_unknown_image_is_a_usage_error(host: Host, capfd: pytest.CaptureFixture[str]) -> None:
    assert host.audit("--image", f"{host.scope}/nothing:v1") == 2
    assert "no image" in capfd.readouterr().err


def test_referrers_from_the_api_are_cached_for_offline_reading(tmp_path: Path) -> None:
    from hostile import HostileRegistry, sha256

    from pull.layout import LayoutClient
    from pull.referrers import list_referrers
    from pull.registry import RegistryClient
    from pull.sigcache import CachingClient

    payload = b'{"a bundle": true}'
    with HostileRegistry(referrers_api=True) as registry:
        image = registry.add_image("team/app", "v1", layers=[b"layer bytes"])
        empty = registry.add_blob_content(b"{}")
        referrer = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/example",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
                "layers": [
                    {"mediaType": "application/example", "digest": sha256(payload), "size": len(payload)}
                ],
                "subject": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": image.digest,
                    "size": len(image.manifest),
                },
            }
        ).encode()
        registry.add_blob_content(payload)
        referrer_digest = registry.add_manifest("team/app", sha256(referrer), referrer)
        store = ContentStore.open(tmp_path / "store")
        subject = Digest.parse(image.digest)
        prefix = f"{registry.host}/team/app:"
        with RegistryClient(registry.host) as client:
            caching = cast(RegistryClient, CachingClient(client, store, registry.host))
            online = list_referrers(caching, "team/app", subject)
            caching.get_manifest("team/app", referrer_digest)
            caching.get_blob("team/app", Digest.parse(sha256(payload)), len(payload))
        assert [str(d.digest) for d in online] == [referrer_digest]
        assert any(r.path.startswith("/v2/team/app/referrers/") for r in registry.requests)
    # The registry is gone: the layout reader finds the same referrers under the referrers tag.
    assert store.resolve(f"{prefix}{subject.encoded}") is not None
    offline = LayoutClient(store.root, ref_prefix=prefix)
    assert list_referrers(offline, "team/app", subject) == online
    assert offline.get_blob("team/app", Digest.parse(sha256(payload)), 100) == payload
    assert offline.get_manifest("team/app", referrer_digest).data == referrer


def test_rmi_takes_the_cached_signatures_along_and_gc_frees_them(
    host: Host, capfd: pytest.CaptureFixture[str]
) -> None:
    store = ContentStore.open(host.store)
    repository, digest = host.first.split("@", 1)
    sig_name = f"{repository}:{Digest.parse(digest).encoded}.sig"
    sig = store.resolve(sig_name)
    assert sig is not None
    capfd.readouterr()
    assert main(["rmi", "--store", str(host.store), host.first]) == 0
    assert set(capfd.readouterr().out.splitlines()) == {f"untagged: {host.first}", f"untagged: {sig_name}"}
    assert main(["gc", "--store", str(host.store)]) == 0
    assert not store.has(sig.digest) and not store.has(Digest.parse(host.first_layer))
    assert store.has(Digest.parse(host.second_layer))
    capfd.readouterr()
    images = images_of(report(capfd, host.audit("--offline", "--output", "json"), 0))
    assert set(images) == {host.second}


def test_a_tag_the_registry_dropped_is_dropped_from_the_cache(tmp_path: Path) -> None:
    from hostile import HostileRegistry, Reply

    from pull.referrers import list_referrers
    from pull.registry import RegistryClient
    from pull.sigcache import CachingClient

    with HostileRegistry(referrers_api=False) as registry:
        image = registry.add_image("team/app", "v1", layers=[b"layer bytes"])
        subject = Digest.parse(image.digest)
        fallback = json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        ).encode()
        registry.add_manifest("team/app", subject.encoded, fallback)
        store = ContentStore.open(tmp_path / "store")
        name = f"{registry.host}/team/app:{subject.encoded}"
        with RegistryClient(registry.host) as client:
            caching = cast(RegistryClient, CachingClient(client, store, registry.host))
            assert list_referrers(caching, "team/app", subject) == []
            cached = store.resolve(name)
            assert cached is not None and store.read_blob(cached.digest, 1 << 20) == fallback
            registry.fail_next("GET", f"/v2/team/app/manifests/{subject.encoded}", Reply(404))
            assert list_referrers(caching, "team/app", subject) == []
        assert store.resolve(name) is None


def test_a_multi_platform_image_is_one_entry_with_its_pulled_platform(
    registry: Registry, repo_name: str, keys: Keys, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from support.images import build_index, multiplatform_images, push_index

    index = build_index(multiplatform_images())
    pushed = push_index(registry, repo_name, index, tag="v1")
    arm = index.image_for("linux/arm64")
    with RegistryClients() as clients:
        sign_image(clients, Reference.parse(f"{registry.host}/{repo_name}@{arm.digest}"), keys.signers["a"])
    scope = f"{registry.host}/{repo_name}"
    policy = keys.policy(scope, ("a",), tmp_path / "policy.yaml")
    policy.write_text(
        policy.read_text().replace("threshold: 1\n", "threshold: 1\n    sign-target: manifest\n")
    )
    store = tmp_path / "store"
    ref = f"{scope}@{pushed.digest}"
    assert (
        main(
            [
                "verify",
                "--policy",
                str(policy),
                "--pull",
                "--store",
                str(store),
                "--platform",
                "linux/arm64",
                ref,
            ]
        )
        == 0
    )
    capfd.readouterr()
    code = main(["audit", "--offline", "--store", str(store), "--policy", str(policy), "-o", "json"])
    [image] = report(capfd, code, 0)["images"]
    assert (image["digest"], image["indexDigest"], image["manifestDigest"]) == (
        pushed.digest,
        pushed.digest,
        arm.digest,
    )
    assert image["verdict"]["outcome"] == "pass" and image["tamperedBlobs"] == []
    # index, platform manifest, config, layers, and the platform manifest's .sig manifest and payload
    assert image["blobsChecked"] == 2 + 1 + len(arm.layers) + 2
    flip_byte(ContentStore.open(store).blob_path(Digest.parse(arm.layers[-1].digest)))
    # Admitted by digest, so no tag names it; the platform manifest's digest selects the image.
    assert main(["audit", "--store", str(store), "--policy", str(policy), "--image", f"{scope}:v1"]) == 2
    assert (
        main(["audit", "--store", str(store), "--policy", str(policy), "--image", f"{scope}@{arm.digest}"])
        == 4
    )


# -- what the tree comparison must notice (issue 20, class 6: each guard has a test) ------------------


def _cap_net_raw() -> bytes:
    """A `security.capability` value (VFS_CAP_REVISION_2) granting CAP_NET_RAW: what an attacker adds."""
    import struct

    return struct.pack("<IIIII", 0x02000000, 1 << 13, 0, 0, 0)


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("capability", "extended attributes changed (security.capability)"),
        ("retarget", "symlink to 'evil', was 'tool'"),  # same length: only the target differs
        ("retype", "is a fifo, was a file"),
    ],
)
def test_a_snapshot_entry_whose_xattrs_target_or_type_changed_is_tampering(
    tamper: str,
    problem: str,
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from support.images import Symlink

    layer = Layer.from_files({"bin/tool": b"#!/bin/sh\necho tool\n", "bin/sh": Symlink("tool")})
    pushed = push_image(registry, repo_name, build_image([layer]), tag="v1")
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault: {insecure-accept-anything: true}\n")
    store_path = tmp_path / "store"
    store = ContentStore.open(store_path)
    with RegistryClients() as clients:
        image = admit(Reference.parse(pushed.by_digest), load_policy(policy), store, clients)
    [lower] = prepare_layers(image, store, open_snapshots(store))
    audit = ["audit", "--store", str(store_path), "--policy", str(policy), "--output", "json"]
    assert main(audit) == 0
    capfd.readouterr()
    if tamper == "capability":
        os.setxattr(lower / "bin" / "tool", "security.capability", _cap_net_raw())
        path = "bin/tool"
    elif tamper == "retarget":
        (lower / "bin" / "sh").unlink()
        os.symlink("evil", lower / "bin" / "sh")
        path = "bin/sh"
    else:
        mode = (lower / "bin" / "tool").stat().st_mode & 0o7777
        (lower / "bin" / "tool").unlink()
        os.mkfifo(lower / "bin" / "tool", mode)
        path = "bin/tool"
    images = images_of(report(capfd, main(audit), 4))
    [tampered] = images[pushed.by_digest]["tamperedFiles"]
    assert (tampered["path"], tampered["problem"]) == (path, problem)
