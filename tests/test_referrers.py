"""Referrers: `push_referrer` keeps the fallback index whole, and listing failures are "could not check"."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import HostileRegistry, Reply
from support.images import push_image, simple_image
from support.registry import Registry

from pull import registry as registry_module
from pull.config import PullConfig
from pull.digest import Digest
from pull.errors import CouldNotCheck, InvalidManifest, RegistryError
from pull.manifest import Descriptor
from pull.referrers import list_referrers, push_referrer
from pull.registry import RegistryClient
from trust.cli.app import main
from trust.keys.keyfiles import generate_keypair

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
FAST = PullConfig(backoff_base=0.001, retries=1)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the client's retry backoff is skipped: push_referrer's random pauses between re-reads
    # are what lets concurrent writers notice each other, so they stay real.
    monkeypatch.setattr(registry_module, "_sleep", lambda _seconds: None)


def artifact(subject: Descriptor, payload: bytes, artifact_type: str = "application/x.test") -> bytes:
    """A referrer manifest: empty config, one layer holding `payload`, and a subject."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_TYPE, "digest": sha(EMPTY), "size": 2},
            "layers": [
                {"mediaType": "application/octet-stream", "digest": sha(payload), "size": len(payload)}
            ],
            "subject": subject.to_json(),
            "annotations": {"org.example.note": payload.decode()},
        }
    ).encode()


def push_artifact(client: RegistryClient, repository: str, subject: Descriptor, payload: bytes) -> bytes:
    client.push_blob(repository, Digest.parse(sha(EMPTY)), 2, EMPTY)
    client.push_blob(repository, Digest.parse(sha(payload)), len(payload), payload)
    manifest = artifact(subject, payload)
    assert push_referrer(client, repository, manifest, OCI_MANIFEST, subject) == Digest.parse(sha(manifest))
    return manifest


@pytest.fixture
def subject(registry: Registry, repo_name: str) -> Descriptor:
    pushed = push_image(registry, repo_name, simple_image(b"subject\n"), tag="v1")
    return Descriptor(OCI_MANIFEST, Digest.parse(pushed.digest), len(pushed.manifest_bytes))


@pytest.fixture
def client(registry: Registry) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host, config=FAST) as opened:
        yield opened


def fallback_entries(client: RegistryClient, repository: str, subject: Descriptor) -> list[dict[str, object]]:
    data = client.get_manifest(repository, subject.digest.encoded, accept=OCI_INDEX).data
    document = json.loads(data)
    assert document["mediaType"] == OCI_INDEX
    entries = document["manifests"]
    assert isinstance(entries, list)
    return entries


def test_two_pushes_keep_both_entries_in_the_real_registry(
    client: RegistryClient, repo_name: str, subject: Descriptor
) -> None:
    assert client.referrers(repo_name, subject.digest) is None  # distribution 2.8: no API
    first = push_artifact(client, repo_name, subject, b"first")
    second = push_artifact(client, repo_name, subject, b"second")
    entries = fallback_entries(client, repo_name, subject)
    assert entries == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha(manifest),
            "size": len(manifest),
            "artifactType": "application/x.test",
            "annotations": {"org.example.note": note},
        }
        for manifest, note in ((first, "first"), (second, "second"))
    ]
    # Pushing the same manifest again changes nothing.
    push_artifact(client, repo_name, subject, b"first")
    assert len(fallback_entries(client, repo_name, subject)) == 2
    # The manifests themselves are stored by digest and listed back through the fallback.
    listed = list_referrers(client, repo_name, subject.digest, "application/x.test")
    assert [str(d.digest) for d in listed] == [sha(first), sha(second)]
    assert client.get_manifest(repo_name, sha(first)).data == first


def test_foreign_entries_are_kept_byte_for_byte(
    client: RegistryClient, repo_name: str, subject: Descriptor
) -> None:
    # Another tool's referrer, listed with fields we do not model.
    client.push_blob(repo_name, Digest.parse(sha(EMPTY)), 2, EMPTY)
    client.push_blob(repo_name, Digest.parse(sha(b"sbom")), 4, b"sbom")
    theirs = artifact(subject, b"sbom", "application/vnd.example.sbom")
    client.push_manifest(repo_name, sha(theirs), theirs, OCI_MANIFEST)
    foreign = {
        "mediaType": OCI_MANIFEST,
        "digest": sha(theirs),
        "size": len(theirs),
        "artifactType": "application/vnd.example.sbom",
        "platform": {"os": "linux", "architecture": "amd64"},
        "data": "e30=",
        "x-unknown": {"kept": True},
    }
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [foreign], "annotations": {"a": "b"}}
    client.push_manifest(repo_name, subject.digest.encoded, json.dumps(index).encode(), OCI_INDEX)
    mine = push_artifact(client, repo_name, subject, b"mine")
    data = client.get_manifest(repo_name, subject.digest.encoded, accept=OCI_INDEX).data
    document = json.loads(data)
    assert document["annotations"] == {"a": "b"}
    assert document["manifests"][0] == foreign
    assert document["manifests"][1]["digest"] == sha(mine)


def test_config_media_type_is_the_artifact_type_when_the_manifest_has_none(
    client: RegistryClient, repo_name: str, subject: Descriptor
) -> None:
    document = json.loads(artifact(subject, b"legacy"))
    del document["artifactType"]
    document["config"]["mediaType"] = "application/vnd.cncf.notary.signature"
    manifest = json.dumps(document).encode()
    client.push_blob(repo_name, Digest.parse(sha(b"legacy")), 6, b"legacy")
    client.push_blob(repo_name, Digest.parse(sha(EMPTY)), 2, EMPTY)
    push_referrer(client, repo_name, manifest, OCI_MANIFEST, subject)
    [entry] = fallback_entries(client, repo_name, subject)
    assert entry["artifactType"] == "application/vnd.cncf.notary.signature"


def test_a_tag_holding_something_else_is_not_overwritten(
    client: RegistryClient, repo_name: str, subject: Descriptor, registry: Registry
) -> None:
    other = push_image(registry, repo_name, simple_image(b"squatter\n"), tag=subject.digest.encoded)
    with pytest.raises(InvalidManifest, match="refusing to overwrite"):
        push_artifact(client, repo_name, subject, b"blocked")
    assert client.get_manifest(repo_name, subject.digest.encoded).data == other.manifest_bytes


def test_a_manifest_whose_subject_differs_is_refused(
    client: RegistryClient, repo_name: str, subject: Descriptor
) -> None:
    elsewhere = Descriptor(OCI_MANIFEST, Digest.parse(sha(b"elsewhere")), 9)
    with pytest.raises(InvalidManifest, match="subject"):
        push_referrer(client, repo_name, artifact(elsewhere, b"x"), OCI_MANIFEST, subject)


def test_concurrent_writers_all_end_up_in_the_index(
    client: RegistryClient, registry: Registry, repo_name: str, subject: Descriptor
) -> None:
    errors: list[BaseException] = []
    manifests: list[bytes] = []

    def writer(n: int) -> None:
        try:
            with RegistryClient(registry.host, config=FAST) as own:
                manifests.append(push_artifact(own, repo_name, subject, f"writer {n}".encode()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    digests = {entry["digest"] for entry in fallback_entries(client, repo_name, subject)}
    assert digests == {sha(m) for m in manifests}


def test_with_the_referrers_api_no_fallback_tag_is_written() -> None:
    with HostileRegistry(referrers_api=True) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        subject = Descriptor(OCI_MANIFEST, Digest.parse(image.digest), len(image.manifest))
        with RegistryClient(hostile.host, config=FAST) as client:
            manifest = push_artifact(client, "team/app", subject, b"api")
            [listed] = list_referrers(client, "team/app", subject.digest)
        assert listed.digest == Digest.parse(sha(manifest))
        assert listed.artifact_type == "application/x.test"
        assert Digest.parse(image.digest).encoded not in hostile.tags("team/app")
        assert not any(r.method == "PUT" and "sha256-" in r.path for r in hostile.requests)


def test_a_writer_that_keeps_overwriting_us_is_an_error() -> None:
    with HostileRegistry(referrers_api=False) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        subject = Descriptor(OCI_MANIFEST, Digest.parse(image.digest), len(image.manifest))
        tag = Digest.parse(image.digest).encoded
        # Every read of the fallback tag answers an index without our entry.
        empty = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
        hostile.fail_next(
            "GET", f"/v2/team/app/manifests/{tag}", Reply(200, empty, {"Content-Type": OCI_INDEX}), times=99
        )
        with (
            RegistryClient(hostile.host, config=FAST) as client,
            pytest.raises(RegistryError, match="concurrent"),
        ):
            push_artifact(client, "team/app", subject, b"lost")


# -- listing failures are "could not check" (exit 5), never "unsigned" (exit 3) ------------------------


@pytest.fixture(scope="module")
def public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("referrers-key") / "key.pub"
    path.write_bytes(generate_keypair(b"")[1])
    return path


@pytest.mark.parametrize("status", [500, 401, 429])
def test_fallback_tag_errors_are_could_not_check(public_key: Path, status: int) -> None:
    with HostileRegistry(referrers_api=False) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        ref = f"{hostile.host}/team/app:v1"
        assert main(["verify", "--key", str(public_key), ref]) == 3  # nothing attached: unsigned
        tag = Digest.parse(image.digest).encoded
        hostile.fail_next("GET", f"/v2/team/app/manifests/{tag}", Reply(status, b"down"), times=99)
        assert main(["verify", "--key", str(public_key), ref]) == 5
        with RegistryClient(hostile.host, config=FAST) as client, pytest.raises(CouldNotCheck):
            list_referrers(client, "team/app", Digest.parse(image.digest))


def test_referrers_api_errors_are_could_not_check(public_key: Path) -> None:
    with HostileRegistry(referrers_api=True) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        hostile.fail_next("GET", f"/v2/team/app/referrers/{image.digest}", Reply(503), times=99)
        assert main(["verify", "--key", str(public_key), f"{hostile.host}/team/app:v1"]) == 5


@pytest.mark.parametrize("status", [400, 405, 406])
def test_registries_without_the_api_that_do_not_answer_404_fall_back_to_the_tag_schema(
    public_key: Path, status: int
) -> None:
    # Registries that route the unknown referrers path elsewhere answer 400/405/406 (crane falls
    # back on those too): that is "no API", so the fallback tag is read, and an unsigned image is
    # unsigned (3), not "could not check" (5).
    with HostileRegistry(referrers_api=True) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        hostile.fail_next("GET", f"/v2/team/app/referrers/{image.digest}", Reply(status), times=99)
        assert main(["verify", "--key", str(public_key), f"{hostile.host}/team/app:v1"]) == 3
        with RegistryClient(hostile.host, config=FAST) as client:
            assert client.referrers("team/app", Digest.parse(image.digest)) is None


def test_a_referrers_page_listing_null_reads_as_no_referrers() -> None:
    """olareg answers `"manifests": null` for a digest nothing refers to (tests/interop runs it)."""
    from pull.referrers import _null_listing_as_empty

    empty = _null_listing_as_empty(
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}'
    )
    assert json.loads(empty)["manifests"] == []
    listed = b'{"schemaVersion":2,"manifests":[]}'
    assert _null_listing_as_empty(listed) is listed
    duplicate = b'{"manifests":null,"manifests":[{"digest":"x"}]}'
    assert _null_listing_as_empty(duplicate) is duplicate  # left for verify_document to refuse


def test_a_malformed_listing_is_named_as_the_referrers_listing(
    public_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with HostileRegistry(referrers_api=True) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        hostile.fail_next(
            "GET",
            f"/v2/team/app/referrers/{image.digest}",
            Reply(200, b"{not json", headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}),
            times=99,
        )
        with RegistryClient(hostile.host, config=FAST) as client, pytest.raises(InvalidManifest) as caught:
            list_referrers(client, "team/app", Digest.parse(image.digest))
        assert f"the referrers listing of {image.digest} in team/app" in str(caught.value)
