"""apply_layer: compression, both digests, bomb limits, and the overlay form of a layer.

Breakout attempts live in test_unpack_breakouts.py; chain-ID snapshots in test_snapshots.py; real
overlay mounts (and the comparison with umoci) in test_overlay.py.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from support.tars import (
    MEDIA_TYPES,
    Blob,
    compressed,
    directory,
    fifo,
    file,
    hardlink,
    opaque,
    symlink,
    tar,
    whiteout,
    write_blob,
    write_layer,
)

from pull.digest import Digest
from pull.errors import DigestMismatch, IntegrityError, InvalidManifest
from pull.mediatypes import LAYER_COMPRESSION
from run.snapshots import scan_tree
from run.tarsafe import OVERLAY_OPAQUE_XATTR, inherit_implicit_dirs
from run.unpack import LayerLimitExceeded, LayerStats, UnpackLimits, UnsafeLayer, apply_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root (mknod, chown)")

MiB = 1 << 20


def apply(blob: Blob, target: Path, limits: UnpackLimits = UnpackLimits(), **kwargs: bool) -> LayerStats:
    target.mkdir(exist_ok=True)
    return apply_layer(blob.path, blob.media_type, blob.digest, blob.diff_id, target, limits, **kwargs)


def unpacked(
    tmp_path: Path, *entries: tuple[tarfile.TarInfo, bytes | None], compression: str = "gzip"
) -> Path:
    target = tmp_path / "target"
    apply(write_layer(tmp_path, tar(*entries), compression), target)
    return target


def is_whiteout(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError:
        return False


SAMPLE = (
    directory("etc"),
    file("etc/hostname", b"box\n"),
    file("usr/bin/tool", b"#!/bin/sh\n" * 1000, mode=0o755),
    symlink("bin", "usr/bin"),
)


# -- compression and digests ------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", sorted(LAYER_COMPRESSION))
def test_every_accepted_layer_media_type_unpacks(media_type: str, tmp_path: Path) -> None:
    raw = tar(*SAMPLE)
    compression = LAYER_COMPRESSION[media_type]
    blob = write_blob(tmp_path, compressed(raw, compression), media_type, Digest.of_bytes(raw))
    stats = apply(blob, tmp_path / "target")
    assert (tmp_path / "target/etc/hostname").read_bytes() == b"box\n"
    assert os.readlink(tmp_path / "target/bin") == "usr/bin"
    assert stat.S_IMODE((tmp_path / "target/usr/bin/tool").stat().st_mode) == 0o755
    assert stats.entries == 4
    assert stats.uncompressed_bytes == len(raw)
    assert stats.compressed_bytes == blob.path.stat().st_size
    assert stats.bytes_written == 4 + 10_000
    assert stats.implicit_dirs == ("usr", "usr/bin")


def test_an_unknown_media_type_is_refused(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(*SAMPLE), "gzip")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(InvalidManifest, match="unsupported layer media type"):
        apply_layer(
            blob.path, "application/vnd.oci.image.layer.v1.tar+bzip2", blob.digest, blob.diff_id, target
        )


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_a_wrong_diff_id_is_a_digest_mismatch_naming_the_layer(compression: str, tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(*SAMPLE), compression)
    wrong = Digest.of_bytes(b"another layer")
    with pytest.raises(DigestMismatch) as raised:
        apply(Blob(blob.path, blob.media_type, blob.digest, wrong), tmp_path / "target")
    assert "diff_id" in str(raised.value)
    assert str(blob.digest) in str(raised.value)
    assert str(wrong) in str(raised.value)


def test_a_wrong_blob_digest_is_a_digest_mismatch(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(*SAMPLE), "gzip")
    wrong = Digest.of_bytes(b"another blob")
    with pytest.raises(DigestMismatch, match="blob content hashes to"):
        apply(Blob(blob.path, blob.media_type, wrong, blob.diff_id), tmp_path / "target")


def test_a_corrupt_blob_is_reported_as_a_digest_mismatch_not_as_a_parse_error(tmp_path: Path) -> None:
    good = write_layer(tmp_path, tar(*SAMPLE), "gzip")
    data = bytearray(good.path.read_bytes())
    data[40:60] = b"\xff" * 20  # damage the deflate stream
    good.path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch) as raised:
        apply(good, tmp_path / "target")
    assert isinstance(raised.value.__context__, UnsafeLayer)  # the parse failure is kept as context


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_bytes_after_the_end_of_the_archive_are_part_of_the_diff_id(compression: str, tmp_path: Path) -> None:
    archive = tar(*SAMPLE) + b"\0" * 5000 + b"trailing junk" + b"\0" * 100
    with_trailer = write_layer(tmp_path, archive, compression, name="with")
    stats = apply(with_trailer, tmp_path / "ok")
    assert any("after the end of the tar archive" in w for w in stats.warnings)

    # The same blob, but a diff_id computed without the trailer: the trailer was hashed.
    tar_only = Blob(
        with_trailer.path, with_trailer.media_type, with_trailer.digest, Digest.of_bytes(tar(*SAMPLE))
    )
    with pytest.raises(DigestMismatch, match="diff_id"):
        apply(tar_only, tmp_path / "bad")


def test_zero_padding_after_the_archive_gives_no_warning(tmp_path: Path) -> None:
    stats = apply(write_layer(tmp_path, tar(*SAMPLE) + b"\0" * 20480, "gzip"), tmp_path / "target")
    assert stats.warnings == ()


def test_multi_member_gzip_and_zero_padding_are_read_whole(tmp_path: Path) -> None:
    raw = tar(*SAMPLE)
    blob = gzip.compress(raw[:3000]) + gzip.compress(raw[3000:]) + b"\0" * 1000
    apply(write_blob(tmp_path, blob, MEDIA_TYPES["gzip"], Digest.of_bytes(raw)), tmp_path / "target")
    assert (tmp_path / "target/usr/bin/tool").read_bytes() == b"#!/bin/sh\n" * 1000


@pytest.mark.parametrize(
    ("suffix", "message"),
    [(b"garbage after the stream", "corrupt gzip"), (b"\0" * 100 + b"x", "data after the trailing padding")],
)
def test_data_after_the_gzip_stream_is_refused(suffix: bytes, message: str, tmp_path: Path) -> None:
    raw = tar(*SAMPLE)
    blob = write_blob(tmp_path, gzip.compress(raw) + suffix, MEDIA_TYPES["gzip"], Digest.of_bytes(raw))
    with pytest.raises(UnsafeLayer, match=message):
        apply(blob, tmp_path / "target")


def test_a_truncated_gzip_stream_is_refused(tmp_path: Path) -> None:
    raw = tar(*SAMPLE)
    data = gzip.compress(raw)[:-20]
    with pytest.raises(UnsafeLayer, match="truncated"):
        apply(write_blob(tmp_path, data, MEDIA_TYPES["gzip"], Digest.of_bytes(raw)), tmp_path / "target")


def test_multi_frame_zstd_is_read_whole_and_garbage_after_it_refused(tmp_path: Path) -> None:
    raw = tar(*SAMPLE)
    cctx = zstandard.ZstdCompressor()
    frames = cctx.compress(raw[:5000]) + cctx.compress(raw[5000:])
    apply(write_blob(tmp_path, frames, MEDIA_TYPES["zstd"], Digest.of_bytes(raw)), tmp_path / "ok")
    assert (tmp_path / "ok/etc/hostname").read_bytes() == b"box\n"
    bad = write_blob(tmp_path, frames + b"garbage!", MEDIA_TYPES["zstd"], Digest.of_bytes(raw))
    with pytest.raises(UnsafeLayer, match="corrupt zstd"):
        apply(bad, tmp_path / "bad")


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    data = b"this is not a tar archive at all" * 100
    with pytest.raises(UnsafeLayer, match="malformed tar"):
        apply(write_blob(tmp_path, data, MEDIA_TYPES["none"], Digest.of_bytes(data)), tmp_path / "target")


def test_sync_flushes_once_and_still_verifies(tmp_path: Path) -> None:
    stats = apply(write_layer(tmp_path, tar(*SAMPLE), "zstd"), tmp_path / "target", sync=True)
    assert stats.entries == 4


def test_the_target_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target/left-over").write_bytes(b"")
    with pytest.raises(ValueError, match="empty directory"):
        apply(write_layer(tmp_path, tar(*SAMPLE)), tmp_path / "target")


# -- bombs and limits -------------------------------------------------------------------------------


def _zeros_layer(tmp_path: Path, size: int, compression: str) -> Blob:
    """A layer with one file of `size` zero bytes, compressed without ever holding it in memory.

    gzip: a member per 16 MiB piece (concatenated gzip members decompress to the concatenation),
    so the 1 GiB bomb costs one small compression. The diff_id is not computed: bombs never get
    that far.
    """
    info = tarfile.TarInfo("zeros")
    info.size = size
    header = info.tobuf(tarfile.PAX_FORMAT)
    piece = b"\0" * (16 * MiB)
    assert size % len(piece) == 0
    if compression == "gzip":
        member = gzip.compress(piece, compresslevel=9)
        data = gzip.compress(header) + member * (size // len(piece)) + gzip.compress(b"\0" * 1024)
    else:
        zstd = zstandard.ZstdCompressor(level=3).compressobj()
        parts = [zstd.compress(header)] + [zstd.compress(piece) for _ in range(size // len(piece))]
        data = b"".join([*parts, zstd.compress(b"\0" * 1024), zstd.flush()])
    return write_blob(tmp_path, data, MEDIA_TYPES[compression], Digest.of_bytes(b"never reached"))


def _written(target: Path) -> int:
    return sum(p.lstat().st_size for p in target.rglob("*"))


def test_a_gzip_bomb_is_stopped_early_by_the_ratio_limit(tmp_path: Path) -> None:
    bomb = _zeros_layer(tmp_path, 1 << 30, "gzip")  # 1 GiB of zeros in about 1 MiB
    limits = UnpackLimits(max_ratio=100, ratio_floor_bytes=4 * MiB)
    started = time.monotonic()
    with pytest.raises(LayerLimitExceeded, match="100:1 ratio limit") as raised:
        apply(bomb, tmp_path / "target", limits)
    assert time.monotonic() - started < 10
    assert _written(tmp_path / "target") < 32 * MiB, "the bomb was stopped long before 1 GiB"
    assert str(bomb.digest) in str(raised.value)
    assert isinstance(raised.value, IntegrityError)  # exit code 4


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_default_limits_stop_a_bomb_after_the_floor(compression: str, tmp_path: Path) -> None:
    bomb = _zeros_layer(tmp_path, 1 << 30, compression)
    with pytest.raises(LayerLimitExceeded, match="ratio limit"):
        apply(bomb, tmp_path / "target")
    assert _written(tmp_path / "target") <= UnpackLimits().ratio_floor_bytes + 2 * MiB


def test_the_total_size_limit_counts_files_and_the_stream(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(file("big", b"x" * (3 * MiB))), "none", name="big")
    with pytest.raises(LayerLimitExceeded, match="files in the layer add up to more than 2097152 bytes"):
        apply(blob, tmp_path / "t1", UnpackLimits(max_total_bytes=2 * MiB))
    # Bytes after the archive count too: they are decompressed and hashed like the rest.
    padded = write_layer(tmp_path, tar(file("small", b"x")) + b"\0" * (3 * MiB), "gzip", name="padded")
    with pytest.raises(LayerLimitExceeded, match="uncompressed size exceeds 2097152 bytes"):
        apply(padded, tmp_path / "t2", UnpackLimits(max_total_bytes=2 * MiB))


def test_too_many_entries(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(*[file(f"f{i}") for i in range(11)]), "gzip")
    with pytest.raises(LayerLimitExceeded, match="more than 10 entries"):
        apply(blob, tmp_path / "target", UnpackLimits(max_entries=10))


def test_path_length_and_depth_limits(tmp_path: Path) -> None:
    long_name = write_layer(tmp_path, tar(file("d/" + "x" * 200 + "/f")), "gzip", name="long")
    with pytest.raises(LayerLimitExceeded, match="path longer than 100 bytes"):
        apply(long_name, tmp_path / "t1", UnpackLimits(max_path_bytes=100))
    deep = write_layer(tmp_path, tar(file("a/" * 40 + "f")), "gzip", name="deep")
    with pytest.raises(LayerLimitExceeded, match="deeper than 32 directories"):
        apply(deep, tmp_path / "t2", UnpackLimits(max_depth=32))


def test_a_huge_pax_header_is_refused_before_it_is_buffered(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(file("f", b"x", pax={"comment": "A" * (8 * MiB)})), "gzip")
    with pytest.raises(LayerLimitExceeded, match="tar header is larger than"):
        apply(blob, tmp_path / "target")


def _raw_pax_header(payload: bytes) -> bytes:
    """A PAX extended header carrying `payload` as its records, then one small file."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(payload)
    padding = b"\0" * (-len(payload) % 512)
    return (
        info.tobuf(tarfile.USTAR_FORMAT) + payload + padding + tar(file("f", b"x"), fmt=tarfile.USTAR_FORMAT)
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        # CVE-2024-6232 shapes: quadratic in tarfile's regexes on Python < 3.11.10.
        (b"30 comment=" + b"7" * 200_000 + b"\n", "run of more than 256 digits"),
        (b"5 ab\n" * 40_000 + b"9 path=f\n", "is not `<length> <keyword>=<value>`"),
        (b"x" * 1000, "does not start with its length"),
        (b"100 path=f\n", "is not `<length> <keyword>=<value>`"),  # length beyond the data
    ],
)
def test_pax_headers_that_would_stall_tarfile_are_refused_at_once(
    payload: bytes, message: str, tmp_path: Path
) -> None:
    blob = write_blob(
        tmp_path, gzip.compress(_raw_pax_header(payload)), MEDIA_TYPES["gzip"], Digest.of_bytes(b"")
    )
    started = time.monotonic()
    with pytest.raises(UnsafeLayer, match=message):
        apply(blob, tmp_path / "target")
    assert time.monotonic() - started < 2


def test_well_formed_pax_records_pass_the_screen(tmp_path: Path) -> None:
    archive = _raw_pax_header(b"12 path=abc\n" + b"27 SCHILY.xattr.user.k=v\0v\n")
    apply(write_blob(tmp_path, archive, MEDIA_TYPES["none"], Digest.of_bytes(archive)), tmp_path / "target")
    assert os.getxattr(tmp_path / "target/abc", "user.k") == b"v\0v"


def test_chained_extended_headers_are_refused(tmp_path: Path) -> None:
    chain = tarfile.TarInfo.create_pax_global_header({"comment": "x"}) * 900
    with pytest.raises(UnsafeLayer):
        apply(write_layer(tmp_path, chain + tar(file("f", b"x")), "gzip"), tmp_path / "target")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_ratio"):
        UnpackLimits(max_ratio=0)
    with pytest.raises(ValueError, match="max_depth"):
        UnpackLimits(max_depth=10_000)


# -- the overlay form of a layer --------------------------------------------------------------------


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    target = tmp_path / "target"
    blob = write_layer(
        tmp_path,
        tar(
            directory("etc"),
            whiteout("etc/shadow"),
            whiteout("gone-dir"),
            opaque("var/cache"),
            file("etc/.wh..wh.plnk"),  # aufs bookkeeping: ignored
            file("etc/.wh.motd", b"a whiteout with content is still just a whiteout"),
        ),
    )
    stats = apply(blob, target)
    for name in ("etc/shadow", "gone-dir", "etc/motd"):
        assert is_whiteout(target / name), name
        assert stat.S_IMODE((target / name).lstat().st_mode) == 0
    assert is_opaque(target / "var/cache")
    assert not is_opaque(target / "etc")
    assert sorted(os.listdir(target / "etc")) == ["motd", "shadow"]
    assert stats.whiteouts == 4


def test_a_whiteout_only_hides_lower_layers(tmp_path: Path) -> None:
    """OCI: a whiteout never deletes an entry of its own layer, in whichever order they come."""
    target = unpacked(
        tmp_path,
        file("kept", b"mine"),
        whiteout("kept"),
        directory("dir-then-whiteout"),
        file("dir-then-whiteout/x", b"x"),
        whiteout("dir-then-whiteout"),
        whiteout("whiteout-then-dir"),
        directory("whiteout-then-dir"),
        whiteout("whiteout-then-file"),
        file("whiteout-then-file", b"new"),
        whiteout("whiteout-then-child"),
        file("whiteout-then-child/child", b"c"),
    )
    assert (target / "kept").read_bytes() == b"mine"
    # Directories stay, and become opaque so the lower layer's contents stay hidden.
    assert is_opaque(target / "dir-then-whiteout")
    assert (target / "dir-then-whiteout/x").read_bytes() == b"x"
    assert is_opaque(target / "whiteout-then-dir")
    assert is_opaque(target / "whiteout-then-child")
    assert (target / "whiteout-then-file").read_bytes() == b"new"
    assert not is_opaque(target)


def test_image_xattrs_are_filtered(tmp_path: Path) -> None:
    capability = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    blob = write_layer(
        tmp_path,
        tar(
            file(
                "bin/ping",
                b"elf",
                mode=0o755,
                xattrs={
                    "user.note": "hello",
                    "security.capability": capability,  # cap_net_raw: applied
                    "security.selinux": "system_u:object_r:bin_t:s0",  # a host decision: dropped
                    "trusted.other": "x",  # dropped
                },
            ),
            directory("d", xattrs={"user.dir": "yes"}),
            symlink("link", "bin/ping", xattrs={"user.x": "y"}),
        ),
    )
    stats = apply(blob, tmp_path / "target")
    ping = tmp_path / "target/bin/ping"
    assert os.getxattr(ping, "user.note") == b"hello"
    assert os.getxattr(ping, "security.capability") == capability.encode("latin-1")
    assert set(os.listxattr(ping)) == {"user.note", "security.capability"}
    assert os.getxattr(tmp_path / "target/d", "user.dir") == b"yes"
    joined = "\n".join(stats.warnings)
    assert "'security.selinux' dropped" in joined
    assert "'trusted.other' dropped" in joined
    assert "xattrs on a symlink are not applied" in joined


def test_image_supplied_overlay_xattrs_refuse_the_layer(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(directory("d", xattrs={"trusted.overlay.opaque": "y"})))
    with pytest.raises(UnsafeLayer, match="may not set overlay metadata"):
        apply(blob, tmp_path / "target")


def test_setuid_setgid_and_sticky_bits_survive_chown(tmp_path: Path) -> None:
    target = unpacked(
        tmp_path,
        file("usr/bin/su", b"su", mode=0o4755, uid=1000, gid=1000),
        file("usr/bin/wall", b"wall", mode=0o2755, uid=0, gid=5),
        directory("srv/shared", mode=0o2775, uid=1000, gid=100),
        directory("tmp", mode=0o1777),
    )
    for path, mode, uid, gid in [
        ("usr/bin/su", 0o4755, 1000, 1000),
        ("usr/bin/wall", 0o2755, 0, 5),
        ("srv/shared", 0o2775, 1000, 100),
        ("tmp", 0o1777, 0, 0),
    ]:
        st = (target / path).lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), path


def test_owners_are_numeric_and_names_ignored(tmp_path: Path) -> None:
    entry, data = file("f", b"", uid=1234, gid=5678)
    entry.uname, entry.gname = "root", "root"
    st = (unpacked(tmp_path, (entry, data)) / "f").lstat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_an_owner_id_out_of_range_is_refused(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(file("f", b"", pax={"uid": str(2**32)})))
    with pytest.raises(UnsafeLayer, match="owner id 4294967296 out of range"):
        apply(blob, tmp_path / "target")


def test_fifos_are_created(tmp_path: Path) -> None:
    st = (unpacked(tmp_path, fifo("run/pipe", mode=0o620, uid=7)) / "run/pipe").lstat()
    assert stat.S_ISFIFO(st.st_mode)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o620, 7)


def test_an_unknown_entry_type_is_refused(tmp_path: Path) -> None:
    odd, _ = file("volume")
    odd.type = b"V"  # a GNU volume header
    with pytest.raises(UnsafeLayer, match="unsupported tar entry type"):
        apply(write_layer(tmp_path, tar((odd, None))), tmp_path / "target")


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    target = unpacked(
        tmp_path,
        file("twice", b"first"),
        file("twice", b"second", mode=0o600),
        directory("merged", mode=0o700),
        file("merged/a", b"a"),
        directory("merged", mode=0o750),
        file("merged/b", b"b"),
        directory("dir-becomes-file"),
        directory("dir-becomes-file/sub"),
        file("dir-becomes-file/sub/deep", b"deep"),
        file("dir-becomes-file", b"now a file"),
        file("file-becomes-dir", b"file"),
        directory("file-becomes-dir"),
        file("file-becomes-dir/inside", b"inside"),
        symlink("link-becomes-dir", "elsewhere"),
        directory("link-becomes-dir"),
        directory("dir-becomes-link"),
        symlink("dir-becomes-link", "merged"),
    )
    assert (target / "twice").read_bytes() == b"second"
    assert stat.S_IMODE((target / "twice").stat().st_mode) == 0o600
    assert sorted(os.listdir(target / "merged")) == ["a", "b"]
    assert stat.S_IMODE((target / "merged").stat().st_mode) == 0o750
    assert (target / "dir-becomes-file").read_bytes() == b"now a file"
    assert (target / "file-becomes-dir/inside").read_bytes() == b"inside"
    assert (target / "link-becomes-dir").is_dir() and not (target / "link-becomes-dir").is_symlink()
    assert os.readlink(target / "dir-becomes-link") == "merged"


def test_hard_links_within_a_layer_share_an_inode(tmp_path: Path) -> None:
    target = unpacked(
        tmp_path,
        file("usr/bin/gzip", b"gzip", mode=0o755),
        hardlink("usr/bin/gunzip", "usr/bin/gzip"),
        hardlink("usr/bin/zcat", "./usr/bin/gzip"),
        symlink("usr/bin/sh", "dash"),
        hardlink("bin/sh", "usr/bin/sh"),
    )
    gzip_st = (target / "usr/bin/gzip").lstat()
    assert gzip_st.st_nlink == 3
    for name in ("gunzip", "zcat"):
        assert (target / "usr/bin" / name).lstat().st_ino == gzip_st.st_ino
    assert (target / "bin/sh").lstat().st_ino == (target / "usr/bin/sh").lstat().st_ino
    assert os.readlink(target / "bin/sh") == "dash"


def test_directory_times_are_those_of_the_archive(tmp_path: Path) -> None:
    """Creating children (and whiteouts) changes a directory's mtime: it is set after them."""
    target = unpacked(
        tmp_path,
        directory("etc", mtime=123),
        file("etc/a", b"a", mtime=456),
        whiteout("etc/gone"),
        directory("etc/sub", mtime=789),
        file("etc/sub/b", b"b"),
    )
    assert (target / "etc").lstat().st_mtime == 123
    assert (target / "etc/sub").lstat().st_mtime == 789
    assert (target / "etc/a").lstat().st_mtime == 456


def test_an_out_of_range_time_is_a_warning(tmp_path: Path) -> None:
    blob = write_layer(tmp_path, tar(file("f", b"x", pax={"mtime": "1e30"})))
    stats = apply(blob, tmp_path / "target")
    assert any("modification time out of range" in w for w in stats.warnings)


def test_the_root_entry_sets_the_snapshot_roots_metadata(tmp_path: Path) -> None:
    target = unpacked(tmp_path, directory("./", mode=0o750, uid=3, mtime=42), file("f", b"f"))
    st = target.lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o750, 3, 42)


def test_parents_missing_from_the_archive_are_created_and_reported(tmp_path: Path) -> None:
    target = tmp_path / "target"
    stats = apply(write_layer(tmp_path, tar(file("a/b/c/file", b"x"), directory("a/b", mode=0o700))), target)
    assert (target / "a/b/c/file").read_bytes() == b"x"
    assert stat.S_IMODE((target / "a").stat().st_mode) == 0o755
    assert stats.implicit_dirs == ("a", "a/b/c")  # a/b got its own entry later


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_link_targets(fmt: int, tmp_path: Path) -> None:
    deep = "/".join(["d" * 100] * 3) + "/" + "f" * 200
    target = tmp_path / "target"
    apply(
        write_layer(tmp_path, tar(file(deep, b"x"), symlink("l", "t" * 300), hardlink("h", deep), fmt=fmt)),
        target,
    )
    assert (target / deep).read_bytes() == b"x"
    assert os.readlink(target / "l") == "t" * 300
    assert (target / "h").stat().st_ino == (target / deep).stat().st_ino


GB = 10**9


def _pax_sparse(name: str, size: int, *, major: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    """A PAX sparse file (0.1, or 1.0 with its map in the data): 4 bytes at 0 and 4 at the end."""
    info = tarfile.TarInfo(name)
    if major == 0:
        info.size = 8
        info.pax_headers = {"GNU.sparse.map": f"0,4,{size - 4},4", "GNU.sparse.size": str(size)}
        return info, b"AAAABBBB"
    sparse_map = f"2\n0\n4\n{size - 4}\n4\n".encode().ljust(512, b"\0")
    info.size = len(sparse_map) + 8
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(size),
    }
    return info, sparse_map + b"AAAABBBB"


def _old_gnu_sparse(name: str, size: int) -> bytes:
    """An old GNU sparse entry (type 'S', map in the header), which tarfile cannot write: a tar."""
    info = tarfile.TarInfo(name)
    info.size = 8
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = b"S"
    for i, (offset, length) in enumerate([(0, 4), (size - 4, 4)]):
        header[386 + 24 * i : 398 + 24 * i] = b"%011o\0" % offset
        header[398 + 24 * i : 410 + 24 * i] = b"%011o\0" % length
    header[483:495] = b"%011o\0" % size  # the real (declared) size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + b"AAAABBBB".ljust(512, b"\0") + tar(file("after", b"x"))


@pytest.mark.parametrize("kind", ["old GNU", "PAX 0.1", "PAX 1.0"])
def test_a_50_gb_sparse_file_in_a_2_kb_layer_is_refused_at_once(kind: str, tmp_path: Path) -> None:
    if kind == "old GNU":
        raw = _old_gnu_sparse("disk.img", 50 * GB)
    else:
        raw = tar(_pax_sparse("disk.img", 50 * GB, major=0 if kind == "PAX 0.1" else 1), file("after", b"x"))
    blob = write_layer(tmp_path, raw, "gzip")
    assert blob.path.stat().st_size < 2048
    started = time.monotonic()
    with pytest.raises(UnsafeLayer, match=r"'disk\.img': a sparse file .*trust refuses them") as raised:
        apply(blob, tmp_path / "target")
    assert time.monotonic() - started < 0.5
    assert str(blob.digest) in str(raised.value) and "\n" not in str(raised.value)
    assert isinstance(raised.value, IntegrityError)  # exit 4
    assert _written(tmp_path / "target") == 0


def test_implicit_directories_inherit_metadata_from_the_lower_layers(tmp_path: Path) -> None:
    """Like containerd's `WithParents`: `etc/config/` without its own entry means the lower one."""
    bottom = tmp_path / "bottom"
    apply(
        write_layer(
            tmp_path,
            tar(
                directory("etc", mode=0o755),
                directory("etc/config", mode=0o750, uid=7, gid=8, mtime=99, xattrs={"user.tag": "base"}),
                directory("gone", mode=0o700),
                directory("hidden", mode=0o700),
                directory("hidden/sub", mode=0o700),
            ),
            name="bottom.blob",
        ),
        bottom,
    )
    middle = tmp_path / "middle"
    apply(write_layer(tmp_path, tar(whiteout("gone"), opaque("hidden")), name="middle.blob"), middle)
    top = tmp_path / "top"
    stats = apply(
        write_layer(
            tmp_path, tar(file("etc/config/new", b"n"), file("gone/x"), file("hidden/sub/y")), name="top.blob"
        ),
        top,
    )
    assert stats.implicit_dirs == ("etc", "etc/config", "gone", "hidden", "hidden/sub")

    updated = inherit_implicit_dirs(top, stats.implicit_dirs, [middle, bottom])
    assert updated == 3  # etc, etc/config and hidden; gone is whited out, hidden/sub behind an opaque dir
    st = (top / "etc/config").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o750, 7, 8, 99)
    assert os.getxattr(top / "etc/config", "user.tag") == b"base"
    assert stat.S_IMODE((top / "gone").lstat().st_mode) == 0o755  # deleted below: a new directory
    assert stat.S_IMODE((top / "hidden/sub").lstat().st_mode) == 0o755


def test_warnings_are_capped(tmp_path: Path) -> None:
    entries = [file(f"f{i}", b"", xattrs={"security.selinux": "x"}) for i in range(150)]
    stats = apply(write_layer(tmp_path, tar(*entries)), tmp_path / "target")
    assert len(stats.warnings) == 101
    assert stats.warnings[-1] == "... and 50 more warnings"


def test_digests_taken_while_writing_match_a_full_rehash(tmp_path: Path) -> None:
    # The snapshot's recorded tree uses the digests computed on the way to the disk; every way a
    # layer can replace what it wrote (duplicates, a file turned directory and back, a whiteout,
    # hard links) must leave them equal to what reading the files again gives.
    target = tmp_path / "target"
    stats = apply(
        write_layer(
            tmp_path,
            tar(
                file("a", b"first"),
                file("a", b"second, longer"),
                directory("d"),
                file("d/x", b"x"),
                file("d", b"d is a file now"),
                file("e", b"e"),
                hardlink("e-link", "e"),
                hardlink("e-link2", "e"),
                file("e", b"e replaced after the link"),
                file("gone", b"soon whited out"),
                whiteout("gone"),
                file("e-link", b"a file where a hard link was"),
                directory("f"),
                file("f/y", b"y" * 300_000),
            ),
            "gzip",
        ),
        target,
    )
    assert stats.file_digests["a"] == (14, hashlib.sha256(b"second, longer").hexdigest())
    assert "d/x" not in stats.file_digests  # removed with the directory a file replaced
    # A whiteout hides lower layers only: the file of this layer stays, with its digest.
    assert stats.file_digests["gone"][0] == len(b"soon whited out")
    assert scan_tree(target, known=stats.file_digests) == scan_tree(target)
    # A stale entry (wrong size) is not trusted: the file is read instead.
    stale = {**stats.file_digests, "f/y": (300_000, "0" * 64)}
    assert scan_tree(target, known=stale) != scan_tree(target)
    stale_size = {**stats.file_digests, "f/y": (1, "0" * 64)}
    assert scan_tree(target, known=stale_size) == scan_tree(target)
