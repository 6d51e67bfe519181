"""Cosign simple signing: payloads, `.sig` manifests, Rekor SETs, and the verification core.

The upstream vectors (containers/image's cosign fixtures) go through `trust.cosign.dir_image`,
which feeds `verify_simple_signing` exactly as the registry path does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.vectors import VECTORS as SHARED_VECTORS

from pull.digest import Digest
from pull.errors import CouldNotCheck, IntegrityError, InvalidManifest, RegistryUnreachable
from pull.mediatypes import COSIGN_SIMPLESIGNING, OCI_CONFIG, OCI_MANIFEST
from pull.reference import Reference
from trust.cosign import simple_signing as cosign
from trust.cosign.dir_image import (
    SIGSTORE_JSON_PREFIX,
    parse_signature_file,
    read_signatures,
    verify_dir_image,
)
from trust.cosign.simple_signing import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    Reason,
    SignatureLayer,
    build_payload,
    build_signature_manifest,
    docker_reference,
    parse_payload,
    parse_signature_manifest,
    require_verified,
    signature_tag,
    verify_rekor_set,
    verify_signature,
    verify_simple_signing,
)
from trust.errors import NoSignatures, SignatureInvalid, SignedDigestMismatch, UntrustedSignatures
from trust.keys.keyfiles import KeySigner, TrustedKey, load_public_key_file, public_key_pem

VECTORS = SHARED_VECTORS / "cosign-containers-image"
SINGLE = "192.168.64.2:5000/cosign-signed-single-sample"
KEY_1 = "192.168.64.2:5000/cosign-signed/key-1"
VALID_DIGEST = Digest.parse("sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00")
REKOR_DIGEST = Digest.parse("sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a")
FIXED_TIME = datetime(2024, 5, 6, 7, 8, 9, 120000, tzinfo=UTC)

# Some vector files are git symlinks checked out as text ("../dir-img-cosign-valid/signature-1").
_LINK = re.compile(rb"\.\./[A-Za-z0-9._/-]+")


def vector(name: str, tmp_path: Path) -> Path:
    """Copy a vector directory, resolving symlink placeholders whose target is present.

    dir-img-cosign-manifest-digest-error's manifest points at a schema1 manifest that is not part
    of the vectors; its placeholder text stays and stands in for "some other manifest".
    """
    source = VECTORS / name
    target = tmp_path / name
    target.mkdir()
    for entry in sorted(source.iterdir()):
        data = entry.read_bytes()
        if _LINK.fullmatch(data.strip()) and (entry.parent / data.strip().decode()).is_file():
            data = (entry.parent / data.strip().decode()).read_bytes()
        (target / entry.name).write_bytes(data)
    return target


@pytest.fixture(scope="module")
def cosign_key() -> TrustedKey:
    return TrustedKey.from_file(VECTORS / "cosign.pub")


@pytest.fixture(scope="module")
def cosign2_key() -> TrustedKey:
    return TrustedKey.from_file(VECTORS / "cosign2.pub")


@pytest.fixture(scope="module")
def rekor_key() -> ec.EllipticCurvePublicKey:
    key = load_public_key_file(VECTORS / "rekor.pub")
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def vector_payload(path: Path) -> bytes:
    parsed = parse_signature_file(path.read_bytes())
    assert parsed is not None
    return parsed.payload


# --- the upstream vectors ----------------------------------------------------------------------


def test_valid_vector_verifies(tmp_path: Path, cosign_key: TrustedKey) -> None:
    digest, outcomes = verify_dir_image(vector("dir-img-cosign-valid", tmp_path), SINGLE, [cosign_key])
    assert digest == VALID_DIGEST
    assert [o.reason for o in outcomes] == [Reason.VALID]
    assert outcomes[0].key == cosign_key.name
    assert outcomes[0].payload is not None and outcomes[0].payload.manifest_digest == VALID_DIGEST
    assert require_verified(outcomes, f"{SINGLE}@{digest}") == outcomes


def test_valid_2_vector_has_two_valid_signatures(tmp_path: Path, cosign_key: TrustedKey) -> None:
    _, outcomes = verify_dir_image(vector("dir-img-cosign-valid-2", tmp_path), SINGLE, [cosign_key])
    assert [o.reason for o in outcomes] == [Reason.VALID, Reason.VALID]
    assert outcomes[0].layer_digest == outcomes[1].layer_digest  # same payload, two signatures


def test_rekor_vector_verifies_with_its_set(
    tmp_path: Path, cosign2_key: TrustedKey, rekor_key: ec.EllipticCurvePublicKey
) -> None:
    directory = vector("dir-img-cosign-key-rekor-valid", tmp_path)
    digest, outcomes = verify_dir_image(directory, KEY_1, [cosign2_key], rekor_keys=[rekor_key])
    assert digest == REKOR_DIGEST
    assert [o.reason for o in outcomes] == [Reason.VALID]
    rekor = outcomes[0].rekor
    assert rekor is not None
    assert (rekor.log_index, rekor.integrated_time, rekor.kind) == (11608800, 1674251859, "hashedrekord")
    assert rekor.log_id == "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
    assert "logged in Rekor at index 11608800" in outcomes[0].detail


def test_rekor_vector_with_other_key_is_unknown_key(
    tmp_path: Path, cosign_key: TrustedKey, rekor_key: ec.EllipticCurvePublicKey
) -> None:
    directory = vector("dir-img-cosign-key-rekor-valid", tmp_path)
    digest, outcomes = verify_dir_image(directory, KEY_1, [cosign_key], rekor_keys=[rekor_key])
    assert [o.reason for o in outcomes] == [Reason.UNKNOWN_KEY]
    with pytest.raises(UntrustedSignatures) as info:
        require_verified(outcomes, f"{KEY_1}@{digest}")
    assert str(info.value) == f"1 signature found for {KEY_1}@{digest}, none by a trusted key"


def test_rekor_vector_names_its_signer_so_a_forged_signature_is_bad_signature(
    tmp_path: Path, cosign2_key: TrustedKey
) -> None:
    directory = vector("dir-img-cosign-key-rekor-valid", tmp_path)
    [signature] = read_signatures(directory)
    layer = signature.layer()
    forged_sig = KeySigner(ec.generate_private_key(ec.SECP256R1())).sign(signature.payload)
    forged = SignatureLayer(
        layer.digest,
        layer.size,
        {**layer.annotations, SIGNATURE_ANNOTATION: base64.b64encode(forged_sig).decode()},
    )
    [outcome] = verify_simple_signing(
        [forged], lambda _: signature.payload, REKOR_DIGEST, KEY_1, [cosign2_key]
    )
    assert outcome.reason is Reason.BAD_SIGNATURE
    assert cosign2_key.name in outcome.detail


def test_rekor_key_required_but_no_bundle_is_bad_set(
    tmp_path: Path, cosign_key: TrustedKey, rekor_key: ec.EllipticCurvePublicKey
) -> None:
    directory = vector("dir-img-cosign-valid", tmp_path)
    _, outcomes = verify_dir_image(directory, SINGLE, [cosign_key], rekor_keys=[rekor_key])
    assert [o.reason for o in outcomes] == [Reason.BAD_SET]
    assert outcomes[0].key == cosign_key.name  # the signature itself was fine


def test_rekor_set_signed_by_an_untrusted_log_is_bad_set(tmp_path: Path, cosign2_key: TrustedKey) -> None:
    directory = vector("dir-img-cosign-key-rekor-valid", tmp_path)
    not_rekor = load_public_key_file(VECTORS / "cosign.pub")
    _, outcomes = verify_dir_image(directory, KEY_1, [cosign2_key], rekor_keys=[not_rekor])
    assert [o.reason for o in outcomes] == [Reason.BAD_SET]
    assert "not a trusted Rekor key" in outcomes[0].detail


def test_modified_manifest_vector_fails_with_digest_mismatch(tmp_path: Path, cosign_key: TrustedKey) -> None:
    digest, outcomes = verify_dir_image(
        vector("dir-img-cosign-modified-manifest", tmp_path), SINGLE, [cosign_key]
    )
    assert digest != VALID_DIGEST
    assert [o.reason for o in outcomes] == [Reason.DIGEST_MISMATCH]
    assert str(VALID_DIGEST) in outcomes[0].detail
    with pytest.raises(SignedDigestMismatch) as info:
        require_verified(outcomes, f"{SINGLE}@{digest}")
    assert isinstance(info.value, IntegrityError)  # exit 4


def test_manifest_digest_error_vector_fails(tmp_path: Path, cosign_key: TrustedKey) -> None:
    digest, outcomes = verify_dir_image(
        vector("dir-img-cosign-manifest-digest-error", tmp_path), SINGLE, [cosign_key]
    )
    assert digest != VALID_DIGEST
    assert [o.reason for o in outcomes] == [Reason.DIGEST_MISMATCH]
    assert not any(o.ok for o in outcomes)


def test_no_manifest_vector_cannot_be_checked(tmp_path: Path, cosign_key: TrustedKey) -> None:
    with pytest.raises(CouldNotCheck, match=r"manifest\.json"):
        verify_dir_image(vector("dir-img-cosign-no-manifest", tmp_path), SINGLE, [cosign_key])


def test_unknown_key_vector_is_unknown_key(tmp_path: Path, cosign_key: TrustedKey) -> None:
    directory = vector("dir-img-cosign-valid", tmp_path)
    shutil.copyfile(VECTORS / "unknown-cosign-key.signature", directory / "signature-1")
    _, outcomes = verify_dir_image(directory, SINGLE, [cosign_key])
    assert [o.reason for o in outcomes] == [Reason.UNKNOWN_KEY]
    assert outcomes[0].key is None and outcomes[0].payload is None  # unverified payload is not parsed


def test_wrong_repository_and_mirror_flag(tmp_path: Path, cosign_key: TrustedKey) -> None:
    directory = vector("dir-img-cosign-valid", tmp_path)
    digest, outcomes = verify_dir_image(directory, "mirror.example/cosign-signed-single-sample", [cosign_key])
    assert [o.reason for o in outcomes] == [Reason.WRONG_REPOSITORY]
    with pytest.raises(UntrustedSignatures, match=r"none valid \(1 wrong-repository\)") as info:
        require_verified(outcomes, f"mirror.example/x@{digest}")
    assert "mirror" in info.value.diagnostics()
    _, relaxed = verify_dir_image(
        directory, "mirror.example/cosign-signed-single-sample", [cosign_key], ignore_reference=True
    )
    assert [o.reason for o in relaxed] == [Reason.VALID]


def test_second_trusted_key_is_found(tmp_path: Path, cosign_key: TrustedKey, cosign2_key: TrustedKey) -> None:
    _, outcomes = verify_dir_image(
        vector("dir-img-cosign-valid", tmp_path), SINGLE, [cosign2_key, cosign_key]
    )
    assert outcomes[0].ok and outcomes[0].key == cosign_key.name


# --- golden structure: what we write is what cosign writes -------------------------------------


@pytest.mark.parametrize(
    ("signature_file", "reference", "digest"),
    [
        ("dir-img-cosign-valid/signature-1", SINGLE, VALID_DIGEST),
        ("dir-img-cosign-key-rekor-valid/signature-1", KEY_1, REKOR_DIGEST),
    ],
)
def test_build_payload_reproduces_cosigns_payload_bytes(
    signature_file: str, reference: str, digest: Digest
) -> None:
    assert build_payload(reference, digest, None) == vector_payload(VECTORS / signature_file)


def test_vector_payload_field_names_match_ours() -> None:
    ours = json.loads(build_payload(SINGLE, VALID_DIGEST, {"a": "b"}))
    theirs = json.loads(vector_payload(VECTORS / "dir-img-cosign-valid/signature-1"))

    def shape(doc: object) -> object:
        return {k: shape(v) for k, v in doc.items()} if isinstance(doc, dict) else type(doc).__name__

    assert shape(ours["critical"]) == shape(theirs["critical"])
    assert list(ours) == list(theirs) == ["critical", "optional"]
    assert list(ours["critical"]) == ["identity", "image", "type"]


def test_vector_signature_files_use_cosigns_layer_names() -> None:
    for path in (
        VECTORS / "dir-img-cosign-valid/signature-1",
        VECTORS / "dir-img-cosign-key-rekor-valid/signature-1",
    ):
        parsed = parse_signature_file(path.read_bytes())
        assert parsed is not None
        assert parsed.mime_type == COSIGN_SIMPLESIGNING
        assert set(parsed.annotations) <= {SIGNATURE_ANNOTATION, BUNDLE_ANNOTATION}
        assert SIGNATURE_ANNOTATION in parsed.annotations


def test_payload_matches_sigstore_goldens_and_go_escaping() -> None:
    # sigstore/sigstore pkg/signature/payload/payload_test.go, "no claims"
    digest = Digest.parse("sha256:" + "d34db33f" * 8)
    assert build_payload("example.com/test/image", digest) == (
        b'{"critical":{"identity":{"docker-reference":"example.com/test/image"},"image":'
        b'{"docker-manifest-digest":"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    payload = build_payload("example.com/test/image", digest, {"z": "1", "a": "<x & y>", "\u00e9": "\u2028"})
    assert payload.endswith(b'"optional":{"a":"\\u003cx \\u0026 y\\u003e","z":"1","\xc3\xa9":"\\u2028"}}')
    assert parse_payload(payload).optional == {"a": "<x & y>", "z": "1", "\u00e9": "\u2028"}


def test_docker_reference_matches_go_containerregistry() -> None:
    assert docker_reference(Reference.parse("busybox:1.36")) == "index.docker.io/library/busybox"
    assert (
        docker_reference(Reference.parse("127.0.0.1:5000/team/app@sha256:" + "a" * 64))
        == "127.0.0.1:5000/team/app"
    )
    with pytest.raises(ValueError, match="digest"):
        build_payload("example.com/app@sha256:" + "a" * 64, VALID_DIGEST)


def test_signature_tag() -> None:
    assert signature_tag(VALID_DIGEST) == f"sha256-{VALID_DIGEST.hex}.sig"


def test_layer_descriptor_field_order() -> None:
    layer = SignatureLayer.create(b"payload", b"sig", bundle='{"x":1}')
    descriptor = layer.descriptor()
    assert list(descriptor) == ["mediaType", "size", "digest", "annotations"]
    assert descriptor["mediaType"] == COSIGN_SIMPLESIGNING
    assert descriptor["annotations"] == {
        BUNDLE_ANNOTATION: '{"x":1}',
        SIGNATURE_ANNOTATION: base64.b64encode(b"sig").decode(),
    }
    assert SignatureLayer.from_descriptor(descriptor) == layer


# --- payload parsing is strict -----------------------------------------------------------------

_GOOD = {
    "critical": {
        "identity": {"docker-reference": "example.com/app"},
        "image": {"docker-manifest-digest": str(VALID_DIGEST)},
        "type": "cosign container image signature",
    },
    "optional": None,
}


def _variant(path: tuple[str, ...], value: object) -> bytes:
    doc = json.loads(json.dumps(_GOOD))
    target = doc
    for name in path[:-1]:
        target = target[name]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_variant(("critical", "type"), "atomic container signature"), "critical.type"),
        (_variant(("critical", "extra"), 1), "unknown field 'extra'"),
        (_variant(("critical", "identity", "tag"), "x"), "unknown field 'tag'"),
        (_variant(("critical", "image", "docker-manifest-digest"), "sha256:ABC"), "digest"),
        (_variant(("critical", "image", "docker-manifest-digest"), 5), "must be strings"),
        (_variant(("critical", "identity", "docker-reference"), "Bad//Ref"), "invalid image reference"),
        (_variant(("critical", "identity"), KeyError), "lacks 'identity'"),
        (_variant(("optional",), []), "optional must be an object"),
        (_variant(("extra",), {}), "unknown field 'extra'"),
        (b'{"critical":{},"critical":{}}', "duplicate key"),
        (b"\xff", "not JSON"),
        (b"[]", "payload must be an object"),
        (b" " * (cosign.MAX_PAYLOAD_BYTES + 1), "larger than"),
    ],
)
def test_parse_payload_refuses(data: bytes, message: str) -> None:
    with pytest.raises(SignatureInvalid, match=message) as info:
        parse_payload(data)
    assert info.value.reason == Reason.MALFORMED


def test_parse_payload_accepts_missing_optional_and_normalises_docker_hub() -> None:
    doc = json.loads(json.dumps(_GOOD))
    del doc["optional"]
    doc["critical"]["identity"] = {"docker-reference": "index.docker.io/library/busybox"}
    parsed = parse_payload(json.dumps(doc).encode())
    assert parsed.optional is None
    assert parsed.repository == "docker.io/library/busybox"


def test_verify_signature_handles_garbage(cosign_key: TrustedKey) -> None:
    payload = vector_payload(VECTORS / "dir-img-cosign-valid/signature-1")
    assert not verify_signature(cosign_key.public_key, payload, "not base64!")
    assert not verify_signature(cosign_key.public_key, payload, "")
    assert not verify_signature(cosign_key.public_key, payload, base64.b64encode(b"\x30\x00").decode())


# --- `.sig` manifests --------------------------------------------------------------------------


def _signed_layer(signer: KeySigner, payload: bytes, **kwargs: str) -> SignatureLayer:
    return SignatureLayer.create(payload, signer.sign(payload), **kwargs)


def test_new_signature_manifest_is_cosigns_shape() -> None:
    payload = build_payload("127.0.0.1:5000/app", VALID_DIGEST)
    layer = SignatureLayer.create(payload, b"\x01\x02")
    result = build_signature_manifest(None, layer, created=FIXED_TIME)
    assert result is not None
    layer_digest = str(Digest.of_bytes(payload))
    assert result.config == (
        b'{"architecture":"","created":"2024-05-06T07:08:09.12Z","history":[{"created":"0001-01-01T00:00:00Z"}],'
        b'"os":"","rootfs":{"type":"layers","diff_ids":["' + layer_digest.encode() + b'"]},"config":{}}'
    )
    manifest = json.loads(result.manifest)
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest["mediaType"] == OCI_MANIFEST == result.media_type
    assert manifest["config"] == {
        "mediaType": OCI_CONFIG,
        "size": len(result.config),
        "digest": str(result.config_digest),
    }
    assert manifest["layers"] == [
        {
            "mediaType": COSIGN_SIMPLESIGNING,
            "size": len(payload),
            "digest": layer_digest,
            "annotations": {SIGNATURE_ANNOTATION: "AQI="},
        }
    ]
    assert b" " not in result.manifest  # compact, as Go writes it
    assert parse_signature_manifest(result.manifest) == [layer]


def test_second_key_appends_and_same_key_adds_nothing() -> None:
    payload = build_payload("127.0.0.1:5000/app", VALID_DIGEST)
    alice = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    bob = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    first = build_signature_manifest(None, _signed_layer(alice, payload), created=FIXED_TIME)
    assert first is not None

    second = build_signature_manifest(
        first.manifest, _signed_layer(bob, payload), payload=payload, signer_key=bob.public_key
    )
    assert second is not None
    assert len(second.layers) == 2
    assert json.loads(second.manifest)["layers"][0] == json.loads(first.manifest)["layers"][0]

    # A fresh ECDSA signature by Alice over the same payload is a duplicate (cosign's dupe detector).
    again = _signed_layer(alice, payload)
    assert again.signature != second.layers[0].signature
    assert (
        build_signature_manifest(second.manifest, again, payload=payload, signer_key=alice.public_key) is None
    )
    # Without the key, only an identical layer is recognised.
    assert build_signature_manifest(second.manifest, second.layers[0]) is None
    assert build_signature_manifest(second.manifest, again) is not None
    # Same signature but a new annotation (e.g. a Rekor bundle) is not a duplicate.
    with_bundle = SignatureLayer(
        again.digest, again.size, {**second.layers[0].annotations, BUNDLE_ANNOTATION: "{}"}
    )
    assert build_signature_manifest(second.manifest, with_bundle) is not None


def test_existing_manifest_media_types_and_foreign_layers_are_kept() -> None:
    existing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 2,
                "digest": "sha256:" + "1" * 64,
            },
            "layers": [{"mediaType": "text/plain", "size": 1, "digest": "sha256:" + "2" * 64, "urls": ["x"]}],
            "annotations": {"k": "v"},
        }
    ).encode()
    layer = SignatureLayer.create(b"p", b"s")
    result = build_signature_manifest(existing, layer, created=FIXED_TIME)
    assert result is not None
    manifest = json.loads(result.manifest)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert manifest["layers"][0]["urls"] == ["x"]
    assert manifest["annotations"] == {"k": "v"}
    assert json.loads(result.config)["rootfs"]["diff_ids"] == ["sha256:" + "2" * 64, str(layer.digest)]
    assert parse_signature_manifest(result.manifest) == [layer]  # the text/plain layer is not a signature


@pytest.mark.parametrize(
    "existing",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x"},'
        b'"layers":[],"manifests":[]}',
        b'{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}',
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x"},'
        b'"layers":[{"mediaType":"x","size":-1,"digest":"sha256:' + b"1" * 64 + b'"}]}',
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x"},'
        b'"layers":[{"mediaType":"x","size":1,"digest":"sha256:../../etc"}]}',
    ],
)
def test_malformed_existing_manifest_is_refused(existing: bytes) -> None:
    with pytest.raises(InvalidManifest):
        build_signature_manifest(existing, SignatureLayer.create(b"p", b"s"))
    with pytest.raises(InvalidManifest):
        parse_signature_manifest(existing)


# --- the verification core on our own signatures -----------------------------------------------


@pytest.fixture
def signed() -> tuple[KeySigner, bytes, SignatureLayer, dict[Digest, bytes]]:
    signer = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    payload = build_payload("127.0.0.1:5000/team/app", VALID_DIGEST, {"build": "42"})
    layer = _signed_layer(signer, payload)
    return signer, payload, layer, {layer.digest: payload}


def test_sign_manifest_parse_verify_round_trip(
    signed: tuple[KeySigner, bytes, SignatureLayer, dict[Digest, bytes]],
) -> None:
    signer, _payload, layer, blobs = signed
    result = build_signature_manifest(None, layer)
    assert result is not None
    layers = parse_signature_manifest(result.manifest)
    key = TrustedKey.from_pem(signer.public_key_pem(), "release.pub")
    outcomes = verify_simple_signing(
        layers, lambda layer: blobs[layer.digest], VALID_DIGEST, "127.0.0.1:5000/team/app", [key]
    )
    assert [o.reason for o in outcomes] == [Reason.VALID]
    assert outcomes[0].detail == "signed by release.pub"
    assert outcomes[0].payload is not None and outcomes[0].payload.optional == {"build": "42"}
    assert outcomes[0].to_json() == {
        "index": 0,
        "layerDigest": str(layer.digest),
        "outcome": "valid",
        "reason": "signed by release.pub",
        "key": "release.pub",
        "dockerReference": "127.0.0.1:5000/team/app",
        "manifestDigest": str(VALID_DIGEST),
        "rekor": None,
    }


def test_docker_hub_spellings_are_the_same_repository() -> None:
    signer = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    payload = build_payload(docker_reference(Reference.parse("busybox")), VALID_DIGEST)
    layer = _signed_layer(signer, payload)
    key = TrustedKey("k", signer.public_key)
    [outcome] = verify_simple_signing(
        [layer], lambda _: payload, VALID_DIGEST, "docker.io/library/busybox", [key]
    )
    assert outcome.ok


def test_loader_failures(signed: tuple[KeySigner, bytes, SignatureLayer, dict[Digest, bytes]]) -> None:
    signer, payload, layer, _ = signed
    key = TrustedKey("k", signer.public_key)

    def unreachable(_: SignatureLayer) -> bytes:
        raise RegistryUnreachable("connection refused")

    with pytest.raises(CouldNotCheck):  # "could not look" is never reported as a bad signature
        verify_simple_signing([layer], unreachable, VALID_DIGEST, "127.0.0.1:5000/team/app", [key])
    [outcome] = verify_simple_signing(
        [layer], lambda _: payload + b" ", VALID_DIGEST, "127.0.0.1:5000/team/app", [key]
    )
    assert outcome.reason is Reason.MALFORMED and "descriptor" in outcome.detail


def test_layers_without_signature_or_of_other_types_are_malformed(
    signed: tuple[KeySigner, bytes, SignatureLayer, dict[Digest, bytes]],
) -> None:
    signer, payload, layer, _ = signed
    key = TrustedKey("k", signer.public_key)
    unsigned = SignatureLayer(layer.digest, layer.size, {})
    other = SignatureLayer(layer.digest, layer.size, dict(layer.annotations), "text/plain")
    huge = SignatureLayer(layer.digest, cosign.MAX_PAYLOAD_BYTES + 1, dict(layer.annotations))
    outcomes = verify_simple_signing(
        [unsigned, other, huge, layer], lambda _: payload, VALID_DIGEST, "127.0.0.1:5000/team/app", [key]
    )
    assert [o.reason for o in outcomes] == [Reason.MALFORMED] * 3 + [Reason.VALID]
    assert [o.index for o in outcomes] == [0, 1, 2, 3]


def test_signed_garbage_payload_is_malformed_not_valid() -> None:
    signer = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    payload = b'{"critical":{"type":"atomic container signature"}}'
    layer = _signed_layer(signer, payload)
    [outcome] = verify_simple_signing(
        [layer], lambda _: payload, VALID_DIGEST, "example.com/app", [TrustedKey("k", signer.public_key)]
    )
    assert outcome.reason is Reason.MALFORMED and outcome.key == "k"


def test_certificate_naming_a_trusted_key_turns_failure_into_bad_signature() -> None:
    signer = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    payload = build_payload("example.com/app", VALID_DIGEST)
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    private = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .sign(private, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    layer = SignatureLayer.create(payload, signer.sign(payload), certificate=cert_pem)  # wrong key signed
    assert layer.annotations[CERTIFICATE_ANNOTATION] == cert_pem
    trusted = [TrustedKey("cert-key", private.public_key())]
    [outcome] = verify_simple_signing([layer], lambda _: payload, VALID_DIGEST, "example.com/app", trusted)
    assert outcome.reason is Reason.BAD_SIGNATURE


def test_require_verified_messages() -> None:
    with pytest.raises(NoSignatures) as info:
        require_verified([], f"example.com/app@{VALID_DIGEST}")
    assert str(info.value) == f"no signatures found for example.com/app@{VALID_DIGEST}"
    outcome = cosign.SignatureOutcome(0, VALID_DIGEST, Reason.UNKNOWN_KEY, "x")
    with pytest.raises(UntrustedSignatures) as untrusted:
        require_verified([outcome, outcome], "example.com/app@x")
    assert str(untrusted.value) == "2 signatures found for example.com/app@x, none by a trusted key"


def test_no_trusted_keys_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one trusted key"):
        verify_simple_signing([], lambda _: b"", VALID_DIGEST, "example.com/app", [])


# --- Rekor SETs --------------------------------------------------------------------------------


def _make_bundle(
    log: ec.EllipticCurvePrivateKey,
    payload: bytes,
    signature: bytes,
    signer_pem: bytes,
    *,
    kind: str = "hashedrekord",
) -> str:
    if kind == "hashedrekord":
        data: dict[str, object] = {
            "hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}
        }
        sig: dict[str, object] = {}
    else:
        data = {"content": base64.b64encode(payload).decode()}
        sig = {"format": "x509"}
    body = {
        "apiVersion": "0.0.1",
        "kind": kind,
        "spec": {
            "data": data,
            "signature": {
                "content": base64.b64encode(signature).decode(),
                "publicKey": {"content": base64.b64encode(signer_pem).decode()},
                **sig,
            },
        },
    }
    log_der = log.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    entry: dict[str, str | int] = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "integratedTime": 1700000000,
        "logIndex": 7,
        "logID": hashlib.sha256(log_der).hexdigest(),
    }
    set_ = log.sign(rfc8785.dumps(entry), ec.ECDSA(hashes.SHA256()))
    return json.dumps({"SignedEntryTimestamp": base64.b64encode(set_).decode(), "Payload": entry})


@pytest.mark.parametrize("kind", ["hashedrekord", "rekord"])
def test_rekor_set_round_trip_and_its_checks(kind: str) -> None:
    log = ec.generate_private_key(ec.SECP256R1())
    signer = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    payload = build_payload("example.com/app", VALID_DIGEST)
    signature = signer.sign(payload)
    sig_b64 = base64.b64encode(signature).decode()
    bundle = _make_bundle(log, payload, signature, signer.public_key_pem(), kind=kind)

    entry = verify_rekor_set(bundle, log.public_key(), payload, sig_b64, signer.public_key_pem())
    assert (entry.log_index, entry.integrated_time, entry.kind) == (7, 1700000000, kind)

    def fails(message: str, *args: object) -> None:
        with pytest.raises(SignatureInvalid, match=message) as info:
            verify_rekor_set(*args)  # type: ignore[arg-type]
        assert info.value.reason == Reason.BAD_SET

    other = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    fails("another payload", bundle, [log.public_key()], payload + b" ", sig_b64, signer.public_key)
    fails(
        "another signature",
        bundle,
        [log.public_key()],
        payload,
        base64.b64encode(b"x").decode(),
        signer.public_key,
    )
    fails("another signing key", bundle, [log.public_key()], payload, sig_b64, other.public_key)
    fails("not a trusted Rekor key", bundle, [other.public_key], payload, sig_b64, signer.public_key)
    tampered = json.loads(bundle)
    tampered["Payload"]["integratedTime"] += 1
    fails("does not verify", json.dumps(tampered), [log.public_key()], payload, sig_b64, signer.public_key)
    tampered["Payload"]["integratedTime"] = "1700000000"
    fails(
        "integer integratedTime",
        json.dumps(tampered),
        [log.public_key()],
        payload,
        sig_b64,
        signer.public_key,
    )
    fails("not JSON", "{", [log.public_key()], payload, sig_b64, signer.public_key)


def test_vector_set_tampered_fails(
    tmp_path: Path, cosign2_key: TrustedKey, rekor_key: ec.EllipticCurvePublicKey
) -> None:
    [signature] = read_signatures(vector("dir-img-cosign-key-rekor-valid", tmp_path))
    bundle = json.loads(signature.annotations[BUNDLE_ANNOTATION])
    bundle["Payload"]["logIndex"] += 1
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_rekor_set(
            json.dumps(bundle),
            [rekor_key],
            signature.payload,
            signature.annotations[SIGNATURE_ANNOTATION],
            cosign2_key.public_key,
        )
    public_pem = public_key_pem(cosign2_key.public_key)
    original = signature.annotations[BUNDLE_ANNOTATION]
    entry = verify_rekor_set(
        original, rekor_key, signature.payload, signature.annotations[SIGNATURE_ANNOTATION], public_pem
    )
    assert entry.log_index == 11608800


# --- the dir: reader ---------------------------------------------------------------------------


def test_signature_file_parsing() -> None:
    assert parse_signature_file(b"\x00simple-signing\n...") is None
    assert parse_signature_file(b"\x89PGP legacy") is None
    for bad in (
        b"{",
        b'{"mimeType":"x","payload":"AA==","annotations":{},"extra":1}',
        b'{"mimeType":"x","payload":"!","annotations":{}}',
    ):
        with pytest.raises(InvalidManifest):
            parse_signature_file(SIGSTORE_JSON_PREFIX + bad)


def test_reader_stops_at_first_gap(tmp_path: Path) -> None:
    valid = (VECTORS / "dir-img-cosign-valid/signature-1").read_bytes()
    (tmp_path / "signature-1").write_bytes(valid)
    (tmp_path / "signature-3").write_bytes(valid)
    assert len(read_signatures(tmp_path)) == 1
