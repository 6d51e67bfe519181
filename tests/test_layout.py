"""OCI image layouts as sources and destinations: references, `LayoutClient` against hostile
directories, policy scopes for layouts, and referrers kept in a layout."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from support.images import push_image, simple_image, write_oci_layout
from support.registry import Registry
from support.vectors import VECTORS as SHARED_VECTORS

from policy.errors import PolicyError
from policy.scope import parse_scope
from pull.clients import RegistryClients
from pull.digest import Digest
from pull.errors import (
    DigestMismatch,
    IntegrityError,
    InvalidManifest,
    InvalidReference,
    NotFound,
    RegistryError,
    SizeMismatch,
    UsageError,
)
from pull.layout import LayoutClient
from pull.manifest import Descriptor
from pull.pipeline import pull
from pull.reference import Reference
from pull.referrers import list_referrers, push_referrer
from pull.store import ContentStore
from trust.cli.app import main

VECTORS = SHARED_VECTORS / "notation" / "oci_layout"
KEYS = Path(__file__).resolve().parent.parent / "keys-example"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
NOTATION = "application/vnd.cncf.notary.signature"


def sha(data: bytes) -> Digest:
    return Digest.of_bytes(data)


@pytest.fixture
def vector(tmp_path: Path) -> Path:
    """A writable copy of the valid Notation vector layout (image `v1` + one signature)."""
    copy = tmp_path / "vector"
    shutil.copytree(VECTORS / "e2e-valid-signature", copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def image_digest(layout: Path) -> Digest:
    index = json.loads((layout / "index.json").read_text())
    [entry] = [e for e in index["manifests"] if e.get("annotations", {}).get(REF_NAME) == "v1"]
    return Digest.parse(entry["digest"])


# -- references -----------------------------------------------------------------------------------


def test_layout_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Reference.parse("oci:images/app:v1")
    assert relative.registry == relative.api_host == f"oci:{tmp_path}/images/app"
    assert (relative.repository, relative.tag, relative.digest) == ("", "v1", None)
    assert relative.name == f"oci:{tmp_path}/images/app" and relative.is_layout
    assert str(relative) == f"oci:{tmp_path}/images/app:v1"
    pinned = Reference.parse(f"oci:/a//b/../c:v2@sha256:{'a' * 64}")
    assert pinned.name == "oci:/a/c" and pinned.tag == "v2" and pinned.identifier == f"sha256:{'a' * 64}"
    assert Reference.parse(str(pinned)) == pinned
    assert Reference.parse("oci:/x").tag == "latest"
    assert Reference.parse("oci:/x/").name == "oci:/x"  # how cosign's docker-reference of a layout reads back
    assert not Reference.parse("127.0.0.1:5000/team/app:v1").is_layout
    for bad in ("oci:", "oci::v1", "oci:/x:bad/tag", "oci:/x@sha256:short", "oci:/x:a:b", "oci:/x\n:v1"):
        with pytest.raises(InvalidReference):
            Reference.parse(bad)


def test_clients_route_layout_hosts_to_a_layout_client(tmp_path: Path) -> None:
    with RegistryClients() as clients:
        client = clients(f"oci:{tmp_path}")
        assert isinstance(client, LayoutClient) and client.root == tmp_path and client.writable
        assert clients(f"oci:{tmp_path}") is client


# -- reading, against hostile directories ------------------------------------------------------------


def test_reads_the_notation_vector_and_its_referrers(vector: Path) -> None:
    client = LayoutClient(vector)
    digest = image_digest(vector)
    fetched = client.get_manifest("", "v1")
    assert sha(fetched.data) == digest and fetched.content_type == OCI_MANIFEST
    assert client.get_manifest("", str(digest)).data == fetched.data
    assert client.head_manifest("", "v1") == (OCI_MANIFEST, str(digest), len(fetched.data))
    assert client.head_manifest("", "nope") is None
    assert client.list_tags("") == [digest.encoded, "v1"]
    assert client.referrers("", digest) is None
    [signature] = list_referrers(client, "", digest, NOTATION)
    assert signature.artifact_type == NOTATION
    layer = json.loads(fetched.data)["layers"][0]
    blob = Digest.parse(layer["digest"])
    with client.stream_blob("", blob) as chunks:
        assert sha(b"".join(chunks)) == blob
    assert client.blob_exists("", blob) and not client.blob_exists("", sha(b"absent"))
    with pytest.raises(NotFound, match="tag nope not found"):
        client.get_manifest("", "nope")
    with pytest.raises(NotFound):
        client.get_blob("", sha(b"absent"), 10)
    with pytest.raises(SizeMismatch):
        client.get_blob("", blob, layer["size"] - 1)


def test_tampered_blobs_are_caught_on_every_read_path(vector: Path) -> None:
    client = LayoutClient(vector)
    digest = image_digest(vector)
    layer = Digest.parse(json.loads(client.get_manifest("", "v1").data)["layers"][0]["digest"])
    (vector / "blobs" / "sha256" / layer.hex).write_bytes(b"tampered bytes!!!")
    with pytest.raises(DigestMismatch, match=str(layer)):
        client.get_blob("", layer, 100)
    with pytest.raises(DigestMismatch, match=str(layer)), client.stream_blob("", layer) as chunks:
        b"".join(chunks)
    manifest = vector / "blobs" / "sha256" / digest.hex
    manifest.write_bytes(manifest.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match=str(digest)):
        client.get_manifest("", "v1")


def test_a_blob_linking_outside_the_layout_is_refused(vector: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"not part of the layout")
    digest = sha(b"not part of the layout")
    (vector / "blobs" / "sha256" / digest.hex).symlink_to(outside)
    with pytest.raises(InvalidManifest, match="outside the layout"):
        LayoutClient(vector).get_blob("", digest, 100)
    # A link that stays inside the layout is fine (some tools deduplicate that way).
    inside = vector / "blobs" / "sha256" / "kept"
    inside.write_bytes(b"inside")
    (vector / "blobs" / "sha256" / sha(b"inside").hex).symlink_to(inside)
    assert LayoutClient(vector).get_blob("", sha(b"inside"), 10) == b"inside"


def test_writes_through_a_blobs_link_out_of_the_layout_are_refused(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    LayoutClient(layout, writable=True).push_blob("", sha(b"x"), 1, b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (layout / "blobs" / "sha512").symlink_to(elsewhere)
    digest = Digest.of_bytes(b"y", "sha512")
    with pytest.raises(InvalidManifest, match="outside the layout"):
        LayoutClient(layout, writable=True).push_blob("", digest, 1, b"y")
    assert list(elsewhere.iterdir()) == []


def test_a_fifo_blob_is_refused_without_blocking(vector: Path) -> None:
    digest = sha(b"fifo")
    os.mkfifo(vector / "blobs" / "sha256" / digest.hex)
    with pytest.raises(InvalidManifest, match="not a regular file"):
        LayoutClient(vector).get_blob("", digest, 10)


@pytest.mark.parametrize(
    ("index", "error"),
    [
        (b"not json", "not valid JSON"),
        (b'{"schemaVersion": 2, "manifests": [], "manifests": []}', "duplicate key"),
        (b'{"schemaVersion": 1, "manifests": []}', "schemaVersion"),
        (b'{"schemaVersion": 2, "manifests": {}}', "must be a list"),
        (b'{"schemaVersion": 2, "manifests": [{"digest": "sha256:x"}]}', "mediaType"),
        (b'{"schemaVersion": 2, "mediaType": "application/x", "manifests": []}', "mediaType"),
    ],
)
def test_malformed_index_json_is_an_integrity_error(vector: Path, index: bytes, error: str) -> None:
    (vector / "index.json").write_bytes(index)
    with pytest.raises(InvalidManifest, match=error):
        LayoutClient(vector).get_manifest("", "v1")


def test_hostile_index_json_shapes_are_integrity_errors_not_crashes(
    vector: Path, tmp_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deep nesting (json's recursion limit) and millions of tiny values (gigabytes of Python
    objects from 64 MiB of JSON) are refused as malformed, with exit 4, before they cost anything."""
    deep = b'{"schemaVersion": 2, "manifests": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    (vector / "index.json").write_bytes(deep)
    with pytest.raises(InvalidManifest, match="nested too deeply"):
        LayoutClient(vector).get_manifest("", "v1")
    many = b'{"schemaVersion": 2, "manifests": [' + b"[]," * 2_000_000 + b"[]]}"
    (vector / "index.json").write_bytes(many)
    with pytest.raises(InvalidManifest, match="more than 2000000 JSON values"):
        LayoutClient(vector).get_manifest("", "v1")
    assert main(["pull", "--store", str(tmp_store), f"oci:{vector}:v1"]) == 4
    assert "JSON values" in capsys.readouterr().err
    (vector / "oci-layout").write_bytes(b"[" * 2000 + b"]" * 2000)
    with pytest.raises(InvalidManifest, match="imageLayoutVersion"):
        LayoutClient(vector).ping()


def test_a_tag_naming_two_manifests_is_ambiguous(vector: Path) -> None:
    index = json.loads((vector / "index.json").read_text())
    twin = dict(index["manifests"][1], annotations={REF_NAME: "v1"})
    index["manifests"].append(twin)
    (vector / "index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidManifest, match="different manifests"):
        LayoutClient(vector).get_manifest("", "v1")


def test_not_a_layout(tmp_path: Path, vector: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        LayoutClient(tmp_path / "absent").get_manifest("", "v1")
    with pytest.raises(NotFound, match="no oci-layout"):
        LayoutClient(tmp_path).get_manifest("", "v1")
    (vector / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(InvalidManifest, match="imageLayoutVersion"):
        LayoutClient(vector).ping()


def test_an_oversized_manifest_is_refused_before_reading(vector: Path) -> None:
    index = json.loads((vector / "index.json").read_text())
    index["manifests"][0]["size"] = 5 * 1024 * 1024
    (vector / "index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidManifest, match="limit"):
        LayoutClient(vector).get_manifest("", "v1")


def test_pull_from_a_layout_into_the_store(tmp_path: Path, tmp_store: Path) -> None:
    image = simple_image(b"pulled from a layout\n")
    write_oci_layout(tmp_path / "layout", image, "v1")
    reference = Reference.parse(f"oci:{tmp_path / 'layout'}:v1")
    store = ContentStore.open(tmp_store)
    with RegistryClients() as clients:
        result = pull(reference, store, clients(reference.api_host))
    assert str(result.digest) == image.digest
    assert store.resolve(f"{reference.name}:v1") is not None
    assert store.read_blob(Digest.parse(image.layer_descriptors[0].digest), 1 << 20) == image.layers[0].blob()
    # The same through the CLI, which once built a registry client for the `oci:` host (exit 2).
    other_store = tmp_path / "cli-store"
    assert main(["pull", "--store", str(other_store), f"oci:{tmp_path / 'layout'}:v1"]) == 0
    assert ContentStore.open(other_store).resolve(f"{reference.name}:v1") is not None


# -- writing ---------------------------------------------------------------------------------------


def test_read_only_layouts_refuse_writes(vector: Path) -> None:
    with pytest.raises(UsageError, match="read-only"):
        LayoutClient(vector).push_blob("", sha(b"x"), 1, b"x")


@pytest.mark.parametrize("obstacle", ["symlink", "directory"])
def test_a_write_the_filesystem_refuses_is_could_not_check_not_a_crash(
    vector: Path, tmp_path: Path, obstacle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lock file that is a link (or a directory), like a full or read-only disk, makes the write
    fail: a one-line "cannot write" (exit 5), not an OSError traceback."""
    lock = vector / ".index.json.lock"
    lock.unlink(missing_ok=True)
    if obstacle == "symlink":
        lock.symlink_to(tmp_path / "elsewhere")
    else:
        lock.mkdir()
    client = LayoutClient(vector, writable=True)
    manifest = client.get_manifest("", "v1")
    with pytest.raises(RegistryError, match="cannot write the lock file"):
        client.push_manifest("", "v2", manifest.data, manifest.content_type)
    assert main(["copy", f"oci:{vector}:v1", f"oci:{vector}:v3"]) == 5
    assert "cannot write" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_writes_are_checked_and_leave_nothing_behind(tmp_path: Path) -> None:
    client = LayoutClient(tmp_path / "new", writable=True)
    with pytest.raises(DigestMismatch):
        client.push_blob("", sha(b"promised"), 8, b"deceived")
    with pytest.raises(SizeMismatch):
        client.push_blob("", sha(b"promised"), 8, iter([b"promised", b"!"]))
    assert list((tmp_path / "new" / "blobs").rglob("*")) == [tmp_path / "new" / "blobs" / "sha256"]
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": str(sha(config)),
                "size": 2,
            },
            "layers": [],
        }
    ).encode()
    with pytest.raises(NotFound, match="not in"):
        client.push_manifest("", "v1", manifest, OCI_MANIFEST)
    client.push_blob("", sha(config), 2, config)
    with pytest.raises(DigestMismatch):
        client.push_manifest("", str(sha(b"other")), manifest, OCI_MANIFEST)
    with pytest.raises(InvalidManifest):
        client.push_manifest("", "v1", manifest, "application/vnd.oci.image.index.v1+json")
    assert client.push_manifest("", "v1", manifest, OCI_MANIFEST) == sha(manifest)
    assert client.get_manifest("", "v1").data == manifest
    assert json.loads((tmp_path / "new" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}


def test_retagging_keeps_every_other_entry_verbatim(vector: Path) -> None:
    before = json.loads((vector / "index.json").read_text())["manifests"]
    client = LayoutClient(vector, writable=True)
    data = client.get_manifest("", "v1").data
    client.push_manifest("", "v2", data, OCI_MANIFEST)
    client.push_manifest("", "v1", data, OCI_MANIFEST)
    after = json.loads((vector / "index.json").read_text())["manifests"]
    assert after[:2] == before[1:]  # the unnamed signature and the referrers index, untouched
    assert [e["annotations"][REF_NAME] for e in after[2:]] == ["v2", "v1"]


def test_concurrent_taggers_both_land(tmp_path: Path) -> None:
    image = simple_image(b"tagged twice\n")
    layout = write_oci_layout(tmp_path / "layout", image)
    errors: list[BaseException] = []

    def tag(name: str) -> None:
        try:
            for n in range(10):
                LayoutClient(layout, writable=True).push_manifest(
                    "", f"{name}{n}", image.manifest_bytes, OCI_MANIFEST
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=tag, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(LayoutClient(layout).list_tags("")) == 30


def test_ref_prefix_reads_one_repository_of_the_content_store(tmp_store: Path) -> None:
    store = ContentStore.open(tmp_store)
    writer = LayoutClient(store.root, ref_prefix="127.0.0.1:5000/team/app:", writable=True)
    config = b"{}"
    writer.push_blob("", sha(config), 2, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": str(sha(config)),
                "size": 2,
            },
            "layers": [],
        }
    ).encode()
    writer.push_manifest("", "sha256-abc.sig", manifest, OCI_MANIFEST)
    assert store.resolve("127.0.0.1:5000/team/app:sha256-abc.sig") is not None
    other = LayoutClient(store.root, ref_prefix="127.0.0.1:5000/team/other:")
    assert other.list_tags("") == []
    assert (
        LayoutClient(store.root, ref_prefix="127.0.0.1:5000/team/app:")
        .get_manifest("", "sha256-abc.sig")
        .data
        == manifest
    )


def test_push_referrer_keeps_both_entries_in_a_layout(tmp_path: Path) -> None:
    image = simple_image(b"subject in a layout\n")
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    client = LayoutClient(layout, writable=True)
    subject = Descriptor(OCI_MANIFEST, Digest.parse(image.digest), image.size)
    client.push_blob("", sha(b"{}"), 2, b"{}")
    pushed = []
    for note in ("one", "two"):
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/x.note",
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": str(sha(b"{}")),
                    "size": 2,
                },
                "layers": [],
                "subject": subject.to_json(),
                "annotations": {"note": note},
            }
        ).encode()
        pushed.append(push_referrer(client, "", manifest, OCI_MANIFEST, subject))
    assert [d.digest for d in list_referrers(client, "", subject.digest)] == pushed
    assert subject.digest.encoded in client.list_tags("")


# -- policy scopes for layouts ------------------------------------------------------------------------


def test_layout_scopes() -> None:
    scope = parse_scope("oci:/srv/images")
    assert scope.canonical == "oci:/srv/images"
    assert scope.matches(Reference.parse("oci:/srv/images:v1"))
    assert scope.matches(Reference.parse("oci:/srv/images/app:v1"))
    assert not scope.matches(Reference.parse("oci:/srv/images2:v1"))
    assert not scope.matches(Reference.parse("127.0.0.1:5000/srv/images:v1"))
    assert scope.is_exact_for(Reference.parse("oci:/srv/images:v1"))
    assert parse_scope("oci:/").matches(Reference.parse("oci:/anywhere:v1"))
    assert not parse_scope("127.0.0.1:*/demo").matches(Reference.parse("oci:/demo:v1"))
    deeper = parse_scope("oci:/srv/images/app").specificity(Reference.parse("oci:/srv/images/app:v1"))
    assert deeper > scope.specificity(Reference.parse("oci:/srv/images/app:v1"))
    for bad in ("oci:relative/dir", "oci:/srv/*", "oci:/srv/images:v1"):
        with pytest.raises(PolicyError):
            parse_scope(bad)


def test_policy_gate_on_a_layout(
    registry: Registry, repo_name: str, tmp_path: Path, tmp_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_PASSWORD", "trust-example")
    pushed = push_image(registry, repo_name, simple_image(b"gate a layout\n"), tag="v1")
    assert (
        main(
            [
                "sign",
                "--tlog-upload=false",
                "--key",
                str(KEYS / "cosign.key"),
                f"{registry.host}/{repo_name}:v1",
            ]
        )
        == 0
    )
    layout = tmp_path / "airgap"
    assert main(["copy", f"{registry.host}/{repo_name}:v1", f"oci:{layout}:v1"]) == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nauthorities:\n  example:\n    cosign-keys: [{KEYS / 'cosign.pub'}]\n"
        f"rules:\n  - scope: oci:{tmp_path}\n    signed-by: [example]\n    ignore-reference: true\n"
        "default:\n  reject: true\n"
    )
    pinned = f"oci:{layout}@{pushed.digest}"
    store = ["--store", str(tmp_store)]
    assert main(["verify", "--policy", str(policy), *store, pinned]) == 0
    assert main(["verify", "--policy", str(policy), *store, f"oci:{layout}:v1"]) == 3  # tag only
    policy.write_text(policy.read_text().replace(f"oci:{tmp_path}", f"{registry.host}/t"))
    assert main(["verify", "--policy", str(policy), *store, pinned]) == 3  # no layout rule: default reject


def test_referrers_listed_only_as_unnamed_index_entries_are_found(vector: Path) -> None:
    """oras-go (`notation --oci-layout`) keeps referrers as unnamed index.json entries, no tag schema."""
    digest = image_digest(vector)
    index = json.loads((vector / "index.json").read_text())
    index["manifests"] = [
        e for e in index["manifests"] if e.get("annotations", {}).get(REF_NAME) != digest.encoded
    ]
    (vector / "index.json").write_text(json.dumps(index))
    client = LayoutClient(vector)
    assert digest.encoded not in client.list_tags("")
    [found] = list_referrers(client, "", digest, NOTATION)
    assert str(found.digest) == index["manifests"][1]["digest"]
    assert list_referrers(client, "", found.digest) == []
    assert list_referrers(client, "", digest, "application/x.other") == []


def test_a_cosign_save_layout_names_its_signatures_only_for_its_one_image() -> None:
    from pull.digest import Digest
    from pull.layout import _cosign_saved
    from pull.manifest import Descriptor

    def entry(kind: str, fill: str) -> Descriptor:
        digest = Digest.parse("sha256:" + fill * 64)
        return Descriptor(
            "application/vnd.oci.image.manifest.v1+json", digest, 10, annotations={"kind": kind}
        )

    image, sigs = entry("dev.cosignproject.cosign/image", "a"), entry("dev.cosignproject.cosign/sigs", "b")
    assert _cosign_saved([image, sigs], f"sha256-{'a' * 64}.sig") == sigs
    assert _cosign_saved([image, sigs], f"sha256-{'c' * 64}.sig") is None  # another image's tag
    assert _cosign_saved([image, sigs], f"sha256-{'a' * 64}.att") is None
    second = entry("dev.cosignproject.cosign/image", "c")
    assert _cosign_saved([image, second, sigs], f"sha256-{'a' * 64}.sig") is None  # whose? unknown


def test_entries_named_by_whole_references_resolve_by_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # crane's `--annotate-ref` names entries `registry/repo:TAG`.

    layout = write_oci_layout(
        tmp_path / "craned", simple_image(b"craned\n"), tag="registry.example:5000/team/app:v1"
    )
    store = str(tmp_path / "store")
    assert main(["pull", "--store", store, f"oci:{layout}:v1"]) == 0
    assert main(["pull", "--store", store, f"oci:{layout}:v2"]) == 5
