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
from support.images import Layer
from support.tars import MEDIA_TYPES, file, tar

from policy.admitted import AdmittedImage, Decision, ImageLimits
from policy.errors import PolicyError
from policy.loader import load_policy_text
from pull.digest import Digest
from pull.errors import IntegrityError
from pull.manifest import Descriptor, ImageConfig
from pull.store import ContentStore
from run.rootfs import prepare_layers
from run.snapshots import SnapshotStore
from run.unpack import LayerLimitExceeded, unpack_layers

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers and tmpfs need root")

MiB = 1 << 20
GiB = 1 << 30


def _zeros_layer(content: ContentStore, size: int) -> tuple[Descriptor, Digest]:
    """A gzip layer holding one file of `size` zeros, stored in `content`; never all in memory."""
    info = tarfile.TarInfo("zeros")
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
def test_one_small_layer_listed_20_times_is_stopped_at_the_image_budget(tmp_path: Path) -> None:
    content = ContentStore.open(tmp_path / "content")
    layer, diff_id = _zeros_layer(content, 120 * MiB)
    assert layer.size < 200_000, "about 122 KB of gzip"
    # The snapshots live on a tmpfs smaller than two budgets: writing much beyond the budget would
    # fail with ENOSPC (an OSError), not with the limit.
    snapshots_root = tmp_path / "snapshots"
    snapshots_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1400m", "tmpfs", str(snapshots_root)], check=True)
    try:
        snapshots = SnapshotStore.open(snapshots_root / "s")
        started = time.monotonic()
        with pytest.raises(LayerLimitExceeded) as raised:
            unpack_layers(
                content,
                snapshots,
                [layer] * 20,
                [diff_id] * 20,
                image_limits=ImageLimits(max_unpacked_bytes=GiB),
            )
        elapsed = time.monotonic() - started
        message = str(raised.value)
        assert isinstance(raised.value, IntegrityError)  # exit 4
        assert "max-unpacked-bytes" in message and "limits: {max-unpacked-bytes" in message, message
        assert "\n" not in message
        # Up to 8 layers of 120 MiB fit the budget; the rest were never committed, and what was
        # partial is gone. The disk holds at most the budget.
        assert len(snapshots.committed()) <= 8
        assert _disk_used(snapshots_root) <= GiB + 16 * MiB
        assert elapsed < 60
    finally:
        subprocess.run(["umount", str(snapshots_root)], check=True)


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
