"""Hard links to a file of an earlier layer (issue 13, item 7): a copy in this layer's snapshot.

No builder in Debian writes such a layer, but umoci, containerd and podman apply it; the layers
are written here by hand and the merged overlay is compared with `umoci unpack`'s tree.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.images import Layer, build_image, snapshot_tree, write_oci_layout
from support.tars import directory, file, hardlink, symlink, tar, whiteout

from pull.digest import Digest
from pull.manifest import Descriptor
from pull.store import ContentStore
from run.overlay import is_mountpoint, mount_overlay, unmount
from run.snapshots import SnapshotStore
from run.unpack import UnpackedLayer, UnsafeLayer, unpack_layers


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    used: list[Path] = []
    yield used
    for target in reversed(used):
        while is_mountpoint(target):
            unmount(target, detach=True)


def _unpack(tmp_path: Path, layers: list[Layer], workers: int) -> tuple[SnapshotStore, list[UnpackedLayer]]:
    image = build_image(layers, cmd=["/bin/tool"])
    content = ContentStore.open(tmp_path / "content")
    for layer in image.layers:
        content.put_bytes(layer.blob(), Digest.parse(layer.digest))
    descriptors = [Descriptor(d.media_type, Digest.parse(d.digest), d.size) for d in image.layer_descriptors]
    diff_ids = [Digest.parse(d) for d in image.config["rootfs"]["diff_ids"]]
    snapshots = SnapshotStore.open(tmp_path / "snapshots")
    return snapshots, unpack_layers(content, snapshots, descriptors, diff_ids, workers=workers)


BASE = Layer.from_tar(
    tar(
        directory("bin/"),
        file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o4755, uid=7, gid=8),
        symlink("bin/sh-link", "tool"),
        directory("etc/"),
        file("etc/gone", b"deleted above"),
    )
)
LINKS = Layer.from_tar(
    tar(
        directory("usr/bin/"),
        hardlink("usr/bin/tool2", "bin/tool"),  # a file of the base layer
        hardlink("usr/bin/tool3", "bin/tool"),  # the same lower file again: one inode here too
        hardlink("usr/bin/sh-link", "bin/sh-link"),  # a lower symlink
        file("data/a", b"inside the layer"),
        hardlink("data/b", "data/a"),  # a link inside the layer stays a link
    )
)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_link_to_a_lower_file_is_a_copy_in_this_snapshot(
    tmp_path: Path, mounts: list[Path], workers: int
) -> None:
    top = Layer.from_tar(tar(file("etc/new", b"third layer")))
    snapshots, unpacked = _unpack(tmp_path, [BASE, LINKS, top], workers)
    mine = unpacked[1].path
    copy = mine / "usr/bin/tool2"
    st = copy.lstat()
    assert copy.read_bytes() == b"#!/bin/sh\necho tool\n"
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o4755, 7, 8)
    assert st.st_ino != (unpacked[0].path / "bin/tool").lstat().st_ino  # a copy, never a cross-tree link
    assert (mine / "usr/bin/tool3").lstat().st_ino == st.st_ino
    assert os.readlink(mine / "usr/bin/sh-link") == "tool"
    assert (mine / "data/b").lstat().st_ino == (mine / "data/a").lstat().st_ino

    # The merged root file system is umoci's.
    image = build_image([BASE, LINKS, top], cmd=["/bin/tool"])
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True, capture_output=True
    )
    merged = tmp_path / "merged"
    merged.mkdir()
    mount_overlay(merged, snapshots.lowerdirs([u.chain_id for u in unpacked]))
    mounts.append(merged)
    ours, theirs = snapshot_tree(merged), snapshot_tree(bundle / "rootfs")
    assert ours.simple() == theirs.simple()
    assert ours["usr/bin/tool2"].nlink == 2  # tool2 and tool3; umoci links all three together


def test_a_link_to_a_file_deleted_below_or_absent_is_refused(tmp_path: Path) -> None:
    deleting = Layer.from_tar(tar(whiteout("etc/gone")))
    dangling = Layer.from_tar(tar(hardlink("etc/again", "etc/gone")))
    with pytest.raises(UnsafeLayer, match="neither this layer nor a lower one has"):
        _unpack(tmp_path / "a", [BASE, deleting, dangling], 2)
    # In the first layer there is nothing below: outside this layer, as before.
    with pytest.raises(UnsafeLayer, match="outside this layer"):
        _unpack(tmp_path / "b", [Layer.from_tar(tar(hardlink("x", "etc/passwd")))], 1)
    # Nothing half done: no snapshot was committed for the refused layers.
    snapshots = SnapshotStore.open(tmp_path / "a" / "snapshots")
    assert len(snapshots.committed()) == 2


def test_a_later_entry_for_the_link_s_path_wins(tmp_path: Path) -> None:
    layer = Layer.from_tar(tar(hardlink("etc/copy", "bin/tool"), file("etc/copy", b"replaced later")))
    _, unpacked = _unpack(tmp_path, [BASE, layer], 2)
    assert (unpacked[1].path / "etc/copy").read_bytes() == b"replaced later"
