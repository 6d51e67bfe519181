"""Strict parsing of untrusted manifests, indexes and configs (pull/manifest.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pull import mediatypes as mt
from pull.digest import Digest
from pull.errors import DigestMismatch, InvalidManifest, UsageError
from pull.manifest import Descriptor, ImageIndex, ImageManifest, Platform, parse_config, verify_document

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def manifest(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 20}],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def index(*platforms: tuple[str, str, str | None]) -> dict[str, Any]:
    entries = []
    for i, (os_, arch, variant) in enumerate(platforms):
        plat: dict[str, str] = {"os": os_, "architecture": arch}
        if variant:
            plat["variant"] = variant
        entries.append(
            {"mediaType": mt.OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 5, "platform": plat}
        )
    return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_manifest_parses_and_digest_is_of_raw_bytes() -> None:
    data = raw(manifest())
    verified = verify_document(data, content_type=mt.OCI_MANIFEST, expected=None)
    assert verified.digest == Digest.of_bytes(data)
    assert isinstance(verified.document, ImageManifest)
    assert verified.document.is_image
    assert verified.document.layers[0].size == 20
    # Whitespace changes the digest: bytes are hashed raw, never re-serialised.
    assert verify_document(data + b" ", content_type=None, expected=None).digest != verified.digest


def test_expected_digest_must_match() -> None:
    data = raw(manifest())
    verify_document(data, content_type=None, expected=Digest.of_bytes(data))
    with pytest.raises(DigestMismatch, match="not the requested"):
        verify_document(data, content_type=None, expected=Digest.parse("sha256:" + "f" * 64))


def test_size_cap() -> None:
    doc = manifest(annotations={"pad": "x" * 200})
    with pytest.raises(InvalidManifest, match="over the 100-byte limit"):
        verify_document(raw(doc), content_type=None, expected=None, max_bytes=100)


@pytest.mark.parametrize(
    ("doc", "content_type", "message"),
    [
        (manifest(mediaType=None), mt.OCI_INDEX, "says application/vnd.oci.image.index.v1"),
        ({"schemaVersion": 2}, None, "neither an image manifest nor an index"),
        (manifest(mediaType=None, manifests=[]), None, "CVE-2021-41190"),
        (manifest(schemaVersion=1), None, "schema1"),
        (manifest(), mt.DOCKER_SCHEMA1_SIGNED, "schema1"),
        (manifest(schemaVersion="2"), None, "schemaVersion must be 2"),
        (manifest(manifests=[]), None, "CVE-2021-41190"),
        ({**index(("linux", "amd64", None)), "layers": []}, None, "CVE-2021-41190"),
        (manifest(), mt.OCI_INDEX, "does not match"),
        (manifest(), mt.DOCKER_MANIFEST, "does not match"),
        (manifest(mediaType="application/x-evil"), None, "unsupported manifest mediaType"),
        (manifest(config=None), None, "no config"),
        (manifest(layers={"a": 1}), None, "must be a list"),
        (manifest(layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": -1}]), None, "non-negative"),
        (
            manifest(layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": True}]),
            None,
            "non-negative",
        ),
        (
            manifest(layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": "sha256:../x", "size": 1}]),
            None,
            "hex",
        ),
        (manifest(layers=[{"digest": D2, "size": 1}]), None, "'mediaType' is required"),
        (manifest(annotations={"a": 1}), None, "annotations"),
    ],
)
def test_hostile_documents_are_refused(doc: dict[str, Any], content_type: str | None, message: str) -> None:
    with pytest.raises(InvalidManifest, match=message):
        verify_document(raw(doc), content_type=content_type, expected=None)


@pytest.mark.parametrize(
    "data", [b"[]", b"not json", b"\xff\xfe", b'{"schemaVersion": 2, "schemaVersion": 2}']
)
def test_non_objects_and_duplicate_keys_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidManifest):
        verify_document(data, content_type=None, expected=None)


def test_duplicate_keys_would_hide_a_second_layer_list() -> None:
    # Two parsers could disagree on which "layers" counts; refuse the document instead.
    data = raw(manifest())[:-1] + b', "layers": []}'
    with pytest.raises(InvalidManifest, match="duplicate key"):
        verify_document(data, content_type=None, expected=None)


def test_generic_content_type_is_tolerated() -> None:
    assert verify_document(raw(manifest()), content_type="application/json; charset=utf-8", expected=None)


def test_index_platform_selection() -> None:
    doc = verify_document(
        raw(index(("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"))),
        content_type=mt.OCI_INDEX,
        expected=None,
    ).document
    assert isinstance(doc, ImageIndex)
    assert doc.select(Platform.parse("linux/arm64")).digest == doc.manifests[1].digest
    assert doc.select(Platform.parse("linux/arm64/v8")).digest == doc.manifests[1].digest
    assert doc.select(Platform.parse("linux/arm/v7")).digest == doc.manifests[2].digest
    with pytest.raises(InvalidManifest, match="no image for platform linux/s390x"):
        doc.select(Platform.parse("linux/s390x"))
    with pytest.raises(InvalidManifest, match="no image for platform linux/arm/v6"):
        doc.select(Platform.parse("linux/arm/v6"))


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
def test_bad_platform_is_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        Platform.parse(text)


def test_config_parsing() -> None:
    descriptor = Descriptor(mt.OCI_CONFIG, Digest.parse(D1), 1)
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [D1, D2]}}
    parsed = parse_config(raw(config), descriptor)
    assert parsed.diff_ids == (Digest.parse(D1), Digest.parse(D2))
    assert str(parsed.platform) == "linux/amd64"
    for bad, message in [
        ({**config, "rootfs": {"type": "other", "diff_ids": []}}, "rootfs.type"),
        ({**config, "rootfs": {"type": "layers", "diff_ids": "x"}}, "must be a list"),
        ({**config, "rootfs": {"type": "layers", "diff_ids": ["sha256:zz"]}}, "bad diff_id"),
        ({**config, "rootfs": {"type": "layers", "diff_ids": [1]}}, "bad diff_id"),
        ({k: v for k, v in config.items() if k != "os"}, "'os' is required"),
    ]:
        with pytest.raises(InvalidManifest, match=message):
            parse_config(raw(bad), descriptor)


def test_descriptor_round_trip() -> None:
    entry = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": D1,
        "size": 3,
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        "annotations": {"k": "v"},
    }
    assert Descriptor.from_json(entry, "x").to_json() == entry


@pytest.mark.parametrize(
    ("content_type", "descriptor_type", "expected"),
    [
        (mt.OCI_MANIFEST, None, mt.OCI_MANIFEST),
        (mt.DOCKER_MANIFEST, None, mt.DOCKER_MANIFEST),
        ("application/json", mt.OCI_MANIFEST, mt.OCI_MANIFEST),
        (None, None, mt.OCI_MANIFEST),  # the shape: config and layers
    ],
)
def test_a_manifest_without_media_type_takes_it_from_header_descriptor_or_shape(
    content_type: str | None, descriptor_type: str | None, expected: str
) -> None:
    """umoci writes manifests without `mediaType`; the OCI image spec makes the field optional."""
    verified = verify_document(
        raw(manifest(mediaType=None)),
        content_type=content_type,
        expected=None,
        descriptor_type=descriptor_type,
    )
    assert verified.media_type == expected
    assert isinstance(verified.document, ImageManifest)


def test_an_index_without_media_type_is_read_by_its_shape() -> None:
    doc = index(("linux", "amd64", None))
    del doc["mediaType"]
    verified = verify_document(raw(doc), content_type=None, expected=None)
    assert verified.media_type == mt.OCI_INDEX
    with pytest.raises(InvalidManifest, match=r"descriptor says application/vnd\.oci\.image\.manifest"):
        verify_document(raw(doc), content_type=None, expected=None, descriptor_type=mt.OCI_MANIFEST)


def test_an_index_nested_in_an_index_is_named_as_such() -> None:
    nested = index(("linux", "amd64", None))
    nested["manifests"][0]["mediaType"] = mt.OCI_INDEX
    doc = verify_document(raw(nested), content_type=mt.OCI_INDEX, expected=None).document
    assert isinstance(doc, ImageIndex)
    with pytest.raises(
        InvalidManifest, match=r"entry for linux/amd64 is a .*index.*nested indexes are not followed"
    ):
        doc.select(Platform.parse("linux/amd64"))
