"""The host's faults (issue 20, class 2): a full disk, a read-only store, hostile input files.

Each is one line `trust: error: …` with the exit code of the table (docs/, DESIGN "Exit codes"),
never a traceback, and leaves nothing half-written. A full or read-only store is the host's doing,
not the image's: exit 5 ("could not check"), like an unreachable registry.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import OCI_LAYER_GZIP, HostileRegistry
from support.images import Layer, build_image, busybox_layer, push_image
from support.registry import Registry

from trust.cli.app import main

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind needs root")

LAYER = gzip.compress(os.urandom(600_000), compresslevel=1)  # does not fit a 256 KiB disk


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as registry:
        yield registry


def accept_all(folder: Path) -> Path:
    path = folder / "policy.yaml"
    path.write_text("version: 1\ndefault: {insecure-accept-anything: true, require-digest: false}\n")
    return path


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("trust: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_full_disk_during_pull_is_one_line_exit_5_and_nothing_half_written(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(store)], check=True)
    try:
        # In a process of its own: the hostile server's thread may print the client's hang-up here.
        trust = str(Path(sys.executable).with_name("trust"))
        pulled = subprocess.run(
            [trust, "pull", "--store", str(store), f"{hostile.host}/team/app:v1"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        line = one_error_line(pulled.stderr)
        assert pulled.returncode == 5, pulled.stderr
        assert "No space left on device" in line and "the disk is full" in line
        assert list((store / "ingest").glob("*.partial")) == []
        assert not (store / "blobs" / "sha256" / image.layers[0].split(":")[1]).exists()
        assert image.digest not in (store / "index.json").read_text()
        # What is there is sound: audit (read-only work) passes.
        assert main(["audit", "--store", str(store), "--policy", str(accept_all(tmp_path))]) == 0
    finally:
        subprocess.run(["umount", str(store)], check=True)


@pytest.fixture
def read_only_store(hostile: HostileRegistry, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A store holding one pulled image (its tag is yielded), then bind-mounted read-only over itself."""
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    (tmp_path / "pinned").write_text(f"{hostile.host}/team/app@{image.digest}")
    store = tmp_path / "store"
    reference = f"{hostile.host}/team/app:v1"
    assert main(["pull", "--store", str(store), reference]) == 0
    (store / "ingest").joinpath("sha256-" + "0" * 64 + ".lock").touch()  # something for gc to want
    subprocess.run(["mount", "--bind", str(store), str(store)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(store)], check=True)
        yield store, reference
    finally:
        subprocess.run(["umount", str(store)], check=True)


def test_audit_of_a_read_only_store_works_and_says_it_records_nothing(
    read_only_store: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = read_only_store
    capsys.readouterr()
    assert main(["audit", "--store", str(store), "--policy", str(accept_all(tmp_path))]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"the store {store} is read-only" in captured.err and "without recording anything" in captured.err
    assert "team/app:v1" in captured.out and "ok" in captured.out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["pull", "REF"], "Read-only file system"),
        (["rmi", "REF"], "Read-only file system"),
        (["gc"], "is read-only: gc can remove nothing"),
        (["run", "--rm", "--policy", "POLICY", "PINNED", "true"], "Read-only file system"),
        (["create", "--policy", "POLICY", "PINNED", "true"], "Read-only file system"),
    ],
)
def test_writing_to_a_read_only_store_is_one_line_exit_5(
    read_only_store: tuple[Path, str],
    command: list[str],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, reference = read_only_store
    capsys.readouterr()
    pinned = (tmp_path / "pinned").read_text()
    replace = {"REF": reference, "PINNED": pinned, "POLICY": str(accept_all(tmp_path))}
    args = [replace.get(arg, arg) for arg in command]
    assert main([args[0], "--store", str(store), *args[1:]]) == 5
    line = one_error_line(capsys.readouterr().err)
    assert expected in line
    # Reading still works: gc --dry-run and images.
    assert main(["gc", "--dry-run", "--store", str(store)]) == 0
    assert main(["images", "--store", str(store)]) == 0
    assert main(["ps", "--all", "--store", str(store)]) == 0  # no containers: nothing to refresh
    assert main(["inspect", "--store", str(store), "abc"]) == 2  # no such container, not a crash
    with open("/proc/self/mountinfo") as mountinfo:  # nothing of a container was mounted
        assert [entry for entry in mountinfo if str(store) in entry and "overlay" in entry] == []


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("rules:\n  - scope: a.example/x\n    signed-by: [x]\n    threshold: " + "9" * 5000 + "\n", 5,
         "(5000 characters) cannot be read as a number"),
        ("default:\n  reject: true\n  mode: 'enf\0orce'\n", 4, "character U+0000 is not allowed"),
        ("default:\n  reject: true\n  mode: enf\x07orce\n", 4, "character U+0007 is not allowed"),
        ("default:\n  reject: true\n\x1b[2J\n", 4, "character U+001B is not allowed"),
    ],
)  # fmt: skip
def test_a_policy_with_a_huge_number_or_a_control_character_is_exit_2_with_file_and_line(
    content: str, line: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n" + content)
    assert main(["policy", "check", str(policy)]) == 2
    error = one_error_line(capsys.readouterr().err)
    assert error.startswith(f"trust: error: {policy}:{line}: ") and message in error, error


def test_a_non_utf8_password_on_stdin_is_exit_2_before_any_request(
    hostile: HostileRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"s3cr\xffet\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setenv("DOCKER_CONFIG", str(Path(os.environ.get("TMPDIR", "/tmp")) / "unused-docker-config"))
    assert main(["login", hostile.host, "-u", "alice", "--password-stdin"]) == 2
    assert one_error_line(capsys.readouterr().err) == "trust: error: the password on stdin is not UTF-8 text"
    assert hostile.requests == []


@pytest.mark.parametrize("bad", ["a,b", "a:b", "a\nb"])
def test_a_store_path_overlay_cannot_mount_is_refused_before_pulling(
    bad: str, hostile: HostileRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    store = tmp_path / bad
    assert main(["pull", "--store", str(store), f"{hostile.host}/team/app:v1"]) == 2
    assert "contains ',', ':' or a newline" in one_error_line(capsys.readouterr().err)
    assert hostile.requests == [] and not store.exists()


# -- trust run: the policy's image limits, and a root without CAP_SYS_ADMIN ------------------------


def _two_layer_image(registry: Registry, repo_name: str, tmp_path: Path, limits: str) -> tuple[Path, str]:
    image = build_image([busybox_layer(), Layer.from_files({"etc/extra": b"x" * 4096})], cmd=["true"])
    pushed = push_image(registry, repo_name, image, tag="v1")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nrules:\n"
        f"  - scope: {registry.host}/{repo_name}\n    insecure-accept-anything: true\n    limits: {limits}\n"
        "default: {reject: true}\n"
    )
    return policy, pushed.by_digest


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{max-layers: 1}", "max-layers limit: it has 2 layers, more than 1"),
        ("{max-unpacked-bytes: 100000}", "max-unpacked-bytes limit: its layers unpack to more than"),
        ("{max-files: 3}", "max-files limit: its layers hold more than 3 entries"),
    ],
)
def test_run_refuses_an_image_beyond_its_rules_limits_in_one_line_exit_4(
    limits: str,
    message: str,
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    policy, reference = _two_layer_image(registry, repo_name, tmp_path, limits)
    store = tmp_path / "store"
    code = main(["run", "--rm", "--store", str(store), "--policy", str(policy), reference])
    line = one_error_line(capfd.readouterr().err)
    assert code == 4, line
    assert message in line and "raise it in the policy rule for this image" in line, line
    assert list((store / "meta" / "snapshots" / "tmp").iterdir()) == []  # partial layers discarded
    containers = store / "meta" / "containers"
    assert not containers.exists() or [p for p in containers.iterdir() if not p.name.startswith(".")] == []
    assert main(["audit", "--store", str(store), "--policy", str(policy)]) == 0


def test_run_as_root_without_cap_sys_admin_is_one_line_and_leaves_nothing(
    registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    policy, reference = _two_layer_image(registry, repo_name, tmp_path, "{max-layers: 10}")
    store = tmp_path / "store"
    trust = str(Path(sys.executable).with_name("trust"))
    result = subprocess.run(
        ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--",
         trust, "run", "--rm", "--store", str(store), "--policy", str(policy), reference, "true"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    line = one_error_line(result.stderr)
    assert result.returncode == 5, result.stderr
    assert "Operation not permitted" in line or "not permitted" in line, line
    with open("/proc/self/mountinfo") as mountinfo:
        assert not [entry for entry in mountinfo if str(store) in entry]
    containers = store / "meta" / "containers"
    assert not containers.exists() or [p for p in containers.iterdir() if not p.name.startswith(".")] == []


def test_a_full_disk_during_unpack_is_one_line_exit_5_and_no_half_snapshot(
    registry: Registry, repo_name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    image = build_image([Layer.from_files({"big": os.urandom(1 << 20)})], cmd=["true"])
    pushed = push_image(registry, repo_name, image, tag="v1")
    policy = accept_all(tmp_path)
    store = tmp_path / "store"
    snapshots = store / "meta" / "snapshots"
    snapshots.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(snapshots)], check=True)
    try:
        code = main(["run", "--rm", "--store", str(store), "--policy", str(policy), pushed.by_digest])
        line = one_error_line(capfd.readouterr().err)
        assert code == 5, line
        assert "No space left on device" in line
        assert list((snapshots / "tmp").iterdir()) == []  # the partial layer was discarded
        assert list((snapshots / "snapshots").iterdir()) == []
        assert main(["audit", "--store", str(store), "--policy", str(policy)]) == 0
    finally:
        subprocess.run(["umount", str(snapshots)], check=True)
