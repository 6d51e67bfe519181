"""`trust gc` / `prune` and `trust rmi`: what is referenced stays, the rest goes, pulls are never broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.images import BUSYBOX_APPLETS, Layer, build_image, busybox_layer, push_image
from support.registry import Registry

from policy.admission import admit
from policy.loader import load_policy
from pull.clients import RegistryClients
from pull.digest import Digest
from pull.gc import reach
from pull.reference import Reference
from pull.store import ContentStore
from run.rootfs import open_snapshots, prepare_layers
from trust.cli.app import main

ROOT = Path(__file__).resolve().parents[1]


def accept_policy(folder: Path, scope: str) -> Path:
    path = folder / "policy.yaml"
    rule = f"  - scope: {scope}\n    insecure-accept-anything: true\n"
    path.write_text(f"version: 1\nrules:\n{rule}default:\n  reject: true\n")
    return path


def stored_blobs(store: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (store / "blobs" / "sha256").iterdir()}


def test_gc_keeps_everything_referenced_and_removes_the_rest(
    registry: Registry, repo_name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    shared = Layer.from_files({"etc/base": b"shared base\n"})
    keep = push_image(
        registry, f"{repo_name}/keep", build_image([shared, Layer.from_files({"k": b"keep"})]), tag="v1"
    )
    drop = push_image(
        registry, f"{repo_name}/drop", build_image([shared, Layer.from_files({"d": b"drop"})]), tag="v1"
    )
    policy = accept_policy(tmp_path, f"{registry.host}/{repo_name}")
    store_path = tmp_path / "store"
    store = ContentStore.open(store_path)
    with RegistryClients() as clients:
        images = {
            ref: admit(Reference.parse(ref), load_policy(policy), store, clients)
            for ref in (keep.by_digest, drop.by_digest)
        }
    snapshots = open_snapshots(store)
    for image in images.values():
        prepare_layers(image, store, snapshots)
    keep_blobs = {str(d) for d in reach(store, [Digest.parse(keep.digest)]).blobs}
    drop_only = {str(d) for d in reach(store, [Digest.parse(drop.digest)]).blobs} - keep_blobs
    orphan = store.put_bytes(b"nobody names me", Digest.of_bytes(b"nobody names me"))
    (store.ingest_dir / f"{Digest.of_bytes(b'x').encoded}.partial").write_bytes(b"half a download")
    assert len(snapshots.committed()) == 3  # shared base, keep's top, drop's top

    assert main(["rmi", "--store", str(store_path), drop.by_digest]) == 0
    assert capfd.readouterr().out.splitlines() == [
        f"untagged: {drop.by_digest}"
    ]  # admitted by digest: one name

    # --dry-run lists what would go, with sizes, and removes nothing.
    before = stored_blobs(store_path)
    assert main(["gc", "--dry-run", "--store", str(store_path), "--output", "json"]) == 0
    plan = json.loads(capfd.readouterr().out)
    planned = {(r["kind"], r["name"]) for r in plan["removed"]}
    assert planned >= {("blob", d) for d in drop_only} | {("blob", f"sha256:{orphan.name}")}
    assert not any(kind == "blob" and name in keep_blobs for kind, name in planned)
    assert (
        len([k for k, _ in planned if k == "snapshot"]) == 1
        and ("partial", f"{Digest.of_bytes(b'x').encoded}.partial") in planned
    )
    assert all(r["size"] > 0 for r in plan["removed"]) and plan["dryRun"]
    assert stored_blobs(store_path) == before and len(snapshots.committed()) == 3

    assert main(["prune", "--store", str(store_path)]) == 0  # the alias
    assert stored_blobs(store_path) == keep_blobs
    assert len(snapshots.committed()) == 2
    assert not list(store.ingest_dir.glob("*.partial"))
    # What stayed is intact and complete: the audit is clean, and a second gc removes nothing.
    assert main(["audit", "--store", str(store_path), "--policy", str(policy)]) == 0
    capfd.readouterr()
    assert main(["gc", "--store", str(store_path), "-o", "json"]) == 0
    assert json.loads(capfd.readouterr().out)["removed"] == []


def test_rmi_of_one_tag_keeps_an_image_another_tag_names(
    registry: Registry, repo_name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    image = build_image([Layer.from_files({"f": b"two tags"})])
    first = push_image(registry, repo_name, image, tag="one")
    push_image(registry, repo_name, image, tag="two")
    store = tmp_path / "store"
    for tag in ("one", "two"):
        assert main(["pull", "--store", str(store), f"{registry.host}/{repo_name}:{tag}"]) == 0
    assert main(["rmi", "--store", str(store), first.by_tag]) == 0
    assert main(["gc", "--store", str(store)]) == 0
    assert stored_blobs(store) == {
        first.digest,
        first.config.digest,
        *(layer.digest for layer in first.layers),
    }
    capfd.readouterr()
    assert main(["rmi", "--store", str(store), first.by_tag]) == 2
    assert "no image" in capfd.readouterr().err
    assert main(["rmi", "--store", str(store), f"{registry.host}/{repo_name}:two"]) == 0
    assert main(["gc", "--store", str(store)]) == 0
    assert stored_blobs(store) == set()


_PULLER = """
import sys
sys.path.insert(0, {tests!r})
from pull.digest import Digest
from pull.gc import reach
from pull.store import ContentStore
from trust.store_ops.audit import _rehash_blob, _NoProgress
from trust.cli.app import main

store_path, ref, digest, rounds = sys.argv[1], sys.argv[2], Digest.parse(sys.argv[3]), int(sys.argv[4])
store = ContentStore.open(store_path)
for n in range(rounds):
    assert main(["pull", "--store", store_path, ref]) == 0, "pull failed"
    closure = reach(store, [digest])
    assert not closure.missing and not closure.unreadable, (n, closure.missing, closure.unreadable)
    assert len(closure.blobs) == 6, (n, len(closure.blobs))
    for blob in closure.blobs:
        problems, _ = _rehash_blob(store, blob, _NoProgress())
        assert problems == [], (n, blob, problems)
    assert main(["rmi", "--store", store_path, ref]) == 0
print("rounds", rounds)
"""

_COLLECTOR = """
import os, sys
from trust.cli.app import main
store_path, stop = sys.argv[1], sys.argv[2]
runs = 0
while not os.path.exists(stop):
    assert main(["gc", "--store", store_path]) == 0
    runs += 1
print("gcs", runs)
"""


def test_gc_racing_pulls_leaves_both_correct(registry: Registry, repo_name: str, tmp_path: Path) -> None:
    layers = [Layer.from_files({f"layer{i}": os.urandom(1 << 20)}, compression="none") for i in range(4)]
    pushed = push_image(registry, repo_name, build_image(layers), tag="v1")
    store = tmp_path / "store"
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    collector = subprocess.Popen(
        [sys.executable, "-c", _COLLECTOR, str(store), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        time.sleep(0.5)  # let the collector start looping
        puller = subprocess.run(
            [
                sys.executable,
                "-c",
                _PULLER.format(tests=str(ROOT / "tests")),
                str(store),
                pushed.by_tag,
                pushed.digest,
                "12",
            ],
            capture_output=True,
            env=env,
            timeout=300,
        )
    finally:
        stop.touch()
        out, err = collector.communicate(timeout=60)
    assert puller.returncode == 0, puller.stderr.decode()[-2000:]
    assert collector.returncode == 0, err.decode()[-2000:]
    assert b"rounds 12" in puller.stdout
    assert int(out.split()[-1]) > 1  # gc really ran during the pulls
    # Both are consistent at the end: nothing is named, so a last gc leaves no blob.
    assert main(["gc", "--store", str(store)]) == 0
    assert stored_blobs(store) == set()


@pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (mounts, namespaces, cgroups)")
def test_rmi_refuses_while_a_container_uses_the_image(
    registry: Registry, repo_name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pushed = push_image(registry, repo_name, build_image([busybox_layer(applets=BUSYBOX_APPLETS)]), tag="v1")
    policy = accept_policy(tmp_path, f"{registry.host}/{repo_name}")
    store = tmp_path / "store"
    try:
        assert main(["create", "--store", str(store), "--policy", str(policy), pushed.by_digest, "true"]) == 0
        container_id = capfd.readouterr().out.strip()
        assert main(["rmi", "--store", str(store), pushed.by_digest]) == 2
        err = capfd.readouterr().err
        assert container_id[:12] in err and "rmi -f" in err
        assert main(["gc", "--store", str(store)]) == 0  # the container keeps its image's blobs and snapshots
        assert pushed.digest in stored_blobs(store)
        assert main(["rmi", "-f", "--store", str(store), pushed.by_digest]) == 0
        assert f"removed container {container_id[:12]}" in capfd.readouterr().err
        assert not (store / "meta" / "containers" / container_id).exists()
    finally:
        if (store / "meta" / "containers" / container_id).exists():
            main(["rm", "--force", "--store", str(store), container_id])
    assert main(["gc", "--store", str(store)]) == 0
    assert stored_blobs(store) == set()
    assert open_snapshots(ContentStore.open(store)).committed() == []


# -- lock files (issue 20, class 1: leftovers that grow) ----------------------------------------------


def test_gc_removes_the_lock_files_hundreds_of_commands_left_but_not_one_in_use(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from pull.lockfile import locked_file
    from run.snapshots import SnapshotStore

    store_path = tmp_path / "store"
    store = ContentStore.open(store_path)
    snapshots: SnapshotStore = open_snapshots(store)
    for i in range(300):  # what 300 pulls and unpacks of distinct blobs and chain IDs leave
        data = f"blob {i}".encode()
        store.put_bytes(data, Digest.of_bytes(data))
        with snapshots.locked(Digest.of_bytes(f"chain {i}".encode())):
            pass
    chain_locks = store.meta / "snapshots" / "locks"
    assert len(list(store.ingest_dir.glob("*.lock"))) == 300
    assert len(list(chain_locks.glob("*.lock"))) == 300

    busy = store.ingest_dir / f"{Digest.of_bytes(b'being pulled').encoded}.lock"
    with locked_file(busy):  # a pull in progress holds its blob's lock
        assert main(["gc", "--store", str(store_path), "-o", "json"]) == 0
        assert json.loads(capfd.readouterr().out)["staleLocks"] == 600
        assert [p.name for p in store.ingest_dir.glob("*.lock")] == [busy.name]
    assert list(chain_locks.glob("*.lock")) == []
    assert main(["gc", "--store", str(store_path)]) == 0
    assert "removed 1 unused lock file(s)" in capfd.readouterr().err
    assert list(store.ingest_dir.glob("*.lock")) == []
    # The store's own locks stay (they are one each, and always in use).
    assert {p.name for p in store.meta.glob("*.lock")} >= {"gc.lock", "store.lock"}


def test_a_locker_waiting_on_a_removed_lock_file_locks_the_new_one(tmp_path: Path) -> None:
    """The race lock removal must survive: a waiter holding the old file must not think it is alone."""
    import fcntl
    import threading

    from pull.lockfile import locked_file

    path = tmp_path / "x.lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(first, fcntl.LOCK_EX)
    acquired = threading.Event()
    release = threading.Event()

    def waiter() -> None:
        with locked_file(path):
            acquired.set()
            release.wait(10)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)  # the waiter has opened the old file and blocks on it
    path.unlink()  # what gc does, holding the lock
    os.close(first)
    assert acquired.wait(5)
    # The waiter holds the file now at `path`, not the removed one: nobody else can take it.
    probe = os.open(path, os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(probe)
    release.set()
    thread.join(5)
