"""`trust copy`: images with their signatures between a real registry and OCI layouts, byte for byte."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import HostileRegistry, Reply
from support.images import (
    Layer,
    build_image,
    build_index,
    multiplatform_images,
    push_image,
    push_index,
    simple_image,
    write_oci_layout,
)
from support.registry import Registry
from support.tty import run_in_terminal
from support.vectors import VECTORS as SHARED_VECTORS

from pull.clients import RegistryClients
from pull.digest import Digest
from pull.layout import LayoutClient
from pull.manifest import Platform
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.cli.app import main
from trust.store_ops.copy import copy_image

REPO_ROOT = Path(__file__).resolve().parent.parent
KEYS = REPO_ROOT / "keys-example"
VECTORS = SHARED_VECTORS / "notation" / "oci_layout"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


@pytest.fixture
def clients() -> Iterator[RegistryClients]:
    with RegistryClients() as opened:
        yield opened


@pytest.fixture
def example_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUST_PASSWORD", "trust-example")


def blob_files(layout: Path) -> dict[str, bytes]:
    return {
        f"{path.parent.name}:{path.name}": path.read_bytes()
        for path in (layout / "blobs").glob("*/*")
        if not path.name.startswith(".")
    }


def layout_names(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    return {
        entry["annotations"][REF_NAME]: entry["digest"]
        for entry in index["manifests"]
        if REF_NAME in entry.get("annotations", {})
    }


def run(*argv: str) -> int:
    return main(list(argv))


# -- Notation vectors: layout -> registry -> layout --------------------------------------------------


@pytest.mark.parametrize("vector", ["e2e-valid-signature", "e2e-invalid-signature", "e2e-expired-signature"])
def test_notation_vectors_round_trip_byte_identical(
    vector: str, registry: Registry, repo_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = VECTORS / vector
    original_blobs = blob_files(source)
    names = layout_names(source)
    image = Digest.parse(names["v1"])
    fallback_tag = image.encoded
    assert fallback_tag in names  # the vectors list their signatures in the referrers tag schema

    remote = f"{registry.host}/{repo_name}:v1"
    assert run("copy", f"oci:{source}:v1", remote, "--output", "json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["digest"] == str(image)
    assert record["referrers"], "the Notation signatures travel as referrers"

    with RegistryClient(registry.host) as client:
        assert client.get_manifest(repo_name, "v1").data == original_blobs[f"sha256:{image.hex}"]
        fallback = client.get_manifest(repo_name, fallback_tag, accept=OCI_INDEX).data
        assert fallback == original_blobs[f"sha256:{Digest.parse(names[fallback_tag]).hex}"]
        for key, data in original_blobs.items():
            digest = Digest.parse(key)
            if key == f"sha256:{Digest.parse(names[fallback_tag]).hex}":
                continue  # the fallback index is a tag, compared above
            if _is_manifest(data):
                assert client.get_manifest(repo_name, str(digest)).data == data
            else:
                assert client.get_blob(repo_name, digest, max_bytes=len(data)) == data

    back = tmp_path / "back"
    assert run("copy", remote, f"oci:{back}:v1") == 0
    assert capsys.readouterr().out.strip() == f"oci:{back}@{image}"
    assert blob_files(back) == original_blobs
    assert layout_names(back) == {"v1": str(image), fallback_tag: names[fallback_tag]}


def test_copy_again_sends_nothing_twice(registry: Registry, repo_name: str, clients: RegistryClients) -> None:
    source = Reference.parse(f"oci:{VECTORS / 'e2e-valid-signature'}:v1")
    destination = Reference.parse(f"{registry.host}/{repo_name}:v1")
    first = copy_image(clients, source, destination)
    assert first.blobs_copied == 3 and first.blobs_skipped == 1  # the notation config blob is shared
    again = copy_image(clients, source, destination)
    assert again.blobs_copied == 0 and again.digest == first.digest
    with RegistryClient(registry.host) as client:
        fallback = json.loads(client.get_manifest(repo_name, first.digest.encoded, accept=OCI_INDEX).data)
    assert len(fallback["manifests"]) == 1


# -- cosign signatures ---------------------------------------------------------------------------------


def test_cosign_signed_image_registry_to_layout_to_second_repository(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    example_password: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"signed and carried\n"), tag="v1")
    original = f"{registry.host}/{repo_name}:v1"
    pub = str(KEYS / "cosign.pub")
    assert run("sign", "--tlog-upload=false", "--key", str(KEYS / "cosign.key"), original) == 0
    assert run("verify", "--key", pub, original) == 0

    layout = tmp_path / "airgap"
    capsys.readouterr()
    assert run("copy", original, f"oci:{layout}:v1", "--output", "json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["tags"] == [Digest.parse(pushed.digest).encoded + ".sig"]
    carried = f"oci:{layout}:v1"
    # The .sig payload names the original repository; cosign v3's bundle referrer (copied along)
    # binds the digest only, as cosign verifies it: the copy verifies through the bundle.
    capsys.readouterr()
    assert run("verify", "--key", pub, carried, "-o", "json") == 0
    outcomes = [s["outcome"] for s in json.loads(capsys.readouterr().out)["signatures"]]
    assert outcomes == ["wrong-repository", "valid"]
    assert run("verify", "--key", pub, "--ignore-reference", carried) == 0

    second = f"{registry.host}/{repo_name}-mirror:v1"
    assert run("copy", carried, second) == 0
    assert run("verify", "--key", pub, "--ignore-reference", second) == 0
    capsys.readouterr()
    assert run("verify", "--key", pub, "--ignore-reference", f"{second}@{pushed.digest}", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["digest"] == pushed.digest


def test_sign_and_verify_a_layout_in_place(
    registry: Registry, repo_name: str, tmp_path: Path, example_password: None
) -> None:
    push_image(registry, repo_name, simple_image(b"signed in the layout\n"), tag="v1")
    layout = tmp_path / "layout"
    assert run("copy", f"{registry.host}/{repo_name}:v1", f"oci:{layout}:v1") == 0
    reference = f"oci:{layout}:v1"
    pub = str(KEYS / "cosign.pub")
    assert run("verify", "--key", pub, reference) == 3  # unsigned
    assert run("sign", "--tlog-upload=false", "--key", str(KEYS / "cosign.key"), reference) == 0
    assert any(name.endswith(".sig") for name in layout_names(layout))
    assert run("verify", "--key", pub, reference) == 0
    assert run("verify", "--key", pub, f"oci:{layout.parent}/./{layout.name}:v1") == 0  # same identity


def test_copy_with_platform_takes_one_manifest_of_an_index(
    registry: Registry, repo_name: str, tmp_path: Path, clients: RegistryClients
) -> None:
    index = build_index(multiplatform_images())
    push_index(registry, repo_name, index, tag="multi")
    arm = index.image_for("linux/arm64")
    result = copy_image(
        clients,
        Reference.parse(f"{registry.host}/{repo_name}:multi"),
        Reference.parse(f"oci:{tmp_path / 'arm'}:v1"),
        platform=Platform.parse("linux/arm64"),
    )
    assert str(result.digest) == arm.digest
    assert layout_names(tmp_path / "arm") == {"v1": arm.digest}
    whole = copy_image(
        clients,
        Reference.parse(f"{registry.host}/{repo_name}:multi"),
        Reference.parse(f"oci:{tmp_path / 'all'}:v1"),
    )
    assert str(whole.digest) == index.digest
    assert len(whole.manifests) == 3


# -- tampering and layout hostility -----------------------------------------------------------------


def test_an_index_listing_one_child_many_times_is_copied_once(
    tmp_path: Path, clients: RegistryClients
) -> None:
    """Indexes nested three deep, each listing its child ten times: 1,110 listings, 4 manifests.
    Following every listing would let a hostile source multiply the work (`n ** depth`)."""
    source = write_oci_layout(tmp_path / "src", simple_image(b"repeated\n"))
    image_entry = json.loads((source / "index.json").read_text())["manifests"][0]
    entry = image_entry
    for _ in range(3):
        raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] * 10}).encode()
        (source / "blobs" / "sha256" / Digest.of_bytes(raw).hex).write_bytes(raw)
        entry = {"mediaType": OCI_INDEX, "digest": str(Digest.of_bytes(raw)), "size": len(raw)}
    top = Digest.parse(entry["digest"])

    fetched: list[str] = []
    original = LayoutClient.get_manifest

    def counting(self: LayoutClient, repository: str, identifier: str, accept: str = "") -> Any:
        fetched.append(identifier)
        return original(self, repository, identifier, accept)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LayoutClient, "get_manifest", counting)
        result = copy_image(
            clients,
            Reference.parse(f"oci:{source}@{top}"),
            Reference.parse(f"oci:{tmp_path / 'dst'}:v1"),
            attached=False,
        )
    assert result.digest == top
    assert len(set(result.manifests)) == len(result.manifests) == 4
    image_fetches = sum(1 for identifier in fetched if identifier == image_entry["digest"])
    assert image_fetches == 1, len(fetched)


def test_tampered_layout_blob_fails_with_exit_4_naming_the_digest(
    registry: Registry, repo_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = simple_image(b"about to be tampered with\n")
    push_image(registry, repo_name, image, tag="v1")
    layout = tmp_path / "layout"
    assert run("copy", f"{registry.host}/{repo_name}:v1", f"oci:{layout}:v1") == 0
    layer = Digest.parse(image.layer_descriptors[0].digest)
    path = layout / "blobs" / "sha256" / layer.hex
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert run("copy", f"oci:{layout}:v1", f"{registry.host}/{repo_name}-tampered:v1") == 4
    assert str(layer) in capsys.readouterr().err
    with RegistryClient(registry.host) as client:
        assert not client.blob_exists(f"{repo_name}-tampered", layer)

    manifest = layout / "blobs" / "sha256" / Digest.parse(image.digest).hex
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion": 2'))
    assert run("verify", "--key", str(KEYS / "cosign.pub"), f"oci:{layout}:v1") == 4
    assert image.digest in capsys.readouterr().err


def test_missing_layout_is_could_not_check_and_bad_references_are_usage_errors(tmp_path: Path) -> None:
    pub = str(KEYS / "cosign.pub")
    assert run("verify", "--key", pub, f"oci:{tmp_path / 'nothing'}:v1") == 5
    assert run("verify", "--key", pub, "oci::v1") == 2
    assert run("verify", "--key", pub, f"oci:{tmp_path}:bad/tag") == 2
    assert run("copy", f"oci:{tmp_path}:v1", f"oci:{tmp_path / 'x'}@sha256:{'a' * 64}") == 2


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_a_layout_we_wrote(registry: Registry, repo_name: str, tmp_path: Path) -> None:
    image = simple_image(b"for skopeo\n")
    push_image(registry, repo_name, image, tag="v1")
    layout = tmp_path / "layout"
    assert run("copy", f"{registry.host}/{repo_name}:v1", f"oci:{layout}:v1") == 0
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:v1"], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(inspected.stdout)["Digest"] == image.digest
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{layout}:v1"], capture_output=True, timeout=60, check=True
    )
    assert raw.stdout == image.manifest_bytes


def test_copy_fails_could_not_check_when_listing_referrers_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy never drops signatures silently: a failed referrers listing stops it with exit 5."""
    monkeypatch.setattr("pull.registry._sleep", lambda _seconds: None)  # skip the retry backoff
    with HostileRegistry(referrers_api=True) as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        hostile.fail_next("GET", f"/v2/team/app/referrers/{image.digest}", Reply(500, b"down"), times=99)
        assert run("copy", f"{hostile.host}/team/app:v1", f"oci:{tmp_path / 'out'}:v1") == 5
        assert layout_names(tmp_path / "out") == {}  # the tag is pushed last
        assert (
            run("copy", "--no-signatures", f"{hostile.host}/team/app:v1", f"oci:{tmp_path / 'out'}:v1") == 0
        )
    assert layout_names(tmp_path / "out") == {"v1": image.digest}


def test_oras_style_layout_referrers_reach_the_registry_fallback_index(
    registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    layout = tmp_path / "oras"
    shutil.copytree(VECTORS / "e2e-valid-signature", layout)
    layout.chmod(0o755)
    (layout / "index.json").chmod(0o644)
    names = layout_names(layout)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [
        e for e in index["manifests"] if e.get("annotations", {}).get(REF_NAME) != "sha256-" + names["v1"][7:]
    ]
    (layout / "index.json").write_text(json.dumps(index))
    assert run("copy", f"oci:{layout}:v1", f"{registry.host}/{repo_name}:v1") == 0
    with RegistryClient(registry.host) as client:
        fallback = json.loads(
            client.get_manifest(repo_name, "sha256-" + names["v1"][7:], accept=OCI_INDEX).data
        )
    [entry] = fallback["manifests"]
    assert entry["artifactType"] == "application/vnd.cncf.notary.signature"


class RecordingProgress:
    """A `PullProgress` that remembers what it was told (the rich bars get the same calls)."""

    def __init__(self) -> None:
        self.started: dict[str, bool] = {}
        self.advanced: dict[str, int] = {}
        self.finished: list[str] = []

    def blob_started(self, descriptor: Any, already_exists: bool) -> None:
        self.started[str(descriptor.digest)] = already_exists

    def blob_advanced(self, descriptor: Any, nbytes: int) -> None:
        key = str(descriptor.digest)
        self.advanced[key] = self.advanced.get(key, 0) + nbytes

    def blob_finished(self, descriptor: Any) -> None:
        self.finished.append(str(descriptor.digest))


def test_blobs_are_copied_in_parallel_with_progress_for_each(
    registry: Registry, repo_name: str, tmp_path: Path, clients: RegistryClients
) -> None:
    layers = [Layer.from_files({f"f{i}": bytes([i]) * (300_000 + i)}) for i in range(5)]
    image = build_image(layers)
    push_image(registry, repo_name, image, tag="v1")
    source = Reference.parse(f"{registry.host}/{repo_name}:v1")
    progress = RecordingProgress()
    result = copy_image(clients, source, Reference.parse(f"oci:{tmp_path / 'out'}:v1"), progress=progress)
    sizes = {d.digest: d.size for d in [image.config_descriptor, *image.layer_descriptors]}
    assert result.blobs_copied == len(sizes) and result.bytes_copied == sum(sizes.values())
    assert progress.started == {digest: False for digest in sizes}
    assert progress.advanced == sizes and sorted(progress.finished) == sorted(sizes)
    again = RecordingProgress()
    second = copy_image(clients, source, Reference.parse(f"oci:{tmp_path / 'out'}:v2"), progress=again)
    assert second.blobs_skipped == len(sizes) and set(again.started.values()) == {True}
    with LayoutClient(tmp_path / "out") as layout:
        for digest in sizes:
            assert layout.blob_exists("", Digest.parse(digest))


def test_progress_bars_on_a_terminal(registry: Registry, repo_name: str, tmp_path: Path) -> None:
    push_image(registry, repo_name, simple_image(b"bars\n"), tag="v1")
    code, output = run_in_terminal("copy", f"{registry.host}/{repo_name}:v1", f"oci:{tmp_path / 'tty'}:v1")
    assert code == 0 and b"verified" in output and b"copied" in output
    # Not on a terminal: no bars, only the summary line and the digest.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trust",
            "copy",
            f"{registry.host}/{repo_name}:v1",
            f"oci:{tmp_path / 'pipe'}:v1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "verified" not in done.stderr and done.stderr.startswith("copied ")


def _is_manifest(data: bytes) -> bool:
    """Whether layout blob bytes are a manifest or an index (fetched as such), not a config or layer."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(document, dict) and ("layers" in document or "manifests" in document)


def _referrer_of(subject: str, size: int) -> bytes:
    """An artifact manifest whose subject is `subject` (an image manifest of `size` bytes)."""
    empty = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": subject,
                "size": size,
            },
        },
        sort_keys=True,
    ).encode()


def test_a_referrers_listing_naming_another_images_referrer_is_not_followed(
    registry: Registry, repo_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The source lists, under image A, a referrer whose subject is image B: it is not A's, so it
    is neither copied nor recorded as A's at the destination (the subject filter)."""
    with HostileRegistry() as source:
        source.add_blob_content(b"{}")
        first = source.add_image("team/app", "a", layers=[b"image a"])
        second = source.add_image("team/app", "b", layers=[b"image b"])
        foreign = source.add_manifest("team/app", "ref", _referrer_of(second.digest, len(second.manifest)))
        listing = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": foreign,
                    "size": len(_referrer_of(second.digest, len(second.manifest))),
                    "artifactType": "application/vnd.example.sbom",
                }
            ],
        }
        source.add_route(
            "GET",
            f"/v2/team/app/referrers/{first.digest}",
            lambda _: Reply(
                200, json.dumps(listing).encode(), {"Content-Type": "application/vnd.oci.image.index.v1+json"}
            ),
        )
        capsys.readouterr()
        assert (
            run("copy", "--output", "json", f"{source.host}/team/app:a", f"{registry.host}/{repo_name}:a")
            == 0
        )
    copied = json.loads(capsys.readouterr().out)
    assert copied["referrers"] == []
    with RegistryClient(registry.host) as client:
        assert client.head_manifest(repo_name, foreign) is None
        pages = client.referrers(repo_name, Digest.parse(first.digest)) or []
        assert all(json.loads(page)["manifests"] == [] for page in pages)


def test_a_same_size_tampered_blob_between_two_registries_is_refused_by_the_copy_itself(
    registry: Registry, repo_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 4 naming the digest, from trust's own check: not the destination's refusal (exit 5)."""
    with HostileRegistry() as source:
        image = source.add_image("team/app", "v1", layers=[b"the real layer bytes"])
        source.add_blob(image.layers[0], b"the fake layer bytes")  # the same size
        capsys.readouterr()
        assert run("copy", f"{source.host}/team/app:v1", f"{registry.host}/{repo_name}:v1") == 4
        err = capsys.readouterr().err
        assert f"blob {image.layers[0]} from {source.host} hashes to sha256:" in err
    with RegistryClient(registry.host) as client:
        assert not client.blob_exists(repo_name, Digest.parse(image.layers[0]))
        assert client.head_manifest(repo_name, "v1") is None
