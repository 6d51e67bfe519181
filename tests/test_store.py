"""The content store: only verified bytes become visible, concurrency and crashes are safe."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from pull import mediatypes as mt
from pull.digest import Digest
from pull.errors import DigestMismatch, IntegrityError, SizeMismatch
from pull.manifest import Descriptor
from pull.store import ContentStore

DATA = b"hello, verified world\n" * 1000
DIGEST = Digest.of_bytes(DATA)


def visible_blobs(store: ContentStore) -> list[Path]:
    return [p for p in (store.blobs).rglob("*") if p.is_file()]


def test_layout_and_permissions(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path / "store")
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((store.root / "index.json").read_text())["manifests"] == []
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    path = store.put_bytes(DATA, DIGEST)
    assert path == store.root / "blobs" / "sha256" / DIGEST.hex
    assert path.read_bytes() == DATA
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert list(store.ingest_dir.glob("*.partial")) == []


def test_longer_blob_is_cut_at_size_plus_one(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    with pytest.raises(SizeMismatch, match="longer than"), store.ingest(DIGEST, len(DATA)) as writer:
        assert writer is not None
        writer.write(DATA)
        writer.write(b"x")
    assert visible_blobs(store) == []
    assert list(store.ingest_dir.glob("*.partial")) == []


def test_shorter_blob_and_wrong_digest_are_never_visible(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    with pytest.raises(SizeMismatch, match="promises"), store.ingest(DIGEST, len(DATA)) as writer:
        assert writer is not None
        writer.write(DATA[:-1])
    tampered = b"H" + DATA[1:]
    with pytest.raises(DigestMismatch, match=str(DIGEST)), store.ingest(DIGEST, len(DATA)) as writer:
        assert writer is not None
        writer.write(tampered)
    assert visible_blobs(store) == []
    assert not store.has(DIGEST)


def test_existing_blob_is_not_written_again(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    store.put_bytes(DATA, DIGEST)
    with store.ingest(DIGEST, len(DATA)) as writer:
        assert writer is None


def test_read_blob_rehashes_and_detects_tampering(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    path = store.put_bytes(DATA, DIGEST)
    assert store.read_blob(DIGEST, len(DATA)) == DATA
    with pytest.raises(IntegrityError, match="larger than"):
        store.read_blob(DIGEST, 10)
    os.chmod(path, 0o644)
    path.write_bytes(b"X" + DATA[1:])
    with pytest.raises(DigestMismatch, match="modified on disk"):
        store.read_blob(DIGEST, len(DATA))


def test_refs_replace_and_require_content(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    store.put_bytes(DATA, DIGEST)
    descriptor = Descriptor(mt.OCI_MANIFEST, DIGEST, len(DATA))
    store.set_refs(descriptor, ["reg/app:v1", f"reg/app@{DIGEST}"])
    assert store.resolve("reg/app:v1") == descriptor
    other = Digest.of_bytes(b"other")
    with pytest.raises(IntegrityError, match="not in the store"):
        store.set_refs(Descriptor(mt.OCI_MANIFEST, other, 5), ["reg/app:v1"])
    store.put_bytes(b"other", other)
    store.set_refs(Descriptor(mt.OCI_MANIFEST, other, 5), ["reg/app:v1"])
    assert [(r.name, r.descriptor.digest) for r in store.refs()] == [
        (f"reg/app@{DIGEST}", DIGEST),
        ("reg/app:v1", other),
    ]
    store.remove_refs(["reg/app:v1"])
    assert store.resolve("reg/app:v1") is None


def test_naming_what_is_already_named_does_not_rewrite_the_index(tmp_path: Path) -> None:
    store = ContentStore.open(tmp_path)
    store.put_bytes(DATA, DIGEST)
    descriptor = Descriptor(mt.OCI_MANIFEST, DIGEST, len(DATA))
    store.set_refs(descriptor, ["reg/app:v1"])
    before = (tmp_path / "index.json").stat().st_ino
    store.set_refs(descriptor, ["reg/app:v1"])  # `trust run` re-admits the same image every time
    assert (tmp_path / "index.json").stat().st_ino == before
    store.remove_refs(["reg/app:gone"])  # e.g. a cached `.sig` tag the registry never had
    assert (tmp_path / "index.json").stat().st_ino == before
    store.set_refs(descriptor, ["reg/app:v1", "reg/app:v2"])
    assert (tmp_path / "index.json").stat().st_ino != before
    assert [ref.name for ref in store.refs()] == ["reg/app:v1", "reg/app:v2"]


def _slow_writer(root: str, delay: float, out: multiprocessing.Queue[str]) -> None:
    store = ContentStore.open(root)
    with store.ingest(DIGEST, len(DATA)) as writer:
        if writer is None:
            out.put("existed")
            return
        for i in range(0, len(DATA), 1000):
            writer.write(DATA[i : i + 1000])
            time.sleep(delay)
    out.put("wrote")


def test_two_processes_store_a_blob_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_slow_writer, args=(str(tmp_path), 0.002, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted([out.get(timeout=5), out.get(timeout=5)]) == ["existed", "wrote"]
    store = ContentStore.open(tmp_path)
    assert store.read_blob(DIGEST, len(DATA)) == DATA


def test_killed_writer_leaves_no_blob_and_next_writer_completes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[str] = ctx.Queue()
    victim = ctx.Process(target=_slow_writer, args=(str(tmp_path), 0.05, out))
    victim.start()
    store = ContentStore.open(tmp_path)
    deadline = time.monotonic() + 10
    while not list(store.ingest_dir.glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert visible_blobs(store) == []
    # The lock died with the process; the next writer truncates the partial file and completes.
    _slow_writer(str(tmp_path), 0, out)
    assert out.get(timeout=5) == "wrote"
    assert store.read_blob(DIGEST, len(DATA)) == DATA
    assert list(store.ingest_dir.glob("*.partial")) == []
