"""`trust pull` against a registry that lies: nothing unverified reaches the store, exit codes are right.

These drive the real CLI entry point (`trust.cli.app.main`) in-process against `HostileRegistry`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, HostileRegistry, Reply, sha256

from trust.cli.app import main

LAYER = gzip.compress(os.urandom(300_000), compresslevel=1)


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as registry:
        yield registry


def pull(store: Path, *args: str) -> int:
    return main(["pull", "--store", str(store), *args])


def stored_blobs(store: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (store / "blobs" / "sha256").glob("*")} if store.exists() else set()


def assert_nothing_unverified(store: Path) -> None:
    if store.exists():
        for digest in stored_blobs(store):
            data = (store / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
            assert sha256(data) == digest
        assert list((store / "ingest").glob("*.partial")) == []


def test_good_image_pulls(
    hostile: HostileRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 0
    assert capsys.readouterr().out.strip() == f"{hostile.host}/team/app@{image.digest}"
    assert {image.digest, image.config_digest, *image.layers} <= stored_blobs(tmp_path)


def test_tampered_blob_is_refused_and_not_stored(
    hostile: HostileRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    hostile.add_blob(image.layers[0], bytes(len(LAYER)))  # right size, wrong bytes
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 4
    err = capsys.readouterr().err
    assert image.layers[0] in err and err.count("\n") == 1
    assert image.layers[0] not in stored_blobs(tmp_path)
    assert image.digest not in stored_blobs(tmp_path)
    assert json.loads((tmp_path / "index.json").read_text())["manifests"] == []
    assert_nothing_unverified(tmp_path)


def test_longer_blob_is_not_read_past_its_size(hostile: HostileRegistry, tmp_path: Path) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    endless = (b"\0" * (1 << 20) for _ in range(200))  # 200 MiB that the client must not read
    hostile.add_route(
        "GET", f"/v2/team/app/blobs/{image.layers[0]}", lambda _r: Reply(200, layer_then(endless))
    )
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 4
    request = next(r for r in hostile.requests if r.path.endswith(image.layers[0]))
    request.finished.wait(10)
    assert request.bytes_sent < len(LAYER) + 32 * (1 << 20)
    assert image.layers[0] not in stored_blobs(tmp_path)
    assert_nothing_unverified(tmp_path)


def layer_then(rest: Iterator[bytes]) -> Iterator[bytes]:
    yield LAYER
    yield from rest


def test_oversized_manifest_is_refused_without_reading_it_all(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    big = b'{"schemaVersion": 2, "pad": "' + b"x" * (6 << 20) + b'"}'
    hostile.add_manifest("team/app", "big", big, OCI_MANIFEST)
    assert pull(tmp_path, f"{hostile.host}/team/app:big") == 4
    assert stored_blobs(tmp_path) == set()


@pytest.mark.parametrize("confusion", ["content-type", "both-lists"])
def test_index_manifest_confusion_is_refused(
    hostile: HostileRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str], confusion: str
) -> None:
    image = hostile.add_image("team/app", None, [LAYER], layer_media_type=OCI_LAYER_GZIP)
    if confusion == "content-type":
        hostile.add_manifest("team/app", "v1", image.manifest, OCI_INDEX)
        fragment = "does not match"
    else:
        doc = json.loads(image.manifest)
        doc["manifests"] = [{"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}]
        hostile.add_manifest("team/app", "v1", json.dumps(doc).encode())
        fragment = "CVE-2021-41190"
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 4
    assert fragment in capsys.readouterr().err
    assert stored_blobs(tmp_path) == set()


def test_pinned_digest_must_match_served_bytes(hostile: HostileRegistry, tmp_path: Path) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    other = hostile.add_image("team/app", "v2", [LAYER + b"\0"], layer_media_type=OCI_LAYER_GZIP)
    # The registry answers the request for `image.digest` with other bytes.
    hostile.add_route("GET", f"/v2/team/app/manifests/{image.digest}", lambda _r: Reply(200, other.manifest))
    assert pull(tmp_path, f"{hostile.host}/team/app@{image.digest}") == 4
    assert stored_blobs(tmp_path) == set()


def test_diff_id_count_mismatch_is_refused(hostile: HostileRegistry, tmp_path: Path) -> None:
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    hostile.add_image("team/app", "v1", [LAYER], config=config, layer_media_type=OCI_LAYER_GZIP)
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 4


def test_index_entry_pointing_at_another_platform_is_refused(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    arm_config = json.dumps(
        {"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(b"x")]}}
    ).encode()
    image = hostile.add_image("team/app", None, [LAYER], config=arm_config, layer_media_type=OCI_LAYER_GZIP)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    hostile.add_manifest("team/app", "multi", json.dumps(index).encode())
    assert pull(tmp_path, "--platform", "linux/amd64", f"{hostile.host}/team/app:multi") == 4


def test_schema1_is_refused(hostile: HostileRegistry, tmp_path: Path) -> None:
    doc = {"schemaVersion": 1, "name": "team/app", "tag": "v1", "fsLayers": [], "history": []}
    hostile.add_manifest(
        "team/app",
        "old",
        json.dumps(doc).encode(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
    assert pull(tmp_path, f"{hostile.host}/team/app:old") == 4


def test_throttling_is_waited_out(hostile: HostileRegistry, tmp_path: Path) -> None:
    hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    hostile.fail_next("GET", "/v2/team/app/manifests/v1", Reply(429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 0
    assert time.monotonic() - started >= 0.9
    assert len([r for r in hostile.requests if r.path == "/v2/team/app/manifests/v1"]) == 2


def test_persistent_throttling_is_could_not_check(hostile: HostileRegistry, tmp_path: Path) -> None:
    hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    hostile.fail_next(
        "GET", "/v2/team/app/manifests/v1", Reply(429, headers={"Retry-After": "3600"}), times=99
    )
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 5


def test_credentials_do_not_follow_blob_redirects(
    hostile: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    hostile.require_bearer(username="alice", password="s3cret")
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    auth = {"auths": {hostile.host: {"username": "alice", "password": "s3cret"}}}
    (docker_config / "config.json").write_text(json.dumps(auth))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    with HostileRegistry("127.0.0.2") as storage:
        for digest in (image.config_digest, *image.layers):
            storage.add_blob(digest, hostile.blob(digest) or b"")
        hostile.redirect_blobs_to(storage)
        assert pull(tmp_path / "store", f"{hostile.host}/team/app:v1") == 0
        assert storage.requests, "blobs were fetched from the storage host"
        assert all(r.header("authorization") is None for r in storage.requests)
    assert any(r.header("authorization") for r in hostile.requests)


@pytest.mark.parametrize(
    ("make_ref", "code"),
    [
        (lambda h: "Not/Valid", 2),
        (lambda h: f"{h}/team/app:v1@sha256:short", 2),
        (lambda h: f"{h}/team/missing:v1", 5),
        (lambda h: "127.0.0.1:1/team/app:v1", 5),
    ],
)
def test_exit_codes(
    hostile: HostileRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_ref: object, code: int
) -> None:
    assert callable(make_ref)
    assert pull(tmp_path, make_ref(hostile.host)) == code
    err = capsys.readouterr().err
    assert err.startswith("trust: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_credentials_are_could_not_check(
    hostile: HostileRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    hostile.require_basic("alice", "s3cret")
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {hostile.host: {"username": "alice", "password": "wrong"}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert pull(tmp_path / "store", f"{hostile.host}/team/app:v1") == 5
    assert "s3cret" not in capsys.readouterr().err


def test_killed_pull_leaves_no_partial_blob_and_next_pull_completes(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    big = gzip.compress(os.urandom(4 << 20), compresslevel=1)
    image = hostile.add_image("team/app", "v1", [big], layer_media_type=OCI_LAYER_GZIP)

    def trickle(_request: object) -> Reply:
        def body() -> Iterator[bytes]:
            for i in range(0, len(big), 64 << 10):
                yield big[i : i + (64 << 10)]
                time.sleep(0.05)

        return Reply(200, body(), headers={"Content-Length": str(len(big))})

    hostile.add_route("GET", re.compile(f"/v2/team/app/blobs/{image.layers[0]}"), trickle, times=1)
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trust", "pull", "--store", str(store), f"{hostile.host}/team/app:v1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = store / "ingest" / f"sha256-{image.layers[0].split(':')[1]}.partial"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < (256 << 10)):
        time.sleep(0.02)
    assert partial.exists(), "the pull was downloading the layer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert image.layers[0] not in stored_blobs(store)
    assert json.loads((store / "index.json").read_text())["manifests"] == []
    assert pull(store, f"{hostile.host}/team/app:v1") == 0
    assert image.layers[0] in stored_blobs(store)
    assert_nothing_unverified(store)


def test_deeply_nested_manifest_is_refused_not_a_crash(
    hostile: HostileRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Python's json recurses per nesting level: 10 kB of '[' would be a RecursionError (exit 1).
    hostile.add_manifest("team/app", "deep", b"[" * 10_000 + b"]" * 10_000, OCI_MANIFEST)
    assert pull(tmp_path, f"{hostile.host}/team/app:deep") == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nested too deeply" in err[0]
    assert stored_blobs(tmp_path) == set()


# -- slow transfers (issue 20, class 1) --------------------------------------------------------------


def _trickle(data: bytes, pause: float) -> Iterator[bytes]:
    """`data` one byte at a time, `pause` seconds apart: every read well inside the read timeout."""
    for i in range(len(data)):
        time.sleep(pause)
        yield data[i : i + 1]


def _small_pace(monkeypatch: pytest.MonkeyPatch, **settings: float) -> None:
    """The CLI's PullConfig, with test-sized pace settings (the defaults take 30 s to notice)."""
    import trust.cli.images as images
    from pull.records import replace

    original = images.pull_config
    monkeypatch.setattr(
        images,
        "pull_config",
        lambda *args, **kwargs: replace(original(*args, **kwargs), **settings),
    )


def test_a_blob_trickling_a_byte_per_half_second_is_abandoned(
    hostile: HostileRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    layer_path = f"/v2/team/app/blobs/{image.layers[0]}"
    hostile.add_route(
        "GET",
        layer_path,
        lambda _r: Reply(200, _trickle(LAYER, 0.5), headers={"Content-Length": str(len(LAYER))}),
    )
    _small_pace(monkeypatch, read_timeout=5.0, min_bytes_per_second=1000, throughput_window=1.5)
    started = time.monotonic()
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 5
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot reach {hostile.host}/team/app: blob {image.layers[0]} arrived at" in err
    assert "below the minimum of 1000 bytes/s" in err
    assert elapsed < 4.5, f"abandoned after the window, not after the whole body: {elapsed:.1f} s"
    assert image.layers[0] not in stored_blobs(tmp_path)
    assert_nothing_unverified(tmp_path)


def test_a_blob_over_the_request_deadline_is_abandoned_even_if_fast_enough(
    hostile: HostileRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    pieces = [LAYER[i : i + 20_000] for i in range(0, len(LAYER), 20_000)]

    def steady() -> Iterator[bytes]:  # 100 KB/s: over any rate floor set here, but 3 s in all
        for piece in pieces:
            time.sleep(0.2)
            yield piece

    hostile.add_route(
        "GET",
        f"/v2/team/app/blobs/{image.layers[0]}",
        lambda _r: Reply(200, steady(), headers={"Content-Length": str(len(LAYER))}),
    )
    _small_pace(monkeypatch, request_deadline=1.0, min_bytes_per_second=1000, throughput_window=0.5)
    started = time.monotonic()
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 5
    assert time.monotonic() - started < 2.5
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot reach {hostile.host}/team/app: blob {image.layers[0]} took longer than 1 s" in err
    assert_nothing_unverified(tmp_path)


def test_a_slow_but_steady_blob_still_pulls(
    hostile: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    pieces = [LAYER[i : i + 60_000] for i in range(0, len(LAYER), 60_000)]

    def steady() -> Iterator[bytes]:  # 300 KB/s with pauses: above the floor
        for piece in pieces:
            time.sleep(0.2)
            yield piece

    hostile.add_route(
        "GET",
        f"/v2/team/app/blobs/{image.layers[0]}",
        lambda _r: Reply(200, steady(), headers={"Content-Length": str(len(LAYER))}),
    )
    _small_pace(monkeypatch, request_deadline=10.0, min_bytes_per_second=10_000, throughput_window=0.3)
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 0
    assert image.layers[0] in stored_blobs(tmp_path)


# -- the bounds hold within bounded time, whatever one read waits (issue 20, class 1) ---------------


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: the hostile server's stalled handlers then finish."""
    event = threading.Event()
    yield event
    event.set()


def _stalling(data: bytes, release: threading.Event) -> Iterator[bytes]:
    """The first 1000 bytes of `data`, then nothing until `release` (or 60 s): a server gone silent."""
    yield data[:1000]
    release.wait(60)


def test_a_registry_silent_mid_blob_is_abandoned_at_the_deadline_not_a_read_timeout_later(
    hostile: HostileRegistry, release: threading.Event, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    hostile.add_route(
        "GET",
        f"/v2/team/app/blobs/{image.layers[0]}",
        lambda _r: Reply(200, _stalling(LAYER, release), headers={"Content-Length": str(len(LAYER))}),
    )
    started = time.monotonic()
    # The per-read timeout stays at its 60 s default; the floor is off: only the deadline can stop it.
    pace = ["--request-deadline", "2s", "--min-rate", "0"]
    code = main([*pace, "pull", "--store", str(tmp_path), f"{hostile.host}/team/app:v1"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 5, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot reach {hostile.host}/team/app: blob {image.layers[0]} took longer than 2 s" in err
    assert "--request-deadline" in err
    assert elapsed < 5, f"the deadline was overrun by a read timeout: {elapsed:.1f} s"
    assert image.layers[0] not in stored_blobs(tmp_path)
    assert_nothing_unverified(tmp_path)


def test_a_registry_silent_mid_blob_is_abandoned_when_the_floor_window_ends(
    hostile: HostileRegistry,
    release: threading.Event,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)
    hostile.add_route(
        "GET",
        f"/v2/team/app/blobs/{image.layers[0]}",
        lambda _r: Reply(200, _stalling(LAYER, release), headers={"Content-Length": str(len(LAYER))}),
    )
    _small_pace(monkeypatch, throughput_window=1.5)  # read timeout 60 s, deadline 1 h: as shipped
    monkeypatch.setenv("TRUST_MIN_RATE", "50kB")
    started = time.monotonic()
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 5
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot reach {hostile.host}/team/app: blob {image.layers[0]} arrived at" in err
    assert "below the minimum of 50000 bytes/s" in err
    assert elapsed < 4.5, f"abandoned a read timeout after the window: {elapsed:.1f} s"
    assert_nothing_unverified(tmp_path)


def test_a_registry_that_never_answers_is_abandoned_at_the_deadline(
    hostile: HostileRegistry,
    release: threading.Event,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)

    def silent(_request: object) -> Reply:  # not even the status line
        release.wait(60)
        return Reply(500)

    hostile.add_route("GET", "/v2/team/app/manifests/v1", silent)
    monkeypatch.setenv("TRUST_REQUEST_DEADLINE", "1.5")
    started = time.monotonic()
    assert pull(tmp_path, f"{hostile.host}/team/app:v1") == 5
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot reach {hostile.host}/team/app: manifest v1 took longer than 1.5 s" in err
    assert elapsed < 4, f"{elapsed:.1f} s"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--request-deadline", "0"], {}, "--request-deadline: '0' is not a duration"),
        (["--request-deadline", "soon"], {}, "--request-deadline: 'soon' is not a duration"),
        (["--min-rate", "fast"], {}, "--min-rate: 'fast' is not a rate"),
        ([], {"TRUST_MIN_RATE": "9" * 5000}, "TRUST_MIN_RATE: '9999"),
        ([], {"TRUST_REQUEST_DEADLINE": "-1"}, "TRUST_REQUEST_DEADLINE: '-1' is not a duration"),
    ],
)
def test_a_bad_pace_setting_is_exit_2_before_any_request(
    args: list[str],
    env: dict[str, str],
    message: str,
    hostile: HostileRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*args, "pull", "--store", str(tmp_path), f"{hostile.host}/team/app:v1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert hostile.requests == []


def test_pace_settings_parse_durations_and_decimal_rates() -> None:
    from pull.config import PullConfig, parse_deadline, parse_rate, with_pace

    assert [parse_deadline(t) for t in ("600", "90s", "15m", "2h", "0.5")] == [600, 90, 900, 7200, 0.5]
    assert [parse_rate(t) for t in ("0", "10000", "10k", "10kB", "2M", "2MB/s")] == [
        0, 10_000, 10_000, 10_000, 2_000_000, 2_000_000,
    ]  # fmt: skip
    config = with_pace(PullConfig(), {"TRUST_REQUEST_DEADLINE": "10m", "TRUST_MIN_RATE": "1k"})
    assert (config.request_deadline, config.min_bytes_per_second) == (600, 1000)
    assert with_pace(PullConfig(), {}) == PullConfig()


@pytest.mark.parametrize(
    "command",
    [
        ["pull", "--store", "STORE", "PINNED"],
        ["copy", "--no-signatures", "PINNED", "oci:LAYOUT:v1"],
        ["verify", "--pull", "--store", "STORE", "--policy", "POLICY", "PINNED"],
        ["policy", "explain", "--store", "STORE", "--policy", "POLICY", "PINNED"],
        ["run", "--rm", "--store", "STORE", "--policy", "POLICY", "PINNED", "true"],
    ],
    ids=lambda command: command[0] if command[0] != "policy" else "policy-explain",
)
def test_every_command_that_fetches_keeps_the_request_deadline(
    command: list[str],
    hostile: HostileRegistry,
    release: threading.Event,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The global --request-deadline reaches every command that talks to a registry."""
    image = hostile.add_image("team/app", "v1", [LAYER], layer_media_type=OCI_LAYER_GZIP)

    def silent(_request: object) -> Reply:
        release.wait(60)
        return Reply(500)

    hostile.add_route("GET", re.compile(r"/v2/team/app/manifests/.*"), silent)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault: {insecure-accept-anything: true}\n")
    values = {
        "STORE": str(tmp_path / "store"),
        "PINNED": f"{hostile.host}/team/app@{image.digest}",
        "POLICY": str(policy),
        "LAYOUT": str(tmp_path / "layout"),
    }
    args = [values.get(arg, arg).replace("LAYOUT", values["LAYOUT"]) for arg in command]
    capfd.readouterr()
    started = time.monotonic()
    code = main(["--request-deadline", "1.5", *args])
    elapsed = time.monotonic() - started
    err = capfd.readouterr().err
    assert code == 5, err
    assert "Traceback" not in err and f"cannot reach {hostile.host}/team/app" in err, err
    assert "took longer than 1.5 s" in err, err
    assert elapsed < 6, f"{elapsed:.1f} s"
