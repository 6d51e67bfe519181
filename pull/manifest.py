"""OCI/Docker manifests, indexes and image configs: strict parsing of untrusted bytes.

Like python-tuf's `TrustedMetadataSet`, this module does no I/O: bytes come in, verified
objects come out, or an `IntegrityError` says why not. Rules (DESIGN.md, "Verification rules"):

- the raw bytes are hashed; an expected digest (from a `@sha256:` reference or a parent
  descriptor) must match; `Docker-Content-Digest` is never trusted;
- documents are capped (4 MiB by default) and must be JSON objects without duplicate keys
  (duplicate keys let two parsers see two different documents);
- `schemaVersion` 2 only (schema1 is refused), `mediaType` required and consistent with the
  HTTP Content-Type; a document with both `manifests` and `layers` is refused (CVE-2021-41190).
"""

from __future__ import annotations

import os
from typing import Any

from pull import mediatypes as mt
from pull.config import MANIFEST_MAX_BYTES
from pull.digest import Digest
from pull.errors import DigestMismatch, InvalidManifest, InvalidReference, UsageError
from pull.records import dataclass, field
from pull.strictjson import loads as strict_json

_MAX_DESCRIPTOR_SIZE = 1 << 62


@dataclass(frozen=True)
class Platform:
    """`os/architecture[/variant]`, as in an index's platform field."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        machine = os.uname().machine.lower()  # what platform.machine() returns, without its import
        arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
            machine, machine
        )
        if machine.startswith("armv7"):
            return cls("linux", "arm", "v7")
        return cls("linux", arch)

    def matches(self, other: Platform) -> bool:
        """Does `other` (an index entry) satisfy this requested platform?"""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            # arm64 images are often labelled v8; an unlabelled request takes any variant.
            return True
        return self.variant == (other.variant or ("v8" if other.architecture == "arm64" else None))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest promises about another blob."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    platform: Platform | None = None
    artifact_type: str | None = None
    urls: tuple[str, ...] = field(default=(), compare=False)
    """Where a non-distributable ("foreign") layer may be fetched besides the registry."""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{where}: descriptor is not an object")
        media_type = _string(obj, "mediaType", where, required=True)
        assert media_type is not None
        try:
            digest = Digest.parse(_string(obj, "digest", where, required=True) or "")
        except InvalidReference as exc:
            raise InvalidManifest(f"{where}: {exc}") from None
        size = obj.get("size")
        if type(size) is not int or not 0 <= size <= _MAX_DESCRIPTOR_SIZE:
            raise InvalidManifest(f"{where}: size must be a non-negative integer")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise InvalidManifest(f"{where}: annotations must map strings to strings")
        platform = None
        if "platform" in obj:
            raw = obj["platform"]
            if not isinstance(raw, dict):
                raise InvalidManifest(f"{where}: platform is not an object")
            os_ = _string(raw, "os", f"{where}.platform", required=True)
            arch = _string(raw, "architecture", f"{where}.platform", required=True)
            assert os_ is not None and arch is not None
            platform = Platform(os_, arch, _string(raw, "variant", f"{where}.platform") or None)
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(url, str) and len(url) <= 4096 for url in urls):
            raise InvalidManifest(f"{where}: urls must be a list of URLs")
        if len(urls) > 16:
            raise InvalidManifest(f"{where}: more than 16 urls")
        return cls(
            media_type,
            digest,
            size,
            dict(annotations),
            platform,
            _string(obj, "artifactType", where),
            tuple(urls),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.urls:
            out["urls"] = list(self.urls)
        if self.platform is not None:
            out["platform"] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_image(self) -> bool:
        """A runnable container image, as opposed to an artifact (signature, SBOM…)."""
        return self.config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG) and all(
            layer.media_type in mt.LAYER_COMPRESSION for layer in self.layers
        )


@dataclass(frozen=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    def select(self, wanted: Platform) -> Descriptor:
        """The image manifest for `wanted`; `InvalidManifest` when the index has none."""
        for entry in self.manifests:
            if (
                entry.platform is not None
                and entry.media_type in mt.MANIFEST_TYPES
                and wanted.matches(entry.platform)
            ):
                return entry
        nested = [m for m in self.manifests if m.platform and wanted.matches(m.platform)]
        if nested:  # the platform is there, but as an index inside the index (or another kind)
            raise InvalidManifest(
                f"the index's entry for {wanted} is a {nested[0].media_type}, not an image manifest: "
                "nested indexes are not followed"
            )
        offered = ", ".join(str(m.platform) for m in self.manifests if m.platform) or "none"
        raise InvalidManifest(f"the index has no image for platform {wanted} (it offers: {offered})")


@dataclass(frozen=True)
class VerifiedDocument:
    """Manifest or index bytes whose digest was computed here, with the parsed document."""

    digest: Digest
    media_type: str
    raw: bytes
    document: ImageManifest | ImageIndex
    parsed: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """`raw` as strict JSON, every field kept (for rewriting an index without losing any)."""

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config that `trust` relies on; `raw` keeps the rest."""

    os: str
    architecture: str
    variant: str | None
    diff_ids: tuple[Digest, ...]
    raw: dict[str, Any]

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def verify_document(
    raw: bytes,
    *,
    content_type: str | None,
    expected: Digest | None,
    max_bytes: int = MANIFEST_MAX_BYTES,
    descriptor_type: str | None = None,
) -> VerifiedDocument:
    """Check manifest or index bytes fetched from an untrusted source.

    `expected` is the digest the caller was promised (a pinned reference or a descriptor in
    already-verified bytes); when it is None the digest is computed and returned, and the caller
    must treat it as merely what this source said today (a tag).

    The top-level `mediaType` is optional, as the OCI image spec says (umoci omits it). Without
    it the type comes from the `Content-Type` header, else from the parent descriptor
    (`descriptor_type`), else from the document's shape (`manifests`: an index; `config` or
    `layers`: a manifest), and it must fit that shape. A present `mediaType` must agree with the
    header. A document with both `manifests` and `layers`/`config` is refused either way
    (CVE-2021-41190).

    Raises:
        DigestMismatch: the bytes do not hash to `expected`.
        InvalidManifest: oversized, malformed, schema1, ambiguous or inconsistent.
    """
    if len(raw) > max_bytes:
        raise InvalidManifest(f"manifest is {len(raw)} bytes, over the {max_bytes}-byte limit")
    digest = Digest.of_bytes(raw, expected.algorithm if expected else "sha256")
    if expected is not None and digest != expected:
        raise DigestMismatch(f"manifest content hashes to {digest}, not the requested {expected}")
    doc = _load_json_object(raw, "manifest")
    if doc.get("schemaVersion") == 1 or _base_type(content_type) in mt.SCHEMA1_TYPES:
        raise InvalidManifest("Docker schema1 manifests are refused (deprecated and unverifiable)")
    if doc.get("schemaVersion") != 2 or type(doc.get("schemaVersion")) is not int:
        raise InvalidManifest("manifest schemaVersion must be 2")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise InvalidManifest(
            "document has both 'manifests' and 'layers'/'config': ambiguous (CVE-2021-41190)"
        )
    header = _base_type(content_type)
    known = mt.MANIFEST_TYPES | mt.INDEX_TYPES
    declared = _string(doc, "mediaType", "manifest")
    if declared is not None:
        media_type = declared
        if header in known and header != media_type:
            raise InvalidManifest(
                f"Content-Type {header} does not match the document's mediaType {media_type}"
            )
    else:
        media_type = _undeclared_type(doc, header if header in known else None, descriptor_type)

    subject = Descriptor.from_json(doc["subject"], "manifest.subject") if "subject" in doc else None
    annotations = _annotations(doc, "manifest")
    document: ImageManifest | ImageIndex
    if media_type in mt.MANIFEST_TYPES:
        if "config" not in doc:
            raise InvalidManifest("image manifest has no config descriptor")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidManifest("image manifest 'layers' must be a list")
        document = ImageManifest(
            media_type,
            Descriptor.from_json(doc["config"], "manifest.config"),
            tuple(Descriptor.from_json(layer, f"manifest.layers[{i}]") for i, layer in enumerate(layers)),
            subject,
            _string(doc, "artifactType", "manifest"),
            annotations,
        )
    elif media_type in mt.INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidManifest("image index 'manifests' must be a list")
        document = ImageIndex(
            media_type,
            tuple(Descriptor.from_json(e, f"index.manifests[{i}]") for i, e in enumerate(entries)),
            subject,
            annotations,
        )
    else:
        raise InvalidManifest(f"unsupported manifest mediaType {media_type!r}")
    return VerifiedDocument(digest, media_type, raw, document, doc)


def _undeclared_type(doc: dict[str, Any], header: str | None, descriptor_type: str | None) -> str:
    """The type of a document without `mediaType`: header, else parent descriptor, else shape."""
    shape = (
        mt.OCI_INDEX
        if "manifests" in doc
        else mt.OCI_MANIFEST
        if ("config" in doc or "layers" in doc)
        else None
    )
    for source, claimed in (("Content-Type", header), ("descriptor", descriptor_type)):
        if claimed is None:
            continue
        if claimed not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
            raise InvalidManifest(f"the {source} says {claimed}, which is not a manifest or an index")
        if shape is not None and (claimed in mt.INDEX_TYPES) != (shape == mt.OCI_INDEX):
            what = "an index" if shape == mt.OCI_INDEX else "an image manifest"
            raise InvalidManifest(f"the {source} says {claimed}, but the document (no mediaType) is {what}")
        return claimed
    if shape is None:
        raise InvalidManifest("document has no mediaType and is neither an image manifest nor an index")
    return shape


def parse_config(raw: bytes, descriptor: Descriptor) -> ImageConfig:
    """Parse an image config blob whose size and digest the caller already checked."""
    doc = _load_json_object(raw, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidManifest(f"image config {descriptor.digest}: rootfs.type must be 'layers'")
    raw_ids = rootfs.get("diff_ids")
    if not isinstance(raw_ids, list):
        raise InvalidManifest(f"image config {descriptor.digest}: rootfs.diff_ids must be a list")
    try:
        diff_ids = tuple(Digest.parse(d) if isinstance(d, str) else Digest.parse("") for d in raw_ids)
    except InvalidReference as exc:
        raise InvalidManifest(f"image config {descriptor.digest}: bad diff_id: {exc}") from None
    os_ = _string(doc, "os", "image config", required=True)
    arch = _string(doc, "architecture", "image config", required=True)
    assert os_ is not None and arch is not None
    return ImageConfig(os_, arch, _string(doc, "variant", "image config") or None, diff_ids, doc)


def _load_json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = strict_json(raw, what)
    except ValueError as exc:
        raise InvalidManifest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidManifest(f"{what} is not a JSON object")
    return doc


def _string(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidManifest(f"{where}: '{key}' is required")
        return None
    if not isinstance(value, str):
        raise InvalidManifest(f"{where}: '{key}' must be a string")
    return value


def _annotations(doc: dict[str, Any], where: str) -> dict[str, str]:
    value = doc.get("annotations") or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidManifest(f"{where}: annotations must map strings to strings")
    return dict(value)


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()
