"""Hand-made layer tars for the unpacker tests, plus the canary check that nothing escaped.

`support.images.build_tar` takes a dict, so it cannot repeat a name or order entries freely; hostile
archives need both. Entries here are `(TarInfo, data)` pairs built by small constructors, written
in the order given, with any name, link target, type, owner or PAX header:

    blob = write_layer(tmp_path, tar(
        directory("etc"),
        symlink("localetc", "/etc"),
        file("localetc/passwd", b"owned"),              # through the symlink: must be refused
    ), compression="gzip")
    apply_layer(blob.path, blob.media_type, blob.digest, blob.diff_id, target)

`Canaries` plants files around the unpack target and proves afterwards that nothing outside the
target changed: no content, mode, owner, time, link count or xattr, and no new or missing path.
Like `support.images`, nothing here imports the product's unpacking code.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pull.digest import Digest
from support.images import Layer, compress

FIXED_MTIME = 1_577_836_800  # 2020-01-01
MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}

TarEntry = tuple[tarfile.TarInfo, bytes | None]


def _info(
    name: str, kind: bytes, *, mode: int, uid: int = 0, gid: int = 0, mtime: int = FIXED_MTIME
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.uname = info.gname = ""
    return info


def file(
    name: str,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = FIXED_MTIME,
    xattrs: dict[str, str] | None = None,
    pax: dict[str, str] | None = None,
) -> TarEntry:
    info = _info(name, tarfile.REGTYPE, mode=mode, uid=uid, gid=gid, mtime=mtime)
    info.size = len(data)
    info.pax_headers = {**{f"SCHILY.xattr.{k}": v for k, v in (xattrs or {}).items()}, **(pax or {})}
    return info, data


def directory(
    name: str,
    *,
    mode: int = 0o755,
    uid: int = 0,
    gid: int = 0,
    mtime: int = FIXED_MTIME,
    xattrs: dict[str, str] | None = None,
) -> TarEntry:
    info = _info(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid, mtime=mtime)
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in (xattrs or {}).items()}
    return info, None


def symlink(
    name: str, target: str, *, uid: int = 0, gid: int = 0, xattrs: dict[str, str] | None = None
) -> TarEntry:
    info = _info(name, tarfile.SYMTYPE, mode=0o777, uid=uid, gid=gid)
    info.linkname = target
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in (xattrs or {}).items()}
    return info, None


def hardlink(name: str, target: str, *, uid: int = 0, gid: int = 0) -> TarEntry:
    info = _info(name, tarfile.LNKTYPE, mode=0o644, uid=uid, gid=gid)
    info.linkname = target
    return info, None


def fifo(name: str, *, mode: int = 0o640, uid: int = 0, gid: int = 0) -> TarEntry:
    return _info(name, tarfile.FIFOTYPE, mode=mode, uid=uid, gid=gid), None


def device(name: str, kind: bytes = tarfile.CHRTYPE, major: int = 1, minor: int = 3) -> TarEntry:
    info = _info(name, kind, mode=0o666)
    info.devmajor, info.devminor = major, minor
    return info, None


def whiteout(path: str) -> TarEntry:
    """The entry deleting `path` from lower layers: `a/b` → `a/.wh.b`."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}")


def opaque(path: str) -> TarEntry:
    return file(f"{path.rstrip('/')}/.wh..wh..opq")


def tar(*entries: TarEntry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar of `entries`, in order, duplicates and hostile names included."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


@dataclass(frozen=True)
class Blob:
    """A layer blob on disk and what a manifest and config would promise about it."""

    path: Path
    media_type: str
    digest: Digest
    diff_id: Digest


def write_layer(
    directory: Path, tar_bytes: bytes, compression: str = "gzip", *, name: str | None = None
) -> Blob:
    """Compress `tar_bytes` and write the blob into `directory`; the digests are computed here."""
    layer = Layer.from_tar(tar_bytes, compression=compression)  # type: ignore[arg-type]
    return write_blob(
        directory, layer.blob(), MEDIA_TYPES[compression], Digest.parse(layer.diff_id), name=name
    )


def write_blob(
    directory: Path, blob: bytes, media_type: str, diff_id: Digest, *, name: str | None = None
) -> Blob:
    digest = Digest.of_bytes(blob)
    path = directory / (name or f"blob-{digest.hex[:16]}")
    path.write_bytes(blob)
    return Blob(path, media_type, digest, diff_id)


def compressed(tar_bytes: bytes, compression: str) -> bytes:
    return compress(tar_bytes, compression)  # type: ignore[arg-type]


# -- canaries ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    kind_and_mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int  # changes on chmod, chown, link, xattr: catches metadata writes through links
    nlink: int
    content: str
    xattrs: tuple[tuple[str, bytes], ...]


class Canaries:
    """Files planted around `target`, and a fingerprint of everything outside it.

    `root/` holds `target/` (left empty), `canary/` (etc/passwd, etc/unbroken, perm400 mode 0400,
    also-exists, dir/file) and `file`. `assert_untouched()` compares a fresh fingerprint of `root`
    (minus the targets) with the one taken by `arm()`.
    """

    def __init__(self, root: Path, targets: int = 1) -> None:
        self.root = root
        self.canary = root / "canary"
        self.targets = [root / ("target" if i == 0 else f"target{i}") for i in range(targets)]
        for target in self.targets:
            target.mkdir()
        for path, data, mode in [
            ("canary/etc/passwd", b"canary passwd\n", 0o644),
            ("canary/etc/unbroken", b"unbroken", 0o644),
            ("canary/perm400", b"...", 0o400),
            ("canary/also-exists", b"...", 0o640),
            ("canary/dir/file", b"deep\n", 0o644),
            ("file", b"host content", 0o644),
        ]:
            full = root / path
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(data)
            full.chmod(mode)
        for directory, _, names in os.walk(root):
            for name in [".", *names]:
                os.utime(Path(directory, name), ns=(1_000_000_000, 1_000_000_000))
        self._before: dict[str, _Seen] | None = None

    @property
    def target(self) -> Path:
        return self.targets[0]

    def arm(self) -> None:
        """Take the reference fingerprint (after writing blobs beside the target, before unpacking)."""
        self._before = self._fingerprint()

    def assert_untouched(self) -> None:
        assert self._before is not None, "call arm() before unpacking"
        after = self._fingerprint()
        appeared = sorted(set(after) - set(self._before))
        vanished = sorted(set(self._before) - set(after))
        assert not appeared, f"new paths outside the target: {appeared}"
        assert not vanished, f"paths outside the target disappeared: {vanished}"
        changed = {
            path: (self._before[path], after[path]) for path in after if after[path] != self._before[path]
        }
        assert not changed, f"paths outside the target changed: {changed}"

    def _fingerprint(self) -> dict[str, _Seen]:
        seen: dict[str, _Seen] = {}
        for directory, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if Path(directory, d) not in self.targets]
            for name in [".", *dirnames, *filenames]:
                path = Path(directory, name)
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    content = hashlib.sha256(path.read_bytes()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    content = os.readlink(path)
                else:
                    content = ""
                xattrs = tuple(
                    sorted(
                        (k, os.getxattr(path, k, follow_symlinks=False))
                        for k in os.listxattr(path, follow_symlinks=False)
                    )
                )
                seen[str(path.relative_to(self.root))] = _Seen(
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_nlink,
                    content,
                    xattrs,
                )
        return seen
