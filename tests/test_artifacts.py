"""Artifacts (a Helm chart, an oras push): pulled and verified like images, listed, never run."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from support.images import push_blob, push_manifest
from support.registry import Registry

from trust.cli.app import main

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _chart() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"apiVersion: v2\nname: demo\nversion: 0.1.0\n"
        info = tarfile.TarInfo("demo/Chart.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def push_helm_chart(registry: Registry, repository: str, tag: str) -> tuple[str, bytes, str]:
    """A chart as `helm push` lays it out; returns (manifest digest, chart bytes, chart digest)."""
    config = json.dumps({"name": "demo", "version": "0.1.0", "apiVersion": "v2"}).encode()
    chart = _chart()
    push_blob(registry, repository, config)
    push_blob(registry, repository, chart)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": HELM_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": HELM_CHART, "digest": _digest(chart), "size": len(chart)}],
        }
    ).encode()
    return push_manifest(registry, repository, tag, manifest, OCI_MANIFEST), chart, _digest(chart)


def push_oras_file(registry: Registry, repository: str, tag: str) -> str:
    """An OCI 1.1 artifact as `oras push --artifact-type` makes it: the empty config, one file."""
    empty = b"{}"
    data = b"an SBOM, say\n"
    push_blob(registry, repository, empty)
    push_blob(registry, repository, data)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom+json",
            "config": {"mediaType": OCI_EMPTY, "digest": _digest(empty), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.example.sbom+json",
                    "digest": _digest(data),
                    "size": len(data),
                    "annotations": {"org.opencontainers.image.title": "sbom.json"},
                }
            ],
        }
    ).encode()
    return push_manifest(registry, repository, tag, manifest, OCI_MANIFEST)


def test_a_helm_chart_is_pulled_listed_and_refused_by_run(
    registry: Registry, repo_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest, chart, chart_digest = push_helm_chart(registry, repo_name, "0.1.0")
    store = tmp_path / "store"
    ref = f"{registry.host}/{repo_name}:0.1.0"
    capsys.readouterr()
    assert main(["pull", "--store", str(store), "--output", "json", ref]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["digest"] == digest and record["artifactType"] == HELM_CONFIG
    assert [layer["digest"] for layer in record["layers"]] == [chart_digest]
    stored = store / "blobs" / "sha256" / chart_digest.split(":")[1]
    assert stored.read_bytes() == chart  # verified like any blob

    assert main(["images", "--store", str(store), "--output", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["tag"], r["digest"], r["artifactType"]) for r in rows] == [("0.1.0", digest, HELM_CONFIG)]
    assert main(["images", "--store", str(store)]) == 0
    assert HELM_CONFIG in capsys.readouterr().out

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nrules:\n  - scope: {registry.host}/{repo_name}\n    insecure-accept-anything: true\n"
        "default:\n  reject: true\n"
    )
    for command in ("run", "create"):
        code = main(
            [command, "--store", str(store), "--policy", str(policy), f"{registry.host}/{repo_name}@{digest}"]
        )
        assert code == 2, command
        assert "is not a container image" in capsys.readouterr().err


def test_an_oras_artifact_is_typed_by_its_artifact_type(
    registry: Registry, repo_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = push_oras_file(registry, repo_name, "sbom")
    capsys.readouterr()
    store = str(tmp_path / "store")
    assert main(["pull", "--store", store, f"{registry.host}/{repo_name}@{digest}"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{registry.host}/{repo_name}@{digest}"
    assert "artifact application/vnd.example.sbom+json" in captured.err


def test_a_tampered_artifact_blob_is_refused_and_not_stored(
    fresh_registry: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = fresh_registry()  # type: ignore[operator]
    digest, chart, chart_digest = push_helm_chart(registry, "charts/demo", "0.1.0")
    registry.blob_path(chart_digest).write_bytes(bytes([chart[0] ^ 0xFF]) + chart[1:])
    store = tmp_path / "store"
    assert main(["pull", "--store", str(store), f"{registry.host}/charts/demo@{digest}"]) == 4
    assert not (store / "blobs" / "sha256" / chart_digest.split(":")[1]).exists()
    assert not (store / "blobs" / "sha256" / digest.split(":")[1]).exists()
