"""`trust pull`: reference → verified manifest(s) → verified blobs in the store → named refs.

The order matters for "nothing unverified is ever visible": every blob is committed (size and
digest checked) before the manifest that names it, and the manifest before the `index.json` ref
that names the manifest. An interrupted pull therefore leaves the store consistent.

Layer diff_ids (digests of the uncompressed tar) are not computed here: that would mean
decompressing every layer twice. They are recomputed by `run/` while unpacking, where a mismatch
discards the snapshot; here the config's diff_id *count* must match the layer count.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from pull.config import PullConfig
from pull.digest import Digest
from pull.errors import CouldNotCheck, InvalidManifest, NotAnImage, NotFound, SizeMismatch
from pull.manifest import (
    Descriptor,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    Platform,
    VerifiedDocument,
    parse_config,
    verify_document,
)
from pull.records import dataclass, field
from pull.reference import Reference
from pull.registry import RegistryClient
from pull.store import ContentStore


class PullProgress(Protocol):
    """Listener for per-blob progress; the CLI binds it to rich progress bars."""

    def blob_started(self, descriptor: Descriptor, already_exists: bool) -> None: ...
    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None: ...
    def blob_finished(self, descriptor: Descriptor) -> None: ...


class _NoProgress:
    def blob_started(self, descriptor: Descriptor, already_exists: bool) -> None:
        pass

    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None:
        pass

    def blob_finished(self, descriptor: Descriptor) -> None:
        pass


@dataclass(frozen=True)
class LayerResult:
    descriptor: Descriptor
    already_existed: bool


@dataclass(frozen=True)
class PullResult:
    """What was pulled; every digest in it was computed locally from the bytes now in the store."""

    reference: Reference
    digest: Digest
    """The digest the reference resolved to: the index's when the reference names an index."""
    media_type: str
    manifest: VerifiedDocument
    index: VerifiedDocument | None
    config_descriptor: Descriptor
    config: ImageConfig
    layers: tuple[LayerResult, ...]
    platform: Platform
    pulled_at: str
    ref_names: tuple[str, ...] = field(default=())
    mirrors: tuple[str, ...] = field(default=())
    """registries.conf mirrors (`host/repository`) that served any of the bytes; the source served
    the rest. The bytes were verified the same either way."""

    @property
    def image_manifest(self) -> ImageManifest:
        assert isinstance(self.manifest.document, ImageManifest)
        return self.manifest.document

    @property
    def size(self) -> int:
        """Bytes of manifest(s), config and layers."""
        total = len(self.manifest.raw) + self.config_descriptor.size
        total += sum(layer.descriptor.size for layer in self.layers)
        return total + (len(self.index.raw) if self.index else 0)

    def to_json(self) -> dict[str, Any]:
        """The `trust pull --output json` record (documented in docs/formats.md)."""
        return {
            "reference": str(self.reference),
            "repository": self.reference.name,
            "tag": self.reference.tag,
            "digest": str(self.digest),
            "mediaType": self.media_type,
            "manifestDigest": str(self.manifest.digest),
            "indexDigest": str(self.index.digest) if self.index else None,
            "platform": str(self.platform),
            "config": str(self.config_descriptor.digest),
            "layers": [
                {
                    "digest": str(layer.descriptor.digest),
                    "size": layer.descriptor.size,
                    "mediaType": layer.descriptor.media_type,
                    "alreadyExisted": layer.already_existed,
                }
                for layer in self.layers
            ],
            "size": self.size,
            "pulledAt": self.pulled_at,
            "mirrors": list(self.mirrors),
        }


@dataclass(frozen=True)
class ArtifactResult:
    """A pulled artifact (a Helm chart, an oras push, an SBOM): a manifest whose config is not an
    image config. Its blobs are in the store, verified like an image's; it cannot be run."""

    reference: Reference
    digest: Digest
    media_type: str
    manifest: VerifiedDocument
    index: VerifiedDocument | None
    artifact_type: str
    """The manifest's `artifactType`, else its config's media type (as the referrers API has it)."""
    blobs: tuple[LayerResult, ...]
    """The config, then the layers."""
    pulled_at: str
    ref_names: tuple[str, ...] = field(default=())
    mirrors: tuple[str, ...] = field(default=())
    """As `PullResult.mirrors`."""

    @property
    def size(self) -> int:
        total = len(self.manifest.raw) + sum(blob.descriptor.size for blob in self.blobs)
        return total + (len(self.index.raw) if self.index else 0)

    def to_json(self) -> dict[str, Any]:
        """The `trust pull --output json` record of an artifact (docs/formats.md)."""
        return {
            "reference": str(self.reference),
            "repository": self.reference.name,
            "tag": self.reference.tag,
            "digest": str(self.digest),
            "mediaType": self.media_type,
            "manifestDigest": str(self.manifest.digest),
            "indexDigest": str(self.index.digest) if self.index else None,
            "artifactType": self.artifact_type,
            "config": str(self.blobs[0].descriptor.digest),
            "layers": [
                {
                    "digest": str(blob.descriptor.digest),
                    "size": blob.descriptor.size,
                    "mediaType": blob.descriptor.media_type,
                    "alreadyExisted": blob.already_existed,
                }
                for blob in self.blobs[1:]
            ],
            "size": self.size,
            "pulledAt": self.pulled_at,
            "mirrors": list(self.mirrors),
        }


def pull(
    reference: Reference,
    store: ContentStore,
    client: RegistryClient,
    *,
    platform: Platform | None = None,
    config: PullConfig | None = None,
    progress: PullProgress | None = None,
) -> PullResult:
    """Pull the image `reference` names into `store`, verifying everything on the way.

    Raises:
        NotAnImage: the reference names an artifact (it was pulled and stored all the same).
        IntegrityError: a digest, size or document check failed (nothing unverified was stored).
        CouldNotCheck: the registry could not be reached, refused us, or lacks the image.
    """
    result = pull_any(reference, store, client, platform=platform, config=config, progress=progress)
    if isinstance(result, ArtifactResult):
        raise NotAnImage(
            f"{reference} is not a container image: it is an artifact of type {result.artifact_type} "
            f"(config {result.blobs[0].descriptor.media_type}); it can be pulled and verified, not run",
            result.manifest.digest,
            result.index.digest if result.index is not None else None,
        )
    return result


def pull_any(
    reference: Reference,
    store: ContentStore,
    client: RegistryClient,
    *,
    platform: Platform | None = None,
    config: PullConfig | None = None,
    progress: PullProgress | None = None,
) -> PullResult | ArtifactResult:
    """`pull`, returning an `ArtifactResult` for an artifact instead of raising."""
    # The blobs committed below are unreachable until `set_refs` names their manifest: hold the
    # store's writer lock (shared) for the whole pull so a concurrent `trust gc` cannot sweep them.
    with store.in_use():
        return _pull(reference, store, client, platform, config, progress)


def _pull(
    reference: Reference,
    store: ContentStore,
    client: RegistryClient,
    platform: Platform | None,
    config: PullConfig | None,
    progress: PullProgress | None,
) -> PullResult | ArtifactResult:
    config = config or PullConfig()
    progress = progress or _NoProgress()
    wanted = platform or Platform.host()
    repo = reference.repository
    mark = client.mirror_mark()

    top = resolve(client, reference, config)
    index: VerifiedDocument | None = None
    manifest = top
    if isinstance(top.document, ImageIndex):
        index = top
        child = top.document.select(wanted)
        manifest = _fetch_document(client, repo, str(child.digest), child.digest, child.media_type, config)
        if not isinstance(manifest.document, ImageManifest):
            raise InvalidManifest(f"index entry {child.digest} for {wanted} is not an image manifest")
    image = manifest.document
    assert isinstance(image, ImageManifest)
    if not image.is_image:
        return _pull_artifact(reference, store, client, top, manifest, index, config, progress, mark)

    raw_config = client.get_blob(
        repo, image.config.digest, max_bytes=min(image.config.size, config.config_max_bytes)
    )
    if len(raw_config) != image.config.size:
        raise SizeMismatch(
            f"config {image.config.digest} is {len(raw_config)} bytes, promised {image.config.size}"
        )
    store.put_bytes(raw_config, image.config.digest)  # checks the digest before anything is visible
    image_config = parse_config(raw_config, image.config)
    if len(image_config.diff_ids) != len(image.layers):
        raise InvalidManifest(
            f"config lists {len(image_config.diff_ids)} diff_ids for {len(image.layers)} layers"
        )
    if index is not None and (image_config.os, image_config.architecture) != (wanted.os, wanted.architecture):
        raise InvalidManifest(
            f"index entry for {wanted} points to an image built for {image_config.platform}"
        )

    layers = _fetch_layers(client, repo, image.layers, store, config, progress)

    names = _commit_manifests(reference, store, top, manifest, index)

    result = PullResult(
        reference=reference,
        digest=top.digest,
        media_type=top.media_type,
        manifest=manifest,
        index=index,
        config_descriptor=image.config,
        config=image_config,
        layers=tuple(layers),
        platform=image_config.platform if index is None else wanted,
        pulled_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ref_names=tuple(names),
        mirrors=client.mirrors_since(mark),
    )
    store.append_record("pulls", result.to_json())
    return result


def _commit_manifests(
    reference: Reference,
    store: ContentStore,
    top: VerifiedDocument,
    manifest: VerifiedDocument,
    index: VerifiedDocument | None,
) -> list[str]:
    """Store the manifests (parents after children) and then name them; returns the ref names."""
    store.put_bytes(manifest.raw, manifest.digest)
    if index is not None:
        store.put_bytes(index.raw, index.digest)
    names = [f"{reference.name}@{top.digest}"]
    if reference.digest is None and reference.tag is not None:
        names.append(f"{reference.name}:{reference.tag}")
    store.set_refs(top.descriptor, names)
    if index is not None:
        store.set_refs(manifest.descriptor, [f"{reference.name}@{manifest.digest}"])
    return names


def _pull_artifact(
    reference: Reference,
    store: ContentStore,
    client: RegistryClient,
    top: VerifiedDocument,
    manifest: VerifiedDocument,
    index: VerifiedDocument | None,
    config: PullConfig,
    progress: PullProgress,
    mirror_mark: int,
) -> ArtifactResult:
    """Store an artifact: its config and layers streamed and checked like layers (any media type,
    any size the descriptor states), then its manifests and names. Nothing is parsed or unpacked."""
    document = manifest.document
    assert isinstance(document, ImageManifest)
    blobs = _fetch_layers(
        client, reference.repository, (document.config, *document.layers), store, config, progress
    )
    names = _commit_manifests(reference, store, top, manifest, index)
    result = ArtifactResult(
        reference=reference,
        digest=top.digest,
        media_type=top.media_type,
        manifest=manifest,
        index=index,
        artifact_type=document.artifact_type or document.config.media_type,
        blobs=tuple(blobs),
        pulled_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ref_names=tuple(names),
        mirrors=client.mirrors_since(mirror_mark),
    )
    store.append_record("pulls", result.to_json())
    return result


def resolve(
    client: RegistryClient, reference: Reference, config: PullConfig | None = None
) -> VerifiedDocument:
    """Fetch and verify the document `reference` names (its digest is computed from the bytes).

    A tag resolves to whatever the registry serves today; a `@digest` reference must match.
    """
    return _fetch_document(
        client, reference.repository, reference.identifier, reference.digest, None, config or PullConfig()
    )


def _fetch_document(
    client: RegistryClient,
    repository: str,
    identifier: str,
    expected: Digest | None,
    expected_media_type: str | None,
    config: PullConfig,
) -> VerifiedDocument:
    fetched = client.get_manifest(repository, identifier)
    doc = verify_document(
        fetched.data,
        content_type=fetched.content_type,
        expected=expected,
        max_bytes=config.manifest_max_bytes,
        descriptor_type=expected_media_type,
    )
    if expected_media_type is not None and doc.media_type != expected_media_type:
        raise InvalidManifest(
            f"manifest {doc.digest} is a {doc.media_type}, but its descriptor says {expected_media_type}"
        )
    return doc


def _fetch_layers(
    client: RegistryClient,
    repository: str,
    layers: tuple[Descriptor, ...],
    store: ContentStore,
    config: PullConfig,
    progress: PullProgress,
) -> list[LayerResult]:
    failed = threading.Event()

    def fetch(layer: Descriptor) -> LayerResult:
        with store.ingest(layer.digest, layer.size) as writer:
            if writer is None:
                progress.blob_started(layer, True)
                progress.blob_finished(layer)
                return LayerResult(layer, True)
            progress.blob_started(layer, False)
            with _layer_stream(client, repository, layer, config) as chunks:
                for chunk in chunks:
                    if failed.is_set():
                        raise _Cancelled()
                    writer.write(chunk)
                    progress.blob_advanced(layer, len(chunk))
        progress.blob_finished(layer)
        return LayerResult(layer, False)

    # The same blob may appear twice in one manifest; fetch it once.
    unique = list(dict.fromkeys(layers))
    with ThreadPoolExecutor(max_workers=max(1, config.max_parallel_blobs)) as pool:
        futures = [pool.submit(fetch, layer) for layer in unique]
        results: dict[Descriptor, LayerResult] = {}
        first_error: BaseException | None = None
        for future in futures:
            try:
                result = future.result()
                results[result.descriptor] = result
            except BaseException as exc:  # re-raised below, once siblings stopped
                failed.set()
                if first_error is None or isinstance(first_error, _Cancelled):
                    first_error = exc
        if first_error is not None:
            raise first_error
    return [results[layer] for layer in layers]


@contextlib.contextmanager
def _layer_stream(
    client: RegistryClient, repository: str, layer: Descriptor, config: PullConfig
) -> Iterator[Iterator[bytes]]:
    """The layer's bytes from the registry; for a non-distributable layer the registry lacks, from
    its `urls` when `allow_nondistributable_urls` says so. Whichever source serves them, the caller's
    store writer checks size and digest."""
    stream = client.stream_blob(repository, layer.digest)
    try:
        chunks = stream.__enter__()  # the registry's answer, before a byte is consumed
    except NotFound:
        if not layer.urls:
            raise
        if not config.allow_nondistributable_urls:
            raise NotFound(
                f"layer {layer.digest} is non-distributable (foreign): the registry does not have it "
                f"and its URLs ({_urls(layer)}) are not fetched unless --allow-nondistributable-urls "
                "or the policy's 'allow-nondistributable-urls: true' allows it"
            ) from None
    else:
        with contextlib.ExitStack() as stack:
            stack.push(stream)
            yield chunks
        return
    failures: list[str] = []
    for url in layer.urls:
        stream = client.stream_url(url, layer.digest)
        try:
            chunks = stream.__enter__()
        except CouldNotCheck as exc:
            failures.append(str(exc))
            continue
        with contextlib.ExitStack() as stack:
            stack.push(stream)
            yield chunks
        return
    last = failures[-1] if failures else "none"
    raise CouldNotCheck(f"non-distributable layer {layer.digest}: no URL served it (last: {last})")


def _urls(layer: Descriptor) -> str:
    shown = ", ".join(url[:120] for url in layer.urls[:3])
    return shown + (f" and {len(layer.urls) - 3} more" if len(layer.urls) > 3 else "")


class _Cancelled(Exception):
    """A sibling download failed; stop this one (its partial file is removed by the store)."""
