"""The referrers tests of tests/test_referrers.py, against a registry with the real OCI 1.1 API.

`tests/test_referrers.py` runs them on CNCF distribution (no API: the tag-schema fallback) and on
the fault-injecting fake (the API, lying on purpose). Here olareg serves the API for real: trust
must use it, write no fallback tag, list what a subject's referrers are, and nothing of another
subject's.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import OCI11Registry
from support.images import push_image, simple_image
from test_referrers import FAST, OCI_MANIFEST, push_artifact, sha

from pull.digest import Digest
from pull.errors import NotFound
from pull.manifest import Descriptor
from pull.referrers import list_referrers
from pull.registry import RegistryClient


@pytest.fixture
def client(oci11_registry: OCI11Registry) -> Iterator[RegistryClient]:
    with RegistryClient(oci11_registry.host, config=FAST) as opened:
        yield opened


def subject(registry: OCI11Registry, repository: str, content: bytes) -> Descriptor:
    pushed = push_image(registry.host, repository, simple_image(content), tag="v1")
    return Descriptor(OCI_MANIFEST, Digest.parse(pushed.digest), len(pushed.manifest_bytes))


def test_pushes_use_the_api_and_write_no_fallback_tag(
    client: RegistryClient, oci11_registry: OCI11Registry
) -> None:
    repository = "interop/referrers-api"
    first_subject = subject(oci11_registry, repository, b"first subject")
    other_subject = subject(oci11_registry, repository, b"other subject")
    assert client.referrers(repository, first_subject.digest) is not None  # the API answers
    first = push_artifact(client, repository, first_subject, b"first")
    second = push_artifact(client, repository, first_subject, b"second")
    elsewhere = push_artifact(client, repository, other_subject, b"about the other subject")

    listed = list_referrers(client, repository, first_subject.digest, "application/x.test")
    assert sorted(str(d.digest) for d in listed) == sorted([sha(first), sha(second)])
    assert [str(d.digest) for d in list_referrers(client, repository, other_subject.digest)] == [
        sha(elsewhere)
    ]
    with pytest.raises(NotFound):  # no tag-schema index was written
        client.get_manifest(repository, first_subject.digest.referrers_tag)
    # The registry's own listing agrees, annotations included.
    raw = httpx.get(f"http://{oci11_registry.host}/v2/{repository}/referrers/{first_subject.digest}").json()
    notes = sorted(entry["annotations"]["org.example.note"] for entry in raw["manifests"])
    assert notes == ["first", "second"]
    # Pushing the same artifact again adds nothing.
    push_artifact(client, repository, first_subject, b"first")
    assert len(list_referrers(client, repository, first_subject.digest)) == 2


def test_filtering_by_artifact_type_uses_the_registry_listing(
    client: RegistryClient, oci11_registry: OCI11Registry
) -> None:
    repository = "interop/referrers-filter"
    target = subject(oci11_registry, repository, b"filtered subject")
    push_artifact(client, repository, target, b"an artifact")
    assert list_referrers(client, repository, target.digest, "application/x.other") == []
    assert len(list_referrers(client, repository, target.digest, "application/x.test")) == 1
