"""Per-image limits (issue 20, class 1): a signed image can still be a bomb.

A small gzip layer of zeros listed many times, or more layers than docker accepts, is refused by the
limits of the admitting policy rule (`limits:`), before it costs more than the budget.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import time
import zlib
from pathlib import Path

import pytest
from support.images import Layer, build_image, busybox_layer, push_image
from support.registry import Registry
from support.tars import MEDIA_TYPES, file, tar, whiteout

from policy.admitted import AdmittedImage, Decision, ImageLimits
from policy.errors import PolicyError
from policy.loader import load_policy_text
from pull.digest import Digest
from pull.errors import IntegrityError
from pull.manifest import Descriptor, ImageConfig
from pull.store import ContentStore
from run.rootfs import mount_rootfs, prepare_layers, unmount_rootfs
from run.snapshots import SnapshotStore, chain_ids
from run.unpack import LayerLimitExceeded, unpack_layers
from trust.cli.app import main

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers and tmpfs need root")

MiB = 1 << 20
GiB = 1 << 30


def _zeros_layer(content: ContentStore, size: int, name: str = "zeros") -> tuple[Descriptor, Digest]:
    """A gzip layer holding one file of `size` zeros, stored in `content`; never all in memory."""
    info = tarfile.TarInfo(name)
    info.size = size
    pieces = [info.tobuf(tarfile.PAX_FORMAT), *([bytes(MiB)] * (size // MiB)), bytes(1024)]
    diff_id, blob = hashlib.sha256(), zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    compressed = []
    for piece in pieces:
        diff_id.update(piece)
        compressed.append(blob.compress(piece))
    data = b"".join([*compressed, blob.flush()])
    digest = Digest.of_bytes(data)
    content.put_bytes(data, digest)
    return Descriptor(MEDIA_TYPES["gzip"], digest, len(data)), Digest.parse(f"sha256:{diff_id.hexdigest()}")


def _disk_used(path: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*"))


@needs_root
def test_small_bomb_layers_are_stopped_at_the_image_budget(tmp_path: Path) -> None:
    content = ContentStore.open(tmp_path / "content")
    bombs = [_zeros_layer(content, 120 * MiB, f"zeros{n}") for n in range(10)]
    assert all(layer.size < 200_000 for layer, _ in bombs), "about 122 KB of gzip each"
    # The snapshots live on a tmpfs smaller than two budgets: writing much beyond the budget would
    # fail with ENOSPC (an OSError), not with the limit.
    snapshots_root = tmp_path / "snapshots"
    snapshots_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=900m", "tmpfs", str(snapshots_root)], check=True)
    try:
        snapshots = SnapshotStore.open(snapshots_root / "s")
        started = time.monotonic()
        with pytest.raises(LayerLimitExceeded) as raised:
            unpack_layers(
                content,
                snapshots,
                [layer for layer, _ in bombs],
                [diff_id for _, diff_id in bombs],
                image_limits=ImageLimits(max_unpacked_bytes=500 * MiB),
            )
        elapsed = time.monotonic() - started
        message = str(raised.value)
        assert isinstance(raised.value, IntegrityError)  # exit 4
        assert "max-unpacked-bytes" in message and "limits: {max-unpacked-bytes" in message, message
        assert "\n" not in message
        # Up to 4 layers of 120 MiB fit the budget; the rest were never committed, and what was
        # partial is gone. The disk holds at most the budget.
        assert len(snapshots.committed()) <= 4
        assert _disk_used(snapshots_root) <= 500 * MiB + 16 * MiB
        assert elapsed < 60
    finally:
        subprocess.run(["umount", str(snapshots_root)], check=True)


# -- a layer listed more than once ------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("workers", [1, 4])
def test_one_layer_listed_20_times_is_one_snapshot_counted_once(workers: int, tmp_path: Path) -> None:
    content = ContentStore.open(tmp_path / "content")
    layer, diff_id = _zeros_layer(content, 120 * MiB)
    snapshots_root = tmp_path / "snapshots"
    snapshots_root.mkdir()
    # Room for one copy only: a second snapshot of it would fail with ENOSPC.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(snapshots_root)], check=True)
    try:
        snapshots = SnapshotStore.open(snapshots_root / "s")
        # A budget that holds the layer once, not twice.
        limits = ImageLimits(max_unpacked_bytes=150 * MiB, max_files=1)
        unpacked = unpack_layers(
            content, snapshots, [layer] * 20, [diff_id] * 20, image_limits=limits, workers=workers
        )
        assert [u.chain_id for u in unpacked] == [diff_id]
        assert snapshots.committed() == [diff_id]
        lowers = prepare_layers(_admitted([layer] * 20, [diff_id] * 20, limits), content, snapshots)
        assert lowers == [snapshots.path(diff_id)]  # the warm start finds the same one snapshot
    finally:
        subprocess.run(["umount", str(snapshots_root)], check=True)


def _stored(content: ContentStore, raw: bytes, compression: str = "gzip") -> tuple[Descriptor, Digest]:
    layer = Layer.from_tar(raw, compression=compression)  # type: ignore[arg-type]
    digest = Digest.parse(layer.digest)
    content.put_bytes(layer.blob(), digest)
    return Descriptor(MEDIA_TYPES[compression], digest, layer.size), Digest.parse(layer.diff_id)


@needs_root
def test_a_layer_repeated_above_another_still_wins_over_it(tmp_path: Path) -> None:
    """A, B, A: the stack is B, A (the first A is shadowed by the second), so A's files win over B's."""
    content = ContentStore.open(tmp_path / "content")
    a = _stored(content, tar(file("etc/f", b"from A"), file("etc/only-a", b"a")))
    b = _stored(content, tar(file("etc/f", b"from B"), whiteout("etc/only-a"), file("etc/b", b"b")))
    layers, diff_ids = [a[0], b[0], a[0]], [a[1], b[1], a[1]]
    snapshots = SnapshotStore.open(tmp_path / "s")
    lowers = prepare_layers(_admitted(layers, diff_ids, ImageLimits(max_layers=3)), content, snapshots)
    assert lowers == [snapshots.path(c) for c in reversed(chain_ids([b[1], a[1]]))]
    root, upper, work = tmp_path / "root", tmp_path / "upper", tmp_path / "work"
    for directory in (root, upper, work):
        directory.mkdir()
    mount_rootfs(root, lowers, upper=upper, work=work)
    try:
        assert (root / "etc/f").read_bytes() == b"from A"  # B overwrote it, A wrote it again
        assert (root / "etc/only-a").read_bytes() == b"a"  # B deleted it, A brought it back
        assert (root / "etc/b").read_bytes() == b"b"  # what only B has stays
    finally:
        unmount_rootfs(root)
    # B, A, B is another image: B's files win there.
    again = prepare_layers(
        _admitted([b[0], a[0], b[0]], [b[1], a[1], b[1]], ImageLimits()), content, snapshots
    )
    assert again == [snapshots.path(c) for c in reversed(chain_ids([a[1], b[1]]))]


def test_the_same_diff_id_from_two_different_blobs_is_refused(tmp_path: Path) -> None:
    content = ContentStore.open(tmp_path / "content")
    raw = tar(file("f", b"x"))
    gzipped, zstd = _stored(content, raw, "gzip"), _stored(content, raw, "zstd")
    assert gzipped[1] == zstd[1] and gzipped[0].digest != zstd[0].digest
    snapshots = SnapshotStore.open(tmp_path / "s")
    with pytest.raises(IntegrityError, match="claim the same diff_id"):
        unpack_layers(content, snapshots, [gzipped[0], zstd[0]], [gzipped[1], zstd[1]])
    assert snapshots.committed() == []


@needs_root
def test_the_file_budget_is_shared_by_the_layers(tmp_path: Path) -> None:
    content = ContentStore.open(tmp_path / "content")
    layers, diff_ids = [], []
    for n in range(3):
        layer = Layer.from_tar(tar(*[file(f"l{n}/f{i}", b"x") for i in range(40)]), compression="gzip")
        digest = Digest.parse(layer.digest)
        content.put_bytes(layer.blob(), digest)
        layers.append(Descriptor(MEDIA_TYPES["gzip"], digest, layer.size))
        diff_ids.append(Digest.parse(layer.diff_id))
    snapshots = SnapshotStore.open(tmp_path / "s")
    with pytest.raises(LayerLimitExceeded, match="max-files limit: its layers hold more than 100 entries"):
        unpack_layers(
            content, snapshots, layers, diff_ids, image_limits=ImageLimits(max_files=100), workers=1
        )
    assert len(snapshots.committed()) == 2  # 80 entries fit; the third layer (120) did not
    # Within the limit, the same layers unpack (the two committed ones are reused, costing nothing).
    unpacked = unpack_layers(content, snapshots, layers, diff_ids, image_limits=ImageLimits(max_files=100))
    assert [u.stats is None for u in unpacked] == [True, True, False]


def _admitted(layers: list[Descriptor], diff_ids: list[Digest], limits: ImageLimits) -> AdmittedImage:
    config = ImageConfig(os="linux", architecture="amd64", variant=None, diff_ids=tuple(diff_ids), raw={})
    return AdmittedImage(
        repository="127.0.0.1:5000/bomb",
        manifest_digest=Digest.of_bytes(b"manifest"),
        config_digest=Digest.of_bytes(b"config"),
        config=config,
        layers=tuple(layers),
        decision=Decision(rule="default", mode="enforce", allowed=True),
        limits=limits,
    )


def test_129_layers_are_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    # None of the blobs is in the store: had unpacking started, it would have said so (exit 5).
    content = ContentStore.open(tmp_path / "content")
    diff_ids = [Digest.of_bytes(str(i).encode()) for i in range(129)]
    layers = [Descriptor(MEDIA_TYPES["gzip"], d, 10) for d in diff_ids]
    snapshots = SnapshotStore.open(tmp_path / "s")
    with pytest.raises(LayerLimitExceeded, match="max-layers limit: it has 129 layers, more than 128"):
        unpack_layers(content, snapshots, layers, diff_ids)
    with pytest.raises(LayerLimitExceeded, match="max-layers"):
        prepare_layers(_admitted(layers, diff_ids, ImageLimits()), content, snapshots)
    assert snapshots.committed() == []
    # A policy may allow more (and fewer): the limit is the rule's.
    with pytest.raises(LayerLimitExceeded, match="it has 3 layers, more than 2"):
        prepare_layers(_admitted(layers[:3], diff_ids[:3], ImageLimits(max_layers=2)), content, snapshots)


# -- the policy field ---------------------------------------------------------------------------------

_POLICY = """\
version: 1
authorities: {}
rules:
  - scope: 127.0.0.1:5000/ml
    insecure-accept-anything: true
    require-digest: false
    limits: {LIMITS}
default: {insecure-accept-anything: true, require-digest: false}
"""


def _load(limits: str) -> ImageLimits:
    policy = load_policy_text(_POLICY.replace("{LIMITS}", limits), Path("."), "p.yaml")
    return policy.rules[0].limits


def test_limits_are_read_per_scope_with_defaults() -> None:
    assert _load("{max-layers: 200, max-files: 5000000}") == ImageLimits(max_layers=200, max_files=5_000_000)
    assert _load("{max-unpacked-bytes: 1073741824}").max_unpacked_bytes == GiB
    policy = load_policy_text(_POLICY.replace("{LIMITS}", "{max-layers: 3}"), Path("."), "p.yaml")
    assert policy.default.limits == ImageLimits()  # the default rule keeps the defaults
    assert ImageLimits() == ImageLimits(max_layers=128, max_unpacked_bytes=64 * GiB, max_files=2_000_000)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{max-layer: 3}", "unknown field 'max-layer'"),
        ("{max-layers: 0}", "max-layers in 'limits' of rule 1 must be a positive integer"),
        ("{max-files: -5}", "must be a positive integer"),
        ("{max-unpacked-bytes: 1" + "0" * 40 + "}", "must be a positive integer up to"),
        ("{max-layers: '12'}", "'max-layers' in 'limits' of rule 1 must be a whole number"),
        ("[1, 2]", "'limits' in rule 1 must be a mapping"),
    ],
)
def test_bad_limits_are_refused_with_the_line(limits: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as raised:
        _load(limits)
    assert str(raised.value).startswith("p.yaml:7: ")


def test_limits_on_a_reject_rule_are_refused_as_a_no_op() -> None:
    text = (
        "version: 1\nrules:\n  - {scope: a.example/x, reject: true, limits: {max-layers: 3}}\n"
        "default: {reject: true}\n"
    )
    with pytest.raises(PolicyError, match="'limits' has no effect"):
        load_policy_text(text, Path("."), "p.yaml")


@needs_root
def test_an_image_repeating_a_layer_runs_audits_and_keeps_its_snapshots_through_gc(
    registry: Registry, repo_name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """End to end: run, gc and audit agree on which snapshots an A, B, A image uses."""
    a = Layer.from_files({"f": b"from A\n"})
    b = Layer.from_files({"f": b"from B\n", "g": b"only B\n"})
    image = build_image([busybox_layer(), a, b, a], cmd=["cat", "/f", "/g"])
    pushed = push_image(registry, repo_name, image, tag="v1")
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault: {insecure-accept-anything: true}\n")
    store = tmp_path / "store"
    capfd.readouterr()
    assert main(["run", "--rm", "--store", str(store), "--policy", str(policy), pushed.by_digest]) == 0
    assert capfd.readouterr().out == "from A\nonly B\n"
    snapshots = store / "meta" / "snapshots" / "snapshots"
    assert len(list(snapshots.iterdir())) == 3  # busybox, B, A: the first A is not unpacked
    assert main(["gc", "--store", str(store)]) == 0
    assert len(list(snapshots.iterdir())) == 3  # all in use: gc computes the same stack
    capfd.readouterr()
    assert main(["audit", "--store", str(store), "--policy", str(policy)]) == 0
    audited = capfd.readouterr()
    assert "snapshot" not in audited.out + audited.err  # none missing, none unexpected
