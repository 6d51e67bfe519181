"""Build deterministic OCI/Docker test images and push them with plain httpx.

Independent of the product on purpose: the tar writer, the digests and the push protocol here share
no code with `pull/` or `run/`, so tests of the product's client and unpacker do not trust the product.

    layer = Layer.from_files(
        {
            "etc/": DIR,
            "etc/hostname": b"box\\n",                          # bytes: a regular file, mode 0644
            "bin/tool": File(b"#!/bin/sh\\n", mode=0o755, uid=0, gid=0),
            "bin/sh": Symlink("tool"),
            "bin/alias": Hardlink("bin/tool"),
            whiteout("var/old"): b"",                           # "var/.wh.old"
            opaque("var/cache"): b"",                           # "var/cache/.wh..wh..opq"
        },
        compression="gzip",                                     # or "none", "zstd"
    )
    image = build_image([layer], cmd=["/bin/sh"], platform="linux/amd64", manifest_type=OCI)
    pushed = push_image(registry, "team/app", image, tag="v1")  # a Registry or "127.0.0.1:PORT"
    pushed.digest, pushed.manifest_bytes, pushed.config, pushed.layers

    index = build_index(multiplatform_images())                 # linux/amd64 + linux/arm64
    push_index(registry, "team/app", index, tag="multi")
    write_oci_layout(tmp_path / "layout", image, "v1")          # for umoci / skopeo comparisons

Entries are written in the order given (dicts keep insertion order), with exactly the names given:
nothing is sorted and no parent directory is added, so a test can build unusual archives. Every
header has a fixed mtime, empty user/group names and the uid/gid given (default 0). Compression is
deterministic too (gzip with mtime 0, zstd level 3), so the same spec always has the same digest.

Also here: `simple_image()` (one small layer), `realistic_image()` (whiteouts, an opaque directory,
replaced directories, links, modes and owners across three layers, for comparing our unpack with
`umoci unpack`), `busybox_layer()` (the host's static busybox and its applet symlinks),
`build_big_image()` (seeded random layers streamed to files, for benchmarks) and `snapshot_tree()`
(a comparable view of an unpacked rootfs).
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import ssl
import stat
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, Protocol, cast

import httpx
import zstandard

# Media types are spelled out here rather than imported from `pull.mediatypes`: see the module docstring.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

REF_NAME = "org.opencontainers.image.ref.name"
FIXED_MTIME = 1_577_836_800
"""2020-01-01T00:00:00Z: the mtime of every tar entry built here."""
FIXED_CREATED = "2020-01-01T00:00:00Z"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
MiB = 1 << 20

Compression = Literal["gzip", "none", "zstd"]


class ManifestType(enum.Enum):
    """Which family of documents `build_image` / `build_index` write."""

    OCI = "oci"
    DOCKER = "docker"


OCI = ManifestType.OCI
DOCKER = ManifestType.DOCKER

_LAYER_TYPES: dict[tuple[ManifestType, str], str] = {
    (OCI, "none"): OCI_LAYER_TAR,
    (OCI, "gzip"): OCI_LAYER_GZIP,
    (OCI, "zstd"): OCI_LAYER_ZSTD,
    (DOCKER, "none"): DOCKER_LAYER_TAR,
    (DOCKER, "gzip"): DOCKER_LAYER_GZIP,
    # Docker schema2 has no zstd type of its own; Docker and containerd use the OCI one.
    (DOCKER, "zstd"): OCI_LAYER_ZSTD,
}


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- layer entries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    """A regular file. Plain `bytes` in a spec means `File(data)` (mode 0644, root-owned)."""

    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: Mapping[str, str] = field(default_factory=dict)
    """Written as PAX `SCHILY.xattr.<name>` records, e.g. to test refusal of `trusted.overlay.*`."""


@dataclass(frozen=True)
class Dir:
    """A directory. `DIR` is the default one (0755, root-owned)."""

    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    xattrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Symlink:
    """A symbolic link to `target`, stored verbatim (relative, absolute or hostile)."""

    target: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Hardlink:
    """A hard link to `target`, the archive name of an entry (normally earlier in the same layer)."""

    target: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Device:
    """A character or block device or a FIFO: tar can carry them, a safe unpacker refuses them."""

    kind: Literal["char", "block", "fifo"]
    major: int = 0
    minor: int = 0
    mode: int = 0o600


DIR = Dir()
Entry = bytes | File | Dir | Symlink | Hardlink | Device
OPAQUE_MARKER = ".wh..wh..opq"


def whiteout(path: str) -> str:
    """The archive name that deletes `path` from lower layers: `a/b` → `a/.wh.b`."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return f"{parent}/.wh.{name}" if parent else f".wh.{name}"


def opaque(directory: str) -> str:
    """The archive name that hides everything lower layers put in `directory`."""
    return f"{directory.rstrip('/')}/{OPAQUE_MARKER}"


def build_tar(spec: Mapping[str, Entry], *, mtime: int = FIXED_MTIME) -> bytes:
    """An uncompressed PAX tar of `spec`, in the given order, byte-for-byte reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, entry in spec.items():
            info, data = _tarinfo(name, entry, mtime)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _tarinfo(name: str, entry: Entry, mtime: int) -> tuple[tarfile.TarInfo, bytes | None]:
    if isinstance(entry, bytes):
        entry = File(entry)
    if name.endswith("/") and not isinstance(entry, Dir):
        raise ValueError(f"{name!r} ends with '/' but is a {type(entry).__name__}, not a Dir")
    info = tarfile.TarInfo(name.rstrip("/") if isinstance(entry, Dir) else name)
    info.mtime = mtime
    info.uname = info.gname = ""
    data: bytes | None = None
    if isinstance(entry, File):
        info.type, info.mode, info.size = tarfile.REGTYPE, entry.mode, len(entry.data)
        data = entry.data
    elif isinstance(entry, Dir):
        info.type, info.mode = tarfile.DIRTYPE, entry.mode
    elif isinstance(entry, Symlink):
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.target
    elif isinstance(entry, Hardlink):
        info.type, info.mode, info.linkname = tarfile.LNKTYPE, 0o644, entry.target
    else:
        kinds = {"char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
        info.type, info.mode = kinds[entry.kind], entry.mode
        info.devmajor, info.devminor = entry.major, entry.minor
    if not isinstance(entry, Device):
        info.uid, info.gid = entry.uid, entry.gid
    if isinstance(entry, File | Dir) and entry.xattrs:
        info.pax_headers = {f"SCHILY.xattr.{key}": value for key, value in entry.xattrs.items()}
    return info, data


def compress(data: bytes, compression: Compression) -> bytes:
    """Deterministically compress a layer tar (gzip: level 6, mtime 0; zstd: level 3)."""
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    raise ValueError(f"unknown compression {compression!r}")


def decompress(data: bytes, compression: Compression) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise ValueError(f"unknown compression {compression!r}")


# -- layers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (`mediaType`, `digest`, `size`, optional `platform`/`annotations`)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            doc["platform"] = self.platform.to_json()
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


@dataclass(frozen=True)
class Layer:
    """A layer blob with its digest, size and diff_id. Its bytes are in memory (`data`) or a file (`path`).

    `media_type` overrides what `build_image` would choose from the compression and manifest type
    (use `dataclasses.replace(layer, media_type=...)` to mislabel a layer on purpose).
    """

    digest: str
    size: int
    diff_id: str
    compression: Compression
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    media_type: str | None = None

    @classmethod
    def from_files(
        cls, spec: Mapping[str, Entry], *, compression: Compression = "gzip", mtime: int = FIXED_MTIME
    ) -> Layer:
        """Build a layer from `{archive name: entry}`; see the module docstring."""
        return cls.from_tar(build_tar(spec, mtime=mtime), compression=compression)

    @classmethod
    def from_tar(cls, tar: bytes, *, compression: Compression = "gzip") -> Layer:
        """A layer from an uncompressed tar made elsewhere (e.g. a hand-crafted hostile archive)."""
        blob = compress(tar, compression)
        return cls(sha256_digest(blob), len(blob), sha256_digest(tar), compression, data=blob)

    def media_type_for(self, manifest_type: ManifestType) -> str:
        return self.media_type or _LAYER_TYPES[(manifest_type, self.compression)]

    def blob(self) -> bytes:
        """The (compressed) blob bytes; reads the file for a file-backed layer."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def tar(self) -> bytes:
        """The uncompressed tar, whose sha256 is `diff_id`."""
        return decompress(self.blob(), self.compression)

    def open(self) -> BinaryIO:
        """The blob as a binary file object (the file itself for a file-backed layer)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")

    def chunks(self, chunk_size: int = MiB) -> Iterator[bytes]:
        """The blob in chunks, never whole in memory for a file-backed layer."""
        with self.open() as file:
            while chunk := file.read(chunk_size):
                yield chunk


def _read_exactly(file: BinaryIO, length: int, piece: int = MiB) -> Iterator[bytes]:
    """`length` bytes of `file` in pieces of at most `piece` bytes (an upload body that streams)."""
    while length > 0:
        data = file.read(min(piece, length))
        if not data:
            raise EOFError(f"blob file ended {length} bytes early")
        length -= len(data)
        yield data


# -- images and indexes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, value: PlatformLike) -> Platform:
        """From `"linux/arm64"`, `"linux/arm/v7"`, `("linux", "amd64")` or a `Platform`."""
        if isinstance(value, Platform):
            return value
        parts = value.split("/") if isinstance(value, str) else list(value)
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {value!r}: expected os/architecture[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def to_json(self) -> dict[str, str]:
        doc = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            doc["variant"] = self.variant
        return doc

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


PlatformLike = Platform | str | tuple[str, str] | tuple[str, str, str]


@dataclass(frozen=True)
class Image:
    """A built image: manifest and config bytes exactly as they will be pushed, and its layers."""

    manifest_bytes: bytes = field(repr=False)
    media_type: str
    config_bytes: bytes = field(repr=False)
    config_descriptor: Descriptor
    layers: tuple[Layer, ...]
    layer_descriptors: tuple[Descriptor, ...]
    platform: Platform
    manifest_type: ManifestType

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def size(self) -> int:
        return len(self.manifest_bytes)

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest_bytes))

    @property
    def config(self) -> dict[str, Any]:
        return dict(json.loads(self.config_bytes))

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    def descriptor(self, *, with_platform: bool = False) -> Descriptor:
        """The manifest's descriptor; `with_platform` adds the platform, as an index entry has it."""
        platform = self.platform if with_platform else None
        return Descriptor(self.media_type, self.digest, self.size, platform)


@dataclass(frozen=True)
class Index:
    """A built image index (or Docker manifest list) and the images it lists."""

    manifest_bytes: bytes = field(repr=False)
    media_type: str
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def size(self) -> int:
        return len(self.manifest_bytes)

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest_bytes))

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)

    def image_for(self, platform: PlatformLike) -> Image:
        wanted = Platform.parse(platform)
        for image in self.images:
            if image.platform == wanted:
                return image
        raise KeyError(f"no image for {wanted} in this index")


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def build_image(
    layers: Sequence[Layer],
    *,
    cmd: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    env: Sequence[str] | None = None,
    working_dir: str | None = None,
    user: str | None = None,
    labels: Mapping[str, str] | None = None,
    exposed_ports: Sequence[str] | None = None,
    platform: PlatformLike = "linux/amd64",
    manifest_type: ManifestType = OCI,
    annotations: Mapping[str, str] | None = None,
    diff_ids: Sequence[str] | None = None,
    created: str = FIXED_CREATED,
) -> Image:
    """Build the config and manifest for `layers` (bottom first).

    `env` defaults to a standard `PATH`. `diff_ids` overrides the config's `rootfs.diff_ids` (to make
    a config that lies about its layers). `annotations` go on the manifest (OCI only).
    """
    parsed = Platform.parse(platform)
    container: dict[str, Any] = {"Env": list(env) if env is not None else [DEFAULT_PATH_ENV]}
    if entrypoint is not None:
        container["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        container["Cmd"] = list(cmd)
    if working_dir is not None:
        container["WorkingDir"] = working_dir
    if user is not None:
        container["User"] = user
    if labels:
        container["Labels"] = dict(labels)
    if exposed_ports:
        container["ExposedPorts"] = {port: {} for port in exposed_ports}
    config: dict[str, Any] = {"created": created, **parsed.to_json(), "config": container}
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": list(diff_ids) if diff_ids is not None else [layer.diff_id for layer in layers],
    }
    config["history"] = [
        {"created": created, "created_by": f"trust tests: layer {n}"} for n in range(len(layers))
    ]
    config_bytes = _canonical(config)
    oci = manifest_type is OCI
    config_descriptor = Descriptor(
        OCI_CONFIG if oci else DOCKER_CONFIG, sha256_digest(config_bytes), len(config_bytes)
    )
    layer_descriptors = tuple(
        Descriptor(layer.media_type_for(manifest_type), layer.digest, layer.size) for layer in layers
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [d.to_json() for d in layer_descriptors],
    }
    if annotations:
        if not oci:
            raise ValueError("Docker schema2 manifests have no annotations")
        manifest["annotations"] = dict(annotations)
    return Image(
        manifest_bytes=_canonical(manifest),
        media_type=manifest["mediaType"],
        config_bytes=config_bytes,
        config_descriptor=config_descriptor,
        layers=tuple(layers),
        layer_descriptors=layer_descriptors,
        platform=parsed,
        manifest_type=manifest_type,
    )


def build_index(
    images: Sequence[Image],
    *,
    manifest_type: ManifestType | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Index:
    """An OCI index (or, for Docker images by default, a manifest list) of `images`, in order.

    Each entry carries its image's platform.
    """
    if not images:
        raise ValueError("an index needs at least one image")
    kind = manifest_type or images[0].manifest_type
    media_type = OCI_INDEX if kind is OCI else DOCKER_INDEX
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [image.descriptor(with_platform=True).to_json() for image in images],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return Index(_canonical(doc), media_type, tuple(images))


def multiplatform_images(
    platforms: Sequence[PlatformLike] = DEFAULT_PLATFORMS,
    *,
    base: Sequence[Layer] = (),
    compression: Compression = "gzip",
    manifest_type: ManifestType = OCI,
    cmd: Sequence[str] = ("/bin/sh",),
) -> list[Image]:
    """One full image per platform: the shared `base` layers plus a layer with `/etc/platform`."""
    images = []
    for platform in platforms:
        parsed = Platform.parse(platform)
        own = Layer.from_files({"etc/": DIR, "etc/platform": f"{parsed}\n".encode()}, compression=compression)
        images.append(build_image([*base, own], cmd=cmd, platform=parsed, manifest_type=manifest_type))
    return images


def simple_image(
    content: bytes = b"hello\n",
    *,
    compression: Compression = "gzip",
    manifest_type: ManifestType = OCI,
    platform: PlatformLike = "linux/amd64",
) -> Image:
    """A one-layer image with `/hello.txt` = `content`: vary `content` to get distinct digests."""
    layer = Layer.from_files({"hello.txt": content}, compression=compression)
    return build_image([layer], cmd=["/bin/sh"], platform=platform, manifest_type=manifest_type)


# -- realistic, busybox and big images ------------------------------------------------------------


_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"


def realistic_layers(compression: Compression = "gzip") -> list[Layer]:
    """Three layers exercising what an unpacker must get right; `realistic_image` explains the result.

    1. a base tree: dirs with modes and owners, a setuid file, a relative symlink, a hard link,
       `var/cache` (to be made opaque), `opt/app` and `srv/data` (dirs to be replaced), `etc/motd`
       (a file to be replaced by a dir), `usr/share/doc` (a dir to be deleted).
    2. changes: `etc/hostname` rewritten, `etc/config/b.conf` and `usr/share/doc` whited out,
       `var/cache` opaque with one new file, `opt/app` → symlink, `srv/data` → regular file,
       `etc/motd` → dir, a new file with a hard link in the same layer.
    3. more: `etc/config/b.conf` re-created, `usr/local/bin/new` deleted (its hard link stays),
       `bin/tool` replaced with a different mode.
    """
    base: dict[str, Entry] = {
        "bin/": DIR,
        "bin/tool": File(b"#!/bin/sh\necho tool v1\n", mode=0o755),
        "bin/sh": Symlink("tool"),
        "etc/": DIR,
        "etc/hostname": b"base\n",
        "etc/motd": b"welcome\n",
        "etc/passwd": _PASSWD,
        "etc/config/": Dir(mode=0o750),
        "etc/config/a.conf": b"a=1\n",
        "etc/config/b.conf": File(b"b=1\n", mode=0o640),
        "home/": DIR,
        "home/user/": Dir(mode=0o700, uid=1000, gid=1000),
        "home/user/.profile": File(b"export PS1='$ '\n", mode=0o600, uid=1000, gid=1000),
        "opt/": DIR,
        "opt/app/": DIR,
        "opt/app/run": File(b"#!/bin/sh\n", mode=0o755),
        "srv/": DIR,
        "srv/data/": DIR,
        "srv/data/records.db": b"records\n",
        "tmp/": Dir(mode=0o1777),
        "usr/": DIR,
        "usr/bin/": DIR,
        "usr/bin/su": File(b"setuid\n", mode=0o4755),
        "usr/bin/alias": Hardlink("bin/tool"),
        "usr/lib/": DIR,
        "usr/lib/libfoo.so.1": b"\x7fELF fake\n",
        "usr/lib/libfoo.so": Symlink("libfoo.so.1"),
        "usr/share/": DIR,
        "usr/share/doc/": DIR,
        "usr/share/doc/README": b"docs\n",
        "var/": DIR,
        "var/cache/": DIR,
        "var/cache/old-1": b"stale\n",
        "var/cache/sub/": DIR,
        "var/cache/sub/old-2": b"stale\n",
    }
    changes: dict[str, Entry] = {
        "etc/": DIR,
        "etc/hostname": b"changed\n",
        whiteout("etc/config/b.conf"): b"",
        "etc/motd/": DIR,
        "etc/motd/banner": b"now a directory\n",
        "opt/": DIR,
        "opt/app": Symlink("../srv"),
        "srv/": DIR,
        "srv/data": b"now a file\n",
        "usr/": DIR,
        "usr/local/": DIR,
        "usr/local/bin/": DIR,
        "usr/local/bin/new": File(b"new\n", mode=0o755),
        "usr/local/bin/new-link": Hardlink("usr/local/bin/new"),
        whiteout("usr/share/doc"): b"",
        "var/": DIR,
        "var/cache/": DIR,
        opaque("var/cache"): b"",
        "var/cache/fresh": b"fresh\n",
    }
    more: dict[str, Entry] = {
        "bin/": DIR,
        "bin/tool": File(b"#!/bin/sh\necho tool v2\n", mode=0o700),
        "etc/config/b.conf": b"b=2\n",
        whiteout("usr/local/bin/new"): b"",
    }
    return [Layer.from_files(spec, compression=compression) for spec in (base, changes, more)]


REALISTIC_EXPECTED: dict[str, tuple[str, int, int, int, bytes | str]] = {
    # path: (kind, mode, uid, gid, content or link target), after applying all three layers.
    "bin": ("dir", 0o755, 0, 0, ""),
    "bin/tool": ("file", 0o700, 0, 0, b"#!/bin/sh\necho tool v2\n"),
    "bin/sh": ("symlink", 0, 0, 0, "tool"),
    "etc": ("dir", 0o755, 0, 0, ""),
    "etc/hostname": ("file", 0o644, 0, 0, b"changed\n"),
    "etc/motd": ("dir", 0o755, 0, 0, ""),
    "etc/motd/banner": ("file", 0o644, 0, 0, b"now a directory\n"),
    "etc/passwd": ("file", 0o644, 0, 0, _PASSWD),
    "etc/config": ("dir", 0o750, 0, 0, ""),
    "etc/config/a.conf": ("file", 0o644, 0, 0, b"a=1\n"),
    "etc/config/b.conf": ("file", 0o644, 0, 0, b"b=2\n"),
    "home": ("dir", 0o755, 0, 0, ""),
    "home/user": ("dir", 0o700, 1000, 1000, ""),
    "home/user/.profile": ("file", 0o600, 1000, 1000, b"export PS1='$ '\n"),
    "opt": ("dir", 0o755, 0, 0, ""),
    "opt/app": ("symlink", 0, 0, 0, "../srv"),
    "srv": ("dir", 0o755, 0, 0, ""),
    "srv/data": ("file", 0o644, 0, 0, b"now a file\n"),
    "tmp": ("dir", 0o1777, 0, 0, ""),
    "usr": ("dir", 0o755, 0, 0, ""),
    "usr/bin": ("dir", 0o755, 0, 0, ""),
    "usr/bin/su": ("file", 0o4755, 0, 0, b"setuid\n"),
    "usr/bin/alias": ("file", 0o755, 0, 0, b"#!/bin/sh\necho tool v1\n"),
    "usr/lib": ("dir", 0o755, 0, 0, ""),
    "usr/lib/libfoo.so.1": ("file", 0o644, 0, 0, b"\x7fELF fake\n"),
    "usr/lib/libfoo.so": ("symlink", 0, 0, 0, "libfoo.so.1"),
    "usr/local": ("dir", 0o755, 0, 0, ""),
    "usr/local/bin": ("dir", 0o755, 0, 0, ""),
    "usr/local/bin/new-link": ("file", 0o755, 0, 0, b"new\n"),
    "usr/share": ("dir", 0o755, 0, 0, ""),
    "var": ("dir", 0o755, 0, 0, ""),
    "var/cache": ("dir", 0o755, 0, 0, ""),
    "var/cache/fresh": ("file", 0o644, 0, 0, b"fresh\n"),
}
"""The rootfs `realistic_image()` unpacks to (compare with `snapshot_tree(...).simple()`).

Links: `usr/bin/alias` was a hard link to layer 1's `bin/tool`, which layer 3 replaced, so it keeps
the old content; `usr/local/bin/new-link` survives the deletion of `new`.
"""


def realistic_image(
    *,
    compression: Compression = "gzip",
    manifest_type: ManifestType = OCI,
    platform: PlatformLike = "linux/amd64",
) -> Image:
    """A three-layer image whose unpacked rootfs is `REALISTIC_EXPECTED`; see `realistic_layers`.

    For `umoci unpack` (0.4.7 in Debian 12) keep it OCI with gzip or uncompressed layers: that umoci
    refuses Docker manifests and zstd layers.
    """
    return build_image(
        realistic_layers(compression),
        cmd=["/bin/sh"],
        env=[DEFAULT_PATH_ENV, "APP_MODE=test"],
        working_dir="/home/user",
        user="1000:1000",
        platform=platform,
        manifest_type=manifest_type,
    )


BUSYBOX_APPLETS = ("sh", "true", "false", "cat", "echo", "sleep", "hostname", "ps", "id", "ls")


def find_busybox() -> Path:
    """The host's busybox binary (Debian package busybox-static, installed by scripts/setup.sh)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("busybox")
    if found is None:
        raise FileNotFoundError("busybox not found: apt-get install busybox-static (scripts/setup.sh does)")
    return Path(found)


def busybox_layer(applets: Sequence[str] = BUSYBOX_APPLETS, *, compression: Compression = "gzip") -> Layer:
    """A layer with `/bin/busybox` from the host and `/bin/<applet>` symlinks to it (relative).

    Also `/etc/passwd`, `/etc/group`, `/tmp` and empty `/proc`, `/sys`, `/dev` mount points, so a
    runtime can use it as a whole rootfs. Debian's busybox-static is statically linked.
    """
    spec: dict[str, Entry] = {
        "bin/": DIR,
        "bin/busybox": File(find_busybox().read_bytes(), mode=0o755),
    }
    spec.update({f"bin/{applet}": Symlink("busybox") for applet in applets})
    spec.update(
        {
            "etc/": DIR,
            "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
            "dev/": DIR,
            "proc/": Dir(mode=0o555),
            "root/": Dir(mode=0o700),
            "sys/": Dir(mode=0o555),
            "tmp/": Dir(mode=0o1777),
        }
    )
    return Layer.from_files(spec, compression=compression)


def busybox_image(
    *,
    cmd: Sequence[str] = ("/bin/sh",),
    compression: Compression = "gzip",
    manifest_type: ManifestType = OCI,
    extra: Sequence[Layer] = (),
) -> Image:
    """A runnable linux/amd64 image: `busybox_layer()` plus `extra` layers on top."""
    return build_image(
        [busybox_layer(compression=compression), *extra],
        cmd=cmd,
        platform="linux/amd64",
        manifest_type=manifest_type,
    )


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, target: _Writable) -> None:
        self._target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._target.write(data)
        return len(data)

    def flush(self) -> None:
        self._target.flush()


class _SeededRandom(io.RawIOBase):
    """`size` bytes from `random.Random(seed)`, read in whatever chunks the caller asks for."""

    def __init__(self, seed: int | str, size: int) -> None:
        self._rng = random.Random(seed)
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        self._left -= n
        return self._rng.randbytes(n)


def _write_big_layer(
    path: Path, *, seed: int | str, size: int, file_size: int, prefix: str, level: int
) -> Layer:
    with path.open("wb") as out:
        compressed = _HashingWriter(out)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=level, mtime=0) as gz:
            uncompressed = _HashingWriter(gz)
            # Stream mode ("w|") only ever calls write() on its file object.
            stream = cast("IO[bytes]", uncompressed)
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                archive.addfile(_tarinfo("data/", DIR, FIXED_MTIME)[0])
                archive.addfile(_tarinfo(f"{prefix}/", DIR, FIXED_MTIME)[0])
                offset = 0
                number = 0
                while offset < size:
                    chunk = min(file_size, size - offset)
                    info = _tarinfo(f"{prefix}/blob-{number:04d}.bin", File(b""), FIXED_MTIME)[0]
                    info.size = chunk
                    archive.addfile(info, _SeededRandom(f"{seed}/{prefix}/{number}", chunk))
                    offset += chunk
                    number += 1
        out.flush()
        os.fsync(out.fileno())
    return Layer(
        digest="sha256:" + compressed.hash.hexdigest(),
        size=compressed.size,
        diff_id="sha256:" + uncompressed.hash.hexdigest(),
        compression="gzip",
        path=path,
    )


def build_big_image(
    workdir: Path,
    *,
    total_size: int,
    layers: int = 4,
    seed: int = 0,
    file_size: int = 64 * MiB,
    compresslevel: int = 1,
    manifest_type: ManifestType = OCI,
    platform: PlatformLike = "linux/amd64",
) -> Image:
    """An image of `layers` gzip layers holding `total_size` bytes of seeded random data, for benchmarks.

    Each layer is streamed to `workdir/layer-<n>.tar.gz` (nothing is held whole in memory) as files
    of at most `file_size` bytes. Layers are built in parallel threads (zlib and hashlib release
    the GIL). Random data does not compress: blobs are slightly larger than `total_size`. The same
    arguments always give the same digests. Push it with `push_image`, which uploads from the files
    in chunks.
    """
    if layers < 1 or total_size < layers:
        raise ValueError("need at least one layer and one byte per layer")
    workdir.mkdir(parents=True, exist_ok=True)
    per_layer = [total_size // layers + (1 if n < total_size % layers else 0) for n in range(layers)]

    def build(n: int) -> Layer:
        return _write_big_layer(
            workdir / f"layer-{n}.tar.gz",
            seed=seed,
            size=per_layer[n],
            file_size=file_size,
            prefix=f"data/layer-{n}",
            level=compresslevel,
        )

    with ThreadPoolExecutor(max_workers=min(layers, os.cpu_count() or 1)) as pool:
        built = list(pool.map(build, range(layers)))
    return build_image(built, cmd=["/bin/sh"], platform=platform, manifest_type=manifest_type)


# -- pushing with plain httpx ---------------------------------------------------------------------


class RegistryLike(Protocol):
    """What the push functions need from `support.registry.Registry`."""

    @property
    def host(self) -> str: ...

    @property
    def auth(self) -> tuple[str, str] | None: ...


RegistryTarget = str | RegistryLike
"""`"127.0.0.1:PORT"` (anonymous) or a `Registry` (its credentials are used)."""


class PushError(RuntimeError):
    """The registry answered a push request with an unexpected status."""

    def __init__(self, what: str, response: httpx.Response) -> None:
        super().__init__(f"{what}: HTTP {response.status_code} {response.text[:500]}")
        self.status_code = response.status_code


@dataclass(frozen=True)
class PushedImage:
    """An image as pushed: where it is and its descriptors."""

    host: str
    repository: str
    tag: str | None
    image: Image

    @property
    def digest(self) -> str:
        return self.image.digest

    @property
    def manifest_bytes(self) -> bytes:
        return self.image.manifest_bytes

    @property
    def manifest(self) -> Descriptor:
        return self.image.descriptor()

    @property
    def config(self) -> Descriptor:
        return self.image.config_descriptor

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.image.layer_descriptors

    @property
    def by_digest(self) -> str:
        """`host/repo@sha256:…`"""
        return f"{self.host}/{self.repository}@{self.digest}"

    @property
    def by_tag(self) -> str:
        """`host/repo:tag` (only if pushed with a tag)."""
        if self.tag is None:
            raise ValueError("pushed by digest only")
        return f"{self.host}/{self.repository}:{self.tag}"


@dataclass(frozen=True)
class PushedIndex:
    """An index as pushed, with its child images (pushed by digest into the same repository)."""

    host: str
    repository: str
    tag: str | None
    index: Index
    images: tuple[PushedImage, ...]

    @property
    def digest(self) -> str:
        return self.index.digest

    @property
    def manifest_bytes(self) -> bytes:
        return self.index.manifest_bytes

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"

    @property
    def by_tag(self) -> str:
        if self.tag is None:
            raise ValueError("pushed by digest only")
        return f"{self.host}/{self.repository}:{self.tag}"


class Pusher:
    """The OCI distribution push API over one httpx client. The module functions wrap it.

    with Pusher(registry) as pusher:
        pusher.blob("team/app", data)
        pusher.manifest("team/app", "v1", manifest_bytes, OCI_MANIFEST)
    """

    def __init__(
        self, registry: RegistryTarget, *, auth: tuple[str, str] | None = None, timeout: float = 60.0
    ) -> None:
        ca_cert = None
        client_cert = None
        if isinstance(registry, str):
            self.host = registry.removeprefix("http://")
            credentials = auth
        else:
            self.host = registry.host
            credentials = auth or registry.auth
            ca_cert = getattr(registry, "ca_cert", None)
            client_cert = getattr(registry, "client_cert", None)  # a mutual-TLS registry's helper pair
        verify: ssl.SSLContext | bool = True
        if ca_cert:
            verify = ssl.create_default_context(cafile=str(ca_cert))
            if client_cert:
                verify.load_cert_chain(*map(str, client_cert))
        self._http = httpx.Client(
            base_url=f"{'https' if ca_cert else 'http'}://{self.host}",
            auth=httpx.BasicAuth(*credentials) if credentials else None,
            timeout=timeout,
            trust_env=False,
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Pusher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self._http.head(f"/v2/{repository}/blobs/{digest}")
        if response.status_code not in (200, 404):
            raise PushError(f"HEAD blob {digest} in {repository}", response)
        return response.status_code == 200

    def blob(self, repository: str, data: bytes, digest: str | None = None) -> str:
        """Monolithic upload: POST an upload session, PUT `?digest=` with the bytes. Returns the digest."""
        digest = digest or sha256_digest(data)
        if self.has_blob(repository, digest):
            return digest
        location = self._start_upload(repository)
        response = self._http.put(
            location.copy_merge_params({"digest": digest}),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._expect(response, 201, f"PUT blob {digest} to {repository}")
        return digest

    def blob_chunks(self, repository: str, layer: Layer, chunk_size: int = 16 * MiB) -> str:
        """Chunked upload: PATCH each chunk with its Content-Range, then PUT `?digest=` with no body.

        Each PATCH body is streamed from the blob file in 1 MiB pieces with an explicit Content-Length,
        so memory use does not grow with `chunk_size` or the blob's size.
        """
        if self.has_blob(repository, layer.digest):
            return layer.digest
        location = self._start_upload(repository)
        offset = 0
        with layer.open() as file:
            while offset < layer.size:
                length = min(chunk_size, layer.size - offset)
                response = self._http.patch(
                    location,
                    content=_read_exactly(file, length),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(length),
                        "Content-Range": f"{offset}-{offset + length - 1}",
                    },
                )
                self._expect(response, 202, f"PATCH blob {layer.digest} to {repository} at {offset}")
                location = self._location(response)
                offset += length
        response = self._http.put(location.copy_merge_params({"digest": layer.digest}))
        self._expect(response, 201, f"PUT (close) blob {layer.digest} to {repository}")
        return layer.digest

    def manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest (or index) under a tag or digest. Returns the sha256 of `data`."""
        response = self._http.put(
            f"/v2/{repository}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
        )
        self._expect(response, 201, f"PUT manifest {repository}:{reference}")
        return sha256_digest(data)

    def image(self, repository: str, image: Image, tag: str | None = None) -> PushedImage:
        """Config, layers (in memory: monolithic; file-backed: chunked), then the manifest."""
        self.blob(repository, image.config_bytes)
        for layer in image.layers:
            if layer.path is not None:
                self.blob_chunks(repository, layer)
            else:
                self.blob(repository, layer.blob(), layer.digest)
        self.manifest(repository, tag or image.digest, image.manifest_bytes, image.media_type)
        return PushedImage(self.host, repository, tag, image)

    def index(self, repository: str, index: Index, tag: str | None = None) -> PushedIndex:
        """Every child image by digest, then the index."""
        children = tuple(self.image(repository, image) for image in index.images)
        self.manifest(repository, tag or index.digest, index.manifest_bytes, index.media_type)
        return PushedIndex(self.host, repository, tag, index, children)

    def _start_upload(self, repository: str) -> httpx.URL:
        response = self._http.post(f"/v2/{repository}/blobs/uploads/")
        self._expect(response, 202, f"POST upload to {repository}")
        return self._location(response)

    def _location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise PushError("upload response without Location", response)
        return response.url.join(location)

    @staticmethod
    def _expect(response: httpx.Response, status: int, what: str) -> None:
        if response.status_code != status:
            raise PushError(what, response)


def push_blob(
    registry: RegistryTarget, repository: str, data: bytes, *, auth: tuple[str, str] | None = None
) -> str:
    """Upload one blob (skipped if present). Returns its digest."""
    with Pusher(registry, auth=auth) as pusher:
        return pusher.blob(repository, data)


def push_manifest(
    registry: RegistryTarget,
    repository: str,
    reference: str,
    data: bytes,
    media_type: str,
    *,
    auth: tuple[str, str] | None = None,
) -> str:
    """PUT raw manifest bytes (any document, e.g. a signature manifest) under a tag or digest."""
    with Pusher(registry, auth=auth) as pusher:
        return pusher.manifest(repository, reference, data, media_type)


def push_image(
    registry: RegistryTarget,
    repository: str,
    image: Image,
    *,
    tag: str | None = None,
    auth: tuple[str, str] | None = None,
) -> PushedImage:
    """Push blobs then the manifest, under `tag` (or only by digest when `tag` is None)."""
    with Pusher(registry, auth=auth) as pusher:
        return pusher.image(repository, image, tag)


def push_index(
    registry: RegistryTarget,
    repository: str,
    index: Index,
    *,
    tag: str | None = None,
    auth: tuple[str, str] | None = None,
) -> PushedIndex:
    """Push every child image by digest, then the index under `tag` (or by digest)."""
    with Pusher(registry, auth=auth) as pusher:
        return pusher.index(repository, index, tag)


# -- OCI layouts and unpacked trees ---------------------------------------------------------------


def write_oci_layout(directory: Path, target: Image | Index, tag: str | None = None) -> Path:
    """Write `target` into an OCI image layout at `directory` (created or added to); returns it.

    `index.json` gets an entry for `target`, named `tag` (`org.opencontainers.image.ref.name`)
    if given. Readable by `umoci unpack --image DIR:TAG` and `skopeo inspect oci:DIR:TAG`.
    """
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(digest: str, data: bytes | None = None, source: Path | None = None) -> None:
        path = blobs / digest.removeprefix("sha256:")
        if path.exists():
            return
        if source is not None:
            shutil.copyfile(source, path)
        else:
            assert data is not None
            path.write_bytes(data)

    images = target.images if isinstance(target, Index) else (target,)
    for image in images:
        put(image.config_descriptor.digest, image.config_bytes)
        for layer in image.layers:
            put(layer.digest, layer.data, layer.path)
        put(image.digest, image.manifest_bytes)
    put(target.digest, target.manifest_bytes)

    index_path = directory / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    annotations = {REF_NAME: tag} if tag else None
    if tag:
        index["manifests"] = [
            entry for entry in index["manifests"] if entry.get("annotations", {}).get(REF_NAME) != tag
        ]
    index["manifests"].append(
        Descriptor(target.media_type, target.digest, target.size, None, annotations).to_json()
    )
    index_path.write_text(json.dumps(index, indent=2))
    return directory


@dataclass(frozen=True)
class TreeEntry:
    """One path of an unpacked tree, without timestamps (which unpackers need not agree on)."""

    kind: str
    """"dir", "file", "symlink", "char", "block", "fifo" or "socket"."""
    mode: int
    """Permission bits incl. setuid/setgid/sticky; 0 for symlinks."""
    uid: int
    gid: int
    content: bytes | str
    """File bytes, symlink target, `"major:minor"` for devices, else ``""``."""
    nlink: int
    """Hard link count (1 for directories, to ignore subdirectory counts)."""


class Tree(dict[str, TreeEntry]):
    """`snapshot_tree`'s result: relative path → `TreeEntry`, sorted by path."""

    def simple(self) -> dict[str, tuple[str, int, int, int, bytes | str]]:
        """Path → `(kind, mode, uid, gid, content)`: the form of `REALISTIC_EXPECTED`."""
        return {path: (e.kind, e.mode, e.uid, e.gid, e.content) for path, e in self.items()}


def snapshot_tree(root: Path) -> Tree:
    """A comparable description of everything under `root` (not following symlinks).

    Meant to compare our unpack with `umoci unpack`'s: `snapshot_tree(ours) == snapshot_tree(theirs)`.
    """
    entries: dict[str, TreeEntry] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(directory, name)
            st = path.lstat()
            relative = path.relative_to(root).as_posix()
            mode = stat.S_IMODE(st.st_mode)
            content: bytes | str = ""
            nlink = st.st_nlink
            if stat.S_ISDIR(st.st_mode):
                kind = "dir"
                nlink = 1
            elif stat.S_ISREG(st.st_mode):
                kind, content = "file", path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                kind, content, mode = "symlink", os.readlink(path), 0
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
                content = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            elif stat.S_ISFIFO(st.st_mode):
                kind = "fifo"
            else:
                kind = "socket"
            entries[relative] = TreeEntry(kind, mode, st.st_uid, st.st_gid, content, nlink)
    return Tree(sorted(entries.items()))
