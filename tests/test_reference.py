"""Reference parsing and Docker normalisation."""

from __future__ import annotations

import pytest

from pull.digest import Digest
from pull.errors import InvalidReference
from pull.reference import Reference

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/team/app", "docker.io", "team/app", "latest", None),
        ("team/app", "docker.io", "team/app", "latest", None),
        ("host:5000/team/app:v1", "host:5000", "team/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("127.0.0.1:5000/a/b/c:x_1.2-3", "127.0.0.1:5000", "a/b/c", "x_1.2-3", None),
        (f"host.example.com/app@sha256:{HEX}", "host.example.com", "app", None, f"sha256:{HEX}"),
        (f"host.example.com/app:v1@sha256:{HEX}", "host.example.com", "app", "v1", f"sha256:{HEX}"),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("my.reg/a__b/c-d/e.f", "my.reg", "a__b/c-d/e.f", "latest", None),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest


def test_docker_hub_api_host_and_identifier() -> None:
    ref = Reference.parse("busybox:1.36")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.identifier == "1.36"
    assert str(ref) == "docker.io/library/busybox:1.36"
    pinned = Reference.parse(f"host/app:v1@sha256:{HEX}")
    assert pinned.identifier == f"sha256:{HEX}"
    assert pinned.is_pinned


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        (" busybox", "spaces"),
        ("Busybox", "lowercase"),
        ("a//b", "bad repository"),
        ("host/app:", "bad tag"),
        ("host/app:-x", "bad tag"),
        ("host/app:" + "t" * 129, "bad tag"),
        ("host/app@sha256:abc", "64 lowercase hex"),
        (f"host/app@sha256:{'A' * 64}", "64 lowercase hex"),
        (f"host/app@md5:{HEX}", "unsupported digest algorithm"),
        ("host/app@sha256", "malformed digest"),
        ("host/../app", "bad repository"),
        ("host/app/", "bad repository"),
        ("ho_st:5000/app", "bad registry"),
        ("x.io/" + "a" * 300, "longer than"),
    ],
)
def test_malformed_references_are_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference, match=fragment):
        Reference.parse(text)


def test_digest_grammar_guards_paths() -> None:
    with pytest.raises(InvalidReference):
        Digest.parse("sha256:../../../etc/passwd" + "0" * 40)
    with pytest.raises(InvalidReference):
        Digest("sha256", "/" + "a" * 63)
    assert Digest.parse(f"sha256:{HEX}").encoded == f"sha256-{HEX}"
    assert (
        str(Digest.of_bytes(b"")) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_referrers_tags_follow_the_tag_schema_and_fit_in_a_tag() -> None:
    sha256 = Digest.parse("sha256:" + "a" * 64)
    assert sha256.referrers_tag == sha256.encoded == "sha256-" + "a" * 64
    sha512 = Digest.parse("sha512:" + "b" * 128)
    assert sha512.referrers_tag == "sha512-" + "b" * 64  # the encoded part is cut to 64 characters
    assert len(sha512.referrers_tag) <= 128 and len(sha512.encoded) > 128
