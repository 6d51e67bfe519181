"""Real overlay mounts of snapshots made by apply_layer, and the comparison with `umoci unpack`.

The promise tested here: stacking the snapshots of an image with overlayfs gives the same tree as
applying its layers in order, which is what umoci does. Every mount is undone at teardown.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.images import REALISTIC_EXPECTED, realistic_image, snapshot_tree, write_oci_layout
from support.tars import directory, file, opaque, symlink, tar, whiteout, write_layer

from pull.digest import Digest
from pull.manifest import Descriptor
from pull.store import ContentStore
from run.overlay import is_mountpoint, mount_overlay, overlay_options, unmount
from run.snapshots import SnapshotStore
from run.unpack import apply_layer, unpack_layers

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlays needs root")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points a test used; each is unmounted (lazily, if busy) at teardown."""
    used: list[Path] = []
    yield used
    for target in reversed(used):
        while is_mountpoint(target):
            unmount(target, detach=True)


def _mkdirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


# -- the option string ------------------------------------------------------------------------------


def test_overlay_options() -> None:
    lowers = [Path("/s/top"), Path("/s/bottom")]
    assert overlay_options(lowers) == "lowerdir=/s/top:/s/bottom,index=off"
    assert (
        overlay_options(lowers[1:], Path("/c/upper"), Path("/c/work"))
        == "lowerdir=/s/bottom,upperdir=/c/upper,workdir=/c/work,index=off"
    )


@pytest.mark.parametrize(
    ("lowers", "upper", "work", "message"),
    [
        ([], None, None, "at least one lower"),
        ([Path("/only")], None, None, "two lower directories"),
        ([Path("/a"), Path("/b")], Path("/u"), None, "go together"),
        ([Path("/a:b"), Path("/c")], None, None, "free of"),
        ([Path("/a,upperdir=/etc"), Path("/c")], None, None, "free of"),
        ([Path("relative"), Path("/c")], None, None, "absolute"),
    ],
)
def test_overlay_options_refuse_ambiguous_input(
    lowers: list[Path], upper: Path | None, work: Path | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        overlay_options(lowers, upper, work)


# -- mounts of applied layers -----------------------------------------------------------------------


def _two_layers(tmp_path: Path) -> tuple[Path, Path]:
    lower, upper = tmp_path / "layer1", tmp_path / "layer2"
    _mkdirs(lower, upper)
    first = write_layer(
        tmp_path,
        tar(
            directory("etc"),
            file("etc/passwd", b"root\n"),
            file("etc/shadow", b"secret\n"),
            directory("data"),
            file("data/a", b"a"),
            directory("data/sub"),
            file("data/sub/b", b"b"),
            directory("keep"),
            file("keep/old", b"old"),
            symlink("lib", "usr/lib"),
        ),
        name="layer1.blob",
    )
    second = write_layer(
        tmp_path,
        tar(
            directory("etc"),
            whiteout("etc/shadow"),
            directory("data"),
            opaque("data"),
            file("data/c", b"c"),
            directory("keep"),
            file("keep/new", b"new"),
            directory("lib"),  # a directory over the lower symlink
            file("lib/x", b"x"),
        ),
        name="layer2.blob",
    )
    apply_layer(first.path, first.media_type, first.digest, first.diff_id, lower)
    apply_layer(second.path, second.media_type, second.digest, second.diff_id, upper)
    return lower, upper


@needs_root
def test_whiteouts_and_opaque_directories_hide_lower_layers(tmp_path: Path, mounts: list[Path]) -> None:
    lower, upper = _two_layers(tmp_path)
    merged = tmp_path / "merged"
    merged.mkdir()
    mount_overlay(merged, [upper, lower])
    mounts.append(merged)

    assert (merged / "etc/passwd").read_bytes() == b"root\n"
    assert not os.path.lexists(merged / "etc/shadow"), "the whiteout hides the lower file"
    assert sorted(os.listdir(merged / "etc")) == ["passwd"]
    assert sorted(os.listdir(merged / "data")) == ["c"], "the opaque directory hides lower contents"
    assert sorted(os.listdir(merged / "keep")) == ["new", "old"], "other directories merge"
    assert (merged / "lib").is_dir() and not (merged / "lib").is_symlink()
    with pytest.raises(OSError) as raised:
        (merged / "etc/new").write_bytes(b"x")
    assert raised.value.errno == errno.EROFS


@needs_root
def test_a_container_writes_only_to_its_upper_directory(tmp_path: Path, mounts: list[Path]) -> None:
    lower, upper_layer = _two_layers(tmp_path)
    before = snapshot_tree(lower), snapshot_tree(upper_layer)
    rootfs, container_upper, work = tmp_path / "rootfs", tmp_path / "c/upper", tmp_path / "c/work"
    _mkdirs(rootfs, container_upper, work)
    mount_overlay(rootfs, [upper_layer, lower], container_upper, work)
    mounts.append(rootfs)

    (rootfs / "etc/passwd").write_bytes(b"changed by the container\n")
    (rootfs / "etc/new").write_bytes(b"new\n")
    os.remove(rootfs / "keep/old")
    shutil.rmtree(rootfs / "data")

    assert (container_upper / "etc/new").read_bytes() == b"new\n"
    assert (container_upper / "etc/passwd").read_bytes() == b"changed by the container\n"
    assert (snapshot_tree(lower), snapshot_tree(upper_layer)) == before, "snapshots are never written"
    unmount(rootfs)
    assert not is_mountpoint(rootfs)


@needs_root
def test_a_single_layer_is_bind_mounted_read_only(tmp_path: Path, mounts: list[Path]) -> None:
    lower, _ = _two_layers(tmp_path)
    view = tmp_path / "view"
    view.mkdir()
    mount_overlay(view, [lower])
    mounts.append(view)
    assert is_mountpoint(view)
    assert (view / "etc/shadow").read_bytes() == b"secret\n"
    with pytest.raises(OSError) as raised:
        (view / "etc/new").write_bytes(b"x")
    assert raised.value.errno == errno.EROFS


@needs_root
def test_stacks_longer_than_a_page_of_options_mount_with_the_new_api(
    tmp_path: Path, mounts: list[Path]
) -> None:
    layers = []
    deep = tmp_path / ("long-directory-name-" * 4)
    for i in range(60):
        target = deep / f"snapshot-{i:03d}-{'x' * 40}"
        target.mkdir(parents=True)
        blob = write_layer(tmp_path, tar(file(f"files/f{i:03d}", str(i).encode())), name=f"l{i}.blob")
        apply_layer(blob.path, blob.media_type, blob.digest, blob.diff_id, target)
        layers.append(target)
    lowers = list(reversed(layers))
    assert len(overlay_options(lowers)) > 4096
    merged = tmp_path / "merged"
    merged.mkdir()
    mount_overlay(merged, lowers)
    mounts.append(merged)
    assert len(os.listdir(merged / "files")) == 60
    assert (merged / "files/f042").read_bytes() == b"42"


@needs_root
def test_mount_errors_carry_the_kernels_reason(tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    merged.mkdir()
    with pytest.raises(OSError, match="mount failed"):
        mount_overlay(merged, [tmp_path / "missing-a", tmp_path / "missing-b"])


# -- the comparison with umoci ----------------------------------------------------------------------


@needs_root
@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_the_merged_rootfs_equals_umoci_unpack(compression: str, tmp_path: Path, mounts: list[Path]) -> None:
    """Deletions, an opaque dir, replaced dirs, symlinks and hard links: same tree as umoci's."""
    image = realistic_image(compression=compression)  # type: ignore[arg-type]

    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True, capture_output=True
    )
    theirs = snapshot_tree(bundle / "rootfs").simple()

    content = ContentStore.open(tmp_path / "content")
    for layer in image.layers:
        content.put_bytes(layer.blob(), Digest.parse(layer.digest))
    descriptors = [Descriptor(d.media_type, Digest.parse(d.digest), d.size) for d in image.layer_descriptors]
    diff_ids = [Digest.parse(d) for d in image.config["rootfs"]["diff_ids"]]
    snapshots = SnapshotStore.open(tmp_path / "snapshots")
    unpacked = unpack_layers(content, snapshots, descriptors, diff_ids, workers=3)
    merged = tmp_path / "merged"
    merged.mkdir()
    mount_overlay(merged, snapshots.lowerdirs([u.chain_id for u in unpacked]))
    mounts.append(merged)
    ours = snapshot_tree(merged).simple()

    assert ours == theirs
    assert ours == REALISTIC_EXPECTED
    assert all(stat.S_ISDIR(os.lstat(u.path).st_mode) for u in unpacked)
