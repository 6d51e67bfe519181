"""Chain-ID snapshots: the store's protocol, its locks, and `unpack_layers` on top of it."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from support.images import Layer
from support.tars import MEDIA_TYPES, directory, file, tar, whiteout

from pull.digest import Digest
from pull.errors import CouldNotCheck, DigestMismatch, IntegrityError, InvalidManifest
from pull.manifest import Descriptor
from pull.store import ContentStore
from run.snapshots import METADATA_FILE, SnapshotNotFound, SnapshotStore, chain_ids
from run.unpack import UnpackedLayer, UnsafeLayer, unpack_layers

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root (mknod, chown)")

D1 = Digest.of_bytes(b"layer one")
D2 = Digest.of_bytes(b"layer two")
D3 = Digest.of_bytes(b"layer three")


# -- chain IDs --------------------------------------------------------------------------------------


def test_chain_ids_follow_the_oci_definition() -> None:
    """ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))."""
    c2 = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256(f"{c2} {D3}".encode()).hexdigest()
    assert [str(c) for c in chain_ids([D1, D2, D3])] == [str(D1), c2, c3]
    assert chain_ids([]) == []


def test_chain_ids_depend_on_the_whole_stack_below() -> None:
    assert chain_ids([D1, D2])[1] != chain_ids([D3, D2])[1]
    assert chain_ids([D1, D2]) == chain_ids([D1, D2, D3])[:2]


# -- the store --------------------------------------------------------------------------------------


def test_open_creates_a_private_layout(tmp_path: Path) -> None:
    SnapshotStore.open(tmp_path / "snaps")
    for sub in ("", "snapshots", "tmp", "locks"):
        assert stat.S_IMODE((tmp_path / "snaps" / sub).stat().st_mode) == 0o700


def test_prepare_commit_and_look_up(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    chain = chain_ids([D1, D2])
    prepared = store.prepare(chain[1])
    assert prepared.name == "fs" and prepared.parent.parent == tmp_path / "tmp"
    assert os.listdir(prepared) == []
    (prepared / "hello").write_bytes(b"hi")
    assert not store.exists(chain[1])

    path = store.commit(prepared, chain[1], diff_id=D2, layer_digest=D3, media_type=MEDIA_TYPES["gzip"])
    assert path == store.path(chain[1]) and (path / "hello").read_bytes() == b"hi"
    assert store.exists(chain[1])
    assert os.listdir(tmp_path / "tmp") == []
    # The snapshot directory and its metadata are read-only; the tree keeps the layer's own modes.
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o555
    assert stat.S_IMODE((path.parent / METADATA_FILE).stat().st_mode) == 0o444
    assert stat.S_IMODE(path.stat().st_mode) == 0o755

    info = store.info(chain[1])
    assert (info.chain_id, info.diff_id, info.layer_digest) == (chain[1], D2, D3)
    assert info.media_type == MEDIA_TYPES["gzip"] and not info.synced
    assert info.created.endswith("Z")
    meta = json.loads((path.parent / METADATA_FILE).read_text())
    assert meta["chainId"] == str(chain[1]) and meta["diffId"] == str(D2)
    assert store.committed() == [chain[1]]


def test_the_first_committer_wins(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    first, second = store.prepare(D1), store.prepare(D1)
    (first / "from").write_bytes(b"first")
    (second / "from").write_bytes(b"second")
    store.commit(first, D1, diff_id=D1, layer_digest=D1, media_type="")
    path = store.commit(second, D1, diff_id=D1, layer_digest=D1, media_type="")
    assert (path / "from").read_bytes() == b"first"
    assert os.listdir(tmp_path / "tmp") == [], "the loser's directory was removed"


def test_commit_refuses_a_directory_prepared_for_another_chain_id(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    prepared = store.prepare(D1)
    with pytest.raises(RuntimeError, match="another chain ID"):
        store.commit(prepared, D2, diff_id=D2, layer_digest=D2, media_type="")
    with pytest.raises(RuntimeError, match="not a snapshot prepared by this store"):
        store.discard(tmp_path / "elsewhere")


def test_discard_and_remove(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    prepared = store.prepare(D1)
    (prepared / "x").mkdir(mode=0)
    store.discard(prepared)
    assert os.listdir(tmp_path / "tmp") == []
    store.commit(store.prepare(D1), D1, diff_id=D1, layer_digest=D1, media_type="")
    store.remove(D1)
    assert not store.exists(D1) and os.listdir(tmp_path / "snapshots") == []


def test_lowerdirs_are_top_most_first_and_must_exist(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    chain = chain_ids([D1, D2, D3])
    for chain_id in chain[:2]:
        store.commit(store.prepare(chain_id), chain_id, diff_id=D1, layer_digest=D1, media_type="")
    assert store.lowerdirs(chain[:2]) == [store.path(chain[1]), store.path(chain[0])]
    with pytest.raises(SnapshotNotFound, match=str(chain[2])):
        store.lowerdirs(chain)


def test_info_rejects_metadata_for_another_chain_id(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    store.commit(store.prepare(D1), D1, diff_id=D1, layer_digest=D1, media_type="")
    meta = tmp_path / "snapshots" / D1.encoded / METADATA_FILE
    meta.chmod(0o644)
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "chainId": str(D2)}))
    with pytest.raises(IntegrityError, match="records chain ID"):
        store.info(D1)
    with pytest.raises(SnapshotNotFound):
        store.info(D2)


def test_the_chain_id_lock_serialises_threads(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    held = threading.Event()
    order: list[str] = []

    def holder() -> None:
        with store.locked(D1):
            held.set()
            time.sleep(0.3)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    started = time.monotonic()
    with store.locked(D1):
        order.append("waiter in")
    thread.join()
    assert order == ["holder done", "waiter in"]
    assert time.monotonic() - started >= 0.2
    with store.locked(D2):  # other chain IDs do not wait
        pass


def test_prepare_under_the_lock_removes_crashed_extractions(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    crashed = store.prepare(D1)  # prepared without the lock, as a crashed process would leave it
    other = store.prepare(D2)
    with store.locked(D1):
        fresh = store.prepare(D1)
    assert not crashed.exists() and fresh.exists() and other.exists()


def test_remove_stale_skips_extractions_in_progress(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path)
    busy_store = SnapshotStore.open(tmp_path)
    stale = store.prepare(D1)
    with busy_store.locked(D2):
        busy = busy_store.prepare(D2)
        assert store.remove_stale() == 1
        assert busy.exists() and not stale.exists()


# -- unpack_layers ----------------------------------------------------------------------------------


def _image(tmp_path: Path, *tars: bytes) -> tuple[ContentStore, list[Descriptor], list[Digest]]:
    content = ContentStore.open(tmp_path / "content")
    descriptors, diff_ids = [], []
    for raw in tars:
        layer = Layer.from_tar(raw, compression="gzip")
        digest = Digest.parse(layer.digest)
        content.put_bytes(layer.blob(), digest)
        descriptors.append(Descriptor(MEDIA_TYPES["gzip"], digest, layer.size))
        diff_ids.append(Digest.parse(layer.diff_id))
    return content, descriptors, diff_ids


LAYER_TARS = (
    tar(directory("etc", mode=0o750, uid=3), file("etc/a", b"a"), file("etc/gone", b"g")),
    tar(whiteout("etc/gone"), file("etc/b", b"b")),  # no "etc" entry: inherits 0750, uid 3
    tar(file("etc/c", b"c"), file("usr/bin/x", b"x")),
)


@needs_root
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_unpack_layers_commits_every_layer_once(workers: int, tmp_path: Path) -> None:
    content, layers, diff_ids = _image(tmp_path, *LAYER_TARS)
    snapshots = SnapshotStore.open(tmp_path / "snapshots")
    result = unpack_layers(content, snapshots, layers, diff_ids, workers=workers)
    assert [r.chain_id for r in result] == chain_ids(diff_ids)
    assert all(r.stats is not None for r in result)
    assert all(snapshots.exists(r.chain_id) for r in result)
    for r, layer, diff_id in zip(result, layers, diff_ids, strict=True):
        info = snapshots.info(r.chain_id)
        assert (info.layer_digest, info.diff_id) == (layer.digest, diff_id)
    # Implicit directories got the metadata of the layers below, whatever order threads finished in.
    for r in result[1:]:
        st = (r.path / "etc").lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o750, 3)
    assert os.listdir(tmp_path / "snapshots/tmp") == []

    again = unpack_layers(content, snapshots, layers, diff_ids, workers=workers)
    assert [r.stats for r in again] == [None, None, None], "existing snapshots are reused"
    assert [r.path for r in again] == [r.path for r in result]


@needs_root
def test_a_layer_with_the_wrong_diff_id_is_never_committed(tmp_path: Path) -> None:
    content, layers, diff_ids = _image(tmp_path, *LAYER_TARS)
    diff_ids[1] = Digest.of_bytes(b"what the config claims")
    snapshots = SnapshotStore.open(tmp_path / "snapshots")
    with pytest.raises(DigestMismatch, match=str(layers[1].digest)):
        unpack_layers(content, snapshots, layers, diff_ids, workers=1)
    chain = chain_ids(diff_ids)
    assert snapshots.exists(chain[0])
    assert not snapshots.exists(chain[1]) and not snapshots.exists(chain[2])
    assert os.listdir(tmp_path / "snapshots/tmp") == []


@needs_root
def test_a_failing_layer_in_parallel_reports_the_bottom_most_error(tmp_path: Path) -> None:
    hostile = tar(file("../escape", b"x"))
    content, layers, diff_ids = _image(tmp_path, LAYER_TARS[0], hostile, LAYER_TARS[1], hostile)
    snapshots = SnapshotStore.open(tmp_path / "snapshots")
    with pytest.raises(UnsafeLayer, match=str(layers[1].digest)):
        unpack_layers(content, snapshots, layers, diff_ids, workers=4)
    chain = chain_ids(diff_ids)
    assert [snapshots.exists(c) for c in chain][1:] == [False, False, False]
    assert os.listdir(tmp_path / "snapshots/tmp") == []


def test_layer_and_diff_id_counts_must_match(tmp_path: Path) -> None:
    content, layers, diff_ids = _image(tmp_path, *LAYER_TARS)
    with pytest.raises(InvalidManifest, match="3 layers but the config has 2 diff_ids"):
        unpack_layers(content, SnapshotStore.open(tmp_path / "s"), layers, diff_ids[:2])


def test_a_layer_missing_from_the_content_store(tmp_path: Path) -> None:
    content = ContentStore.open(tmp_path / "content")
    layer = Descriptor(MEDIA_TYPES["gzip"], D1, 10)
    with pytest.raises(CouldNotCheck, match="pull the image first"):
        unpack_layers(content, SnapshotStore.open(tmp_path / "s"), [layer], [D2])


def _unpack_in_child(
    content_root: str, snapshot_root: str, tars: tuple[bytes, ...], out: multiprocessing.Queue[int]
) -> None:
    content, layers, diff_ids = _image(Path(content_root), *tars)
    result: list[UnpackedLayer] = unpack_layers(
        content, SnapshotStore.open(Path(snapshot_root)), layers, diff_ids, workers=2
    )
    out.put(sum(r.stats is not None for r in result))


@needs_root
def test_two_processes_unpack_each_layer_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[int] = context.Queue()
    big = tar(*[file(f"f{i}", os.urandom(20_000)) for i in range(200)])  # slow enough to overlap
    tars = (big, *LAYER_TARS)
    children = [
        context.Process(target=_unpack_in_child, args=(str(tmp_path), str(tmp_path / "snapshots"), tars, out))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    applied = [out.get(timeout=5), out.get(timeout=5)]
    assert sum(applied) == len(tars), f"each layer unpacked by exactly one process: {applied}"
    assert len(SnapshotStore.open(tmp_path / "snapshots").committed()) == len(tars)
